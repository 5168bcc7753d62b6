"""The project folder of the embedded default: one place for the Optuna storage and the MLflow store.

Every command run from the same folder finds the same studies: the folder is `./.ablate/` in the
working directory unless `ABLATE_HOME` or `--home` names another. A shared stack overrides the
two URLs with `--storage` / `ABLATE_STORAGE` and `--tracking-uri` / `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "ABLATE_HOME"
STORAGE_ENV = "ABLATE_STORAGE"
TRACKING_ENV = "MLFLOW_TRACKING_URI"


@dataclass(frozen=True)
class Project:
    """Where a command keeps its studies and runs.

    Attributes:
        home: the project folder (created on first use).
        storage: the Optuna storage URL.
        tracking_uri: the MLflow tracking URI.
        artifact_root: where new MLflow experiments keep artifacts, when the store is local.
    """

    home: Path
    storage: str
    tracking_uri: str
    artifact_root: str | None

    def ensure(self) -> Project:
        """Create the project folder if the store lives in it."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self


def resolve_project(
    *,
    home: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> Project:
    """Resolve the project from flags, then the environment, then `./.ablate`."""
    folder = Path(home or os.environ.get(HOME_ENV) or ".ablate").expanduser().resolve()
    storage = storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{folder / 'optuna.db'}"
    tracking_uri = tracking_uri or os.environ.get(TRACKING_ENV) or f"sqlite:///{folder / 'mlflow.db'}"
    local_store = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    artifact_root = (folder / "artifacts").as_uri() if local_store else None
    return Project(home=folder, storage=storage, tracking_uri=tracking_uri, artifact_root=artifact_root)
