"""The study's answer as one JSON-ready dict: what every form (HTML, Markdown, JSON) renders.

Statistics come from `ablate.analysis` (the same code as `ablate reproduce`); this module only
arranges them: variants (cells) with intervals, effects per factor level, importances, learning
curves with a band over seeds, the median-seed run of each variant, the trials table and the
best configuration as a study file fragment.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import yaml

from ablate.analysis import (
    CI_METHOD,
    TEST_METHOD,
    Observation,
    cell_tuple,
    cell_values,
    level_estimate,
    mean_ci,
    observations_from,
    paired_difference,
    study_effects,
)
from ablate.report.collect import StudyData
from ablate.spec import StudySpec, cell_key, set_dotted, spec_from_dict

BAND_METHOD = "mean over seeds; the band spans the lowest to the highest seed at each epoch"
DEFAULT_UI = "http://127.0.0.1:5000"


def build_answer(
    data: StudyData, *, ui_url: str | None = None, importances: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Arrange a collected study into the report's answer.

    Args:
        data: the study as read from Optuna and MLflow.
        ui_url: the MLflow UI the trial links point to (default: the tracking server when it is
            one, else the address `ablate ui` serves on).
        importances: the result of `ablate.report.importance.importances`, when computed.
    """
    spec = data.spec
    records = [row.record for row in data.trials]
    observations = observations_from(records, seeds=spec.seeds)
    table = cell_values(observations, spec.factors)
    metric, direction = spec.objective.metric, spec.objective.direction
    effects = study_effects(observations, spec.factors, direction=direction, metric=metric)

    cells = []
    for cell in spec.cells():
        per_seed = table.get(cell_tuple(cell, spec.factors), {})
        cells.append({"cell": cell_key(cell), "params": cell, "estimate": mean_ci(per_seed.values()).as_dict(),
                      "per_seed": {str(s): v for s, v in sorted(per_seed.items())}})  # fmt: skip
    levels = [
        {"factor": f, "level": level, "estimate": level_estimate(table, spec.factors, f, level).as_dict()}
        for f, values in spec.factors.items()
        for level in values
    ]
    ui = _ui_base(ui_url, data.tracking_uri)
    return {
        "study": spec.name,
        "description": spec.description.strip(),
        "storage": data.storage,
        "tracking_uri": data.tracking_uri,
        "experiment_id": data.experiment_id,
        "parent_run_id": data.parent_run_id,
        "objective": {"metric": metric, "direction": direction},
        "design": {
            "kind": spec.design,
            "factors": {name: list(values) for name, values in spec.factors.items()},
            "baseline": {name: values[0] for name, values in spec.factors.items()},
            "seeds": spec.seeds,
            "cells": len(spec.cells()),
            "trials_planned": len(spec.cells()) * spec.repeats,
            "fixed": _fixed_settings(spec),
        },
        "counts": _counts(records),
        "methods": {"ci": CI_METHOD, "test": TEST_METHOD, "band": BAND_METHOD},
        "cells": cells,
        "levels": levels,
        "effects": [e.as_dict() for e in effects],
        "importances": importances or {"computed": False, "reason": "not computed (--bootstrap 0)"},
        "best": best_configuration(spec, observations),
        "curves": learning_curves(data),
        "median_runs": median_runs(data),
        "trials": [_trial_row(row, spec, data.experiment_id, ui) for row in data.trials],
    }


def best_configuration(spec: StudySpec, observations: list[Observation]) -> dict[str, Any] | None:
    """The cell with the best mean objective over seeds, as a ready-to-run study file fragment.

    Also compares it with the runner-up cell (paired by seed), so the page says whether "best"
    is distinguishable from second best at this number of seeds.
    """
    table = cell_values(observations, spec.factors)
    scored = [(cell, table.get(cell_tuple(cell, spec.factors), {})) for cell in spec.cells()]
    scored = [(cell, values) for cell, values in scored if values]
    if not scored:
        return None
    sign = 1 if spec.objective.direction == "minimize" else -1
    scored.sort(key=lambda item: sign * statistics.fmean(item[1].values()))
    cell, values = scored[0]
    name = f"{spec.name}-best"[:100]
    fragment: dict[str, Any] = {
        "name": name,
        "description": f"best cell of study {spec.name}: {cell_key(cell)}",
        **spec.model_dump(mode="json", include={"data", "model", "train"}),
        "repeats": spec.repeats,
        "seed": spec.seed,
        "objective": spec.objective.model_dump(mode="json"),
    }
    for setting, level in cell.items():
        set_dotted(fragment, setting, level)
    spec_from_dict(fragment, source="best configuration")  # ready to run: it must validate as it is
    runner_up = None
    if len(scored) > 1:
        other_cell, other_values = scored[1]
        runner_up = {
            "cell": cell_key(other_cell),
            "difference": paired_difference(values, other_values).as_dict(),
            "of": f"{cell_key(cell)} - {cell_key(other_cell)}",
        }
    return {
        "cell": cell_key(cell),
        "params": cell,
        "estimate": mean_ci(values.values()).as_dict(),
        "runner_up": runner_up,
        "study_file": yaml.safe_dump(fragment, sort_keys=False),
        "file_name": "best.yaml",
        "command": "ablate run best.yaml",
    }


def learning_curves(data: StudyData) -> dict[str, dict[str, Any]]:
    """Per cell and metric: epochs, mean, low and high over the complete seeds' MLflow histories."""
    by_cell: dict[str, list[str]] = {}
    for row in _latest_complete(data):
        if row.record.run_id in data.curves:
            by_cell.setdefault(row.record.cell, []).append(row.record.run_id)
    curves: dict[str, dict[str, Any]] = {}
    for cell, run_ids in by_cell.items():
        curves[cell] = {"runs": len(run_ids)}
        for metric in next(iter(data.curves.values())):
            per_epoch: dict[int, list[float]] = {}
            for run_id in run_ids:
                for epoch, value in data.curves[run_id].get(metric, []):
                    per_epoch.setdefault(epoch, []).append(value)
            epochs = sorted(per_epoch)
            curves[cell][metric] = {
                "epochs": epochs,
                "mean": [statistics.fmean(per_epoch[e]) for e in epochs],
                "low": [min(per_epoch[e]) for e in epochs],
                "high": [max(per_epoch[e]) for e in epochs],
                "n": [len(per_epoch[e]) for e in epochs],
            }
    return curves


def median_runs(data: StudyData) -> dict[str, dict[str, Any]]:
    """Per cell, its median-seed complete run (the lower middle one for an even count)."""
    by_cell: dict[str, list[Any]] = {}
    for row in _latest_complete(data):
        by_cell.setdefault(row.record.cell, []).append(row.record)
    chosen = {}
    for cell, records in by_cell.items():
        ordered = sorted(records, key=lambda r: (r.value, r.seed))
        median = ordered[(len(ordered) - 1) // 2]
        chosen[cell] = {"trial": median.number, "seed": median.seed, "value": median.value, "run_id": median.run_id,
                        "of": len(ordered)}  # fmt: skip
    return chosen


def _latest_complete(data: StudyData) -> list[Any]:
    # A (cell, seed) pair run twice (a retry after a failure) counts once: its latest complete trial.
    latest: dict[tuple[str, int], Any] = {}
    for row in sorted(data.trials, key=lambda r: r.record.number):
        r = row.record
        if r.state == "COMPLETE" and r.seed in data.spec.seeds and r.value is not None and math.isfinite(r.value):
            latest[(r.cell, r.seed)] = row
    return list(latest.values())


def _trial_row(row: Any, spec: StudySpec, experiment_id: str | None, ui: str) -> dict[str, Any]:
    r = row.record
    url = f"{ui}/#/experiments/{experiment_id}/runs/{r.run_id}" if r.run_id and experiment_id else None
    return {
        "number": r.number,
        "state": r.state,
        "cell": r.cell,
        "params": {name: r.params.get(name) for name in spec.factors},
        "seed": r.seed,
        "value": r.value,
        "duration_s": row.duration_s,
        "run_id": r.run_id,
        "run_url": url,
        "error": r.error,
    }


def _counts(records: list[Any]) -> dict[str, int]:
    counts = {"COMPLETE": 0, "FAIL": 0, "PRUNED": 0, "RUNNING": 0, "WAITING": 0}
    for r in records:
        counts[r.state] = counts.get(r.state, 0) + 1
    return {k.lower(): v for k, v in counts.items()}


def _fixed_settings(spec: StudySpec) -> dict[str, Any]:
    from ablate.config import flatten

    flat = flatten(spec.model_dump(mode="json", include={"data", "model", "train"}))
    return {k: v for k, v in flat.items() if k not in spec.factors}


def _ui_base(ui_url: str | None, tracking_uri: str) -> str:
    if ui_url:
        return ui_url.rstrip("/")
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return DEFAULT_UI
