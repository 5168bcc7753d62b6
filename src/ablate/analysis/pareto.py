"""The Pareto front of a multi-objective study: the trials no other trial beats on every objective.

Optuna's `study.best_trials` gives the non-dominated complete trials (given each objective's
direction); this module arranges them with every complete trial for the table and the scatter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from optuna.trial import TrialState

from ablate.spec.levels import cell_key


def pareto_front(study: Any, objectives: Sequence[dict[str, str]], *, seed_attr: str = "ablate.seed",
                 run_attr: str = "mlflow_run_id") -> dict[str, Any] | None:
    """The non-dominated trials of a study with two or more objectives (None with one).

    Args:
        study: the Optuna study.
        objectives: `{metric, direction}` per objective (see `importance.objectives_of`).

    Returns:
        `objectives`, `front` (the non-dominated trials sorted by the first objective: number,
        values, params, seed, run_id), `trials` (every complete trial with finite values: number,
        values, on_front) and `complete` (their count).
    """
    if len(study.directions) < 2:
        return None
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.values is not None and all(v is not None and math.isfinite(v) for v in t.values)
    ]
    best = {t.number for t in study.best_trials}
    front = sorted((t for t in complete if t.number in best), key=lambda t: (t.values[0], t.number))
    return {
        "objectives": [dict(o) for o in objectives],
        "front": [
            {"number": t.number, "values": list(t.values), "params": dict(t.params), "cell": label(t.params),
             "seed": t.user_attrs.get(seed_attr), "run_id": t.user_attrs.get(run_attr)}
            for t in front
        ],
        "trials": [{"number": t.number, "values": list(t.values), "on_front": t.number in best} for t in complete],
        "complete": len(complete),
    }


def label(params: dict[str, Any]) -> str:
    """A trial's params for a table cell: `cell_key`'s form, floats to 4 significant digits."""
    return cell_key({name: float(f"{v:.4g}") if isinstance(v, float) else v for name, v in params.items()})
