"""`ablate run --workers N [--gpus 0,1]`: N local `ablate worker` processes on one big box.

The workers are ordinary `ablate worker` processes sharing the study through the storage, exactly
as on a cluster; this module only starts them, pins each to a GPU, prefixes their output, and
waits. The storage and tracking URLs reach them through the environment, never the command line,
so a password in a URL does not show in the process list.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import IO, Any

from ablate.errors import AblateError
from ablate.home import HOME_ENV, STORAGE_ENV, TRACKING_ENV, Project


class WorkerFailedError(AblateError):
    """A local worker process ended with an error."""


def gpu_list(text: str) -> tuple[str, ...]:
    """`--gpus 0,1` → ("0", "1"): GPU indices as CUDA numbers them (an argparse type)."""
    items = tuple(item.strip() for item in text.split(","))
    if any(not item.isdigit() for item in items) or len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(f"expected distinct GPU indices separated by commas, e.g. 0,1; received {text!r}")
    return items


def worker_count(text: str) -> int:
    """`--workers N`: a whole number >= 1 (an argparse type)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}")
    return int(text)


def worker_env(project: Project, gpu: str | None) -> dict[str, str]:
    """The environment of one local worker: the project's URLs, and its GPU when pinned."""
    env = {
        **os.environ,
        STORAGE_ENV: project.storage,
        TRACKING_ENV: project.tracking_uri,
        HOME_ENV: str(project.home),
    }
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
        # TensorFlow grabs all GPU memory at start unless told to grow; workers may share a GPU.
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return env


def run_workers(name: str, project: Project, *, workers: int, gpus: Sequence[str], console: Any) -> None:
    """Start `workers` processes on study `name` (worker i on GPU gpus[i % len(gpus)]) and wait.

    Raises:
        WorkerFailedError: a worker exited non-zero (its output above says why).
    """
    if workers < 1:
        raise AblateError(f"--workers must be at least 1; received {workers}")
    processes: list[subprocess.Popen[str]] = []
    readers: list[threading.Thread] = []
    for index in range(workers):
        gpu = gpus[index % len(gpus)] if gpus else None
        process = subprocess.Popen(
            [sys.executable, "-m", "ablate", "worker", "--study", name],
            env=worker_env(project, gpu),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        prefix = f"[w{index + 1}{'' if gpu is None else f' gpu {gpu}'}] "
        assert process.stdout is not None
        reader = threading.Thread(target=_relay, args=(process.stdout, prefix, console), daemon=True)
        reader.start()
        readers.append(reader)
    try:
        codes = [process.wait() for process in processes]
    except BaseException:
        # Ctrl-C reached the workers too (same process group): they record their trials as
        # interrupted; give them a moment, then make sure none outlives this command.
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.terminate()
        raise
    for reader in readers:
        reader.join(timeout=5)
    bad = [(i + 1, code) for i, code in enumerate(codes) if code != 0]
    if bad:
        raise WorkerFailedError(", ".join(f"worker {i} exited with code {code}" for i, code in bad))


def _relay(stream: IO[str], prefix: str, console: Any) -> None:
    from rich.text import Text

    for line in stream:
        console.print(Text(prefix + line.rstrip("\n")))
