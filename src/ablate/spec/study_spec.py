"""The study-file schema: factors and designs, search settings, objectives, tracking, and every rule among them.

A study file names the question (`factors` and their levels), the fixed settings of every trial
(`data`, `model`, `train`), the design and the number of seeds (`repeats`), the objective, the
tracking settings, and optional named `profiles` of overrides. `StudySpec` validates it as a
whole (reading the file is `ablate.spec.loading`'s) and turns a cell and a seed into a trial's
frozen `RunConfig`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, ValidationError, field_validator, model_validator

from ablate.spec.attributes import CONFIRM_CELLS
from ablate.spec.dotted import set_dotted
from ablate.spec.ensemble_rules import check_ensemble_spec
from ablate.spec.errors import _first_message
from ablate.spec.levels import Level, cell_key, format_level, same_level
from ablate.spec.run_config import (
    CUSTOM_MODEL_SETTINGS,
    MAX_SEED,
    OPTIONAL_SETTINGS,
    PARAM_NAME_PATTERN,
    SECTIONS,
    DataConfig,
    DiffusionConfig,
    EnsembleConfig,
    Frozen,
    ModelConfig,
    RunConfig,
    TaskName,
    TrainConfig,
    flatten,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"


# The metrics each family logs; an objective must be one its family has.
FAMILY_METRICS: dict[str, tuple[str, ...]] = {
    "unet": ("val_loss", "val_mse", "val_psnr", "train_loss", "train_mse", "train_psnr", "parameters"),
    "diffusion": ("val_loss", "val_mse", "val_psnr", "train_loss", "train_mse", "train_psnr", "parameters",
                  "val_chain_loss", "val_chain_mse"),
    "ensemble": ("val_loss", "val_mse", "test_loss", "test_mse", "parameters"),
}


MAX_CELLS = 10_000
MAX_INT_LEVELS = 1_000


# A built-in family's objective is one of its FAMILY_METRICS; a custom model's is `parameters` or
# SPLIT_NAME, NAME `loss` or one of its compiled metrics (`RunConfig.metrics`), as Keras logs them.
METRIC_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,120}$"


class ObjectiveSpec(Frozen):
    """One metric a trial's value is: the logged metric of that name at the last epoch run.

    `parameters` (the model's parameter count) is a metric too, so a multi-objective study can
    trade loss against size.
    """

    metric: str = Field("val_loss", pattern=METRIC_PATTERN)
    direction: Literal["minimize", "maximize"] = "minimize"


class TrackingSpec(Frozen):
    """What MLflow records besides params and per-epoch metrics."""

    # Part of the artifact path (`artifacts/EXPERIMENT/...`): held to the study name's pattern, so no
    # `..`, `/` or `\\` can take a run's files outside the project folder.
    experiment: str | None = Field(
        None, pattern=NAME_PATTERN, description="MLflow experiment; default: the study name"
    )
    image_every: int = Field(5, ge=0, description="log the reconstruction grid every N epochs (0: only at the end)")
    images: int = Field(8, ge=1, le=32, description="fixed validation images in the reconstruction grid")
    save_model: bool = Field(True, description="log each trial's trained model as model/model.keras")


class AnalysisSpec(Frozen):
    """How the report judges each comparison, in objective units (`ablate.analysis.power`).

    Neither changes what trials run, so both may change between runs of a study.
    """

    equivalence_margin: float | None = Field(
        None, gt=0, description="a difference within ±this is no difference that matters: equivalence is tested"
    )
    effect_of_interest: float | None = Field(None, gt=0, description="the report says how many seeds find it with 80% power")


class Factor(Frozen):
    """One factor of a study: the levels a grid or one-at-a-time design runs, or a search's range.

    In a study file a plain list is a categorical factor (`model.skip: [none, concat]`); a mapping
    gives the type: `{type: int, low: 1, high: 4, step: 1}`, `{type: float, low: 1e-4, high: 1e-2,
    log: true}`, `{levels: [...]}`. `when: {model.block: residual}` makes the factor conditional:
    it exists only in trials where that earlier factor takes one of the named levels, and is
    absent (the fixed setting applies) elsewhere.
    """

    type: Literal["categorical", "int", "float"] = "categorical"
    levels: tuple[Level, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    when: dict[str, tuple[Level, ...]] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return {"type": "categorical", "levels": list(value)}
        if isinstance(value, dict) and isinstance(value.get("when"), dict):
            value = {**value, "when": {k: v if isinstance(v, (list, tuple)) else [v] for k, v in value["when"].items()}}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Factor:
        if self.type == "categorical":
            if not self.levels:
                raise ValueError("has no levels (an empty grid); give at least one")
            if len({repr(level) for level in self.levels}) != len(self.levels):
                raise ValueError(f"repeats a level: {list(self.levels)}")
            if self.low is not None or self.high is not None or self.log or self.step is not None:
                raise ValueError("low, high, step and log belong to int and float factors, not categorical ones")
            return self
        if self.levels is not None:
            raise ValueError(f"a {self.type} factor takes low/high (and step or log), not levels; use a list for levels")
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} factor needs low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.type == "int":
            if self.low != int(self.low) or self.high != int(self.high):
                raise ValueError("an int factor needs whole-number low and high")
            if self.step is not None and (self.step != int(self.step) or self.step < 1):
                raise ValueError("an int factor's step must be a whole number >= 1")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined (Optuna's rule too)")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale factor needs low > 0")
        return self

    def grid_levels(self, name: str) -> list[Level]:
        """The levels a grid or one-at-a-time design runs: categorical levels, or an int range."""
        if self.type == "categorical":
            return list(self.levels or ())
        if self.type == "int" and not self.log:
            low, high, step = int(self.low or 0), int(self.high or 0), int(self.step or 1)
            levels: list[Level] = list(range(low, high + 1, step))
            if len(levels) > MAX_INT_LEVELS:
                raise ValueError(f"factor {name!r} spans {len(levels)} levels; use design: search or a larger step")
            return levels
        raise ValueError(
            f"factor {name!r} is a {'log-scale ' if self.log else ''}{self.type} range, which has no levels to "
            "enumerate; use design: search, or give its levels as a list"
        )

    def takes(self, level: Level) -> bool:
        """Whether a trial can give this factor `level`: one of its levels, or a number in its range (on its step)."""
        if self.type == "categorical":
            return any(same_level(level, known) for known in self.levels or ())
        if isinstance(level, bool) or not isinstance(level, (int, float)):
            return False
        low, high = self.low or 0.0, self.high or 0.0
        if not low <= level <= high:
            return False
        if self.type == "int":
            step = self.step or 1
            return level == int(level) and (self.log or (level - low) % step == 0)
        return True

    def describe(self) -> str:
        """One line for `ablate validate`: the levels or the range, and the condition."""
        if self.type == "categorical":
            text = ", ".join(format_level(level) for level in self.levels or ())
        else:
            text = f"{self.type} {self.low:g} .. {self.high:g}" + (" (log)" if self.log else "")
            text += f" step {self.step:g}" if self.step else ""
        for parent, levels in (self.when or {}).items():
            text += f" (only when {parent} in {', '.join(format_level(v) for v in levels)})"
        return text

    def active(self, params: dict[str, Level]) -> bool:
        """Whether the factor exists in a trial with these (earlier) factor levels.

        A parent that is itself absent (switched off by its own condition) switches its children
        off too, even when a child's condition names `null`: absent is not the level `null`.
        """
        return all(
            parent in params and any(same_level(params[parent], level) for level in levels)
            for parent, levels in (self.when or {}).items()
        )


PrunerName = Literal["none", "median", "successive-halving", "hyperband", "wilcoxon"]
SamplerName = Literal["tpe", "random", "cmaes", "gp", "nsga2", "hyperband", "bayesian"]
OPTUNA_SAMPLERS = ("tpe", "random", "cmaes", "gp", "nsga2")
KERAS_TUNER_SAMPLERS = ("hyperband", "bayesian", "random")


class SearchSpec(Frozen):
    """How a `design: search` study samples: sampler, trial budget, pruner, and what a seed is.

    `seeds: spread` (the default) gives each trial one seed, cycling through seed ..
    seed + repeats - 1, so a fixed budget buys more configurations and the sampler's model
    averages out seed noise across neighbouring ones. `seeds: average` trains every seed in each
    trial and reports their mean: fewer, surer configurations, and the Wilcoxon pruner can stop a
    trial after the seeds that already show it is worse than the best.
    """

    sampler: SamplerName = "tpe"
    trials: int = Field(24, ge=1, le=100_000)
    pruner: PrunerName = "none"
    seeds: Literal["spread", "average"] = "spread"
    warmup_epochs: int = Field(
        1, ge=0, description="a trial is never pruned during its first N epochs (median, successive-halving, hyperband)"
    )


class ConfirmSpec(Frozen):
    """A search's winner re-run on fresh seeds (`confirm: {seeds: 5}`), against the baseline.

    Once the search's budget is used, its best trial's configuration and the baseline (each
    searched factor at the file's fixed setting) train on `seeds` seeds the search never used,
    seed + repeats onward, and the baseline also at the best trial's own seeds, so the report
    can set the search's (exploratory) paired difference beside the confirmatory one. It adds
    trials without changing what the search's trials mean, so it is not in the fingerprint: a
    finished search can be confirmed later (`--set confirm.seeds=5`).
    """

    seeds: int = Field(5, ge=2, le=100, description="fresh seeds for the winner and the baseline each")
    baseline: dict[str, Level] = Field(
        default_factory=dict,
        description="factor -> level of the baseline where it is not the fixed setting (`ablate run --baseline`)",
    )


SEQUENTIAL_MAX_SEEDS = 50  # the largest `repeats.max` (ablate.analysis.sequential simulates its boundary up to it)


class SequentialRepeats(Frozen):
    """`repeats: {min: 3, max: 12, until: decided}`: seeds added in rounds until each comparison is decided.

    Every cell runs `min` seeds; after each round, every cell that a still undecided comparison
    needs gets one more seed, until each comparison's repeated interval excludes zero, lies inside
    `analysis.equivalence_margin`, or `max` seeds ran (`ablate.analysis.sequential`).
    """

    min: int = Field(3, ge=2, le=SEQUENTIAL_MAX_SEEDS, description="seeds every cell runs before the first look")
    max: int = Field(12, ge=2, le=SEQUENTIAL_MAX_SEEDS, description="the most seeds any cell runs")
    until: Literal["decided"] = Field("decided", description="stop adding seeds to a comparison once it is decided")

    @model_validator(mode="after")
    def _ordered(self) -> SequentialRepeats:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is more than max ({self.max})")
        return self


class StudySpec(Frozen):
    """One study file, validated."""

    name: str = Field(pattern=NAME_PATTERN, description="how every command refers to the study")
    description: str = ""
    task: TaskName = Field("denoise", description="what a custom model learns: denoise, reconstruct, classify, regress")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    factors: dict[str, Factor] = Field(default_factory=dict)
    design: Literal["grid", "one-at-a-time", "search"] = "grid"
    baseline: dict[str, Level] = Field(
        default_factory=dict, description="one-at-a-time: the reference levels (default: each factor's first)"
    )
    search: SearchSpec = SearchSpec()
    engine: Literal["optuna", "keras-tuner"] = "optuna"
    repeats: Annotated[
        Annotated[Annotated[int, Field(ge=1, le=1000)], Tag("seeds")] | Annotated[SequentialRepeats, Tag("rounds")],
        Discriminator(lambda v: "rounds" if isinstance(v, (dict, SequentialRepeats)) else "seeds"),  # one error, not two
    ] = Field(
        3, description="seeds per cell, or {min, max, until: decided} to add seeds until each comparison is decided"
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="first seed; a cell runs seeds seed .. seed+repeats-1")
    objective: tuple[ObjectiveSpec, ...] = (ObjectiveSpec(),)
    tracking: TrackingSpec = TrackingSpec()
    analysis: AnalysisSpec = AnalysisSpec()
    confirm: ConfirmSpec | None = Field(None, description="search: re-run the winner and the baseline on fresh seeds")
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("objective", mode="before")
    @classmethod
    def _one_or_more_objectives(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return [value]
        if isinstance(value, (list, tuple)) and not value:
            raise ValueError("give at least one objective")
        return value

    @field_validator("factors", mode="before")
    @classmethod
    def _auto_removal(cls, factors: Any) -> Any:
        # `model.remove: auto` is the levels [none, auto]; `auto` stands for one level per skip
        # connection of the built model, found by `ablate.families.structure.resolve_auto_removal`
        # (it builds the model: Keras, so not here) before any study is created.
        if isinstance(factors, dict) and factors.get("model.remove") == AUTO_REMOVAL:
            return {**factors, "model.remove": ["none", AUTO_REMOVAL]}
        return factors

    @property
    def removal_auto(self) -> bool:
        """Whether the `model.remove` factor still holds `auto` (not yet resolved to layer names)."""
        factor = self.factors.get("model.remove")
        return factor is not None and AUTO_REMOVAL in (factor.levels or ())

    @field_validator("factors")
    @classmethod
    def _factors_are_settings(cls, factors: dict[str, Factor]) -> dict[str, Factor]:
        settings = _setting_names()
        for index, (name, factor) in enumerate(factors.items()):
            if name.startswith("model.params."):
                if not re.match(PARAM_NAME_PATTERN, name.removeprefix("model.params.")):
                    raise ValueError(f"factor {name!r}: a model.params name is a Python identifier (letters, digits, _)")
            elif name not in settings:
                close = [s for s in settings if s.split(".")[-1] == name.split(".")[-1]]
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"factor {name!r} is not a setting. Expected a dotted name under data., model., "
                    f"model.params. (a custom model's own settings), train., diffusion. or ensemble.{hint}"
                )
            if name == DETERMINISTIC_SETTING:
                raise ValueError(
                    f"factor {name!r}: deterministic ops are switched on for the whole process (TensorFlow cannot "
                    "switch them off again), so its levels would mix in one worker; set train.deterministic in the "
                    "file and compare two studies, or measure the run-to-run spread with `ablate audit`"
                )
            earlier = list(factors)[:index]
            for parent, levels in (factor.when or {}).items():
                if parent not in earlier:
                    raise ValueError(
                        f"factor {name!r} is conditional on {parent!r}, which must be a factor listed before it"
                    )
                parent_factor = factors[parent]
                if parent_factor.type == "categorical":
                    unknown = [
                        level for level in levels if not any(same_level(level, known) for known in parent_factor.levels or ())
                    ]
                    if unknown:
                        raise ValueError(
                            f"factor {name!r}: when {parent} is {unknown}, but {parent}'s levels are "
                            f"{list(parent_factor.levels or ())}"
                        )
                else:
                    outside = [level for level in levels if not parent_factor.takes(level)]
                    if outside:
                        raise ValueError(
                            f"factor {name!r}: when {parent} is {', '.join(format_level(v) for v in outside)}, which "
                            f"{parent} ({parent_factor.describe()}) never takes; the factor would never run"
                        )
        return factors

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, profiles: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in profiles:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"profile name {name!r} must match {NAME_PATTERN}")
        return profiles

    @model_validator(mode="after")
    def _design_fits(self) -> StudySpec:
        family = self.model.family
        self._seeds_fit()
        logged = self.logged_metrics()
        for objective in self.objective:
            if objective.metric not in logged:
                what = f"model.family {family}" if family != "custom" else f"this custom model (task {self.task}, metrics {', '.join(self.run_config({}, seed=self.seed).metrics)})"
                raise ValueError(f"objective {objective.metric!r} is not logged by {what}; it logs {', '.join(logged)}")
        if len({o.metric for o in self.objective}) != len(self.objective):
            raise ValueError("an objective metric is listed twice")
        if self.design != "search":
            if len(self.objective) > 1:
                raise ValueError("several objectives need design: search (a Pareto front is searched, not enumerated)")
            for name, factor in self.factors.items():
                factor.grid_levels(name)  # raises for ranges that cannot be enumerated
        if self.design == "one-at-a-time":
            for name, level in self.baseline.items():
                if name not in self.factors:
                    raise ValueError(f"baseline.{name}: not a factor of this study; factors: {', '.join(self.factors)}")
                if level not in self.factors[name].grid_levels(name):
                    raise ValueError(f"baseline.{name} = {level!r} is not one of its levels {self.factors[name].grid_levels(name)}")
        elif self.baseline:
            raise ValueError("baseline applies only to design: one-at-a-time")
        self._levels_valid()
        self._sequential_fits()
        if family == "ensemble":
            check_ensemble_spec(self)  # what a weight study may search; see ablate.families.ensemble_weights
        self._backend_fits()
        if self.design == "search":
            self._search_fits()
        self._confirm_fits()
        if self.design != "search" and self.engine == "keras-tuner":
            raise ValueError("engine: keras-tuner runs design: search only (KerasTuner samples; it has no enumerated designs here)")
        cells = self.cells()
        if len(cells) > MAX_CELLS:
            raise ValueError(f"the design has {len(cells)} cells, more than {MAX_CELLS}; use fewer levels")
        if self.design != "search":
            configs: dict[str, dict[str, Level]] = {}
            for cell in cells:
                try:
                    config = self.run_config(cell, seed=self.seed)
                except ValidationError as error:
                    raise ValueError(f"the cell {cell} is not a valid configuration: {_first_message(error)}") from None
                key = config.model_dump_json()
                if key in configs:
                    raise ValueError(
                        f"the cells {cell_key(configs[key])} and {cell_key(cell)} train the same configuration "
                        "(a level equal to another, or a factor the family does not read); drop one"
                    )
                configs[key] = cell
        return self

    def logged_metrics(self) -> tuple[str, ...]:
        """Every metric a trial of this study logs (a custom model: from its fixed settings' metrics)."""
        if self.model.family != "custom":
            return FAMILY_METRICS[self.model.family]
        try:
            run = self.run_config({}, seed=self.seed)
        except ValidationError:
            return ("parameters",)  # the fixed settings alone are no valid trial; the cells' check says why
        splits = ("train", "val", "test") if self.data.test_size else ("train", "val")
        return (*(f"{split}_{name}" for split in splits for name in ("loss", *run.metrics)), "parameters")

    def _sequential_fits(self) -> None:
        if self.sequential is None:
            return
        if self.design == "search" or self.engine != "optuna":
            raise ValueError(
                "repeats: {until: decided} adds seeds to the comparisons of a grid or one-at-a-time design (engine "
                "optuna); a search has no planned comparisons: use repeats: N, and confirm: {seeds: N} to check its winner"
            )
        if self.model.family == "ensemble" and self.ensemble.source == "study":
            raise ValueError("repeats: {until: decided} trains seeds; a weight study trains nothing (use repeats: N)")
        if not any(len(levels) > 1 for levels in self.levels.values()):
            raise ValueError("repeats: {until: decided} needs a comparison: give a factor at least two levels")

    @property
    def sequential(self) -> SequentialRepeats | None:
        """The sequential plan (`repeats: {min, max, until: decided}`), or None for a fixed number of seeds."""
        return self.repeats if isinstance(self.repeats, SequentialRepeats) else None

    @property
    def max_repeats(self) -> int:
        """The most seeds a cell runs: `repeats`, or a sequential study's `repeats.max`."""
        return self.repeats.max if isinstance(self.repeats, SequentialRepeats) else self.repeats

    def _seeds_fit(self) -> None:
        """Every seed a trial is given (or derives: ensemble members, a search's trial count) is a valid seed."""
        span = self.max_repeats
        if self.design == "search":
            # A search seeds its sampler with seed + trials so far (confirmation trials among them).
            span = max(span, self.search.trials + self.confirmation_trials + 1)
        if self.confirm is not None:
            span = max(span, self.max_repeats + self.confirm.seeds)  # confirmation seeds: seed + repeats onward
        if self.model.family == "ensemble":
            span += self.ensemble.members  # member k of a trial trains with seed + k
        if self.seed + span - 1 > MAX_SEED:
            raise ValueError(
                f"seed {self.seed}: the study would use seeds up to {self.seed + span - 1:,}, past {MAX_SEED:,} "
                f"(2**32 - 1, the largest seed NumPy and Keras take); use seed <= {MAX_SEED - span + 1:,}"
            )

    def _confirm_fits(self) -> None:
        """`confirm` belongs to a single-objective Optuna search that trains, with a baseline inside its ranges."""
        if self.confirm is None:
            return
        if self.design != "search":
            raise ValueError(
                f"confirm: re-runs a search's winner on fresh seeds; design {self.design} already runs every cell on "
                "every seed (raise repeats instead), so remove confirm"
            )
        if self.engine != "optuna":
            raise ValueError(f"confirm: needs engine optuna (engine {self.engine} chooses its own trials); remove confirm")
        if self.model.family == "ensemble" and self.ensemble.source == "study":
            raise ValueError("confirm: a weight study trains nothing to confirm (its trials score weight vectors); remove confirm")
        if len(self.objective) > 1:
            raise ValueError(
                "confirm: a search with several objectives has no single winner (its answer is a Pareto front); "
                "remove confirm or keep one objective"
            )
        self.confirmation_baseline()

    def confirmation_baseline(self) -> dict[str, Level]:
        """The configuration a search's winner is confirmed against: each active factor at `confirm.baseline`'s
        level, else at the file's fixed setting.

        Raises:
            ValueError: a `confirm.baseline` name that is no factor, or a level (or fixed setting) that is not
                one of the factor's levels or is outside its range.
        """
        chosen = self.confirm.baseline if self.confirm is not None else {}
        unknown = [name for name in chosen if name not in self.factors]
        if unknown:
            raise ValueError(f"confirm.baseline.{unknown[0]}: not a factor of this study; factors: {', '.join(self.factors)}")
        try:
            fixed = {**flatten(self.run_config({}, seed=self.seed).model_dump(mode="json")), **chosen}
        except ValidationError as error:
            raise ValueError(f"confirm: the fixed settings alone (the baseline) are no valid trial: {_first_message(error)}") from None
        cell: dict[str, Level] = {}
        for name, factor in self.factors.items():
            if not factor.active(cell):
                continue
            if name not in fixed:
                raise ValueError(f"confirm: the baseline's {name} has no fixed value; set it in the file's fixed settings")
            value = fixed[name]
            match = [level for level in factor.levels or () if same_level(level, value)]
            if factor.type == "categorical" and match:
                cell[name] = match[0]
            elif factor.type != "categorical" and factor.takes(value):
                cell[name] = int(value) if factor.type == "int" else float(value)
            else:
                kind = "levels" if factor.type == "categorical" else "searched range"
                where = f"confirm.baseline.{name}" if name in chosen else f"confirm: the baseline's {name}"
                raise ValueError(
                    f"{where} = {format_level(value)} is outside the {kind} ({factor.describe()}); "
                    + ("give a level the search could pick" if name in chosen else
                       "set it in the file's fixed settings to a value the search could pick")
                )
        return cell

    def confirmation_cell(self, role: str) -> str:
        """The cell attr of a confirmation trial: `confirm-best`, or the baseline's (with its levels when chosen).

        A baseline chosen with `confirm.baseline` (`ablate run --baseline`) gets its own cell, so
        trials of another baseline, run before the choice changed, never mix into its values.
        """
        if role == "best" or self.confirm is None or not self.confirm.baseline:
            return CONFIRM_CELLS[role]
        return f"{CONFIRM_CELLS['baseline']} {cell_key(self.confirmation_baseline())}"

    @property
    def confirmation_seeds(self) -> list[int]:
        """The fresh seeds a search's winner and baseline are confirmed on (none without `confirm`)."""
        start = self.seed + self.max_repeats
        return list(range(start, start + self.confirm.seeds)) if self.confirm is not None else []

    @property
    def confirmation_trials(self) -> int:
        """Trials `confirm` adds: the winner and the baseline on each fresh seed, the baseline on the winner's seeds."""
        if self.confirm is None:
            return 0
        return 2 * self.confirm.seeds + (self.max_repeats if self.search.seeds == "average" else 1)

    def _levels_valid(self) -> None:
        """Each level alone (a range: its bounds) must make a valid trial configuration."""
        for name, factor in self.factors.items():
            probes: list[tuple[int | None, Level]]
            if factor.type == "categorical":
                probes = list(enumerate(factor.levels or ()))
            else:
                if factor.low is None or factor.high is None:  # cannot happen: Factor._consistent requires both
                    raise ValueError(f"factors.{name}: a {factor.type} factor needs low and high")
                bounds: tuple[float, float] = (factor.low, factor.high)
                probes = [(None, int(b) if factor.type == "int" else b) for b in bounds]
            settings: dict[str, tuple[int | None, Level]] = {}
            for index, level in probes:
                where = f"factors.{name}" + ("" if index is None else f"[{index}]")
                try:
                    config = self.run_config(self._probe(name, level), seed=self.seed)
                except ValidationError as error:
                    raise ValueError(f"{where} = {level!r}: {_first_message(error)}") from None
                if index is None:
                    continue
                # `[4, 4.0]` or `[true, 1]` on a bool setting: two levels, one setting, duplicate cells.
                setting = repr(flatten(config.model_dump(mode="json")).get(name))
                if setting in settings:
                    first, first_level = settings[setting]
                    raise ValueError(
                        f"{where} = {format_level(level)} is the same setting as factors.{name}[{first}] = "
                        f"{format_level(first_level)} (both give {name} = {setting}); keep one"
                    )
                settings[setting] = (index, level)

    def _probe(self, name: str, level: Level) -> dict[str, Level]:
        """A cell with `name` at `level`, the factors it switches on at their first level or low bound."""
        cell: dict[str, Level] = {}
        for other, factor in self.factors.items():
            if not factor.active(cell):
                continue
            if other == name:
                cell[other] = level
            elif factor.type == "categorical":
                cell[other] = self.baseline.get(other, (factor.levels or (None,))[0])
            else:
                cell[other] = int(factor.low or 0) if factor.type == "int" else factor.low
        return cell

    def backend_levels(self) -> tuple[str, ...]:
        """The backends a `train.backend` factor varies over; () when the backend is not a factor."""
        factor = self.factors.get(BACKEND_SETTING)
        return tuple(str(level) for level in factor.grid_levels(BACKEND_SETTING)) if factor is not None else ()

    def _backend_fits(self) -> None:
        if BACKEND_SETTING not in self.factors:
            return
        if self.design == "search" or self.engine != "optuna":
            raise ValueError(
                f"factors.{BACKEND_SETTING}: the backend as a factor needs design grid or one-at-a-time with engine "
                "optuna (each level's enqueued trials run in workers of that backend; a searched trial runs in the "
                "worker that asked for it)"
            )
        if self.train.backend is not None:
            raise ValueError(f"{BACKEND_SETTING} is both fixed ({self.train.backend}) and a factor; keep one")

    def _search_fits(self) -> None:
        search = self.search
        # A weight study searches the members' simplex coordinates (ensemble.u0..), not factors.
        if not self.factors and not (self.model.family == "ensemble" and self.ensemble.source == "study"):
            raise ValueError("design: search needs at least one factor to search over")
        engine_samplers = KERAS_TUNER_SAMPLERS if self.engine == "keras-tuner" else OPTUNA_SAMPLERS
        if search.sampler not in engine_samplers:
            raise ValueError(
                f"search.sampler {search.sampler!r} is not a sampler of engine {self.engine}; use one of "
                f"{', '.join(engine_samplers)}"
            )
        multi = len(self.objective) > 1
        if multi and self.engine == "keras-tuner":
            raise ValueError("engine: keras-tuner optimises one objective; use engine: optuna with search.sampler: nsga2")
        if self.engine == "keras-tuner" and search.sampler == "hyperband" and search.seeds == "average":
            raise ValueError(
                "search.sampler hyperband gives each trial an epoch budget, which seeds: average cannot split "
                "over seeds; use seeds: spread, or sampler bayesian or random"
            )
        if multi and search.sampler not in ("nsga2", "random", "tpe"):
            raise ValueError(f"search.sampler {search.sampler} optimises one objective; with several use nsga2, tpe or random")
        if search.sampler == "cmaes" and any(f.type == "categorical" for f in self.factors.values()):
            names = [n for n, f in self.factors.items() if f.type == "categorical"]
            raise ValueError(f"search.sampler cmaes searches int and float factors only; {names} are categorical (use tpe or gp)")
        if search.pruner != "none" and multi:
            raise ValueError("Optuna's pruners work on one objective; use search.pruner: none with several")
        if search.pruner == "wilcoxon" and search.seeds != "average":
            raise ValueError("search.pruner wilcoxon compares a trial's seeds, so it needs search.seeds: average")
        if search.pruner == "wilcoxon" and self.max_repeats < 5:
            raise ValueError(
                f"search.pruner wilcoxon cannot stop a trial with repeats={self.max_repeats}: a signed-rank test over n "
                "seeds reaches p < 0.1 only from the 4th seed, and a seed must remain to be saved; use repeats >= 5"
            )
        if search.pruner not in ("none", "wilcoxon") and search.seeds == "average":
            raise ValueError(
                f"search.pruner {search.pruner} stops trials by epoch; with search.seeds: average a trial reports per "
                "seed, so use pruner wilcoxon or none (or seeds: spread)"
            )

    @property
    def experiment(self) -> str:
        """The MLflow experiment of this study."""
        return self.tracking.experiment or self.name

    @property
    def seeds(self) -> list[int]:
        """The seeds every cell runs with (a sequential study: those it may run, in the order rounds add them)."""
        return list(range(self.seed, self.seed + self.max_repeats))

    @property
    def primary(self) -> ObjectiveSpec:
        """The first objective: what pruners, summaries and single-objective reports use."""
        return self.objective[0]

    @property
    def planned_trials(self) -> int:
        """How many trials the study runs: cells x seeds, or the search's trial budget and its confirmation trials."""
        if self.design == "search":
            return self.search.trials + self.confirmation_trials
        return len(self.cells()) * self.max_repeats

    @property
    def levels(self) -> dict[str, list[Level]]:
        """Each factor's enumerated levels (grid and one-at-a-time designs), in file order."""
        return {name: factor.grid_levels(name) for name, factor in self.factors.items()}

    @property
    def comparison_baselines(self) -> dict[str, Level]:
        """Each factor's reference level in the report's comparisons: `baseline`'s (one-at-a-time), else its first."""
        return {name: self.baseline.get(name, levels[0]) for name, levels in self.levels.items() if levels}

    @property
    def reference(self) -> dict[str, Level]:
        """The baseline cell: `baseline`'s levels, else each active factor's first level."""
        cell: dict[str, Level] = {}
        for name, factor in self.factors.items():
            if factor.active(cell):
                cell[name] = self.baseline.get(name, factor.grid_levels(name)[0])
        return cell

    def cells(self) -> list[dict[str, Level]]:
        """The configurations an enumerated design runs; a search has none (its sampler chooses).

        `grid`: the full factorial, in file order; a conditional factor is crossed only with the
        levels of its parent that switch it on. `one-at-a-time`: the baseline, then for each
        factor each of its other levels with everything else at the baseline (leave one
        component out); conditional factors follow their parent.
        """
        if self.design == "search":
            return []
        if self.design == "one-at-a-time":
            return self._one_at_a_time()
        cells: list[dict[str, Level]] = [{}]
        for name, factor in self.factors.items():
            grown: list[dict[str, Level]] = []
            for cell in cells:
                if factor.active(cell):
                    grown.extend({**cell, name: level} for level in factor.grid_levels(name))
                else:
                    grown.append(cell)
            cells = grown
        return cells

    def probe_cells(self, section: str) -> list[dict[str, Level]]:
        """Cells that reach every value the trials give the settings of `section` (`data`, `model`).

        A grid: its cells. A search: the reference probe, and each of the section's factors at each
        level (categorical) or bound (int, float), the other factors at their reference.
        """
        if self.design != "search":
            return self.cells()
        cells = [self.reference_probe()]
        for name, factor in self.factors.items():
            if name.startswith(f"{section}."):
                levels = factor.levels or () if factor.type == "categorical" else (factor.low, factor.high)
                cells.extend(self._probe(name, int(v) if factor.type == "int" and v is not None else v) for v in levels)
        return cells

    def data_configs(self) -> list[DataConfig]:
        """The distinct data settings the study's trials use (a search: its data factors' levels and bounds)."""
        found: list[DataConfig] = []
        for cell in self.probe_cells("data"):
            data = self.run_config(cell, seed=self.seed).data
            if data not in found:
                found.append(data)
        return found

    def reference_probe(self) -> dict[str, Level]:
        """A search's first cell: each active factor at its first level or low bound."""
        return self._probe("", None)

    def _one_at_a_time(self) -> list[dict[str, Level]]:
        reference = self.reference
        variants = [reference]
        seen = {cell_key(reference)}
        for name, factor in self.factors.items():
            if name not in reference:
                continue  # switched off at the baseline: it has no variant of its own
            for level in factor.grid_levels(name):
                if level == reference[name]:
                    continue
                variant = self.complete_cell({**reference, name: level}, fixed=name)
                if cell_key(variant) not in seen:
                    seen.add(cell_key(variant))
                    variants.append(variant)
        return variants

    def complete_cell(self, cell: dict[str, Level], *, fixed: str) -> dict[str, Level]:
        """`cell` with conditional factors made consistent after `fixed` changed level.

        Factors whose condition no longer holds are dropped; factors switched on take their
        baseline (or first) level.
        """
        out: dict[str, Level] = {}
        for name, factor in self.factors.items():
            if not factor.active(out):
                continue
            if name == fixed or name in cell:
                out[name] = cell[name]
            else:
                out[name] = self.baseline.get(name, factor.grid_levels(name)[0])
        return out

    def run_config(self, params: dict[str, Level], *, seed: int) -> RunConfig:
        """The frozen config of one trial: the fixed settings with the cell's levels applied."""
        # Only what the file set: derived defaults (model.block from residual_blocks) are derived
        # again after the cell's levels apply.
        tree: dict[str, Any] = {
            section: getattr(self, section).model_dump(exclude_unset=True) for section in SECTIONS
        }
        tree["seed"] = seed
        tree["task"] = self.task
        for name, value in params.items():
            set_dotted(tree, name, value)
        return RunConfig.model_validate(tree)

    def to_file(self) -> dict[str, Any]:
        """The spec as a study file holds it: every setting, less those derived from others.

        `model.block` left out of the file follows `model.residual_blocks`; written back as the
        derived `plain`, it would then conflict with a factor that varies `residual_blocks`. This
        is what the storage keeps (workers rebuild the spec from it) and what `best.yaml` starts from.
        """
        data = self.model_dump(mode="json")
        if "block" not in self.model.model_fields_set:
            data["model"].pop("block", None)
        if self.model.family == "custom":  # the U-Net's settings mean nothing to a custom model
            data["model"] = {k: v for k, v in data["model"].items() if k in CUSTOM_MODEL_SETTINGS}
        for section, key in (name.split(".") for name in OPTIONAL_SETTINGS):
            if data[section].get(key) in (None, []):
                data[section].pop(key, None)
        return data

    def fingerprint(self) -> dict[str, Any]:
        """The settings that make results comparable; a study may resume only if they agree."""
        return self.model_dump(
            mode="json", include={"task", *SECTIONS, "objective", "design", "search", "engine"}
        )


BACKEND_SETTING = "train.backend"
DETERMINISTIC_SETTING = "train.deterministic"  # process-wide in the backends: never a factor
AUTO_REMOVAL = "auto"  # the `model.remove` factor that means: each skip connection of the built model

# Settings added to the schema after studies were stored, with the default that gives the results
# those studies had: a stored fingerprint without one of them still agrees while it is at this value.
ADDED_SETTINGS: dict[str, Any] = {"model.remove": "none", "task": "denoise", "train.metrics": [], "train.backend": None,
                                 "train.deterministic": False}


def _setting_names() -> set[str]:
    defaults = {
        "data": DataConfig().model_dump(),
        "model": ModelConfig().model_dump(),
        "train": TrainConfig().model_dump(),
        "diffusion": DiffusionConfig().model_dump(),
        "ensemble": EnsembleConfig().model_dump(),
    }
    return set(flatten(defaults))
