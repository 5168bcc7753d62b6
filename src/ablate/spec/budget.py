"""What a study plans to train (trials, epochs), and the refusal of absurd totals unless asked.

A grid may multiply to millions of trials from a few lines (three int ranges and `repeats: 1000`);
the schema caps cells and levels one by one, and this caps the product. `--allow-large` on
`validate`, `run` and `submit` lets a study past the limits, for people with the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

from ablate.spec.errors import SpecError
from ablate.spec.study_spec import StudySpec

MAX_TRIALS = 5_000  # more than the largest shipped study plans, by far (~100)
MAX_EPOCHS = 200_000  # epochs over all trials (ensemble members count each)


@dataclass(frozen=True)
class Budget:
    """What a study trains: its trials, and epochs over all of them (an upper bound for a search)."""

    trials: int
    epochs: int

    def describe(self) -> str:
        """`6 trials, 48 epochs in all`."""
        return f"{self.trials:,} trials, {self.epochs:,} epochs in all"


def budget(spec: StudySpec) -> Budget:
    """The trials and epochs `spec` plans; a weight study (members from another study) trains none."""
    if spec.model.family == "ensemble" and spec.ensemble.source == "study":
        return Budget(trials=spec.planned_trials, epochs=0)
    members = spec.ensemble.members if spec.model.family == "ensemble" else 1
    if spec.design == "search":
        seeds = spec.max_repeats if spec.search.seeds == "average" else 1
        epochs = max_epochs(spec) * seeds * members * spec.search.trials
    else:
        epochs = sum(spec.run_config(cell, seed=spec.seed).train.epochs for cell in spec.cells()) * spec.max_repeats * members
    return Budget(trials=spec.planned_trials, epochs=epochs)


def max_epochs(spec: StudySpec) -> int:
    """The most epochs any trial of `spec` may train: `train.epochs`, or its factor's largest level."""
    factor = spec.factors.get("train.epochs")
    if factor is None:
        return spec.train.epochs
    if factor.type == "categorical":
        return max(int(level) for level in factor.levels or () if isinstance(level, (int, float)))
    return int(factor.high or spec.train.epochs)


def check_budget(spec: StudySpec, *, allow_large: bool = False) -> Budget:
    """The study's budget, refused past `MAX_TRIALS` or `MAX_EPOCHS` unless `allow_large`.

    Raises:
        SpecError: what the study plans, the limit, and the two ways on.
    """
    planned = budget(spec)
    if not allow_large and (planned.trials > MAX_TRIALS or planned.epochs > MAX_EPOCHS):
        raise SpecError(
            f"study {spec.name} plans {planned.describe()}, past the limit of {MAX_TRIALS:,} trials / "
            f"{MAX_EPOCHS:,} epochs (a typo in a range or in repeats?). Use fewer levels, seeds or epochs, or "
            "pass --allow-large if you mean it"
        )
    return planned
