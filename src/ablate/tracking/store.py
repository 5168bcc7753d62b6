"""MLflow's database stores across `fork`: build them once in a warm process, give each fork its own connections.

The one place that reaches MLflow internals (`MlflowClient._tracking_client`, `SqlAlchemyStore._engine_map`),
checked against the MLflow version in `tests/test_internals.py`; each use falls back to doing nothing when
this MLflow keeps them elsewhere.
"""

from __future__ import annotations

import sys
from typing import Any

from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient


def build_store(tracking_uri: str) -> None:
    """Build and cache MLflow's store for a database `tracking_uri` in this process.

    Building it checks the store's schema with alembic (~2.5 s, in every new process); MLflow caches
    the store per URI, so forks of this process find it built. A server URI has no store to build.
    """
    if mlflow_engines() is None or tracking_uri.startswith(("http:", "https:")):
        return
    MlflowClient(tracking_uri)._tracking_client.store  # noqa: B018 - built and cached by MLflow


def mlflow_engines() -> dict[str, Any] | None:
    """MLflow's engines of database stores, by URI (None where this MLflow keeps them elsewhere)."""
    engines = getattr(SqlAlchemyStore, "_engine_map", None)
    return engines if isinstance(engines, dict) else None


def reset_connections_after_fork() -> None:
    """In a fork: drop the pooled connections inherited from the warm parent, without closing them.

    SQLAlchemy's recipe for engines used across `fork`: `dispose(close=False)` leaves the parent's
    connections alone and makes this process open its own.
    """
    if "mlflow" not in sys.modules:
        return
    for engine in list((mlflow_engines() or {}).values()):
        engine.dispose(close=False)
