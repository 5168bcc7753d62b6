"""`ablate submit`, `ablate worker` and `ablate status`: the shared service's commands.

A study is submitted once into a shared Optuna storage (its spec stored in it, its grid enqueued);
workers anywhere need only the storage URL and the tracking URI to run it. Parsing imports
nothing heavy: Optuna, MLflow and Keras load inside the handlers.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

RECENT_MINUTES = 10.0


def add_parser(commands: Any, common: argparse.ArgumentParser, overrides: argparse.ArgumentParser) -> None:
    """Register `submit`, `worker` and `status` on the `ablate` command."""
    submit = commands.add_parser(
        "submit",
        parents=[common, overrides],
        help="put a study into a shared storage for workers to run (spec stored, grid enqueued once)",
        description="Create (or find) the study in the Optuna storage, store its validated spec there so any "
        "worker can rebuild it from the storage alone, create its MLflow experiment and parent run, and enqueue "
        "every (cell, seed) trial that has not finished and is not already waiting or running. Runs nothing: "
        "start `ablate worker` processes for that. See docs/distributed.md.",
    )
    submit.add_argument("study_file", type=Path, help="a study file, e.g. studies/skip_vs_noskip.yaml")
    submit.set_defaults(handler=_submit)

    worker = commands.add_parser(
        "worker",
        parents=[common],
        help="run trials of submitted studies from a shared storage until there is no work",
        description="Pop enqueued trials from the storage and run them, logging to MLflow, until no trial is "
        "waiting or running. Any number of workers may run at once, on any number of machines: each trial "
        "runs once. A worker that dies is noticed through its trials' heartbeats and its trial is retried. "
        "Needs only the storage URL and the tracking URI (flags or $ABLATE_STORAGE and $MLFLOW_TRACKING_URI; "
        "for an MLflow server with basic auth also $MLFLOW_TRACKING_USERNAME and $MLFLOW_TRACKING_PASSWORD).",
    )
    which = worker.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", dest="studies", action="append", metavar="NAME", help="a study to run (repeatable)")
    which.add_argument("--all", action="store_true", help="every submitted study, moving on to the next with work")
    worker.add_argument("--max-trials", type=_positive, metavar="N", help="stop after N trials")
    worker.add_argument(
        "--no-wait", dest="wait", action="store_false",
        help="exit as soon as no trial is waiting, without waiting for other workers' running trials "
        "(by default a worker stays while some trial runs, to retry it should its worker die)",
    )  # fmt: skip
    worker.add_argument(
        "--heartbeat", type=_positive, metavar="SECONDS",
        help="seconds between a running trial's heartbeats (default: $ABLATE_HEARTBEAT or 15)",
    )  # fmt: skip
    worker.add_argument(
        "--grace", type=_positive, metavar="SECONDS",
        help="seconds without a heartbeat before a trial is stale and retried; use the same value on every "
        "worker (default: $ABLATE_GRACE or 60)",
    )  # fmt: skip
    from ablate.launch import add_recycle_option  # light: argparse only

    add_recycle_option(worker, what="run every trial in this process")
    worker.add_argument("--recycled", action="store_true", help=argparse.SUPPRESS)  # a recycling parent's child
    # A recycling parent's warm child: run each batch of N trials in a fork of this process (ablate.forking).
    worker.add_argument("--fork-every", type=_positive, metavar="N", help=argparse.SUPPRESS)
    worker.set_defaults(handler=_worker)

    status = commands.add_parser(
        "status",
        parents=[common],
        help="list the studies in a storage: complete / running / waiting / pruned / failed, best value, workers",
        description="For each study in the storage: its (cell, seed) pairs that are complete, running, waiting, "
        "pruned and failed, the best value so far, and the workers seen in the last minutes.",
    )
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    status.add_argument(
        "--recent", type=float, default=RECENT_MINUTES, metavar="MINUTES",
        help=f"a worker counts as seen if it started or finished a trial this recently (default {RECENT_MINUTES:g})",
    )  # fmt: skip
    status.set_defaults(handler=_status)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {value}")
    return value


def _project(args: argparse.Namespace) -> Any:
    from ablate.home import resolve_project

    project = resolve_project(home=args.home, storage=args.storage, tracking_uri=args.tracking_uri)
    if str(project.home) in project.storage or str(project.home) in project.tracking_uri:
        project.ensure()  # the embedded default keeps its stores in the project folder
    return project


def _submit(args: argparse.Namespace, console: Any) -> int:
    from ablate.home import redact
    from ablate.spec import load_spec
    from ablate.storage import open_storage
    from ablate.study import _quiet_libraries, enqueue_missing, prepare_study, stale_grace
    from ablate.tracking import Tracker

    loaded = load_spec(args.study_file, profile=args.profile, overrides=tuple(args.overrides))
    spec = loaded.spec
    if spec.engine != "optuna":
        from ablate.errors import AblateError

        raise AblateError(
            f"{spec.name}: engine {spec.engine} runs its tuner in one process; run it with `ablate run` "
            "(submit and workers share Optuna studies only; see docs/engines.md)"
        )
    if spec.model.family == "ensemble" and spec.ensemble.source == "study":
        from ablate.errors import AblateError

        raise AblateError(
            f"{spec.name}: a weight study (ensemble.source: study) scores all its trials in one process in seconds; "
            "run it with `ablate run` (workers do not run it; see docs/study-files.md#the-ensemble-family)"
        )
    project = _project(args)
    _quiet_libraries()
    tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
    storage = open_storage(project.storage, heartbeat=None, grace=stale_grace())
    study, experiment_id, parent_run_id = prepare_study(loaded, project, storage, tracker)
    added = enqueue_missing(study, spec)
    total = spec.planned_trials
    console.print(
        f"submitted [bold]{spec.name}[/bold]: {added} trial(s) enqueued, {total - added} of {total} already "
        f"finished, waiting or running\n  optuna storage: {redact(project.storage)}\n  mlflow: "
        f"{redact(project.tracking_uri)} (experiment {experiment_id}, parent run {parent_run_id})\n"
        f"  run it with: ablate worker --study {spec.name}",
        highlight=False,
    )
    return 0


def _worker(args: argparse.Namespace, console: Any) -> int:
    if args.recycle_after:
        return _recycling_worker(args, console)
    if args.fork_every:
        from ablate import forking

        from ablate.cli import exit_code

        def batch(limit: int, index: int) -> tuple[int, int]:
            ran = [0]

            def serve_batch() -> int:
                code, ran[0] = _serve(
                    args, console, max_trials=limit, recycled=True, max_seconds=forking.FORK_SECONDS, fork_index=index
                )
                return code

            return exit_code(serve_batch, console), ran[0]  # errors end the fork as they end a command

        forking.preload(_project(args).tracking_uri)
        return forking.run_batches(
            batch,
            per_fork=args.fork_every,
            max_trials=args.max_trials,
            say=lambda text: console.print(text, style="dim", highlight=False),
        )
    return _serve(args, console, max_trials=args.max_trials, recycled=args.recycled)[0]


def _serve(
    args: argparse.Namespace,
    console: Any,
    *,
    max_trials: int | None,
    recycled: bool,
    max_seconds: float | None = None,
    fork_index: int | None = None,
) -> tuple[int, int]:
    """Run trials in this process until there is no work, `max_trials` ran, or (after a trial)
    `max_seconds` passed; return the exit code and how many trials ran.

    The code is `RECYCLE_EXIT` when `recycled` and it stopped at a limit while work remains (a
    recycling parent then starts the next process), else 0. `fork_index`: which fork of a warm
    worker this is (ablate.forking); only the first prints the worker's settings, and none says it
    recycles (the warm worker does).
    """
    import time

    stop_at = None if max_seconds is None else time.monotonic() + max_seconds
    from ablate.home import redact
    from ablate.progress import StudyProgress
    from ablate.storage import open_storage
    from ablate.study import _quiet_libraries, heartbeat_seconds, stale_grace
    from ablate.tracking import Tracker
    from ablate.worker import StaleTrialHandler, StudyWork, attach, serve, worker_id

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    _quiet_libraries()
    project = _project(args)
    heartbeat = args.heartbeat or heartbeat_seconds()
    grace = args.grace or stale_grace()
    tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
    storage = open_storage(project.storage, heartbeat=heartbeat, grace=grace, on_stale=StaleTrialHandler(lambda: tracker, grace))
    attached: dict[str, StudyWork] = {}

    def studies() -> list[StudyWork]:
        from ablate.storage import retry
        from ablate.study import SPEC_ATTR

        if args.all:
            summaries = retry(storage.get_all_studies, what="list the studies")
            names = [
                s.study_name for s in sorted(summaries, key=lambda s: s._study_id)
                if SPEC_ATTR in s.user_attrs and s.user_attrs[SPEC_ATTR].get("engine", "optuna") == "optuna"
            ]  # engine keras-tuner studies run in `ablate run` only
        else:
            names = args.studies
        for name in names:
            if name not in attached:
                attached[name] = attach(name, storage, tracker)
        return [attached[name] for name in names]

    # `docker stop` and scaling down send SIGTERM: treat it like Ctrl-C, so the current trial is
    # recorded as interrupted and handed back at once instead of waiting out the grace period.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if not fork_index:
        console.print(
            f"worker {worker_id()}: storage {redact(project.storage)}, mlflow {redact(project.tracking_uri)}, "
            f"heartbeat {heartbeat}s, grace {grace}s",
            highlight=False,
        )
    import os

    from ablate.launch import MARKS_ENV

    with (_marked_progress() if os.environ.get(MARKS_ENV) else StudyProgress)(console) as progress:
        ran = serve(studies, progress=progress, max_trials=max_trials, wait=args.wait, stop_at=stop_at)
    at_limit = (max_trials is not None and ran >= max_trials) or (stop_at is not None and time.monotonic() >= stop_at)
    if recycled and at_limit and _work_left(studies(), wait=args.wait):
        from ablate.forking import RECYCLE_EXIT

        if fork_index is None:
            console.print(f"worker {worker_id()}: ran {ran} trial(s), recycling this process", highlight=False)
        return RECYCLE_EXIT, ran
    console.print(f"worker {worker_id()}: no more work; ran {ran} trial(s)", highlight=False)
    return 0, ran


def _recycling_worker(args: argparse.Namespace, console: Any) -> int:
    """`ablate worker --recycle-after N`: a light parent (no Keras) whose child processes run the trials.

    Each child is `ablate worker --recycle-after 0 --max-trials N` with the same studies and
    settings; when it stops at its limit while work remains, a fresh one takes over. The children
    report this process's host:pid as their worker, so `ablate status` and the trials' attrs show
    the worker that was started, and signals sent to it reach the trial (see ablate.launch).
    """
    import sys

    from ablate.launch import WORKER_ID_ENV, Slot, recycled_worker_id, supervise, worker_env

    project = _project(args)
    argv = [sys.executable, "-m", "ablate", "worker"]
    argv += ["--all"] if args.all else [part for name in args.studies for part in ("--study", name)]
    if not args.wait:
        argv.append("--no-wait")
    for flag, value in (("--heartbeat", args.heartbeat), ("--grace", args.grace)):
        if value:
            argv += [flag, str(value)]
    env = {**worker_env(project, None), WORKER_ID_ENV: recycled_worker_id()}
    signal.signal(signal.SIGTERM, _raise_interrupt)  # docker stop: the child records its trial, then we end
    [code] = supervise([Slot(argv, env, recycle_after=args.recycle_after, max_trials=args.max_trials)], console)
    return code


def _marked_progress() -> type:
    from ablate.launch import TRIAL_END_MARK
    from ablate.progress import StudyProgress

    class MarkedProgress(StudyProgress):
        """A worker under a parent (`ablate run`, a recycling worker): finished trials go to the parent's display."""

        def end_trial(self, label: str, outcome: str) -> None:
            self.console.file.write(f"{TRIAL_END_MARK}{label}\t{outcome}\n")
            self.console.file.flush()

    return MarkedProgress


def _work_left(works: list[Any], *, wait: bool) -> bool:
    """Whether a fresh worker process would find work: a waiting trial, or (with wait) a running one."""
    from optuna.trial import TrialState

    from ablate.worker import has_running

    for work in works:
        if getattr(work.spec, "design", "grid") == "search":
            return True  # a search asks its sampler for new trials while its budget lasts
        if work.trials((TrialState.WAITING,)) or (wait and has_running(work)):
            return True
    return False


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _status(args: argparse.Namespace, console: Any) -> int:
    from ablate.home import redact

    project = _project(args)
    report = status_report(project.storage, recent=timedelta(minutes=args.recent))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(title=f"studies in {redact(project.storage)}")
    for column in ("study", "complete", "running", "waiting", "pruned", "failed", "of", "best", "trial"):
        table.add_column(column, justify="left" if column == "study" else "right")
    for s in report["studies"]:
        best = "-" if s["best_value"] is None else f"{s['best_value']:.4f}"
        table.add_row(
            s["name"], *(str(s[k]) for k in ("complete", "running", "waiting", "pruned", "failed", "total")),
            best, "-" if s["best_trial"] is None else str(s["best_trial"]),
        )  # fmt: skip
    out.print(table)
    workers = Table(title=f"workers seen in the last {args.recent:g} minutes")
    for column in ("worker", "study", "last seen", "running trial"):
        workers.add_column(column)
    for w in report["workers"]:
        running = "-" if w["running_trial"] is None else str(w["running_trial"])
        workers.add_row(w["worker"], w["study"], str(w["last_seen"]), running)
    out.print(workers)
    return 0


def status_report(storage_url: str, *, recent: timedelta) -> dict[str, Any]:
    """Every study in a storage with its pair counts and best value, and the recently seen workers.

    Counts are of (cell, seed) pairs, so a trial retried after its worker died counts once; a
    pair is failed only if it has no complete, pruned, waiting or running trial.
    """
    import optuna
    from optuna.trial import TrialState

    from ablate.home import redact
    from ablate.spec import StudySpec
    from ablate.storage import open_storage, retry
    from ablate.study import CELL_ATTR, SEED_ATTR, SPEC_ATTR, primary_value
    from ablate.worker import WORKER_ATTR

    if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).exists():
        return {"storage": redact(storage_url), "studies": [], "workers": []}
    storage = open_storage(storage_url, heartbeat=None, grace=None)
    now = datetime.now()
    studies: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    for summary in sorted(retry(storage.get_all_studies, what="list the studies"), key=lambda s: s._study_id):
        trials = retry(lambda: storage.get_all_trials(summary._study_id, deepcopy=False), what="read the trials")
        spec = StudySpec.model_validate(summary.user_attrs[SPEC_ATTR]) if SPEC_ATTR in summary.user_attrs else None
        by_state: dict[TrialState, set[Any]] = {state: set() for state in TrialState}
        for t in trials:
            pair = (t.user_attrs.get(CELL_ATTR), t.user_attrs.get(SEED_ATTR)) if spec else t.number
            by_state[t.state].add(pair)
        complete, pruned = by_state[TrialState.COMPLETE], by_state[TrialState.PRUNED]
        running, waiting = by_state[TrialState.RUNNING], by_state[TrialState.WAITING]
        failed = by_state[TrialState.FAIL] - complete - pruned - running - waiting
        total = spec.planned_trials if spec else len(trials)
        direction = summary.directions[0]
        finished = [t for t in trials if primary_value(t) is not None]
        best = None
        if finished:
            pick = min if direction == optuna.study.StudyDirection.MINIMIZE else max
            best = pick(finished, key=primary_value)
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
                "best_value": None if best is None else primary_value(best),
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


__all__ = ["add_parser", "status_report"]
