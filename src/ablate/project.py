"""The project folder of the embedded default: one place for the Optuna storage and the MLflow store.

Every command run from the same folder finds the same studies: the folder is `./.ablate/` in the
working directory unless `ABLATE_HOME` or `--home` names another. A shared stack overrides the
two URLs with `--storage` / `ABLATE_STORAGE` and `--tracking-uri` / `MLFLOW_TRACKING_URI`.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ablate.errors import AblateError

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
        """Create the project folder, and check that every local store's folder can be written.

        Raises:
            ProjectError: the folder (or a SQLite file's folder) is a file, is read-only, or cannot
                be made; the message says which setting named it.
        """
        writable_folder(self.home, "the project folder (--home or $ABLATE_HOME)")
        for url, setting in ((self.storage, "--storage or $ABLATE_STORAGE"), (self.tracking_uri, "--tracking-uri or $MLFLOW_TRACKING_URI")):
            path = sqlite_path(url)
            if path is not None:
                writable_folder(path.parent, f"the folder of the SQLite file {path} ({setting})")
        return self


class ProjectError(AblateError):
    """A project folder or store URL that cannot be used as given: bad input, exit 2."""

    exit_status = 2


def writable_folder(folder: Path, what: str) -> None:
    """Make `folder` (and its parents) if missing; refuse, by name, one that is a file or read-only."""
    if folder.exists() and not folder.is_dir():
        raise ProjectError(f"{what}: {folder} is a file, not a folder; name a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ProjectError(f"{what}: cannot create {folder} ({error.strerror or error}); name a folder you can write") from None
    try:  # a real write: os.access says yes to root on a read-only mount or in /sys
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ProjectError(f"{what}: cannot write in {folder} ({error.strerror or error}); name a folder you can write") from None


def sqlite_path(url: str) -> Path | None:
    """The file a `sqlite:///...` URL names (None for other URLs and in-memory SQLite)."""
    if not url.startswith("sqlite:"):
        return None
    path = unquote(urlsplit(url).path)
    if url.startswith("sqlite:////"):
        path = "/" + path.lstrip("/")
    elif path.startswith("/"):
        path = path[1:]  # sqlite:///relative.db
    if not path or path == ":memory:":
        return None
    return Path(path).expanduser().resolve()


# SQLAlchemy 2.1 maps a plain `postgresql://` to psycopg 3, 2.0 to psycopg2; ablate[service]
# installs psycopg2. A plain URL gets whichever driver is installed, so both forms work.
POSTGRES_DRIVERS = (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2"))


def database_url(url: str) -> str:
    """`url` with a plain PostgreSQL scheme (`postgresql://`, `postgres://`) given an installed driver.

    Raises:
        ProjectError: a PostgreSQL URL and neither psycopg nor psycopg2 installed.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        return url
    for module, driver in POSTGRES_DRIVERS:
        if _installed(module):
            return f"{driver}://{rest}"
    raise ProjectError(
        "a PostgreSQL URL needs a database driver, and neither psycopg nor psycopg2 is installed: "
        "pip install 'ablate[service]'"
    )


def resolve_project(
    *,
    home: str | Path | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> Project:
    """Resolve the project from flags, then the environment, then `./.ablate`."""
    folder = Path(home or os.environ.get(HOME_ENV) or ".ablate").expanduser().resolve()
    storage = database_url(storage or os.environ.get(STORAGE_ENV) or f"sqlite:///{folder / 'optuna.db'}")
    tracking_uri = database_url(tracking_uri or os.environ.get(TRACKING_ENV) or f"sqlite:///{folder / 'mlflow.db'}")
    local_store = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    artifact_root = (folder / "artifacts").as_uri() if local_store else None
    return Project(home=folder, storage=storage, tracking_uri=tracking_uri, artifact_root=artifact_root)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (None), or a module without a spec
        return False
