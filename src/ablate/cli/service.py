"""`ablate submit`, `ablate worker` and `ablate status`: the shared service's commands.

A study is submitted once into a shared Optuna storage (its spec stored in it, its grid enqueued);
workers anywhere need only the storage URL and the tracking URI to run it. Parsing imports
nothing heavy: each handler imports the runtime (Optuna, MLflow, Keras) inside its body.
"""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from ablate.cli.arguments import add_allow_large_option, add_backend_option, add_recycle_option, positive
from ablate.project import Project, resolve_project

RECENT_MINUTES = 10.0  # `ablate status --recent`: a worker counts as seen if it ran a trial this recently


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
    add_allow_large_option(submit)
    add_backend_option(submit)
    submit.set_defaults(handler=submit_command)

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
    worker.add_argument("--max-trials", type=positive, metavar="N", help="stop after N trials")
    worker.add_argument(
        "--no-wait", dest="wait", action="store_false",
        help="exit as soon as no trial is waiting, without waiting for other workers' running trials "
        "(by default a worker stays while some trial runs, to retry it should its worker die)",
    )
    worker.add_argument(
        "--heartbeat", type=positive, metavar="SECONDS",
        help="seconds between a running trial's heartbeats (default: $ABLATE_HEARTBEAT or 15)",
    )
    worker.add_argument(
        "--grace", type=positive, metavar="SECONDS",
        help="seconds without a heartbeat before a trial is stale and retried; use the same value on every "
        "worker (default: $ABLATE_GRACE or 60)",
    )
    add_recycle_option(worker, what="run every trial in this process")
    add_backend_option(worker)
    worker.add_argument("--recycled", action="store_true", help=argparse.SUPPRESS)  # a recycling parent's child
    # A recycling parent's warm child: run each batch of N trials in a fork of this process (ablate.runtime.recycling).
    worker.add_argument("--fork-every", type=positive, metavar="N", help=argparse.SUPPRESS)
    worker.set_defaults(handler=worker_command, trains=True)

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
    )
    status.set_defaults(handler=status_command)


def project_of(args: argparse.Namespace) -> Project:
    """The project the flags name; the embedded default's folder is created when its stores live in it."""
    project = resolve_project(home=args.home, storage=args.storage, tracking_uri=args.tracking_uri)
    if str(project.home) in project.storage or str(project.home) in project.tracking_uri:
        project.ensure()  # the embedded default keeps its stores in the project folder
    return project


def submit_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate submit FILE`: store the study and enqueue its missing trials; run nothing."""
    from ablate.cli.commands import check_custom_models, check_model_removals, resolved
    from ablate.redaction import redact
    from ablate.runtime.submit import submit_study  # Optuna, MLflow: not for --help
    from ablate.spec.budget import check_budget
    from ablate.spec.loading import load_spec

    loaded = resolved(load_spec(args.study_file, profile=args.profile, overrides=tuple(args.overrides)))
    check_budget(loaded.spec, allow_large=args.allow_large)
    check_model_removals(loaded.spec)  # a removal that breaks the graph: refused before anything is stored
    check_custom_models(loaded.spec)  # a custom builder, loss or objective that cannot work: likewise
    project = project_of(args)
    submitted = submit_study(loaded, project)
    spec = loaded.spec
    total = spec.planned_trials
    console.print(
        f"submitted [bold]{spec.name}[/bold]: {submitted.added} trial(s) enqueued, {total - submitted.added} of "
        f"{total} already finished, waiting or running\n  optuna storage: {redact(project.storage)}\n  mlflow: "
        f"{redact(project.tracking_uri)} (experiment {submitted.experiment_id}, parent run {submitted.parent_run_id})\n"
        f"  run it with: ablate worker --study {spec.name}",
        highlight=False,
    )
    return 0


def worker_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate worker`: run submitted studies' trials until there is no work."""
    from ablate.runtime.worker_options import WorkerOptions
    from ablate.runtime.worker_process import run_worker  # Optuna, MLflow, Keras (when serving): not for --help

    options = WorkerOptions(
        project=project_of(args),
        studies=tuple(args.studies or ()),
        all_studies=args.all,
        wait=args.wait,
        heartbeat=args.heartbeat,
        grace=args.grace,
        max_trials=args.max_trials,
        recycle_after=args.recycle_after,
        recycled=args.recycled,
        fork_every=args.fork_every,
    )
    return run_worker(options, console)


def status_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate status`: every study in the storage with its counts and best value, and the workers seen."""
    from rich.console import Console  # rich and Optuna: not for --help
    from rich.table import Table

    from ablate.redaction import redact
    from ablate.runtime.status import status_report

    project = project_of(args)
    report = status_report(project.storage, recent=timedelta(minutes=args.recent))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    out = Console()
    table = Table(title=f"studies in {redact(project.storage)}")
    for column in ("study", "complete", "running", "waiting", "pruned", "failed", "of", "best", "trial"):
        table.add_column(column, justify="left" if column == "study" else "right")
    for s in report["studies"]:
        best = "-" if s["best_value"] is None else f"{s['best_value']:.4f}"
        table.add_row(
            s["name"], *(str(s[k]) for k in ("complete", "running", "waiting", "pruned", "failed", "total")),
            best, "-" if s["best_trial"] is None else str(s["best_trial"]),
        )
    out.print(table)
    workers = Table(title=f"workers seen in the last {args.recent:g} minutes")
    for column in ("worker", "study", "last seen", "running trial"):
        workers.add_column(column)
    for w in report["workers"]:
        running = "-" if w["running_trial"] is None else str(w["running_trial"])
        workers.add_row(w["worker"], w["study"], str(w["last_seen"]), running)
    out.print(workers)
    return 0
