"""Trials in forked processes of a warm worker: the imports are paid once, the memory given back every time.

A process that builds and trains model after model keeps growing, even after `clear_session()`
and `gc` (about 13 MB per tiny trial here; keras#21090), and a GPU's memory goes back to the
device only when the process that holds it ends. Starting a fresh Python process for the trials
costs the Keras/TensorFlow import (7–10 s here) each time. So a recycling worker's child (see
`ablate.launch`) imports everything a trial needs once, touches no TensorFlow device, starts no
thread of its own and keeps no connection that a fork would use (MLflow's store is built, and each
fork replaces its connections), and then runs each batch of `--recycle-after N` trials in a
process forked from itself: the fork starts warm, connects, runs its N trials and exits, taking
all it allocated with it. N = 1 gives every trial a fresh process.

Linux only (where `fork` of a process that imported TensorFlow is safe as long as the parent has
run no TensorFlow op); elsewhere, or with `ABLATE_FORK=0`, the recycling parent starts a fresh
`ablate worker` process for each batch instead (`ablate.launch.Slot`).

Signals: the warm parent passes SIGINT and SIGTERM on to its current fork (which records its
trial as interrupted and hands it back) and starts no further fork. The fork dies with the warm
parent (`PR_SET_PDEATHSIG`), as the warm parent dies with the recycling parent.
"""

from __future__ import annotations

import importlib
import itertools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

FORK_ENV = "ABLATE_FORK"  # 0: no warm parent; each batch of trials gets a freshly started process
# A fork takes no new trial once it has run this long ($ABLATE_FORK_SECONDS): long trials (a GPU's) each get a fresh
# process, so the device's memory is back to its baseline between them, while short ones share a
# fork, so its cost (~1.2 s here: new connections, TensorFlow's runtime) stays a few percent.
FORK_SECONDS = float(os.environ.get("ABLATE_FORK_SECONDS", "60"))
RECYCLE_EXIT = 75  # a batch of trials stopped at its limit while work remains: start the next one
INTERRUPTED_EXIT = 130
# What a trial imports, loaded once in the warm parent. Importing these runs no TensorFlow op and
# starts no connection; anything that does (a device query, a storage) happens in the fork.
PRELOAD = (
    "keras",
    "optuna",
    "mlflow",
    "sqlalchemy",
    "ablate.worker",
    "ablate.objective",
    "ablate.train",
    "ablate.data",
    "ablate.models",
    "ablate.images",
    "ablate.families.unet",
    "ablate.families.diffusion",
    "ablate.families.ensemble",
)


def available() -> bool:
    """Whether trials can run in forks of a warm parent here (Linux, not turned off by $ABLATE_FORK=0)."""
    return sys.platform.startswith("linux") and os.environ.get(FORK_ENV, "1").strip() not in ("0", "false", "no")


def preload(tracking_uri: str | None = None) -> None:
    """Import what a trial needs, so that every fork starts with it imported.

    With a database `tracking_uri`, MLflow's store is built here too: building it checks the
    store's schema with alembic, which takes ~2.5 s, every time in every new process. MLflow
    caches the store per URI, so each fork finds it built; `_child` gives the fork fresh database
    connections (`_reset_mlflow_connections`), since a connection must not cross a fork.
    """
    for name in PRELOAD:
        importlib.import_module(name)
    if tracking_uri and _mlflow_engines() is not None and not tracking_uri.startswith(("http:", "https:")):
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri)._tracking_client.store  # noqa: B018 - built and cached by MLflow
    from ablate.objective import freeze_heap

    freeze_heap()


def _mlflow_engines() -> dict[str, Any] | None:
    """MLflow's engines of database stores, by URI (None where this MLflow keeps them elsewhere)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engines = getattr(SqlAlchemyStore, "_engine_map", None)
    return engines if isinstance(engines, dict) else None


def _reset_mlflow_connections() -> None:
    """In a fork: drop the pooled connections inherited from the warm parent, without closing them.

    SQLAlchemy's recipe for engines used across `fork`: `dispose(close=False)` leaves the parent's
    connections alone and makes this process open its own.
    """
    if "mlflow" not in sys.modules:
        return
    for engine in list((_mlflow_engines() or {}).values()):
        engine.dispose(close=False)


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
        pid, code, done, interrupted = _in_fork(lambda: batch(limit, index))
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
        try:
            os.kill(pid, signal.SIGINT)  # the child records its trial as interrupted and exits
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
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
        _reset_mlflow_connections()
        code, ran = call()
        os.write(write, str(ran).encode())
    except KeyboardInterrupt:
        code = INTERRUPTED_EXIT
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 - the fork must never return into the parent's loop
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed pipe: nothing more to say
            pass
    return code


def _die_with(parent: int) -> None:
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


__all__ = ["FORK_ENV", "RECYCLE_EXIT", "available", "preload", "run_batches"]
