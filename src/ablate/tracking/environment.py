"""Tags that say what produced a run: ablate's version and the git commit it ran from."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ablate


def environment_tags() -> dict[str, str]:
    """Package version, the Keras backend, and the git commit of the working directory, when there is one."""
    import keras  # imported already by every command that opens a run; its backend is fixed by then

    tags = {"ablate.version": ablate.__version__, "ablate.backend": keras.backend.backend()}
    commit = git_commit()
    if commit:
        tags["ablate.git_commit"] = commit
    return tags


def git_commit(cwd: Path | None = None) -> str | None:
    """The current commit (with `-dirty` when the tree has changes), or None outside a repository."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=5,
            check=False,  # a failing status reads as clean; the commit above is what matters
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}-dirty" if dirty else sha
