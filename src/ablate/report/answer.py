"""The study's answer as one JSON-ready dict: what every form (HTML, Markdown, JSON) renders.

Statistics come from `ablate.analysis.effects` (the same code as `ablate reproduce`); this module only
arranges them: variants (cells) with intervals, effects per factor level against the baselines
(`--baseline` may choose them), importances, the Pareto front of a multi-objective study,
learning curves with a band over seeds, the median-seed run of each variant, the trials table
and the best configuration as a study file fragment. The family sections (`diffusion`,
`ensemble`) read MLflow artifacts and are filled afterwards by `ablate.report.family_sections.sections`.

Enumerated designs (grid, one-at-a-time) get effects; a search samples its configurations, so
it has no levels to compare: its answer is the importances, the best trial (or the Pareto front)
and the trials; with `confirm:` its one effect is the winner against the baseline on fresh seeds
(`confirmation`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard
from urllib.parse import urlsplit, urlunsplit

import yaml

from ablate.analysis.confirmation import confirmation_effect
from ablate.analysis.effects import (
    CI_METHOD,
    TEST_METHOD,
    Effect,
    Observation,
    cell_tuple,
    cell_values,
    level_estimate,
    mean_ci,
    observations_from,
    paired_difference,
    study_effects,
)
from ablate.analysis.sequential import METHOD as SEQUENTIAL_METHOD
from ablate.redaction import strip_credentials
from ablate.report.collect import ReportInputError, StudyData, weight_study
from ablate.runtime.rounds import judge
from ablate.spec.attributes import CONFIRM_PREFIX, CONFIRMS_ATTR, NOISE_FLOOR_ATTR, WEIGHTS_ATTR
from ablate.spec.dotted import flatten, set_dotted
from ablate.spec.errors import SpecError
from ablate.spec.levels import Level, cell_key, format_level
from ablate.spec.loading import parse_override, spec_from_dict
from ablate.spec.run_config import SECTIONS
from ablate.spec.study_spec import StudySpec
from ablate.tracking.reading import run_page_url

BAND_METHOD = "mean over seeds; the band spans the lowest to the highest seed at each epoch"
DEFAULT_UI = "http://127.0.0.1:5000"
MAX_SHOWN_CELLS = 12  # learning curves and reconstructions: the best ones when a study has more


class BaselineError(ReportInputError):
    """A `--baseline FACTOR=LEVEL` that names no factor or no level of it."""


def enumerated(spec: StudySpec) -> bool:
    """Whether the design enumerates its configurations (grid, one-at-a-time), so effects apply."""
    return spec.design != "search"


def default_baselines(spec: StudySpec) -> dict[str, Level]:
    """Each factor's reference level: the study's `baseline` (one-at-a-time), else its first level."""
    return spec.comparison_baselines


def resolve_baselines(spec: StudySpec, requested: Sequence[str]) -> dict[str, Level]:
    """Parse `--baseline FACTOR=LEVEL` options (repeatable) against the study's factors.

    The level is read as YAML, like `--set`, and matched to the factor's levels as written in the
    study file (`model.skip=none`, `model.filters=16`, `train.learning_rate=0.001`).

    Raises:
        BaselineError: not FACTOR=LEVEL, not a factor of the study, a factor named twice, a
            search design (it has no levels), or a level that is not one of the factor's levels
            (the message lists the valid ones).
    """
    chosen: dict[str, Level] = {}
    if not requested:
        return chosen
    if not enumerated(spec):
        raise BaselineError(
            f"--baseline {requested[0]}: study {spec.name!r} is a {spec.design} design, which samples its configurations "
            "and has no levels to compare against; --baseline applies to grid and one-at-a-time studies"
        )
    levels = spec.levels
    for item in requested:
        try:
            name, value = parse_override(item)
        except SpecError:
            raise BaselineError(f"--baseline {item!r}: expected FACTOR=LEVEL, e.g. --baseline model.skip=none") from None
        if name not in levels:
            known = "; ".join(f"{f} ({', '.join(format_level(v) for v in ls)})" for f, ls in levels.items()) or "none"
            raise BaselineError(f"--baseline {item}: {name} is not a factor of study {spec.name!r}; its factors: {known}")
        if name in chosen:
            raise BaselineError(f"--baseline {item}: {name} is given twice; give one baseline per factor")
        text = item.partition("=")[2].strip()
        match = [level for level in levels[name] if _same_level(level, value, text)]
        if not match:
            raise BaselineError(
                f"--baseline {item}: {text!r} is not a level of {name}; its levels are: "
                f"{', '.join(format_level(v) for v in levels[name])}"
            )
        chosen[name] = match[0]
    return chosen


def build_answer(
    data: StudyData,
    *,
    ui_url: str | None = None,
    importances: dict[str, Any] | None = None,
    baselines: Mapping[str, Level] | None = None,
    pareto: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Arrange a collected study into the report's answer.

    Args:
        data: the study as read from Optuna and MLflow.
        ui_url: the MLflow UI the trial links point to (default: the tracking server when it is
            one, else the address `ablate ui` serves on).
        importances: the result of `ablate.analysis.importance.importances`, when computed.
        baselines: factor -> the level its other levels are compared against (checked with
            `resolve_baselines`); the others keep `default_baselines`.
        pareto: the result of `ablate.analysis.pareto.pareto_front` for a multi-objective study.
    """
    spec = data.spec
    records = [row.record for row in data.trials]
    observations = observations_from(records, seeds=spec.seeds)
    metric, direction = spec.primary.metric, spec.primary.direction
    objectives = data.objectives or [{"metric": metric, "direction": direction}]
    cells: list[dict[str, Any]] = []
    levels: list[dict[str, Any]] = []
    effects: list[Any] = []
    reference: dict[str, Level] = {}
    if enumerated(spec):
        factor_levels, design_cells = spec.levels, spec.cells()
        reference = {**default_baselines(spec), **dict(baselines or {})}
        table = cell_values(observations, factor_levels)
        if spec.sequential is not None:  # seeds added until decided: repeated intervals at each comparison's stop
            effects = judge(spec, observations, reference)
        else:
            effects = study_effects(observations, factor_levels, direction=direction, metric=metric, baselines=reference,
                                    cells=design_cells, equivalence_margin=spec.analysis.equivalence_margin,
                                    effect_of_interest=spec.analysis.effect_of_interest)
        for cell in design_cells:
            per_seed = table.get(cell_tuple(cell, factor_levels), {})
            cells.append({"cell": cell_key(cell), "params": cell, "estimate": mean_ci(per_seed.values()).as_dict(),
                          "per_seed": {str(s): v for s, v in sorted(per_seed.items())}})
        levels = [
            {"factor": f, "level": level, "estimate": level_estimate(table, factor_levels, f, level, design_cells).as_dict()}
            for f, values in factor_levels.items()
            for level in values
        ]
    elif (confirmed := confirmation(spec, data)) is not None:  # a search's winner against its baseline on fresh seeds
        effects = [confirmed]
    ui = _ui_base(ui_url, data.tracking_uri)
    shown = _shown_cells(data)
    return {
        "study": spec.name,
        "description": spec.description.strip(),
        "storage": data.storage,
        "tracking_uri": data.tracking_uri,
        "experiment_id": data.experiment_id,
        "parent_run_id": data.parent_run_id,
        "objective": {"metric": metric, "direction": direction},
        "objectives": objectives,
        "family": spec.model.family,
        "task": spec.task,
        "design": {
            "kind": spec.design,
            "enumerated": enumerated(spec),
            "factors": _factor_summary(spec),
            "baseline": reference,
            "baseline_chosen": sorted(baselines or {}),
            "seeds": spec.seeds,
            "cells": len(cells),
            "trials_planned": spec.planned_trials,
            "sequential": _sequential_summary(spec, effects, records),
            "fixed": _fixed_settings(spec),
            **({"search": spec.search.model_dump(mode="json")} if spec.design == "search" else {}),
        },
        "counts": _counts(records),
        "methods": {"ci": SEQUENTIAL_METHOD if spec.sequential else CI_METHOD,
                    "test": SEQUENTIAL_TEST if spec.sequential else TEST_METHOD, "band": BAND_METHOD},
        "cells": cells,
        "levels": levels,
        "effects": [e.as_dict() for e in effects],
        "noise_floor": noise_floor(data),
        "importances": importances or {"computed": False, "reason": "not computed (--bootstrap 0)"},
        "pareto": pareto,
        "best": best_configuration(spec, observations) if enumerated(spec) else best_trial(spec, data),
        "curves": learning_curves(data, shown),
        "curves_absent": "a weight study trains nothing: each trial scores a weight vector of trained models"
        if weight_study(spec) else None,
        "median_runs": median_runs(data, shown),
        "shown_cells": {"shown": len(shown), "of": len({row.record.cell for row in _latest_complete(data)}),
                        "limit": MAX_SHOWN_CELLS},
        "trials": [_trial_row(row, spec, data.experiment_id, ui) for row in data.trials],
        "pictures": {},  # name -> PNG file beside the report (relative), when it was written into a folder
        "diffusion": None,  # the family sections: see ablate.report.family_sections
        "ensemble": None,
    }


def noise_floor(data: StudyData) -> dict[str, Any] | None:
    """What `ablate audit` stored on the study: how far two runs of one trial with one seed landed
    apart (`ablate.runtime.audit.run_audit`); None when the study was never audited."""
    floor = getattr(data.study, "user_attrs", {}).get(NOISE_FLOOR_ATTR)
    return dict(floor) if isinstance(floor, dict) else None


SEQUENTIAL_TEST = ("each comparison decided at the first look whose repeated interval excludes zero (or lies inside the "
                   "equivalence margin); the p shown is the plain paired t p at that look, to be read against the "
                   "boundary's nominal level, not against 0.05")


def _sequential_summary(spec: StudySpec, effects: Sequence[Effect], records: Sequence[Any]) -> dict[str, Any] | None:
    """A sequential study's rounds: its limits, the seeds each comparison needed, and the trials run against a fixed design."""
    rounds = spec.sequential
    if rounds is None:
        return None
    ran = sum(1 for r in records if r.state in ("COMPLETE", "PRUNED"))
    decided = [e for e in effects if (e.sequential or {}).get("decided")]
    return {
        "min": rounds.min, "max": rounds.max, "until": rounds.until,
        "rounds": max([(e.sequential or {}).get("rounds", rounds.min) for e in effects], default=rounds.min),
        "seeds_needed": {f"{e.factor}={format_level(e.level)}": e.difference.n for e in effects},
        "decided": len(decided), "comparisons": len(effects),
        "nominal_alpha": (effects[0].sequential or {}).get("nominal_alpha") if effects else None,
        "trials_run": ran, "trials_fixed_max": len(spec.cells()) * rounds.max,
    }


def best_configuration(spec: StudySpec, observations: list[Observation]) -> dict[str, Any] | None:
    """The cell with the best mean objective over seeds, as a ready-to-run study file fragment.

    Also compares it with the runner-up cell (paired by seed), so the page says whether "best"
    is distinguishable from second best at this number of seeds.
    """
    table = cell_values(observations, spec.levels)
    scored = [(cell, table.get(cell_tuple(cell, spec.levels), {})) for cell in spec.cells()]
    scored = [(cell, values) for cell, values in scored if values]
    if not scored:
        return None
    sign = 1 if spec.primary.direction == "minimize" else -1
    scored.sort(key=lambda item: sign * statistics.fmean(item[1].values()))
    cell, values = scored[0]
    fragment = _study_file(spec, cell, f"best cell of study {spec.name}: {cell_key(cell)}")
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


def best_trial(spec: StudySpec, data: StudyData) -> dict[str, Any] | None:
    """A search's best complete trial (first objective), as a ready-to-run study file fragment.

    With several objectives there is no single best: the Pareto front is the answer, and this
    returns None.
    """
    if len(data.objectives) > 1:
        return None
    sign = 1 if spec.primary.direction == "minimize" else -1
    done = [(row.record, row.record.value) for row in data.trials
            if row.record.state == "COMPLETE" and _finite(row.record.value) and not row.record.cell.startswith(CONFIRM_PREFIX)]
    if not done:
        return None
    done.sort(key=lambda item: (sign * item[1], item[0].number))
    best, best_value = done[0]
    params = dict(best.params)
    runner_up = None
    if len(done) > 1:
        other = done[1][0]
        runner_up = {"cell": f"trial {other.number}", "value": other.value, "params": dict(other.params)}
    found: dict[str, Any] = {
        "cell": cell_key(params),
        "trial": best.number,
        "params": params,
        "estimate": mean_ci([best_value]).as_dict(),
        "runner_up": runner_up,
        "note": f"trial {best.number} ran one configuration once (seed {best.seed}); retrain it over {spec.max_repeats} seeds "
        "with the file below before trusting the number",
        "study_file": None,
        "file_name": None,
        "command": None,
    }
    if weight_study(spec):
        # Its params are simplex coordinates, not settings: there is nothing to retrain. The
        # ensemble with these weights is the best run's saved model.
        weights = _trial_weights(data, best.number)
        where = f"MLflow run {best.run_id}" if best.run_id else "the study's best run"
        found["weights"] = weights
        found["cell"] = best.cell  # `uniform`, `only-member2`, `trial-17`: the coordinates say little
        found["note"] = (
            f"trial {best.number}'s weights minimise {spec.primary.metric} on the validation split; the ensemble with "
            f"these weights is model/model.keras of {where}, and its test scores are in the ensemble section. Nothing is "
            "retrained: rerun the weight study's file to search again"
        )
        return found
    try:
        fragment = _study_file(spec, params, f"best trial (#{best.number}) of study {spec.name}: {cell_key(params)}")
    except SpecError as error:  # a trial's params that no study file can hold: say so, keep the answer
        found["note"] += f" (no study file: {error})"
        return found
    found.update(study_file=yaml.safe_dump(fragment, sort_keys=False), file_name="best.yaml", command="ablate run best.yaml")
    return found


def confirmation(spec: StudySpec, data: StudyData) -> Effect | None:
    """A search's winner against its baseline (`confirm:`), as an `Effect`; None when no confirmation trial ran.

    The exploratory values are the winner's own: its trial's value (`search.seeds: spread`) or
    its per-seed values (`average`, the trial's intermediate values, one per seed); the baseline's
    come from its confirmation trials at those seeds. The confirmatory ones are both
    configurations' confirmation trials on the fresh seeds.
    """
    cells = {spec.confirmation_cell("best"), spec.confirmation_cell("baseline")}  # the baseline asked for now
    rows = [row.record for row in sorted(data.trials, key=lambda r: r.record.number) if row.record.cell in cells]
    if not rows:
        return None
    frozen = {t.number: t for t in data.study.get_trials(deepcopy=False)} if data.study is not None else {}
    numbers = [frozen[r.number].user_attrs.get(CONFIRMS_ATTR) for r in rows if r.number in frozen]
    number = next((int(n) for n in numbers if n is not None), None)
    best = next((row.record for row in data.trials if row.record.number == number), None)
    if best is None or best.value is None:
        return None
    values: dict[str, dict[int, float]] = {"best": {}, "baseline": {}}
    params: dict[str, dict[str, Level]] = {}
    for r in rows:  # a (cell, seed) run twice (a retry) keeps its latest complete value
        role = "best" if r.cell == spec.confirmation_cell("best") else "baseline"
        params.setdefault(role, dict(r.params))
        if r.state == "COMPLETE" and r.seed is not None and _finite(r.value):
            values[role][int(r.seed)] = r.value
    confirmatory = sorted(values["best"])  # the winner's confirmation trials are all on fresh seeds
    if spec.search.seeds == "average" and number in frozen:
        steps = frozen[number].intermediate_values  # step i: the mean's i-th seed (spec.seeds[i])
        own = {spec.seeds[i]: float(v) for i, v in steps.items() if i < len(spec.seeds) and _finite(v)}
    else:
        own = {int(best.seed): best.value} if best.seed is not None else {}
    return confirmation_effect(
        best={**own, **values["best"]}, baseline=values["baseline"], exploratory_seeds=sorted(own),
        confirmatory_seeds=confirmatory, best_trial=best.number, params=dict(best.params),
        baseline_params=params.get("baseline", {}), direction=spec.primary.direction, metric=spec.primary.metric,
        equivalence_margin=spec.analysis.equivalence_margin, effect_of_interest=spec.analysis.effect_of_interest,
    )


def _trial_weights(data: StudyData, number: int) -> list[float] | None:
    """A weight study trial's ensemble weights, as the search stored them on the trial."""
    trial = next((t for t in data.study.get_trials(deepcopy=False) if t.number == number), None) if data.study else None
    weights = trial.user_attrs.get(WEIGHTS_ATTR) if trial is not None else None
    return [float(w) + 0.0 for w in weights] if weights else None  # + 0.0: -0.0 (a coordinate at 1) shows as 0


def learning_curves(data: StudyData, cells: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per cell and metric: epochs, mean, low and high over the complete seeds' MLflow histories.

    `cells`: only these (the report shows at most `MAX_SHOWN_CELLS`, the best ones).
    """
    by_cell: dict[str, list[str]] = {}
    for row in _latest_complete(data):
        if cells is not None and row.record.cell not in cells:
            continue
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


def median_runs(data: StudyData, cells: set[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per cell, its median-seed complete run.

    With an even count the two middle runs tie; the better one in the objective's direction is
    shown (the lower value when minimising, the higher when maximising), so a variant is never
    pictured by the worse of its two middle seeds.
    """
    by_cell: dict[str, list[Any]] = {}
    for row in _latest_complete(data):
        if cells is None or row.record.cell in cells:
            by_cell.setdefault(row.record.cell, []).append(row.record)
    sign = 1 if data.spec.primary.direction == "minimize" else -1
    chosen = {}
    for cell, records in by_cell.items():
        ordered = sorted(records, key=lambda r: (sign * r.value, r.seed))  # best first
        median = ordered[(len(ordered) - 1) // 2]
        chosen[cell] = {"trial": median.number, "seed": median.seed, "value": median.value, "run_id": median.run_id,
                        "of": len(ordered)}
    return chosen


def _latest_complete(data: StudyData) -> list[Any]:
    # A (cell, seed) pair run twice (a retry after a failure) counts once: its latest complete trial.
    latest: dict[tuple[str, int], Any] = {}
    for row in sorted(data.trials, key=lambda r: r.record.number):
        r = row.record
        if (r.state == "COMPLETE" and r.seed in data.spec.seeds and r.value is not None and math.isfinite(r.value)
                and not r.cell.startswith(CONFIRM_PREFIX)):  # a search's cells are its own trials
            latest[(r.cell, r.seed)] = row
    return list(latest.values())


def _shown_cells(data: StudyData) -> set[str]:
    """The cells whose curves and reconstructions the report shows: all, or the best MAX_SHOWN_CELLS."""
    by_cell: dict[str, list[float]] = {}
    for row in _latest_complete(data):
        by_cell.setdefault(row.record.cell, []).append(row.record.value)
    if len(by_cell) <= MAX_SHOWN_CELLS:
        return set(by_cell)
    sign = 1 if data.spec.primary.direction == "minimize" else -1
    ranked = sorted(by_cell, key=lambda cell: (sign * statistics.fmean(by_cell[cell]), cell))
    return set(ranked[:MAX_SHOWN_CELLS])


def _study_file(spec: StudySpec, params: Mapping[str, Level], description: str) -> dict[str, Any]:
    """A complete study file (every fixed setting, `params` applied, no factors) that validates."""
    sections = [name for name in SECTIONS if name in type(spec).model_fields]
    fragment: dict[str, Any] = {
        "name": f"{spec.name}-best"[:100],
        "description": description,
        **({"task": spec.task} if spec.task != "denoise" else {}),
        **{section: value for section, value in spec.to_file().items() if section in sections},
        "repeats": spec.max_repeats,
        "seed": spec.seed,
        "objective": spec.primary.model_dump(mode="json"),
    }
    for setting, level in params.items():
        set_dotted(fragment, setting, level)
    spec_from_dict(fragment, source="best configuration")  # ready to run: it must validate as it is
    return fragment


def _factor_summary(spec: StudySpec) -> dict[str, Any]:
    """Each factor's levels (a list), or its searched range (a mapping) when it has no levels."""
    summary: dict[str, Any] = {}
    for name, factor in spec.factors.items():
        if not hasattr(factor, "grid_levels"):  # a plain list of levels
            summary[name] = list(factor)
        elif factor.type == "categorical" or enumerated(spec):
            summary[name] = list(factor.grid_levels(name))
        else:  # a searched int or float range
            summary[name] = factor.model_dump(mode="json", exclude_none=True, exclude_defaults=True) | {"type": factor.type}
    return summary


def _same_level(level: Level, value: Any, text: str) -> bool:
    if isinstance(level, bool) or isinstance(value, bool):
        return level is value or format_level(level) == text.lower()
    if level == value or format_level(level) == text:
        return True
    if isinstance(level, (int, float)):
        try:
            return float(text) == float(level)
        except ValueError:
            return False
    return False




def _finite(value: float | None) -> TypeGuard[float]:
    return value is not None and math.isfinite(value)


def _trial_row(row: Any, spec: StudySpec, experiment_id: str | None, ui: str) -> dict[str, Any]:
    r = row.record
    url = run_page_url(ui, experiment_id, r.run_id) if r.run_id and experiment_id else None
    return {
        "number": r.number,
        "state": r.state,
        "cell": r.cell,
        "params": {name: r.params[name] for name in spec.factors if name in r.params},
        "seed": r.seed,
        "value": r.value,
        "values": list(row.values) if row.values else None,
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
    flat = flatten(spec.model_dump(mode="json", include={name for name in SECTIONS if name in type(spec).model_fields}))
    return {k: v for k, v in flat.items() if k not in spec.factors}


def _ui_base(ui_url: str | None, tracking_uri: str) -> str:
    """Where the trial links point: `--ui-url`, else the tracking server, else where `ablate ui` serves.

    Never with credentials: a link is followed, so its userinfo and secret query parameters are
    removed (`strip_credentials`; the report only ever holds the redacted tracking URI, whose
    masked `user:***@` would break the link), and so is any other query, since the links append
    the UI's `#/...` route.
    """
    base = ui_url or (tracking_uri if tracking_uri.lower().startswith(("http://", "https://")) else DEFAULT_UI)
    parts = urlsplit(strip_credentials(base))
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
