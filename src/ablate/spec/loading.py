"""Reading a study file: YAML (safe-loaded), then its profile, then `--set` overrides, validated as one whole.

An override is checked exactly like the file, so every error names the field path and what was given.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ablate.spec.dotted import flatten, set_dotted
from ablate.spec.errors import SpecError, format_validation_error
from ablate.spec.study_spec import StudySpec


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
    """A profile may nest (`train: {epochs: 5}`) or use dotted keys; factors stay whole."""
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "factors" and isinstance(value, dict):
            flat.update({f"factors.{name}": levels for name, levels in value.items()})
        elif key.startswith("factors.") or key in ("baseline", "objective"):
            flat[key] = value  # a factor's mapping (type, low, high, ...) replaces the factor whole
        elif isinstance(value, dict) and key not in ("profiles",):
            flat.update(flatten(value, f"{key}."))
        else:
            flat[key] = value
    return flat
