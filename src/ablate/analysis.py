"""Statistics over seeds: per-variant means with 95% t intervals, and paired differences.

Paired means: the two variants share the seed, hence the data order, the training noise and the
validation noise, so the difference per seed removes what the seeds have in common. The interval
is Student's t on the n values (n - 1 degrees of freedom); with n < 2 there is no interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A mean with its two-sided 95% confidence interval over n values."""

    mean: float
    ci95: tuple[float, float] | None
    n: int
    std: float | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form: `{"mean": .., "ci95": [lo, hi] | null, "n": .., "std": ..}`."""
        return {"mean": self.mean, "ci95": list(self.ci95) if self.ci95 else None, "n": self.n, "std": self.std}

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of zero."""
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> Estimate:
    """Mean and Student-t confidence interval of independent values."""
    from scipy import stats

    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(data)
    if n == 0:
        return Estimate(mean=math.nan, ci95=None, n=0, std=None)
    mean = float(data.mean())
    if n < 2:
        return Estimate(mean=mean, ci95=None, n=1, std=None)
    std = float(data.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return Estimate(mean=mean, ci95=(mean - half, mean + half), n=n, std=std)


def paired_difference(treatment: dict[int, float], baseline: dict[int, float]) -> Estimate:
    """Mean of `treatment[seed] - baseline[seed]` over the seeds both have, with its t interval."""
    seeds = sorted(set(treatment) & set(baseline))
    return mean_ci(treatment[s] - baseline[s] for s in seeds)


def seeds_needed(std: float | None, effect: float, confidence: float = 0.95, limit: int = 1000) -> int | None:
    """Seeds for a t interval of half-width |effect| / 2 at the observed spread (None if unknown)."""
    from scipy import stats

    if std is None or not math.isfinite(std) or effect == 0:
        return None
    for n in range(2, limit + 1):
        half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n)
        if half <= abs(effect) / 2:
            return n
    return None


def by_seed(values: Sequence[tuple[int, float]]) -> dict[int, float]:
    """Seed -> value; a seed run twice (a retry) keeps its last value."""
    return {seed: value for seed, value in values}
