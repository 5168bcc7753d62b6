"""Samplers whose package may be missing (gp needs PyTorch, cmaes the cmaes package): refused before anything exists.

Finding the package is enough; importing PyTorch would cost seconds.
"""

from __future__ import annotations

import importlib.util

from ablate.spec.errors import SamplerUnavailableError
from ablate.spec.study_spec import StudySpec

# Samplers whose package may be missing: the module to find, what needs it, how to install it.
OPTIONAL_SAMPLERS: dict[str, tuple[str, str, str]] = {
    "gp": ("torch", "Optuna's GPSampler, which runs on PyTorch", "pip install 'ablate[gp]'"),
    "cmaes": ("cmaes", "Optuna's CmaEsSampler, which needs the cmaes package", "pip install cmaes"),
}


def require_samplers(spec: StudySpec) -> None:
    """Refuse a study whose Optuna sampler needs a package that is not installed.

    Called before any study, run or folder is created (`ablate run`, `ablate validate`, and
    `open_study` for `ablate submit`), so a missing PyTorch never leaves an empty study behind.
    Finding the package is enough here; importing PyTorch would cost seconds.

    Raises:
        SamplerUnavailableError: names the setting, the package and the install command.
    """
    for setting, name in samplers_used(spec).items():
        if name not in OPTIONAL_SAMPLERS:
            continue
        module, what, install = OPTIONAL_SAMPLERS[name]
        if importlib.util.find_spec(module) is None:
            raise SamplerUnavailableError(
                f"study {spec.name!r}: {setting} {name} is {what}, and {module} is not installed. "
                f"Install it with `{install}`, or choose another sampler (--set {setting}=tpe)."
            )


def samplers_used(spec: StudySpec) -> dict[str, str]:
    """The Optuna samplers a study runs, by the setting that names them."""
    used: dict[str, str] = {}
    if spec.design == "search" and spec.engine == "optuna":
        used["search.sampler"] = spec.search.sampler
    if spec.model.family == "ensemble" and spec.ensemble.source == "train":
        used["ensemble.sampler"] = spec.ensemble.sampler  # each trial's own weight search
    return used
