"""Worker processes and why they are recycled: the one place that tells the story, and its settings.

**Why.** A process that builds and trains model after model keeps growing, even after
`clear_session()` and `gc` (about 13 MB per tiny trial here; keras#21090); a GPU's memory goes
back to the device only when the process that holds it ends; and importing Keras and TensorFlow
takes 7-10 s. So with `--recycle-after N` (`ablate run`, `ablate worker`) a worker's trials run in
fresh processes of at most N trials each, and the memory goes back after every batch.

**How, on Linux** (`ablate.runtime.forks`). The worker's child imports everything a trial needs
once (`forks.PRELOAD`), touches no TensorFlow device, starts no thread of its own and keeps no
connection that a fork would use (MLflow's store is built, and each fork replaces its
connections), and then runs each batch of N trials in a process forked from itself: the fork
starts warm, connects, runs its trials and exits, taking all it allocated with it. A fork also
takes no new trial after `FORK_SECONDS`, so long (GPU) trials each get a fresh process while
short ones share one. N = 1 gives every trial a fresh process.

**Elsewhere**, or with `ABLATE_FORK=0`, the child is `ablate worker --recycle-after 0
--max-trials N`: it exits with `RECYCLE_EXIT` when it stopped at its limit while work remains (0
when there is no more work), and the parent (`ablate.runtime.supervisor`) starts the next one;
the import is then paid once per N trials.

**Signals.** Each child runs in its own process group, so a Ctrl-C in the terminal (or a SIGTERM
from `docker stop`) reaches only the parent, which passes exactly one SIGINT on to its children;
a warm parent passes SIGINT and SIGTERM on to its current fork. Each records its current trial
as interrupted, hands it back and exits; no new process is started. A child dies with its parent
(Linux: `PR_SET_PDEATHSIG`), so `kill -9` of the parent leaves no worker behind: its trial is then
failed and retried as after any `kill -9`.

**Progress.** A child marks each finished trial with a `TRIAL_END_MARK` line, which the parent
hands to its own progress display (`ablate run`'s study bar advances) instead of printing it raw.

This module imports nothing heavy: `ablate --help` reads these settings.
"""

from __future__ import annotations

import os
import sys

RECYCLE_AFTER = 25  # trials per worker process (default of --recycle-after)
RECYCLE_EXIT = 75  # a batch of trials stopped at its limit while work remains: start the next one
FORK_ENV = "ABLATE_FORK"  # 0: no warm parent; each batch of trials gets a freshly started process
# A fork takes no new trial once it has run this long ($ABLATE_FORK_SECONDS): long trials (a GPU's) each get a fresh
# process, so the device's memory is back to its baseline between them, while short ones share a
# fork, so its cost (~1.2 s here: new connections, TensorFlow's runtime) stays a few percent.
FORK_SECONDS = float(os.environ.get("ABLATE_FORK_SECONDS", "60"))
WORKER_INDEX_ENV = "ABLATE_WORKER_INDEX"  # seeds the worker's sampler (ablate.runtime.sampling.sampler_for)
WORKER_ID_ENV = "ABLATE_WORKER_ID"  # how a recycled child names its worker: the parent's host:pid
MARKS_ENV = "ABLATE_TRIAL_MARKS"  # set for children: mark each finished trial with a TRIAL_END_MARK line
TRIAL_END_MARK = "\x1eablate:trial-ended\t"  # then the trial's label, a tab, its outcome (rich markup)


def forks_available() -> bool:
    """Whether trials can run in forks of a warm parent here (Linux, not turned off by $ABLATE_FORK=0)."""
    return sys.platform.startswith("linux") and os.environ.get(FORK_ENV, "1").strip() not in ("0", "false", "no")
