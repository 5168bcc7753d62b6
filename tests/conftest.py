"""Shared fixtures: a tiny real study file and an isolated project folder per test."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parents[1]


# The modules with the longest tests (worker processes, servers, other backends), run first: with
# `pytest -n 2 --dist worksteal` (`make test`) a long test that starts last would run alone at the
# end while the other process idles. Each module stays in one piece, so its module-scoped
# fixtures (an MLflow server, a trained study) are set up once.
HEAVY_FIRST = ("test_distributed", "test_backends", "test_recycle", "test_designs", "test_secrets", "test_service_cli")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the heavy modules first, each module's tests in their file order."""
    def rank(item: pytest.Item) -> int:
        module = item.module.__name__ if item.module is not None else ""
        return HEAVY_FIRST.index(module) if module in HEAVY_FIRST else len(HEAVY_FIRST)

    items.sort(key=rank)  # stable: the order within each module is kept


def tiny_study(name: str = "tiny", **changes: Any) -> dict[str, Any]:
    """A 2-variant x 2-seed study small enough to train in seconds on a CPU."""
    raw: dict[str, Any] = {
        "name": name,
        "description": "tiny end-to-end study for the tests",
        "data": {"dataset": "mnist-embedded", "train_size": 256, "val_size": 64, "test_size": 32},
        "model": {"filters": 4, "depth": 2},
        "train": {"epochs": 2, "batch_size": 64},
        "factors": {"model.skip": ["none", "concat"]},
        "repeats": 2,
        "tracking": {"image_every": 1, "images": 4},
    }
    raw.update(changes)
    return raw


@pytest.fixture
def write_study(tmp_path: Path):
    """Write a study dict to a YAML file under tmp_path and return its path."""

    def write(raw: dict[str, Any], filename: str = "study.yaml") -> Path:
        path = tmp_path / filename
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    return write


@pytest.fixture
def project(tmp_path: Path):
    """An isolated embedded project folder (local Optuna storage + local MLflow store)."""
    from ablate.project import resolve_project

    return resolve_project(home=tmp_path / "home")
