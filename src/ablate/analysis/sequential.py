"""Seeds added until decided: repeated confidence intervals with a Pocock-type boundary.

A study with `repeats: {min: 3, max: 12, until: decided}` looks at every comparison after each
round of seeds (n = min, min + 1, ..., max paired seeds) and stops adding seeds to it once its
interval excludes zero, or lies inside the equivalence margin, or n reaches max. Looking after
every round and stopping on what was seen would inflate the error of a fixed-n interval (with
10 looks at 95%, a null comparison "excludes zero" far more often than 5% of the time), so every
look uses a *repeated confidence interval* (Jennison & Turnbull, "Interim analyses: the repeated
confidence interval approach", JRSS B 51:305-361, 1989): intervals whose coverage holds at all
looks at once, hence at any look a data-dependent rule stops at.

The boundary is of Wang & Tsiatis's family ("Approximately optimal one-parameter boundaries for
group sequential trials", Biometrics 43:193-199, 1987) with shape 0.25, halfway between Pocock's
(the same level at every look: early stops, but a weak last look) and O'Brien & Fleming's (a last
look almost as strong as a fixed design, but hardly any early stop): the look at n of max seeds
rejects at the normal-scale critical value c (n / max)^(0.25 - 0.5). `benchmarks/sequential.py`
compared the three on ablate's own rule (docs/report.md): this one lost least at small effects and
saved most at large ones. Each look's nominal level becomes a Student t quantile with n - 1 degrees
of freedom, and c is computed exactly for what ablate observes, the paired t statistic over n seeds
at each look n in [min, max] (normal differences, unknown spread): under the true mean the joint
law of those statistics depends on nothing else, so a fixed Monte Carlo of 100,000 sequences gives
the c at which P(some look's interval misses the mean) = alpha' (`boundary`). With m comparisons,
alpha' = alpha / m (Bonferroni), so the family-wise error of every "differs" and "equivalent"
claim together stays at alpha or below.

Decisions from one interval: it excludes zero -> the comparison differs (better / worse); it
lies inside (-margin, margin) -> equivalent (removable); otherwise undecided until max. Both
claims can only be wrong when the interval misses the true difference, which the boundary
bounds. Looks that a study skips (a resumed study, a failed seed) only make it conservative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from scipy import stats

from ablate.spec.study_spec import SEQUENTIAL_MAX_SEEDS

METHOD = (
    "repeated 95% confidence intervals over seeds added in rounds (Jennison & Turnbull 1989), Wang-Tsiatis "
    "boundary (shape 0.25) computed for the paired t statistic, Bonferroni over all comparisons"
)
SHAPE = 0.25  # Wang & Tsiatis's Delta: 0.5 is Pocock's boundary, 0 O'Brien & Fleming's
SIMULATIONS = 100_000  # Monte Carlo sequences behind each boundary: its coverage is exact to about ±0.1 point
MAX_SEEDS = SEQUENTIAL_MAX_SEEDS  # the largest `max` a sequential study may have (the simulation grows with it)

Reason = Literal["excludes zero", "inside margin", "max reached", "undecided"]


@dataclass(frozen=True)
class SequentialRule:
    """How a sequential study looks: rounds from `min_seeds` to `max_seeds`, at family-wise level `alpha`.

    Attributes:
        min_seeds: the first look's seeds (at least 2: a t interval needs a spread).
        max_seeds: the last look's seeds; a comparison still undecided here is reported undecided.
        seeds: every seed the study may run, in the order rounds add them (`max_seeds` of them).
        comparisons: m, the comparisons the family-wise error is shared by (Bonferroni).
        alpha: the family-wise error of all claims together.
        margin: the equivalence margin (objective units), or None for no equivalence claims.
    """

    min_seeds: int
    max_seeds: int
    seeds: tuple[int, ...]
    comparisons: int
    alpha: float = 0.05
    margin: float | None = None

    @classmethod
    def of(cls, *, min_seeds: int, max_seeds: int, seeds: Sequence[int]) -> SequentialRule:
        """A rule for a study's rounds; `study_effects` sets the comparisons and the margin."""
        return cls(min_seeds=min_seeds, max_seeds=max_seeds, seeds=tuple(seeds), comparisons=1)

    def nominal(self, n: int) -> float:
        """The nominal two-sided level of the look at n paired seeds (`nominal_level`)."""
        return nominal_level(n, self.min_seeds, self.max_seeds, self.alpha / max(1, self.comparisons))

    def describe(self) -> dict[str, object]:
        """JSON-ready form, for the report: the limits and each look's nominal level."""
        return {"min": self.min_seeds, "max": self.max_seeds, "comparisons": self.comparisons, "alpha": self.alpha,
                "shape": SHAPE, "margin": self.margin,
                "nominal_alpha": {n: self.nominal(n) for n in range(self.min_seeds, self.max_seeds + 1)}}


@dataclass(frozen=True)
class Look:
    """One comparison at one look: its paired differences, repeated interval and decision."""

    n: int  # the round: seeds seeds[:n] were asked for
    seeds: tuple[int, ...]  # the seeds among them with both variants finished
    mean: float
    interval: tuple[float, float] | None  # None: fewer than 2 paired seeds
    std: float | None
    p_nominal: float | None  # the look's plain paired t p (compare with the rule's nominal level, not with 0.05)
    reason: Reason


def nominal_level(n: int, min_seeds: int, max_seeds: int, alpha: float) -> float:
    """The nominal two-sided level of the look at n paired seeds, of looks at min..max seeds that together err with `alpha`."""
    if min_seeds == max_seeds:
        return alpha  # one look: the plain interval
    return float(2 * stats.norm.sf(boundary(min_seeds, max_seeds, alpha) * (n / max_seeds) ** (SHAPE - 0.5)))


@lru_cache(maxsize=64)
def boundary(min_seeds: int, max_seeds: int, alpha: float) -> float:
    """The constant c of the boundary that makes looks at n = min..max seeds miss the mean with probability `alpha`.

    Monte Carlo with a fixed generator (the same answer in every process): for each simulated
    sequence of normal differences, each look's plain t-test p as a normal quantile, divided by the
    boundary's shape (n / max)^(SHAPE - 0.5); c is the (1 - alpha) quantile of its largest.
    """
    if not 2 <= min_seeds <= max_seeds <= MAX_SEEDS:
        raise ValueError(f"looks need 2 <= min <= max <= {MAX_SEEDS}; received min={min_seeds}, max={max_seeds}")
    rng = np.random.default_rng(20261204)
    largest = np.zeros(SIMULATIONS)
    draws = rng.standard_normal((SIMULATIONS, max_seeds))
    sums = np.cumsum(draws, axis=1)
    squares = np.cumsum(draws**2, axis=1)
    for n in range(min_seeds, max_seeds + 1):
        mean = sums[:, n - 1] / n
        variance = (squares[:, n - 1] - n * mean**2) / (n - 1)
        t = mean / np.sqrt(np.maximum(variance, 1e-300) / n)
        z = stats.norm.isf(stats.t.sf(np.abs(t), df=n - 1))  # the same tail probability on the normal scale
        np.maximum(largest, z / (n / max_seeds) ** (SHAPE - 0.5), out=largest)
    return float(np.quantile(largest, 1 - alpha))


def look(differences: Mapping[int, float], rule: SequentialRule, n: int) -> Look:
    """The comparison at round n: the paired differences of seeds `rule.seeds[:n]` and what they decide."""
    seeds = tuple(s for s in rule.seeds[:n] if s in differences)
    values = np.asarray([differences[s] for s in seeds], dtype=float)
    if len(values) < 2:
        return Look(n=n, seeds=seeds, mean=float(values.mean()) if len(values) else math.nan, interval=None, std=None,
                    p_nominal=None, reason="max reached" if n >= rule.max_seeds else "undecided")
    mean = float(values.mean())
    std = float(values.std(ddof=1))
    half = float(stats.t.ppf(1 - rule.nominal(len(values)) / 2, df=len(values) - 1)) * std / math.sqrt(len(values))
    interval = (mean - half, mean + half)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (std / math.sqrt(len(values))) if std > 0 else (math.inf if mean else 0.0)
    p = float(2 * stats.t.sf(abs(t), df=len(values) - 1))
    reason: Reason = "undecided"
    if len(values) >= rule.min_seeds:  # the boundary covers looks at min..max seeds only
        if interval[0] > 0 or interval[1] < 0:
            reason = "excludes zero"
        elif rule.margin is not None and -rule.margin < interval[0] and interval[1] < rule.margin:
            reason = "inside margin"
    if reason == "undecided" and n >= rule.max_seeds:
        reason = "max reached"
    return Look(n=n, seeds=seeds, mean=mean, interval=interval, std=std, p_nominal=p, reason=reason)


def decide(differences: Mapping[int, float], rule: SequentialRule, *, rounds: int) -> Look:
    """The comparison's look when it stopped: the first round in min..`rounds` that decided it, else round `rounds`.

    `rounds` is how many seeds the study has asked for so far (its last complete round). Once
    decided, a comparison stays decided at that look: the seeds added later for other comparisons
    do not change its answer.
    """
    rounds = min(rounds, rule.max_seeds)
    current = look(differences, rule, rounds)
    for n in range(rule.min_seeds, rounds + 1):
        at = look(differences, rule, n)
        if at.reason in ("excludes zero", "inside margin"):
            return at
    return current


def decided(at: Look) -> bool:
    """Whether a comparison needs no more seeds."""
    return at.reason != "undecided"


def rounds_of(seeds_present: Sequence[int], rule: SequentialRule) -> int:
    """The round the data reach: the position in `rule.seeds` of the last seed present (at least min)."""
    positions = [rule.seeds.index(s) + 1 for s in seeds_present if s in rule.seeds]
    return max([rule.min_seeds, *positions])
