"""Shared helpers of the benchmark scripts: the machine and versions, tables, and JSON results.

Benchmarks are not tests: each script measures, prints a table (with the machine and versions),
and writes its numbers to benchmarks/results/NAME.json, which docs/performance.md quotes.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("ablate", "keras", "tensorflow", "jax", "torch", "optuna", "mlflow", "numpy")


def environment() -> dict[str, Any]:
    """What the numbers were measured on."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def timed(function: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(name: str, title: str, columns: list[str], rows: list[list[Any]], extra: dict[str, Any]) -> Path:
    """Print the table with the environment, and write everything to results/NAME.json."""
    from rich.console import Console
    from rich.table import Table

    env = environment()
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
    console = Console()
    console.print(table)
    console.print(
        f"{env['processor']} ({env['cores']} cores), Python {env['python']}, "
        + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v)
    )
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"environment": env, "columns": columns, "rows": rows, **extra}, indent=2) + "\n")
    console.print(f"wrote {path}")
    return path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
