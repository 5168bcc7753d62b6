"""Trials in forked processes of a warm worker: the imports are paid once, the memory given back every time.

Why and when, and how signals travel: `ablate.runtime.recycling`. Linux only (where `fork` of a
process that imported TensorFlow is safe as long as the parent has run no TensorFlow op).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import itertools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

from ablate.errors import ENDING_SIGNALS, INTERRUPTED_EXIT, Interrupted
from ablate.runtime.recycling import RECYCLE_EXIT
from ablate.tracking.store import build_store, reset_connections_after_fork
from ablate.training.trial import freeze_heap

# What a trial imports, loaded once in the warm parent. Importing these runs no TensorFlow op and
# starts no connection; anything that does (a device query, a storage) happens in the fork.
PRELOAD = (
    "keras",
    "optuna",
    "mlflow",
    "sqlalchemy",
    "ablate.runtime.worker_loop",
    "ablate.training.trial",
    "ablate.training.fit",
    "ablate.training.data",
    "ablate.training.images",
    "ablate.models",
    "ablate.families",
)


def preload(tracking_uri: str | None = None) -> None:
    """Import what a trial needs, so that every fork starts with it imported.

    With a database `tracking_uri`, MLflow's store is built here too: building it checks the
    store's schema with alembic, which takes ~2.5 s, every time in every new process. MLflow
    caches the store per URI, so each fork finds it built; `_child` gives the fork fresh database
    connections (`reset_connections_after_fork`), since a connection must not cross a fork.
    """
    for name in PRELOAD:
        importlib.import_module(name)
    if tracking_uri:
        build_store(tracking_uri)
    freeze_heap()


def run_batches(
    batch: Callable[[int, int], tuple[int, int]],
    *,
    per_fork: int,
    max_trials: int | None,
    say: Callable[[str], None] = print,
) -> int:
    """Run `batch(limit, index)` in one fork after another; return the exit code that ends the worker.

    `batch(limit, index)` (index: 0 in the first fork, 1 in the next...) runs up to `limit` trials
    and returns its exit code and how many trials it
    ran: `RECYCLE_EXIT` when it stopped at a limit while work remains, 0 when no work is left.
    The next fork starts only after `RECYCLE_EXIT`; any other code (0, an error, an interrupt) is
    this worker's exit code. `say` is told of each fork that is replaced.
    """
    ran = 0
    for index in itertools.count():
        limit = per_fork if max_trials is None else min(per_fork, max_trials - ran)
        pid, code, done, interrupted = _in_fork(lambda: batch(limit, index))  # noqa: B023 - called before the loop moves on
        if interrupted:
            return code if code != 0 else INTERRUPTED_EXIT
        if code != RECYCLE_EXIT:
            return code
        ran += done
        if max_trials is not None and ran >= max_trials:
            return 0
        say(f"worker process {pid} ran its {done} trial(s); starting a fresh one (forked from {os.getpid()})")
    raise AssertionError("not reached")


def _in_fork(call: Callable[[], tuple[int, int]]) -> tuple[int, int, int, bool]:
    """Run `call` in a forked child; return its pid, exit code, trials run, and whether we were interrupted."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the child would write our buffered lines a second time
    parent = os.getpid()
    read, write = os.pipe()  # the child's count of trials comes back through it
    pid = os.fork()
    if pid == 0:
        os.close(read)
        os._exit(_child(call, parent, write))
    os.close(write)
    interrupted = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)  # the same signal: the child records its trial as interrupted by it, and exits

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, *ENDING_SIGNALS)}
    try:
        with os.fdopen(read) as counted:
            text = counted.read()  # until the child exits (its end of the pipe closes)
        _, status = os.waitpid(pid, 0)  # retried after each forwarded signal (PEP 475)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return pid, os.waitstatus_to_exitcode(status), int(text or 0), interrupted


def _child(call: Callable[[], tuple[int, int]], parent: int, write: int) -> int:
    """The fork's life: die with the warm parent, take Ctrl-C as KeyboardInterrupt, run, report, flush."""
    _die_with(parent)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        reset_connections_after_fork()
        code, ran = call()
        os.write(write, str(ran).encode())
    except KeyboardInterrupt as error:
        code = 128 + error.signum if isinstance(error, Interrupted) else INTERRUPTED_EXIT
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - the fork must never return into the parent's loop
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed pipe: nothing more to say
            stream.flush()
    return code


def _die_with(parent: int) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
