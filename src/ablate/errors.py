"""The errors a user can cause and fix, and how they end a command: the message, no traceback, an exit code.

Exit codes: 0 done; 1 the work ran but something failed (a trial, the data); 2 bad input (a study
file, a flag), refused before anything was created; 130 interrupted.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any, ClassVar


class AblateError(Exception):
    """Base of the errors whose message tells the user what was wrong and what to do.

    `exit_status` is the exit code of a command that this error ends (1: the work failed; the
    study-file errors of `ablate.spec` say 2: bad input).
    """

    exit_status: ClassVar[int] = 1


INTERRUPTED_EXIT = 130  # 128 + SIGINT
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # `docker stop`, `kill`, a closed terminal: end as Ctrl-C does


class Interrupted(KeyboardInterrupt):
    """The work was ended by a signal: the current trial is recorded as interrupted, and handed back.

    A KeyboardInterrupt, so everything that cleans up after Ctrl-C cleans up after it too; it
    carries the signal, so Optuna, MLflow and the terminal can say which one it was.
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = int(signum)
        super().__init__(self.signal_name)

    @property
    def signal_name(self) -> str:
        """`SIGTERM`, `SIGINT`, ..."""
        return signal.Signals(self.signum).name


def interrupt_on_signal(signum: int, frame: Any) -> None:
    """A signal handler: end the work by raising `Interrupted` (as Ctrl-C raises KeyboardInterrupt)."""
    raise Interrupted(signum)


def end_on_signals() -> None:
    """Let SIGTERM and SIGHUP end this process cleanly (its trial recorded, its runs ended), not kill it."""
    for signum in ENDING_SIGNALS:
        signal.signal(signum, interrupt_on_signal)


def interruption(error: BaseException) -> str:
    """How an interrupt is described on a trial and its run: `interrupted by SIGTERM`."""
    name = error.signal_name if isinstance(error, Interrupted) else "SIGINT" if isinstance(error, KeyboardInterrupt) else type(error).__name__
    return f"interrupted by {name}"


def exit_code(call: Callable[[], int], console: Any) -> int:
    """Run a command's work and turn what ends it into the exit code, with the reason printed.

    An error of ours prints its message (no traceback) and gives its `exit_status`; an interrupt
    gives 130; anything else is a bug and keeps its traceback. Forked workers use it too.
    """
    try:
        return call()
    except AblateError as error:
        print_error(console, error)
        return error.exit_status
    except KeyboardInterrupt as error:
        signum = error.signum if isinstance(error, Interrupted) else signal.SIGINT
        console.print(
            f"[yellow]{interruption(error)}[/yellow]: the current trial was recorded as interrupted; "
            "run the same command again to resume"
        )
        return 128 + signum  # the shell's code for a process ended by that signal (130 for Ctrl-C)


def print_error(console: Any, error: BaseException | str) -> None:
    """Print `error: MESSAGE` on the console, as plain text."""
    from rich.text import Text  # rich is imported only when there is something to print

    # Plain text: messages hold field paths like factors.model.skip[1] that rich would read as markup.
    console.print(Text.assemble(("error: ", "bold red"), str(error)))
