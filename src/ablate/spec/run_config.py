"""Frozen configuration of one training run: data, model and training settings.

These pydantic models are both the fixed settings of a study file (validated at the edge) and
the frozen configs that builders take. One dotted name per setting everywhere: the field
`skip` of `ModelConfig` is `model.skip` in the study file, in Optuna and in MLflow.
"""

from __future__ import annotations

import re
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from ablate.spec.dotted import flatten

MAX_SEED = 2**32 - 1  # NumPy's and Keras' global seeding (`keras.utils.set_random_seed`) take 0 .. 2**32 - 1
SECTIONS = ("data", "model", "train", "diffusion", "ensemble")  # a study file's sections of fixed settings
DatasetName = Literal["mnist-embedded", "mnist", "fashion-mnist", "arrays", "images", "python"]
BUILTIN_DATASETS = ("mnist-embedded", "mnist", "fashion-mnist")  # 28x28 grey digits or clothes, no labels read
LABELLED_DATASETS = ("arrays", "images", "python")  # the user's own data: inputs, and labels or targets
TaskName = Literal["denoise", "reconstruct", "classify", "regress"]
# MODULE:FUNCTION, MODULE a dotted importable name or a path to a .py file (a study's `model.builder`, `data.loader`).
REFERENCE_PATTERN = r"^[^:\s]+\.py:[A-Za-z_][A-Za-z0-9_]*$|^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
PARAM_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"


class Frozen(BaseModel):
    """Base for configs: immutable, hashable, refusing unknown keys, infinities, NaN, and `true` for a number.

    Pydantic's lax mode would read `epochs: true` as 1 and `learning_rate: .inf` as a rate; a
    study file that says either is wrong, so both are refused by field path.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and info.field_name is not None:
            kinds = _kinds(cls.model_fields[info.field_name].annotation)
            if kinds & {int, float} and not kinds & {bool, Any}:
                raise ValueError("expected a number, not true or false")
        return value


def _kinds(annotation: Any) -> set[Any]:
    """The plain types an annotation admits (`int | None` -> {int, NoneType}), through unions and Literal."""
    if annotation in (int, float, bool, Any):
        return {annotation}
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return {type(arg) for arg in typing.get_args(annotation)}
    return {kind for arg in typing.get_args(annotation) for kind in _kinds(arg)} if origin is not None else {annotation}


class NoiseConfig(Frozen):
    """Additive noise on the inputs: `x + factor * N(0, 1)`, clipped to [0, 1]."""

    kind: Literal["gaussian"] = "gaussian"
    factor: float = Field(0.5, ge=0.0, le=10.0, description="standard deviation of the noise")


class DataConfig(Frozen):
    """Which images (or arrays), how many, and how they are split and corrupted.

    `train_size` None means every example left for training after the validation and test splits.
    Built-in datasets: `path` is a local `mnist.npz`-style file or a folder of IDX files (only for
    `mnist` and `fashion-mnist`); without it the Keras loader and its cache are used.
    The user's own data (`ablate.training.arrays`): `arrays` reads the `.npz` at `path` (arrays
    `x_train` [`y_train`] [`x_test` `y_test`], or `x` [`y`]); `images` reads a folder at `path`
    with one sub-folder per class, each image resized to `image_size`; `python` calls `loader`
    (MODULE:FUNCTION) for the same arrays. A relative `path` or loader module in a study file is
    relative to the study file's folder.
    """

    dataset: DatasetName = "mnist-embedded"
    path: str | None = Field(None, min_length=1, max_length=4096)
    loader: str | None = Field(None, pattern=REFERENCE_PATTERN, max_length=4096, description="dataset: python")
    image_size: tuple[int, int] | None = Field(None, description="dataset: images: (height, width)")
    train_size: int | None = Field(None, ge=1)
    val_size: int = Field(1000, ge=1)
    test_size: int = Field(1000, ge=0)
    split_seed: int = Field(0, ge=0, le=MAX_SEED, description="seed of the split and of the validation noise")
    noise: NoiseConfig = NoiseConfig()

    @model_validator(mode="after")
    def _source_settings(self) -> DataConfig:
        if self.dataset == "python" and not self.loader:
            raise ValueError("data.dataset: python needs data.loader, the MODULE:FUNCTION that returns the arrays")
        if self.dataset != "python" and self.loader:
            raise ValueError(f"data.loader applies to data.dataset: python, not {self.dataset}")
        if self.dataset in ("arrays", "images") and not self.path:
            what = "an .npz of arrays" if self.dataset == "arrays" else "a folder with one sub-folder per class"
            raise ValueError(f"data.dataset: {self.dataset} needs data.path, {what}")
        if self.dataset in ("mnist-embedded", "python") and self.path:
            raise ValueError(f"data.path does not apply to data.dataset: {self.dataset}; drop it")
        if self.dataset == "images" and self.image_size is None:
            raise ValueError("data.dataset: images needs data.image_size, [height, width] every image is resized to (e.g. [64, 64])")
        if self.dataset != "images" and self.image_size is not None:
            raise ValueError(f"data.image_size applies to data.dataset: images, not {self.dataset}")
        if self.image_size is not None and not all(1 <= side <= 4096 for side in self.image_size):
            raise ValueError(f"data.image_size {list(self.image_size)}: each side must be 1 .. 4096 pixels")
        return self


ParamValue = str | int | float | bool | None


class ModelConfig(Frozen):
    """The U-Net-style denoising autoencoder of the slides, and which task it is trained for.

    `family` picks the task a trial runs (see `ablate.families`): `unet`, the denoising
    autoencoder; `diffusion`, the same network as an incremental denoiser (settings under
    `diffusion`); `ensemble`, a weighted sum of trained members (settings under `ensemble`).

    Encoder: `depth` stages of Conv2D(filters * 2**i) + MaxPooling; bottleneck Conv2D(filters *
    2**depth); decoder: per stage Conv2D + upsampling, merged with the encoder map of the same
    size by `skip` (none / concat / add); a sigmoid Conv2D(1) output.
    `residual_blocks` > 0 replaces each stage's convolution by that many residual blocks (two
    convolutions and an identity shortcut, a 1x1 projection where the channel counts differ).
    `block` names the stage type: `plain` (one convolution), `residual` (the residual blocks), or
    `inception` (parallel 1x1, 3x3, 5x5 and pooling branches, concatenated, as in the slides).
    `batch_norm` adds BatchNormalization after each stage's convolution(s); `dropout` > 0 adds
    Dropout after each stage.
    `remove` ablates the built graph without changing how it is built: `none`, or layer names
    joined by `+` (`dec1_skip+dec2_skip`); a removed merge layer passes its latest input on alone,
    a removed shape-preserving layer is the identity (`ablate.models.surgery`; `ablate graph` lists
    what a model can lose).

    `custom` is the user's own functional model: `builder` (MODULE:FUNCTION) is called as
    `build(params, input_shape)` with `params` (free-form settings, each a factor
    `model.params.NAME`) and returns an uncompiled `keras.Model`; the U-Net settings do not apply.
    `builder_digest` is the SHA-256 of the builder's source file, set when the study file is
    read (a value in the file is replaced), so a worker whose copy differs refuses to train.
    """

    family: Literal["unet", "diffusion", "ensemble", "custom"] = "unet"
    builder: str | None = Field(None, pattern=REFERENCE_PATTERN, max_length=4096)
    builder_digest: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    params: dict[str, ParamValue | list[ParamValue]] = Field(default_factory=dict)
    depth: int = Field(2, ge=1, le=4)
    filters: int = Field(64, ge=1, le=1024)
    skip: Literal["none", "concat", "add"] = "concat"
    block: Literal["plain", "residual", "inception"] | None = None
    residual_blocks: int = Field(0, ge=0, le=8)
    upsampling: Literal["upsample", "transpose"] = "upsample"
    kernel_size: int = Field(3, ge=1, le=7)
    activation: Literal["relu", "gelu", "swish", "elu"] = "relu"
    batch_norm: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    remove: str = Field("none", pattern=r"^[A-Za-z0-9_.\-/]+(\+[A-Za-z0-9_.\-/]+)*$", max_length=2000)

    @property
    def removed(self) -> tuple[str, ...]:
        """The layer names `remove` names (none for `none`)."""
        return () if self.remove == "none" else tuple(self.remove.split("+"))

    def __hash__(self) -> int:  # `params` is a dict, which pydantic's frozen hash cannot hash
        return hash(self.model_dump_json())

    @field_validator("params")
    @classmethod
    def _param_names(cls, params: dict[str, Any]) -> dict[str, Any]:
        for name in params:
            if not re.match(PARAM_NAME_PATTERN, name):
                raise ValueError(f"model.params.{name}: a param name is a Python identifier of at most 64 characters")
        return params

    @model_validator(mode="after")
    def _custom_settings(self) -> ModelConfig:
        if self.family == "custom" and not self.builder:
            raise ValueError("model.family: custom needs model.builder, the MODULE:FUNCTION that builds your model")
        if self.family != "custom":
            for name, value in (("builder", self.builder), ("params", self.params)):
                if value:
                    raise ValueError(f"model.{name} applies to model.family: custom, not {self.family}")
        return self

    @model_validator(mode="after")
    def _block_matches_residual_blocks(self) -> ModelConfig:
        if self.family == "ensemble" and self.remove != "none":
            raise ValueError("model.remove applies to a built model (unet, diffusion), not to model.family: ensemble")
        # `block` left out follows `residual_blocks` (0 = plain, N = N residual blocks per stage).
        if self.block is None:
            object.__setattr__(self, "block", "residual" if self.residual_blocks else "plain")
        elif self.block == "residual" and self.residual_blocks == 0:
            raise ValueError("model.block: residual needs model.residual_blocks >= 1")
        elif self.block != "residual" and self.residual_blocks:
            raise ValueError(f"model.residual_blocks applies only to model.block: residual, not {self.block}")
        return self


class DiffusionConfig(Frozen):
    """Incremental denoising, as in the slides' exercise (their `steps2use` is `steps`).

    A chain x_0 (clean) .. x_T adds noise step by step: x_t = clip(x_{t-1} + magnitude / sqrt(T) *
    e_t, 0, 1), e_t drawn from `distribution` (unit variance). The model learns x_t -> x_{t-1};
    evaluation runs it T times from x_T. `conditioned` gives the model the step t as a second
    input, so one study can ask whether conditioning on t matters.
    """

    steps: int = Field(10, ge=1, le=1000)
    distribution: Literal["normal", "uniform"] = "normal"
    magnitude: float = Field(1.0, gt=0.0, le=10.0)
    conditioned: bool = False


class EnsembleConfig(Frozen):
    """Members of a weighted ensemble and how they are found (`model.family: ensemble`).

    `source: study` takes the `members` best complete trials of the study named `study` (their
    saved `.keras` models), ranked by that study's first objective; the study is then a weight
    study whose trials are weight vectors (`design: search`, `search.trials` of them, sampler
    `search.sampler`). `source: train` trains `members` models inside each trial, one per seed
    seed .. seed + members - 1, with the trial's `model` settings, and searches their weights
    with `weight_trials` vectors from `sampler`. Either way the weights are searched on the
    validation split (simplex parametrisation, see `ablate.families.ensemble_weights`) and reported on the test
    split beside the best single member and the uniform average.
    """

    source: Literal["study", "train"] = "train"
    study: str | None = Field(None, description="the study whose trials' saved models are the members")
    members: int = Field(3, ge=1, le=32)
    weight_trials: int = Field(200, ge=1, le=100_000, description="weight vectors tried per trial (source: train)")
    sampler: Literal["cmaes", "tpe", "random", "gp"] = Field(
        "cmaes", description="the in-trial weight search's sampler (source: train); a weight study uses search.sampler"
    )

    @model_validator(mode="after")
    def _study_named(self) -> EnsembleConfig:
        if self.source == "study" and not self.study:
            raise ValueError("ensemble.source: study needs ensemble.study, the name of the study with the members")
        if self.source == "train" and self.weight_trials < self.members + 1:
            raise ValueError(
                f"ensemble.weight_trials ({self.weight_trials}) must leave room for the uniform average and each "
                f"member alone: at least ensemble.members + 1 = {self.members + 1}"
            )
        return self


class TrainConfig(Frozen):
    """Optimiser, loss and schedule of one trial.

    The budget is `epochs`, or wall time with `max_seconds`: training stops after the epoch in
    which that many seconds have passed (never mid-epoch, so every logged epoch is complete).
    """

    epochs: int = Field(20, ge=1, le=10_000)
    max_seconds: float | None = Field(None, gt=0, description="stop after the epoch that passes this wall time")
    batch_size: int = Field(128, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0.0)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    # The built-in families take binary_crossentropy or mse; a custom model any Keras loss identifier
    # (checked against Keras when the study is validated, `ablate.families.custom`).
    loss: str = Field("binary_crossentropy", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
    metrics: tuple[str, ...] = Field(
        (), description="Keras metric identifiers a custom model is compiled with; logged as train_NAME / val_NAME"
    )
    # The Keras backend that trains (ablate.backends): unset, whichever the process runs (--backend);
    # fixed, the study refuses a process on another; as a factor, each level's trials run in workers
    # of that backend, so "does the answer depend on the backend?" is a question a study can ask.
    backend: Literal["tensorflow", "jax", "torch"] | None = Field(
        None, description="the Keras backend: tensorflow, jax or torch (default: the process's, --backend)"
    )
    # The backend's deterministic ops (ablate.training.determinism): two runs of one trial with the
    # same seed give the same numbers where the backend can promise it, at a measured cost in speed
    # (docs/performance.md#deterministic-ops); `ablate audit` measures how far apart they land.
    deterministic: bool = Field(
        False, description="turn on the backend's deterministic ops (TensorFlow, PyTorch; JAX on a GPU only)"
    )

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, metrics: tuple[str, ...]) -> tuple[str, ...]:
        for name in metrics:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$", name):
                raise ValueError(f"train.metrics: {name!r} is not a Keras metric identifier (letters, digits, _)")
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"train.metrics lists a metric twice: {list(metrics)}")
        return metrics


class RunConfig(Frozen):
    """Everything one trial needs to rebuild its data, model and training: the unit of work."""

    task: TaskName = "denoise"
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    diffusion: DiffusionConfig = DiffusionConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    seed: int = Field(ge=0, le=MAX_SEED)

    @model_validator(mode="after")
    def _depth_fits_images(self) -> RunConfig:
        if self.model.family == "custom":
            return self  # the user's builder owns its shapes; `ablate validate` builds it to check them
        # 28x28 images survive two halvings exactly; deeper U-Nets would need padding.
        if 28 % (2**self.model.depth):
            raise ValueError(
                f"model.depth={self.model.depth} halves 28x28 images to a non-integer size; "
                "use depth 1 or 2"
            )
        return self

    @model_validator(mode="after")
    def _task_fits_family(self) -> RunConfig:
        family, data, train = self.model.family, self.data, self.train
        if family != "custom":
            if self.task != "denoise":
                raise ValueError(
                    f"task: {self.task} needs model.family: custom (your own model); model.family {family} denoises"
                )
            if data.dataset not in BUILTIN_DATASETS:
                raise ValueError(
                    f"data.dataset: {data.dataset} needs model.family: custom; model.family {family} trains on "
                    f"28x28 grey images ({', '.join(BUILTIN_DATASETS)})"
                )
            if train.loss not in BUILTIN_LOSSES:
                raise ValueError(
                    f"train.loss {train.loss!r}: model.family {family} takes {' or '.join(BUILTIN_LOSSES)} "
                    "(any Keras loss is for model.family: custom)"
                )
            if train.metrics:
                raise ValueError(f"train.metrics applies to model.family: custom; model.family {family} logs mse and psnr")
        elif self.task in ("classify", "regress") and data.dataset not in LABELLED_DATASETS:
            raise ValueError(
                f"task: {self.task} needs labelled data: data.dataset arrays, images or python, not {data.dataset} "
                "(whose labels ablate does not read)"
            )
        return self

    @property
    def metrics(self) -> tuple[str, ...]:
        """The Keras metrics a custom model is compiled with: `train.metrics`, else the task's own."""
        return self.train.metrics or TASK_METRICS[self.task]

    def flat(self) -> dict[str, Any]:
        """Every setting under its dotted name (`model.skip`, `data.noise.factor`, `seed`).

        The `diffusion` and `ensemble` sections appear only for their own family, the U-Net's
        settings not for a custom model, and the custom model's and the user's data's settings
        only where they are set, so a run is not cluttered with settings it never reads.
        """
        unused = {"diffusion", "ensemble"} - {self.model.family}
        flat = flatten(self.model_dump(mode="json", exclude=unused))
        if self.model.family == "custom":
            flat = {k: v for k, v in flat.items() if not k.startswith("model.") or k.split(".")[1] in CUSTOM_MODEL_SETTINGS}
        return {k: v for k, v in flat.items() if not (k in OPTIONAL_SETTINGS and v in (None, []))}


BUILTIN_LOSSES = ("binary_crossentropy", "mse")
# What a custom model is compiled with when `train.metrics` is empty.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "denoise": ("mse",), "reconstruct": ("mse",), "classify": ("accuracy",), "regress": ("mae",),
}
CUSTOM_MODEL_SETTINGS = ("family", "builder", "builder_digest", "params", "remove")
OPTIONAL_SETTINGS = ("data.loader", "data.image_size", "model.builder", "model.builder_digest", "train.metrics", "train.backend")
