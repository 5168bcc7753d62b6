"""Reading a study file: YAML (safe-loaded), then its profile, then `--set` overrides, validated as one whole.

An override is checked exactly like the file, so every error names the field path and what was given.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ablate.spec.dotted import flatten, set_dotted
from ablate.spec.errors import SpecError, format_validation_error, shorten
from ablate.spec.references import PATH_SETTINGS, REFERENCE_SETTINGS, resolve_setting, resolve_tree, source_digest
from ablate.spec.run_config import REFERENCE_PATTERN
from ablate.spec.study_spec import StudySpec

MAX_VALUES = 100_000  # values a study file may expand to (its largest shipped one has a few hundred)


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
    return spec_from_dict(read_study_file(path), source=str(path), path=path, profile=profile, overrides=overrides)


def check_profiles(path: str | Path, *, overrides: list[str] | tuple[str, ...] = ()) -> LoadedSpec:
    """Load a study file and check that each of its profiles applies cleanly; return the plain spec.

    The file is read once, and each profile is validated against the file without the other
    profiles, so a file with P profiles costs P small validations, not P full ones.

    Raises:
        SpecError: for the file, or the first profile that does not apply.
    """
    path = Path(path)
    raw = read_study_file(path)
    loaded = spec_from_dict(raw, source=str(path), path=path, overrides=overrides)
    base = {key: value for key, value in raw.items() if key != "profiles"}
    for name, changes in (raw.get("profiles") or {}).items():
        spec_from_dict({**base, "profiles": {name: changes}}, source=str(path), path=path, profile=name, overrides=overrides)
    return loaded


def read_study_file(path: Path) -> Any:
    """The parsed YAML of a study file (`spec_from_dict` refuses one that expands past `MAX_VALUES`).

    YAML aliases (`&a` / `*a`) let a few hundred bytes stand for billions of values: PyYAML builds
    each anchor once and shares it, but validating or printing the result walks every copy. The
    expanded size is counted with each shared value counted once per use (memoised, so linear).
    """
    if not path.is_file():
        raise SpecError(f"{path}: no such study file. List the shipped ones with `ls studies/`.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"{path}: not a text file in UTF-8 (byte {error.start} is {error.object[error.start]:#04x}); "
            "a study file is YAML text: save it as UTF-8"
        ) from None
    except OSError as error:
        raise SpecError(f"{path}: cannot read it ({error.strerror or error})") from None
    return parse_yaml(text, str(path))


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (it would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: construct_mapping below says so
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (first on line {first}); keep one", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """Safe-load YAML text, duplicate keys refused; a YAML error becomes a `SpecError` naming `source`."""
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # UniqueKeyLoader is a SafeLoader: no arbitrary objects
    except yaml.YAMLError as error:
        raise SpecError(f"{source}: not valid YAML: {shorten(str(error))}") from None


def expanded_size(value: Any, memo: dict[int, int] | None = None) -> int:
    """How many values `value` holds once every shared (aliased) value is counted at each use."""
    memo = {} if memo is None else memo
    key = id(value)
    if key in memo:
        return memo[key]
    if isinstance(value, dict):
        size = 1 + sum(expanded_size(k, memo) + expanded_size(v, memo) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        size = 1 + sum(expanded_size(item, memo) for item in value)
    else:
        size = 1
    if isinstance(value, (dict, list, tuple)):
        memo[key] = size  # scalars may share ids (small ints, interned strings): size 1 either way
    return size


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
    if expanded_size(raw) > MAX_VALUES:
        raise SpecError(
            f"{source}: expands to more than {MAX_VALUES:,} values (YAML aliases, `*name`, nested inside each "
            "other?); a study file needs far fewer: write the values out, or use fewer aliases"
        )
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
    # Files named in the study file are relative to its folder; named in --set, to the working directory
    # (a study made in code, without a file, keeps its values: relative to the working directory).
    if path is not None:
        resolve_tree(raw, path.parent.resolve())
    for item in overrides:
        name, value = parse_override(item)
        setting = name.removeprefix("factors.")
        if setting in (*PATH_SETTINGS, *REFERENCE_SETTINGS):
            value = [resolve_setting(setting, v, Path.cwd()) for v in value] if isinstance(value, list) else resolve_setting(setting, value, Path.cwd())
        set_dotted(raw, name, value)
    if overrides and expanded_size(raw) > MAX_VALUES:
        raise SpecError(f"{source}: with --set, expands to more than {MAX_VALUES:,} values (YAML aliases in a --set value?)")
    if overrides:
        where += " with " + " ".join(f"--set {item}" for item in overrides)
    _set_builder_digest(raw, where)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as error:
        raise SpecError(format_validation_error(error, where)) from None
    return LoadedSpec(spec=spec, path=path, profile=profile, overrides=tuple(overrides))


def _set_builder_digest(raw: dict[str, Any], where: str) -> None:
    """Set `model.builder_digest` from the builder's source file (any value given is replaced)."""
    model = raw.get("model")
    factors = raw.get("factors")
    for name in ("model.builder", "model.builder_digest"):
        if isinstance(factors, dict) and name in factors:
            raise SpecError(
                f"{where}: factors.{name}: the builder is fixed for a study (workers check its file's fingerprint); "
                "compare models through model.params, or run one study per builder"
            )
    if not isinstance(model, dict):
        return
    model.pop("builder_digest", None)
    builder = model.get("builder")
    if isinstance(builder, str) and re.match(REFERENCE_PATTERN, builder):
        try:
            model["builder_digest"] = source_digest(builder)
        except SpecError as error:
            raise SpecError(f"{where}: {error}") from None


def parse_override(item: str) -> tuple[str, Any]:
    """Split `train.epochs=1` into the dotted name and its YAML-parsed value."""
    name, sep, text = item.partition("=")
    if not sep or not name.strip():
        raise SpecError(f"--set {item!r}: expected dotted.name=value, e.g. --set train.epochs=1")
    value = parse_yaml(text, f"--set {item!r}: the value") if text.strip() else None
    return name.strip(), value


def flatten_profile(changes: dict[str, Any]) -> dict[str, Any]:
    """A profile may nest (`train: {epochs: 5}`) or use dotted keys; factors stay whole."""
    flat: dict[str, Any] = {}
    for key, value in changes.items():
        if key == "factors" and isinstance(value, dict):
            flat.update({f"factors.{name}": levels for name, levels in value.items()})
        elif key.startswith("factors.") or key in ("baseline", "objective", "repeats"):
            flat[key] = value  # a factor's mapping (type, low, high, ...), or repeats' rounds, replaces it whole
        elif isinstance(value, dict) and key not in ("profiles",):
            flat.update(flatten(value, f"{key}."))
        else:
            flat[key] = value
    return flat
