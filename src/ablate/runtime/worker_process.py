"""One `ablate worker` process: serve submitted studies here, in forks of a warm process, or in recycled children.

Which of the three a worker does follows from its options (see `ablate.runtime.recycling` for why
workers recycle): `recycle_after` > 0 makes this a light parent that starts children; a child with
`fork_every` runs its batches in forks of itself; otherwise it serves the trials in this process.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from ablate.errors import exit_code
from ablate.runtime.recycling import FORK_SECONDS, WORKER_ID_ENV
from ablate.runtime.supervisor import Slot, recycled_worker_id, supervise, worker_env
from ablate.runtime.worker_options import WorkerOptions, raise_interrupt


def run_worker(options: WorkerOptions, console: Any) -> int:
    """Run the worker as its options say; return its exit code."""
    if options.recycle_after:
        return recycling_worker(options, console)
    # Only a process that serves trials imports them: a recycling parent (above) stays without Keras.
    from ablate.runtime import forks
    from ablate.runtime.worker_serving import serve_here
    if options.fork_every:

        def batch(limit: int, index: int) -> tuple[int, int]:
            ran = [0]

            def serve_batch() -> int:
                code, ran[0] = serve_here(
                    options, console, max_trials=limit, recycled=True, max_seconds=FORK_SECONDS, fork_index=index
                )
                return code

            return exit_code(serve_batch, console), ran[0]  # errors end the fork as they end a command

        forks.preload(options.project.tracking_uri)
        return forks.run_batches(
            batch,
            per_fork=options.fork_every,
            max_trials=options.max_trials,
            say=lambda text: console.print(text, style="dim", highlight=False),
        )
    return serve_here(options, console, max_trials=options.max_trials, recycled=options.recycled)[0]


def recycling_worker(options: WorkerOptions, console: Any) -> int:
    """`ablate worker --recycle-after N`: a light parent (no Keras) whose child processes run the trials.

    Each child is `ablate worker --recycle-after 0 --max-trials N` with the same studies and
    settings; when it stops at its limit while work remains, a fresh one takes over. The children
    report this process's host:pid as their worker, so `ablate status` and the trials' attrs show
    the worker that was started, and signals sent to it reach the trial (see ablate.runtime.recycling).
    """
    argv = [sys.executable, "-m", "ablate", "worker"]
    argv += ["--all"] if options.all_studies else [part for name in options.studies for part in ("--study", name)]
    if not options.wait:
        argv.append("--no-wait")
    for flag, value in (("--heartbeat", options.heartbeat), ("--grace", options.grace)):
        if value:
            argv += [flag, str(value)]
    env = {**worker_env(options.project, None), WORKER_ID_ENV: recycled_worker_id()}
    signal.signal(signal.SIGTERM, raise_interrupt)  # docker stop: the child records its trial, then we end
    [code] = supervise([Slot(argv, env, recycle_after=options.recycle_after, max_trials=options.max_trials)], console)
    return code
