"""What the terminal shows during a study: a bar over trials and one over the current trial's batches.

On a terminal, rich draws live bars; elsewhere (CI logs, pipes) one line per epoch is printed,
so long work is never silent.
"""

from __future__ import annotations

from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from typing_extensions import Self  # a type only: Python 3.10 has no typing.Self


class StudyProgress:
    """Progress of a study's trials; also the `TrialProgress` the trainer reports to."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self._live = self.console.is_terminal
        self._bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self._live,
        )
        self._study_task: TaskID | None = None
        self._trial_task: TaskID | None = None
        self._label = ""
        self._batches = 1

    def __enter__(self) -> Self:
        self._bars.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._bars.__exit__(exc_type, exc, traceback)

    def start_study(self, name: str, total: int, done: int) -> None:
        """Show the study bar: `done` of `total` trials already finished (resumed)."""
        self._study_task = self._bars.add_task(f"study {name}", total=total, completed=done, status="")
        if not self._live:
            self.console.print(f"study {name}: {done} of {total} trials already done")

    def replan(self, total: int, lines: list[str]) -> None:
        """A sequential study's new round: the trials now planned in all, and what was decided (printed)."""
        if self._study_task is not None:
            self._bars.update(self._study_task, total=total)
        for line in lines:
            self._bars.console.print(line, highlight=False, markup=False)

    def start_trial(self, label: str, epochs: int, batches: int) -> None:
        self._label, self._batches = label, batches
        if self._trial_task is not None:
            self._bars.remove_task(self._trial_task)
        self._trial_task = self._bars.add_task(f"  {label}", total=epochs * batches, status="")

    def batch(self, epoch: int, batch: int) -> None:
        if self._trial_task is not None:
            self._bars.update(self._trial_task, completed=(epoch - 1) * self._batches + batch)

    def epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = "  ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k in ("train_loss", "val_loss"))
        if self._trial_task is not None:
            self._bars.update(self._trial_task, status=f"epoch {epoch} {shown}")
        if not self._live:
            self.console.print(f"  {self._label} epoch {epoch}: {shown}")

    def end_trial(self, label: str, outcome: str) -> None:
        """One line per finished trial, kept in the scrollback."""
        if self._study_task is not None:
            self._bars.advance(self._study_task)
        self._bars.console.print(f"  {label}: {outcome}")
