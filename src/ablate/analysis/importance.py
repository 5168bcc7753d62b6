"""Which factors matter most: Optuna's fANOVA and PED-ANOVA importances, with their spread over
bootstrap resamples of the trials.

A single importance value is unstable (it depends on the random forest, on the quantile of good
trials and on which trials ran), so each importance is computed on `resamples` bootstrap
resamples of the complete trials too, and reported with the 2.5-97.5 percentile range of those
resamples. Both evaluators run on the same resamples, through one code path.

Any Optuna study works, not only ablate's grids: categorical, int, float and log-float params,
one or several objectives (importances per objective, through Optuna's `target=`), and
conditional params that only some trials have:

- fANOVA fits a random forest on trials that have every evaluated param, so it is computed over
  the params present (with one distribution) in every complete trial; a conditional param is left
  out of it, and the answer says so (`params.conditional`, `notes`).
- PED-ANOVA compares where the top trials' values lie against all trials' values, param by param.
  From Optuna 5 it handles conditional params itself (conditional PED-ANOVA: a switched-off param
  is a regime of its own), so it evaluates every param that varies; with an older Optuna it gets
  the same params as fANOVA.

Importances need at least two params that vary: with one, its importance is 1 by definition.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal, cast

import numpy as np
import optuna
from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator
from optuna.trial import TrialState

EVALUATORS: tuple[str, ...] = ("fanova", "ped_anova")
LABELS = {"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}
FANOVA_TREES = 32
PED_ANOVA_MIN_TOP = 5  # Optuna's advice: at least 5 trials in the top quantile
RANGE = "2.5-97.5 percentiles over bootstrap resamples of the complete trials"


# Said by Optuna whenever PED-ANOVA gets a `target`: ours is always "lower is better" by design.
_EXPECTED_WARNING = "computes the importances of params to achieve low `target` values"


def objectives_of(raw_spec: Any, directions: Sequence[str]) -> list[dict[str, str]]:
    """Each objective's `{metric, direction}`, from the study's `ablate.spec` user attr.

    The spec's `objective` may be one mapping (`{metric, direction}`) or a list of them; the
    study's directions decide where they disagree or where the spec says nothing (then the names
    are `objective 0`, `objective 1`, ...).
    """
    raw = raw_spec.get("objective") if isinstance(raw_spec, dict) else None
    listed = [raw] if isinstance(raw, dict) else list(raw) if isinstance(raw, (list, tuple)) else []
    found = []
    for index, direction in enumerate(directions):
        entry = listed[index] if index < len(listed) and isinstance(listed[index], dict) else {}
        found.append({"metric": str(entry.get("metric") or f"objective {index}"), "direction": direction})
    return found


def study_directions(study: Any) -> list[str]:
    """`minimize` / `maximize` per objective of an Optuna study."""
    return [d.name.lower() for d in study.directions]


def conditional_ped_anova() -> bool:
    """Whether the installed Optuna's PED-ANOVA handles conditional params (Optuna 5 and later)."""
    return int(optuna.__version__.split(".")[0]) >= 5


def importances(
    trials: Sequence[Any],
    objectives: Sequence[dict[str, str]],
    *,
    resamples: int = 20,
    seed: int = 0,
    evaluators: Sequence[str] = EVALUATORS,
) -> dict[str, Any]:
    """fANOVA and PED-ANOVA importance of each param, per objective, with bootstrap ranges.

    Args:
        trials: the study's Optuna `FrozenTrial`s; complete ones whose every value is finite count.
        objectives: `{metric, direction}` per objective, in the study's order (`objectives_of`).
        resamples: bootstrap resamples; 0 skips the computation.
        seed: of the resampling and of the forests, so a report is reproducible.
        evaluators: which of `fanova`, `ped_anova` to compute.

    Returns:
        A JSON-ready dict: `computed` (or `reason`), `trials`, `resamples`, `params` (evaluated,
        in every trial, conditional with their counts, changing distribution), `notes`,
        `methods` (one sentence per evaluator) and `objectives`: per objective its `metric`,
        `direction` and per evaluator `{computed, factors: [{factor, importance, bootstrap_mean,
        range, resamples}], reason?}`, factors sorted by importance.
    """
    if resamples <= 0:
        return {"computed": False, "reason": "not computed (--bootstrap 0)"}
    n_objectives = len(objectives)
    complete = [
        t for t in trials
        if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) == n_objectives
        and all(v is not None and math.isfinite(v) for v in t.values)
    ]
    census = _census(complete)
    varying = census["varying"]
    if len(varying) < 2:
        return {
            "computed": False,
            "reason": f"{len(varying)} factor varies: importance ranks two or more factors (one factor's importance "
            "is 1 by definition); the effects above answer the question",
        }
    if len(complete) < 4:
        return {"computed": False, "reason": f"only {len(complete)} complete trial(s): too few to rank factors"}

    common, conditional, dynamic = census["common"], census["conditional"], census["dynamic"]
    ped_params = varying if conditional_ped_anova() else common
    quantile = min(0.5, max(0.1, PED_ANOVA_MIN_TOP / len(complete)))
    plans: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for name in evaluators:
        params = common if name == "fanova" else ped_params
        if len(params) >= 2:
            plans[name] = params
        else:
            skipped[name] = (
                f"only {len(params)} param is present (with one range) in every complete trial ({', '.join(params) or 'none'}); "
                f"{LABELS[name]} needs two or more there"
            )
    notes = _notes(len(complete), conditional, dynamic, plans)

    # One code path for both evaluators and every objective: the point estimate on all complete
    # trials, then the same evaluations on each bootstrap resample.
    rng = np.random.default_rng(seed)
    samples = [list(range(len(complete)))] + [list(rng.integers(0, len(complete), len(complete))) for _ in range(resamples)]
    draws: dict[tuple[int, str], list[dict[str, float]]] = {}
    warned: list[str] = []
    for b, indices in enumerate(samples):
        sample = [complete[i] for i in indices]
        study = _scratch_study(sample, objectives)
        for k, objective in enumerate(objectives):
            for name, params in plans.items():
                found, messages = _evaluate(name, study, params, _target(k, objective["direction"]), seed + b, quantile)
                draws.setdefault((k, name), []).append(found)
                if b == 0:
                    warned += [m for m in messages if m not in warned]

    answer_objectives = []
    for k, objective in enumerate(objectives):
        entry: dict[str, Any] = {"metric": objective["metric"], "direction": objective["direction"]}
        for name in evaluators:
            if name in skipped:
                entry[name] = {"computed": False, "reason": skipped[name]}
                continue
            entry[name] = _summarise(plans[name], draws[(k, name)])
        answer_objectives.append(entry)
    return {
        "computed": True,
        "trials": len(complete),
        "resamples": resamples,
        "seed": seed,
        "evaluators": list(evaluators),
        "params": {
            "evaluated": varying,
            "in_every_trial": common,
            "conditional": conditional,
            "changing_distribution": dynamic,
        },
        "notes": notes + [f"Optuna: {m.rstrip('.')}" for m in warned],
        "methods": {
            "fanova": f"Optuna fANOVA (random forest of {FANOVA_TREES} trees) over the params present in every complete "
            f"trial, normalised to sum 1; range: {RANGE}",
            "ped_anova": f"Optuna PED-ANOVA: how differently each param is distributed in the top {quantile:.0%} of "
            f"trials than in all trials (top quantile max(10%, {PED_ANOVA_MIN_TOP} trials), at most 50%)"
            f"{', conditional params included' if ped_params is varying else ''}, normalised to sum 1; range: {RANGE}",
            "quantile": quantile,
        },
        "objectives": answer_objectives,
    }


def _census(complete: Sequence[Any]) -> dict[str, Any]:
    """Which params vary over the complete trials, which every trial has, which are conditional."""
    seen: dict[str, dict[str, Any]] = {}
    for trial in complete:
        for name, distribution in trial.distributions.items():
            info = seen.setdefault(name, {"count": 0, "distributions": [], "values": set()})
            info["count"] += 1
            if distribution not in info["distributions"]:
                info["distributions"].append(distribution)
            info["values"].add(repr(trial.params[name]))
    varying = [name for name, info in seen.items() if len(info["values"]) > 1]  # one value: nothing to rank
    common = [n for n in varying if seen[n]["count"] == len(complete) and len(seen[n]["distributions"]) == 1]
    conditional = {n: seen[n]["count"] for n in varying if seen[n]["count"] < len(complete)}
    dynamic = [n for n in varying if seen[n]["count"] == len(complete) and len(seen[n]["distributions"]) > 1]
    return {"varying": varying, "common": common, "conditional": conditional, "dynamic": dynamic}


ROUGH_BELOW = 20  # complete trials under which importances are a rough guide at best


def _notes(n: int, conditional: dict[str, int], dynamic: list[str], plans: dict[str, list[str]]) -> list[str]:
    notes = []
    if n < ROUGH_BELOW:
        notes.append(f"only {n} complete trials: the importances are a rough guide, as their wide ranges show")
    for name, count in conditional.items():
        where = [LABELS[e] for e, params in plans.items() if name in params]
        left = [LABELS[e] for e, params in plans.items() if name not in params]
        notes.append(
            f"{name} is conditional: present in {count} of {n} complete trials; "
            + (f"{' and '.join(left)} leave{'s' if len(left) == 1 else ''} it out (computed over the params present in every "
               "complete trial)" if left else "")
            + ("; " if left and where else "")
            + (f"{' and '.join(where)} include{'s' if len(where) == 1 else ''} it (a switched-off param is a regime of its own)"
               if where else "")
        )
    for name in dynamic:
        notes.append(f"{name} changed its range or levels during the study; fANOVA leaves it out")
    return notes


def _scratch_study(sample: Sequence[Any], objectives: Sequence[dict[str, str]]) -> Any:
    """An in-memory study holding `sample` (duplicates become separate trials), thrown away after."""
    # The directions are Optuna's own names (`study_directions`); create_study checks them.
    directions = cast("list[Literal['minimize', 'maximize']]", [o["direction"] for o in objectives])
    study = optuna.create_study(directions=directions)
    study.add_trials(sample)
    return study


def _target(index: int, direction: str) -> Callable[[Any], float]:
    # PED-ANOVA ranks by "lower is better" once a target is given; fANOVA is indifferent to the sign.
    sign = 1.0 if direction == "minimize" else -1.0
    return lambda trial: sign * trial.values[index]


def _evaluate(
    name: str, study: Any, params: list[str], target: Callable[[Any], float], seed: int, quantile: float
) -> tuple[dict[str, float], list[str]]:
    """One evaluator on one (re)sample: normalised importances (NaN where it could not say)."""
    present = {k for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) for k in t.distributions}
    asked = [p for p in params if p in present]  # a resample may miss a rare conditional param
    if name == "fanova":
        evaluator: Any = FanovaImportanceEvaluator(n_trees=FANOVA_TREES, seed=seed)
    else:
        evaluator = PedAnovaImportanceEvaluator(target_quantile=quantile)
    failed: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            raw = evaluator.evaluate(study, params=asked, target=target) if asked else {}
        except (RuntimeError, ValueError) as error:  # e.g. fANOVA on a sample whose values are all equal
            raw, failed = {}, [f"{LABELS[name]}: {error}"]
    messages = [str(w.message) for w in caught if _EXPECTED_WARNING not in str(w.message)] + failed
    total = sum(v for v in raw.values() if math.isfinite(v))
    found = {p: (raw[p] / total if p in raw and total > 0 and math.isfinite(raw[p]) else math.nan) for p in params}
    return found, messages


def _summarise(params: list[str], draws: list[dict[str, float]]) -> dict[str, Any]:
    point, rest = draws[0], draws[1:]
    if all(math.isnan(point[p]) for p in params):
        return {"computed": False, "reason": "no importance on all trials: no param separates the trials' values "
                "(every importance zero, or the values do not vary)"}
    rows: list[dict[str, Any]] = []
    for p in params:
        values = np.array([d[p] for d in rest], dtype=float)
        valid = values[np.isfinite(values)]
        rows.append({
            "factor": p,
            "importance": 0.0 if math.isnan(point[p]) else float(point[p]),
            "bootstrap_mean": float(valid.mean()) if valid.size else None,
            "range": [float(np.percentile(valid, 2.5)), float(np.percentile(valid, 97.5))] if valid.size else None,
            "resamples": int(valid.size),
        })
    rows.sort(key=lambda row: -row["importance"])
    return {"computed": True, "factors": rows}
