"""Which factors matter most: Optuna's fANOVA importances with their spread over bootstrap resamples.

A single importance value is unstable (it depends on the random forest and on which trials ran),
so each importance is computed on `resamples` bootstrap resamples of the complete trials too, and
reported with the 2.5-97.5 percentile range of those resamples. Importances need at least two
factors that vary: with one, its importance is 1 by definition and the effect table says more.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ablate.spec import StudySpec

METHOD = "Optuna fANOVA (random forest, 32 trees), normalised to sum 1; range: 2.5-97.5 percentiles over bootstrap resamples of the complete trials"


def importances(spec: StudySpec, frozen_trials: list[Any], *, resamples: int = 20, seed: int = 0) -> dict[str, Any]:
    """fANOVA importance of each varying factor, with its bootstrap range.

    Args:
        spec: the study (which factors vary).
        frozen_trials: the study's Optuna `FrozenTrial`s (only complete ones with a finite value count).
        resamples: bootstrap resamples; 0 skips the computation.
        seed: of the resampling and of the forests, so a report is reproducible.
    """
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    varying = [name for name, levels in spec.factors.items() if len(levels) > 1]
    if resamples <= 0:
        return {"computed": False, "reason": "not computed (--bootstrap 0)"}
    if len(varying) < 2:
        return {
            "computed": False,
            "reason": f"{len(varying)} factor varies: importance ranks two or more factors (one factor's importance "
            "is 1 by definition); the effects above answer the question",
        }
    trials = [t for t in frozen_trials if t.state == TrialState.COMPLETE and t.value is not None and np.isfinite(t.value)]
    if len(trials) < 4:
        return {"computed": False, "reason": f"only {len(trials)} complete trial(s): too few to fit fANOVA's forest"}

    def compute(sample: list[Any], forest_seed: int) -> dict[str, float]:
        study = optuna.create_study(direction=spec.objective.direction)  # in memory, thrown away
        study.add_trials(sample)
        evaluator = FanovaImportanceEvaluator(n_trees=32, seed=forest_seed)
        found = get_param_importances(study, evaluator=evaluator, params=varying, normalize=True)
        return {name: float(found.get(name, 0.0)) for name in varying}

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    point = compute(trials, seed)
    rng = np.random.default_rng(seed)
    draws = np.array(
        [list(compute([trials[i] for i in rng.integers(0, len(trials), len(trials))], seed + 1 + b).values())
         for b in range(resamples)]
    )  # fmt: skip
    rows = [
        {
            "factor": name,
            "importance": point[name],
            "bootstrap_mean": float(draws[:, i].mean()),
            "range": [float(np.percentile(draws[:, i], 2.5)), float(np.percentile(draws[:, i], 97.5))],
        }
        for i, name in enumerate(varying)
    ]
    rows.sort(key=lambda row: -row["importance"])
    return {"computed": True, "method": METHOD, "resamples": resamples, "trials": len(trials), "factors": rows}
