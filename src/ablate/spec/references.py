"""The settings that name files: where they resolve, and the fingerprint of a custom model's builder.

A study file names files in three settings: `data.path` (a dataset file or folder), `data.loader`
and `model.builder` (`MODULE:FUNCTION`, the MODULE a `.py` file or an importable module). In a
study file (and its profiles) a relative path is relative to the study file's folder, so a study
runs the same from any working directory; in a `--set` it is relative to the working directory,
as on any command line. Either way the stored study holds the absolute path.

`MODULE:FUNCTION` resolves to `/abs/MODULE.py:FUNCTION` when that file lies beside the study file
(a dotted `pkg.mod` to `pkg/mod.py`), else stays an importable module name. `source_digest` is the
SHA-256 of the module's source file: stored as `model.builder_digest`, it lets a worker on another
machine refuse a builder that differs from the one the study was made with.

No Keras here, and nothing is imported: `importlib.util.find_spec` only locates a module's file.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.spec.errors import SpecError
from ablate.spec.run_config import ModelConfig

PATH_SETTINGS = ("data.path",)
REFERENCE_SETTINGS = ("data.loader", "model.builder")


def resolve_setting(name: str, value: Any, base: Path) -> Any:
    """`value` of setting `name` made absolute against `base` (unchanged for other settings, or non-strings)."""
    if not isinstance(value, str) or not value:
        return value
    if name in PATH_SETTINGS:
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base / path).resolve())
    if name in REFERENCE_SETTINGS and ":" in value:
        module, _, function = value.rpartition(":")
        if module.endswith(".py"):
            path = Path(module).expanduser()
            return f"{path if path.is_absolute() else (base / path).resolve()}:{function}"
        beside = base / Path(*module.split("."))
        if beside.with_suffix(".py").is_file():
            return f"{beside.with_suffix('.py').resolve()}:{function}"
    return value


def resolve_tree(raw: dict[str, Any], base: Path) -> None:
    """Resolve, in place, every file-naming setting of a parsed study: the fixed ones and factor levels."""
    for name in (*PATH_SETTINGS, *REFERENCE_SETTINGS):
        section, key = name.split(".")
        fixed = raw.get(section)
        if isinstance(fixed, dict) and key in fixed:
            fixed[key] = resolve_setting(name, fixed[key], base)
        factors = raw.get("factors")
        if not isinstance(factors, dict):
            continue
        factor = factors.get(name)
        if isinstance(factor, list):
            factors[name] = [resolve_setting(name, level, base) for level in factor]
        elif isinstance(factor, dict) and isinstance(factor.get("levels"), list):
            factor["levels"] = [resolve_setting(name, level, base) for level in factor["levels"]]


def source_file(reference: str, setting: str = "model.builder") -> Path:
    """The source file of `MODULE:FUNCTION`'s module.

    Raises:
        SpecError: naming the setting, when there is no such file or importable module.
    """
    module, _, _ = reference.rpartition(":")
    if module.endswith(".py"):
        path = Path(module)
        if not path.is_file():
            raise SpecError(
                f"{setting} {reference!r}: no file {path}; a MODULE is a .py file beside the study file "
                "(or a path to one) or an importable module"
            )
        return path
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as error:
        found, reason = None, f" ({error})"
    else:
        reason = ""
    if found is None or not found.origin or not Path(found.origin).is_file():
        raise SpecError(
            f"{setting} {reference!r}: no module {module!r} beside the study file, and none importable{reason}; "
            f"put {module.replace('.', '/')}.py beside the study file, or install the package that has it"
        )
    return Path(found.origin)


def source_digest(reference: str, setting: str = "model.builder") -> str:
    """The SHA-256 (hex) of the source file of `reference`'s module."""
    return hashlib.sha256(source_file(reference, setting).read_bytes()).hexdigest()


class BuilderChangedError(AblateError):
    """The builder's source file differs from the one the study was made with: refused, exit 2."""

    exit_status = 2


def check_builder(model: ModelConfig) -> None:
    """Refuse a builder whose source file is not the one the study was made with (`model.builder_digest`).

    Raises:
        BuilderChangedError: naming the file and what to do.
    """
    reference, digest = model.builder or "", model.builder_digest
    if digest is None:
        return
    try:
        here = source_digest(reference)
    except AblateError as error:
        raise BuilderChangedError(f"{error} (this study was made with a builder of SHA-256 {digest[:12]}...)") from None
    if here != digest:
        raise BuilderChangedError(
            f"model.builder {reference!r}: this copy of its file (SHA-256 {here[:12]}...) differs from the one the study "
            f"was made with ({digest[:12]}...); training it would put a different model under the same study. "
            "Use the study's version of the file, or run the changed model as a new study (--set name=...)"
        )
