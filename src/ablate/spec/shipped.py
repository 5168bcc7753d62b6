"""Where the study files shipped with ablate are: inside the installed package, or the repository's `studies/`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def studies_dir() -> Path:
    """The shipped study files: inside the installed package, or the repository's `studies/`."""
    packaged = resources.files("ablate").joinpath("studies")
    if packaged.is_dir():
        return Path(str(packaged))
    # Editable install from a clone: src/ablate/spec/shipped.py -> repository root.
    return Path(__file__).resolve().parents[3] / "studies"
