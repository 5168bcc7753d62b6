"""Serving trials in this process: what an `ablate worker` that is not a recycling parent does.

Split from `ablate.runtime.worker_process` so that a recycling parent, which only starts and
watches children, never imports Keras, Optuna or MLflow.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Any

import keras

from ablate.redaction import redact
from ablate.runtime.logs import quiet_libraries
from ablate.runtime.optuna_internals import summary_study_id
from ablate.runtime.progress import StudyProgress
from ablate.runtime.recycling import MARKS_ENV, RECYCLE_EXIT, TRIAL_END_MARK
from ablate.runtime.retries import StaleTrialHandler
from ablate.runtime.storage import heartbeat_seconds, open_storage, reach_tracking, retry, stale_grace
from ablate.runtime.work import StudyWork, attach, worker_id
from ablate.runtime.worker_loop import has_running, serve, waiting_here
from ablate.runtime.worker_options import WorkerOptions, raise_interrupt
from ablate.spec.attributes import BACKEND_ATTR, BACKEND_FACTOR, SPEC_ATTR
from ablate.tracking.tracker import Tracker
from ablate.training.device import describe_device


def serve_here(
    options: WorkerOptions,
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
    worker this is; only the first prints the worker's settings, and none says it recycles (the
    warm worker does).
    """
    stop_at = None if max_seconds is None else time.monotonic() + max_seconds
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    quiet_libraries()
    project = options.project
    heartbeat = options.heartbeat or heartbeat_seconds()
    grace = options.grace or stale_grace()
    storage = open_storage(project.storage, heartbeat=heartbeat, grace=grace, on_stale=StaleTrialHandler(lambda: tracker, grace))
    reach_tracking(project.tracking_uri)  # seconds, not MLflow's minutes of retries
    tracker = Tracker(project.tracking_uri, artifact_root=project.artifact_root)
    attached: dict[str, StudyWork] = {}
    backend = keras.backend.backend()

    def studies() -> list[StudyWork]:
        if options.all_studies:
            summaries = retry(storage.get_all_studies, what="list the studies")
            names = [
                s.study_name
                for s in sorted(summaries, key=summary_study_id)
                if SPEC_ATTR in s.user_attrs and s.user_attrs[SPEC_ATTR].get("engine", "optuna") == "optuna"
                and s.user_attrs.get(BACKEND_ATTR, backend) in (backend, BACKEND_FACTOR)
            ]  # engine keras-tuner studies run in `ablate run` only; another backend's studies, on its workers
        else:
            names = list(options.studies)
        for name in names:
            if name not in attached:
                attached[name] = attach(name, storage, tracker)
        return [attached[name] for name in names]

    # `docker stop` and scaling down send SIGTERM: treat it like Ctrl-C, so the current trial is
    # recorded as interrupted and handed back at once instead of waiting out the grace period.
    signal.signal(signal.SIGTERM, raise_interrupt)
    if not fork_index:
        console.print(
            f"worker {worker_id()}: storage {redact(project.storage)}, mlflow {redact(project.tracking_uri)}, "
            f"heartbeat {heartbeat}s, grace {grace}s; trains on {describe_device()} with Keras' {backend} backend",
            highlight=False,
        )
    with (MarkedProgress if os.environ.get(MARKS_ENV) else StudyProgress)(console) as progress:
        ran = serve(studies, progress=progress, max_trials=max_trials, wait=options.wait, stop_at=stop_at)
    at_limit = (max_trials is not None and ran >= max_trials) or (stop_at is not None and time.monotonic() >= stop_at)
    if recycled and at_limit and work_left(studies(), wait=options.wait):
        if fork_index is None:
            console.print(f"worker {worker_id()}: ran {ran} trial(s), recycling this process", highlight=False)
        return RECYCLE_EXIT, ran
    console.print(f"worker {worker_id()}: no more work; ran {ran} trial(s)", highlight=False)
    return 0, ran


class MarkedProgress(StudyProgress):
    """A worker under a parent (`ablate run`, a recycling worker): finished trials go to the parent's display."""

    def end_trial(self, label: str, outcome: str) -> None:
        self.console.file.write(f"{TRIAL_END_MARK}{label}\t{outcome}\n")
        self.console.file.flush()


def work_left(works: list[StudyWork], *, wait: bool) -> bool:
    """Whether a fresh worker process would find work: a waiting trial, or (with wait) a running one."""
    for work in works:
        if work.spec.design == "search":
            return True  # a search asks its sampler for new trials while its budget lasts
        if waiting_here(work) or (wait and has_running(work)):
            return True
    return False
