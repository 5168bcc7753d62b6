"""Importing the user's own code: a study's `model.builder` and `data.loader` (`MODULE:FUNCTION`).

MODULE is a `.py` file (the study loader made a name beside the study file absolute, see
`ablate.spec.references`) or an importable module. A file is imported under a name of its own
(`ablate_user.<stem>_<digest>`), with its folder on `sys.path` while it imports, so it may import
its sibling modules; the same file is imported once per process.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from ablate.errors import AblateError


class UserCodeError(AblateError):
    """The user's module or function cannot be imported or used: bad input, exit 2."""

    exit_status = 2


def import_function(reference: str, setting: str) -> Callable[..., Any]:
    """The function `reference` (`MODULE:FUNCTION`) names.

    Raises:
        UserCodeError: naming `setting`, for a module that is missing or fails to import, or a
            function it lacks.
    """
    module_name, _, function = reference.rpartition(":")
    module = _import_module(module_name, reference, setting)
    found = getattr(module, function, None)
    if not callable(found):
        names = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__)
        raise UserCodeError(
            f"{setting} {reference!r}: {module_name} has no function {function!r}"
            + (f"; it defines {', '.join(names)}" if names else "")
        )
    return found


def _import_module(name: str, reference: str, setting: str) -> ModuleType:
    try:
        if not name.endswith(".py"):
            return importlib.import_module(name)
        path = Path(name).resolve()
        if not path.is_file():
            raise UserCodeError(f"{setting} {reference!r}: no file {path}")
        key = f"ablate_user.{path.stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
        if key in sys.modules:
            return sys.modules[key]
        spec = importlib.util.spec_from_file_location(key, path)
        if spec is None or spec.loader is None:
            raise UserCodeError(f"{setting} {reference!r}: {path} is not a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))
        try:
            sys.modules[key] = module
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(key, None)
            raise
        finally:
            sys.path.remove(str(path.parent))
        return module
    except UserCodeError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's module failed to import: say which and why
        raise UserCodeError(f"{setting} {reference!r}: importing it failed: {type(error).__name__}: {error}") from None
