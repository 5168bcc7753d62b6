"""`ablate status`: what a storage holds, study by study, and which workers were seen lately."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from ablate.redaction import redact
from ablate.runtime.optuna_internals import summary_study_id
from ablate.runtime.storage import open_storage, retry
from ablate.runtime.studies import primary_value, tally
from ablate.spec.attributes import CELL_ATTR, CONFIRM_ATTR, SEED_ATTR, SPEC_ATTR, WORKER_ATTR
from ablate.spec.study_spec import StudySpec

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def status_report(storage_url: str, *, recent: timedelta) -> dict[str, Any]:
    """Every study in a storage with its pair counts and best value, and the recently seen workers.

    Counts are of (cell, seed) pairs, so a trial retried after its worker died counts once; a
    pair is failed only if it has no complete, pruned, waiting or running trial.
    """
    if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).exists():
        return {"storage": redact(storage_url), "studies": [], "workers": []}
    storage = open_storage(storage_url, heartbeat=None, grace=None)
    now = datetime.now()
    studies: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for summary in sorted(retry(storage.get_all_studies, what="list the studies"), key=summary_study_id):
        trials = retry(lambda: storage.get_all_trials(summary_study_id(summary), deepcopy=False), what="read the trials")  # noqa: B023 - called at once
        spec = StudySpec.model_validate(summary.user_attrs[SPEC_ATTR]) if SPEC_ATTR in summary.user_attrs else None
        by_state: dict[TrialState, set[Any]] = {state: set() for state in TrialState}
        for t in trials:
            pair = (t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR)) if spec else t.number
            by_state[t.state].add(pair)
        complete, pruned = by_state[TrialState.COMPLETE], by_state[TrialState.PRUNED]
        running, waiting = by_state[TrialState.RUNNING], by_state[TrialState.WAITING]
        failed = by_state[TrialState.FAIL] - complete - pruned - running - waiting
        total = tally(spec, trials).total if spec else len(trials)  # a sequential study: its rounds so far
        direction = summary.directions[0]
        finished = [(t, value) for t in trials if (value := primary_value(t)) is not None and CONFIRM_ATTR not in t.user_attrs]
        best: FrozenTrial | None = None
        best_value: float | None = None
        if finished:
            pick = min if direction == optuna.study.StudyDirection.MINIMIZE else max
            best, best_value = pick(finished, key=lambda item: item[1])
        studies.append(
            {
                "name": summary.study_name,
                "total": total,
                "complete": len(complete),
                "running": len(running),
                "waiting": len(waiting),
                "pruned": len(pruned),
                "failed": len(failed),
                "trials": len(trials),
                "direction": direction.name.lower(),
                "best_value": best_value,
                "best_trial": None if best is None else best.number,
                "best_cell": None if best is None else best.user_attrs.get(CELL_ATTR),
            }
        )
        for t in trials:
            worker = t.user_attrs.get(WORKER_ATTR)
            if worker is None:
                continue
            last = t.datetime_complete or t.datetime_start
            if t.state != TrialState.RUNNING and (last is None or now - last > recent):
                continue
            entry = seen.setdefault(worker, {"worker": worker, "study": summary.study_name, "last_seen": last, "running_trial": None})
            if last is not None and (entry["last_seen"] is None or last >= entry["last_seen"]):
                entry.update(study=summary.study_name, last_seen=last)
            if t.state == TrialState.RUNNING:
                entry.update(study=summary.study_name, running_trial=t.number, last_seen=now)
    workers = sorted(seen.values(), key=lambda w: w["worker"])
    for w in workers:
        w["last_seen"] = w["last_seen"].isoformat(timespec="seconds") if w["last_seen"] else None
    return {"storage": redact(storage_url), "studies": studies, "workers": workers}
