"""What `ablate worker` was asked to do, and the SIGTERM handler every worker process installs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ablate.errors import Interrupted
from ablate.project import Project


@dataclass(frozen=True)
class WorkerOptions:
    """What `ablate worker` was asked to do.

    Attributes:
        project: the storage and tracking URLs.
        studies: the studies to run (empty with `all_studies`).
        all_studies: every submitted study, picking up new ones as they come.
        wait: stay while other workers' trials run (to retry them should their worker die).
        heartbeat: seconds between heartbeats (None: $ABLATE_HEARTBEAT or 15).
        grace: seconds without a heartbeat before a trial is stale (None: $ABLATE_GRACE or 60).
        max_trials: stop after this many trials.
        recycle_after: > 0: run the trials in child processes of at most this many trials each.
        recycled: this process is such a child (it exits with RECYCLE_EXIT at its limit).
        fork_every: this child runs each batch of this many trials in a fork of itself.
    """

    project: Project
    studies: tuple[str, ...] = ()
    all_studies: bool = False
    wait: bool = True
    heartbeat: int | None = None
    grace: int | None = None
    max_trials: int | None = None
    recycle_after: int = 0
    recycled: bool = False
    fork_every: int | None = None


def raise_interrupt(signum: int, frame: Any) -> None:
    """A signal handler that ends the work as Ctrl-C does (the current trial is recorded and handed back)."""
    raise Interrupted(signum)
