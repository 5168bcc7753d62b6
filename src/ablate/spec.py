"""Study files: the only YAML reader, validated with pydantic before anything is created.

A study file names the question (`factors` and their levels), the fixed settings of every trial
(`data`, `model`, `train`), the design and the number of seeds (`repeats`), the objective, the
tracking settings, and optional named `profiles` of overrides. `load_spec` applies, in order,
the file, the chosen profile and the `--set` overrides, and validates the result as a whole, so
an override is checked exactly like the file.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ablate.errors import AblateError
from ablate.config import DataConfig, Frozen, ModelConfig, RunConfig, TrainConfig, flatten

Level = bool | int | float | str | None
NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"
METRICS: tuple[str, ...] = ("val_loss", "val_mse", "val_psnr", "train_loss", "train_mse", "train_psnr")
MAX_CELLS = 10_000


class SpecError(AblateError, ValueError):
    """A study file (with its profile and overrides) that cannot be used; says where and why."""


class ObjectiveSpec(Frozen):
    """The metric a trial's value is: exactly the logged metric of that name at the last epoch."""

    metric: Literal["val_loss", "val_mse", "val_psnr", "train_loss", "train_mse", "train_psnr"] = "val_loss"
    direction: Literal["minimize", "maximize"] = "minimize"


class TrackingSpec(Frozen):
    """What MLflow records besides params and per-epoch metrics."""

    experiment: str | None = Field(None, min_length=1, description="MLflow experiment; default: the study name")
    image_every: int = Field(5, ge=0, description="log the reconstruction grid every N epochs (0: only at the end)")
    images: int = Field(8, ge=1, le=32, description="fixed validation images in the reconstruction grid")


class StudySpec(Frozen):
    """One study file, validated."""

    name: str = Field(pattern=NAME_PATTERN, description="how every command refers to the study")
    description: str = ""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    factors: dict[str, list[Level]] = Field(default_factory=dict)
    design: Literal["grid"] = "grid"
    repeats: int = Field(3, ge=1, le=1000, description="seeds per cell")
    seed: int = Field(0, ge=0, description="first seed; a cell runs seeds seed .. seed+repeats-1")
    objective: ObjectiveSpec = ObjectiveSpec()
    tracking: TrackingSpec = TrackingSpec()
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("factors")
    @classmethod
    def _factors_are_settings(cls, factors: dict[str, list[Level]]) -> dict[str, list[Level]]:
        settings = _setting_names()
        for name, levels in factors.items():
            if name not in settings:
                close = [s for s in settings if s.split(".")[-1] == name.split(".")[-1]]
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(
                    f"factor {name!r} is not a setting. Expected a dotted name under data., model. "
                    f"or train.{hint}"
                )
            if not levels:
                raise ValueError(f"factor {name!r} has no levels (an empty grid); give at least one")
            if len({repr(level) for level in levels}) != len(levels):
                raise ValueError(f"factor {name!r} repeats a level: {levels}")
        return factors

    @field_validator("profiles")
    @classmethod
    def _profile_names(cls, profiles: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name in profiles:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"profile name {name!r} must match {NAME_PATTERN}")
        return profiles

    @model_validator(mode="after")
    def _every_cell_is_valid(self) -> StudySpec:
        n_cells = math.prod(len(levels) for levels in self.factors.values())
        if n_cells > MAX_CELLS:
            raise ValueError(f"the grid has {n_cells} cells, more than {MAX_CELLS}; use fewer levels")
        for name, levels in self.factors.items():
            for index, level in enumerate(levels):
                try:
                    self.run_config({name: level}, seed=self.seed)
                except ValidationError as error:
                    raise ValueError(f"factors.{name}[{index}] = {level!r}: {_first_message(error)}") from None
        for cell in self.cells():
            try:
                self.run_config(cell, seed=self.seed)
            except ValidationError as error:
                raise ValueError(f"the cell {cell} is not a valid configuration: {_first_message(error)}") from None
        return self

    @property
    def experiment(self) -> str:
        """The MLflow experiment of this study."""
        return self.tracking.experiment or self.name

    @property
    def seeds(self) -> list[int]:
        """The seeds every cell runs with."""
        return list(range(self.seed, self.seed + self.repeats))

    def cells(self) -> list[dict[str, Level]]:
        """The full-factorial grid: one dict of factor levels per cell, in file order."""
        names = list(self.factors)
        return [dict(zip(names, combo)) for combo in itertools.product(*self.factors.values())]

    def run_config(self, params: dict[str, Level], *, seed: int) -> RunConfig:
        """The frozen config of one trial: the fixed settings with the cell's levels applied."""
        # Only what the file set: derived defaults (model.block from residual_blocks) are derived
        # again after the cell's levels apply.
        tree: dict[str, Any] = {
            "data": self.data.model_dump(exclude_unset=True),
            "model": self.model.model_dump(exclude_unset=True),
            "train": self.train.model_dump(exclude_unset=True),
            "seed": seed,
        }
        for name, value in params.items():
            set_dotted(tree, name, value)
        return RunConfig.model_validate(tree)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that make results comparable; a study may resume only if they agree."""
        return self.model_dump(mode="json", include={"data", "model", "train", "objective", "design"})


def cell_key(params: dict[str, Level]) -> str:
    """A stable, readable key of one cell: `model.skip=concat,train.epochs=5`."""
    return ",".join(f"{name}={_format_level(params[name])}" for name in sorted(params)) or "baseline"


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec and how it was made (file, profile, overrides), for messages and tags."""

    spec: StudySpec
    path: Path | None
    profile: str | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)


def load_spec(
    path: str | Path,
    *,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> LoadedSpec:
    """Read, override and validate a study file.

    Args:
        path: the YAML study file.
        profile: a name under `profiles:` whose overrides apply after the file.
        overrides: `dotted.name=value` strings applied last; values are parsed as YAML.

    Raises:
        SpecError: with the file, the field path and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such study file. List the shipped ones with `ls studies/`.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {error}") from None
    return spec_from_dict(raw, source=str(path), path=path, profile=profile, overrides=overrides)


def spec_from_dict(
    raw: Any,
    *,
    source: str = "<study>",
    path: Path | None = None,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> LoadedSpec:
    """Validate an already parsed study (see `load_spec`)."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a study file must be a mapping of settings, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)  # profiles and overrides must not change the caller's dict
    where = source
    if profile is not None:
        profiles = raw.get("profiles") or {}
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise SpecError(f"{source}: no profile {profile!r}; this file defines: {known}")
        changes = profiles[profile]
        if not isinstance(changes, dict):
            raise SpecError(f"{source}: profiles.{profile} must be a mapping of settings")
        for name, value in flatten_profile(changes).items():
            set_dotted(raw, name, value)
        if "name" not in changes:
            raw["name"] = f"{raw.get('name')}-{profile}"
        where += f" with profile {profile!r}"
    for item in overrides:
        name, value = parse_override(item)
        set_dotted(raw, name, value)
    if overrides:
        where += " with " + " ".join(f"--set {item}" for item in overrides)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, where)) from None
    return LoadedSpec(spec=spec, path=path, profile=profile, overrides=tuple(overrides))


def parse_override(item: str) -> tuple[str, Any]:
    """Split `train.epochs=1` into the dotted name and its YAML-parsed value."""
    name, sep, text = item.partition("=")
    if not sep or not name.strip():
        raise SpecError(f"--set {item!r}: expected dotted.name=value, e.g. --set train.epochs=1")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise SpecError(f"--set {item!r}: the value is not valid YAML: {error}") from None
    return name.strip(), value


def flatten_profile(changes: dict[str, Any]) -> dict[str, Any]:
    """A profile may nest (`train: {epochs: 5}`) or use dotted keys; factor level lists stay whole."""
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "factors" and isinstance(value, dict):
            flat.update({f"factors.{name}": levels for name, levels in value.items()})
        elif isinstance(value, dict) and key not in ("profiles",):
            flat.update(flatten(value, f"{key}."))
        else:
            flat[key] = value
    return flat


def set_dotted(tree: dict[str, Any], name: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for `name = "a.b.c"`, creating mappings on the way.

    Keys of `factors` are themselves dotted (`factors.model.skip`): below `factors`, the rest of
    the name is one key.
    """
    parts = name.split(".")
    node = tree
    for index, part in enumerate(parts[:-1]):
        if part == "factors" and index == 0:
            factors = node.setdefault("factors", {})
            if not isinstance(factors, dict):
                raise SpecError(f"cannot set {name}: factors is not a mapping")
            factors[".".join(parts[1:])] = value
            return
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"cannot set {name}: {'.'.join(parts[: index + 1])} is {child!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def format_validation_error(error: ValidationError, where: str) -> str:
    """One line per problem: the field path, what was wrong, and what was given."""
    lines = [f"{where}: {error.error_count()} problem(s)"]
    for item in error.errors(include_url=False):
        loc = _format_loc(item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; `ablate validate --help` lists the sections)"
        elif item["type"] == "literal_error":
            message = f"{message}; received {item['input']!r}"
        elif "input" in item and not isinstance(item["input"], dict) and item["type"] != "missing":
            message = f"{message}; received {item['input']!r}"
        lines.append(f"  {loc}: {message}" if loc else f"  {message}")
    return "\n".join(lines)


def _format_loc(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _first_message(error: ValidationError) -> str:
    item = error.errors(include_url=False)[0]
    loc = _format_loc(item["loc"])
    message = item["msg"].removeprefix("Value error, ")
    return f"{loc}: {message}" if loc else message


def _format_level(level: Level) -> str:
    return "null" if level is None else str(level).lower() if isinstance(level, bool) else str(level)


def _setting_names() -> set[str]:
    defaults = {"data": DataConfig().model_dump(), "model": ModelConfig().model_dump(), "train": TrainConfig().model_dump()}
    return set(flatten(defaults))
