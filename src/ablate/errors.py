"""The errors a user can cause and fix, and how they end a command: the message, no traceback, an exit code.

Exit codes: 0 done; 1 the work ran but something failed (a trial, the data); 2 bad input (a study
file, a flag), refused before anything was created; 130 interrupted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar


class AblateError(Exception):
    """Base of the errors whose message tells the user what was wrong and what to do.

    `exit_status` is the exit code of a command that this error ends (1: the work failed; the
    study-file errors of `ablate.spec` say 2: bad input).
    """

    exit_status: ClassVar[int] = 1


INTERRUPTED_EXIT = 130


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
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: the current trial was recorded as failed; run the same command again to resume")
        return INTERRUPTED_EXIT


def print_error(console: Any, error: BaseException | str) -> None:
    """Print `error: MESSAGE` on the console, as plain text."""
    from rich.text import Text  # rich is imported only when there is something to print

    # Plain text: messages hold field paths like factors.model.skip[1] that rich would read as markup.
    console.print(Text.assemble(("error: ", "bold red"), str(error)))
