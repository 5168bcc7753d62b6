"""Local worker processes: `ablate run` (one or `--workers N`, `--gpus`) and the recycling `ablate worker`.

The workers are ordinary `ablate worker` processes sharing the study through the storage, exactly
as on a cluster; this module only starts them, pins each to a GPU, prefixes their output, passes
signals on, and waits. The storage and tracking URLs reach them through the environment, never the
command line, so a password in a URL does not show in the process list. Why and how their
processes are recycled, and how signals and finished-trial marks travel: `ablate.runtime.recycling`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from rich.markup import escape
from rich.text import Text

from ablate.backends import BACKEND_ENV
from ablate.errors import AblateError, Interrupted
from ablate.project import HOME_ENV, STORAGE_ENV, TRACKING_ENV, Project
from ablate.quiet_start import shown
from ablate.runtime.recycling import MARKS_ENV, RECYCLE_EXIT, TRIAL_END_MARK, WORKER_INDEX_ENV, forks_available

INTERRUPT_WAIT = 30.0  # seconds an interrupted child gets to record its trial before it is killed
POLL_SECONDS = 0.2


class WorkerFailedError(AblateError):
    """A local worker process ended with an error."""


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


def run_workers(
    name: str,
    project: Project,
    *,
    workers: int,
    gpus: Sequence[str],
    console: Any,
    recycle_after: int = 0,
    on_trial_end: Callable[[str, str], None] | None = None,
    backends: Sequence[str] = (),
) -> None:
    """Start `workers` processes on study `name` (worker i on GPU gpus[i % len(gpus)]) and wait.

    With `backends` (a `train.backend` factor's levels), `workers` processes per backend, each with
    `KERAS_BACKEND` set to its own: each takes only its backend's trials.

    With `recycle_after` > 0 each worker is a succession of child processes of at most that many
    trials each (see the module docstring). `on_trial_end(label, outcome)` is told of each trial a
    worker finishes (e.g. `StudyProgress.end_trial`); without it the line is printed.

    Raises:
        WorkerFailedError: a worker exited non-zero (its output above says why).
    """
    if workers < 1:
        raise AblateError(f"--workers must be at least 1; received {workers}")
    slots = []
    for index in range(workers * max(len(backends), 1)):
        gpu = gpus[index % len(gpus)] if gpus else None
        backend = backends[index // workers] if backends else None
        # One plain local worker needs no label; several (or a GPU, or a backend) are told apart by theirs.
        label = "".join(f" {part}" for part in (f"gpu {gpu}" if gpu is not None else "", backend or "") if part)
        prefix = "" if workers == 1 and gpu is None and backend is None else f"[w{index + 1}{label}] "
        argv = [sys.executable, "-m", "ablate", "worker", "--study", name]
        # The worker's index seeds its sampler (ablate.runtime.sampling.sampler_for): worker 0 of a local run
        # searches reproducibly, and workers of one run never draw the same random sequence.
        env = {**worker_env(project, gpu), WORKER_INDEX_ENV: str(index)}
        if backend is not None:
            env[BACKEND_ENV] = backend
        slots.append(Slot(argv, env, prefix=prefix, recycle_after=recycle_after))
    codes = supervise(slots, console, on_trial_end=on_trial_end)
    bad = [(i + 1, code) for i, code in enumerate(codes) if code != 0]
    if bad:
        raise WorkerFailedError(", ".join(f"worker {i} exited with code {code}" for i, code in bad))


@dataclass
class Slot:
    """One worker: its command, and the child processes that run its trials one after another.

    Attributes:
        argv: the `ablate worker ...` command, without `--recycle-after` and `--max-trials`.
        env: the child's environment.
        prefix: put before each line of the child's output.
        recycle_after: trials per child; 0: one child runs them all.
        max_trials: trials of the whole worker (all its children), or None for no limit.
    """

    argv: list[str]
    env: dict[str, str]
    prefix: str = ""
    recycle_after: int = 0
    max_trials: int | None = None
    ran: int = 0
    children: int = 0
    code: int | None = None
    process: subprocess.Popen[str] | None = field(default=None, repr=False)
    reader: threading.Thread | None = field(default=None, repr=False)

    def command(self) -> list[str]:
        """The next child's command line: its trial limit and whether it recycles."""
        argv = [*self.argv, "--recycle-after", "0"]
        if self.recycle_after and forks_available():
            # One warm child imports once and runs each batch of trials in a fork of itself.
            argv += ["--fork-every", str(self.recycle_after)]
            if self.max_trials is not None:
                argv += ["--max-trials", str(self.max_trials - self.ran)]
            return argv
        limit = self.recycle_after or None
        if self.max_trials is not None:
            left = self.max_trials - self.ran
            limit = left if limit is None else min(limit, left)
        if limit is not None:
            argv += ["--max-trials", str(limit)]
        if self.recycle_after:
            argv.append("--recycled")
        return argv

    def limit(self) -> int | None:
        value = self.command()
        return int(value[value.index("--max-trials") + 1]) if "--max-trials" in value else None


def supervise(
    slots: Sequence[Slot], console: Any, *, on_trial_end: Callable[[str, str], None] | None = None
) -> list[int]:
    """Run each slot's children until each has no more work; return each slot's exit code.

    A child that exits with `RECYCLE_EXIT` is replaced by a new one; any other code ends its slot
    (0: no more work). On Ctrl-C or SIGTERM / SIGHUP (KeyboardInterrupt here), every running child gets that signal once and
    `INTERRUPT_WAIT` seconds to record its trial, then is killed; the interrupt is raised again.
    """
    try:
        for slot in slots:
            _start(slot, console, on_trial_end)
        while any(slot.code is None for slot in slots):
            for slot in slots:
                if slot.code is None and slot.process is not None and slot.process.poll() is not None:
                    _ended(slot, console, on_trial_end)
            time.sleep(POLL_SECONDS)
    except BaseException as error:
        _stop(slots, error.signum if isinstance(error, Interrupted) else signal.SIGINT)
        raise
    return [slot.code or 0 for slot in slots]


def _start(slot: Slot, console: Any, on_trial_end: Callable[[str, str], None] | None) -> None:
    argv = slot.command()
    process = subprocess.Popen(
        argv,
        env={**slot.env, MARKS_ENV: "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Own process group and PR_SET_PDEATHSIG (see _child_setup): two syscalls between fork and exec,
        # no lock taken, so the relay threads of this process cannot deadlock the child.
        preexec_fn=_child_setup(os.getpid()),  # noqa: PLW1509
    )
    slot.process = process
    slot.children += 1
    assert process.stdout is not None
    slot.reader = threading.Thread(target=_relay, args=(process.stdout, slot.prefix, console, on_trial_end), daemon=True)
    slot.reader.start()


def _ended(slot: Slot, console: Any, on_trial_end: Callable[[str, str], None] | None) -> None:
    process = slot.process
    assert process is not None and process.returncode is not None
    if slot.reader is not None:
        slot.reader.join(timeout=5)  # its last lines first
    code = process.returncode
    if code == RECYCLE_EXIT and slot.recycle_after:
        limit = slot.limit() or 0
        slot.ran += limit
        if slot.max_trials is None or slot.ran < slot.max_trials:
            _say(console, slot, f"worker process {process.pid} ran its {limit} trial(s); starting a fresh one")
            _start(slot, console, on_trial_end)
            return
        code = 0
    slot.code = code


def _stop(slots: Sequence[Slot], signum: int = signal.SIGINT) -> None:
    """Interrupt every running child once with the signal that ended us (so its trial says which),
    give it time to record its trial, then make sure it ends."""
    running = [s.process for s in slots if s.process is not None and s.process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)
    deadline = time.monotonic() + INTERRUPT_WAIT
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for slot in slots:
        if slot.reader is not None:
            slot.reader.join(timeout=2)


def _child_setup(parent: int) -> Callable[[], None] | None:
    """Run in the child before exec: its own process group, and death with its parent (Linux)."""
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None

    def setup() -> None:
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the line above took effect
                os._exit(1)

    return setup


def _say(console: Any, slot: Slot, text: str) -> None:
    console.print(Text(slot.prefix + text, style="dim"))


def _relay(stream: IO[str], prefix: str, console: Any, on_trial_end: Callable[[str, str], None] | None = None) -> None:
    for line in stream:
        line = line.rstrip("\n")
        mark = line.find(TRIAL_END_MARK)
        if mark >= 0:
            label, _, outcome = line[mark + len(TRIAL_END_MARK) :].partition("\t")
            label = escape(prefix + label)  # "[w1]" is no markup; the outcome's markup is meant
            if on_trial_end is not None:
                on_trial_end(label, outcome)
            else:
                console.print(f"  {label}: {outcome}", highlight=False)
            continue
        if shown(line):  # TensorFlow's lines at each fork's first op are noise, as at start-up
            console.print(Text(prefix + line))


def recycled_worker_id() -> str:
    """The id the children of this process report as their worker: this process's host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"
