"""Statistics over seeds: per-variant means with 95% t intervals, paired differences and effects.

Paired means: the two variants share the seed, hence the data order, the training noise and the
validation noise, so the difference per seed removes what the seeds have in common. The interval
is Student's t on the n values (n - 1 degrees of freedom); with n < 2 there is no interval.

Effects (`study_effects`): for every factor and every level other than the baseline (the factor's
first level in the study file, or the level chosen in `baselines`), the paired difference
`level - baseline` of the objective. In a grid with several factors the difference is taken within
each combination of the other factors' levels and averaged over them per seed, so the seed stays
the unit of replication (cells that share a seed share its data order and noise, so they are not
independent). Each effect has a t interval, a paired t test (and Wilcoxon's signed-rank p as a
check that needs no normality), and a Holm-adjusted p over all the study's comparisons. The same
functions serve `ablate report` and `ablate reproduce`, so their tables always agree.

Designs other than the full grid pass their `cells` (the configurations that ran): a factor's
levels are then compared within the combinations of the other factors in which every level of
the factor ran (one-at-a-time: only the reference configuration), and factors that exist only
under some of the factor's levels (conditional ones, absent from the cell) are averaged over.
With `cells` left out the design is the full grid of `factors`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy import stats

from ablate.analysis import power, sequential
from ablate.spec.levels import Level, format_level

# A level as a cell key holds it: a boolean tagged ("bool", level) (see `_level_key`), ABSENT for a
# conditional factor switched off.
LevelKey = Level | tuple[str, bool] | tuple[str]
CellKey = tuple[LevelKey, ...]
CI_METHOD = "Student t, 95%, over seeds; differences paired by seed"
TEST_METHOD = "paired t test (two-sided), Holm-adjusted over all comparisons; Wilcoxon signed-rank p as a check"


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


def t_interval(values: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised Student-t interval along the last axis: (mean, low, high, std).

    Every row along the last axis is one sample of n >= 2 values; leading axes are independent
    samples (e.g. many simulated studies at once).
    """
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 values; received n={n}")
    mean = values.mean(axis=-1)
    std = values.std(axis=-1, ddof=1)
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * std / math.sqrt(n)
    return mean, mean - half, mean + half, std


def paired_t_pvalue(differences: np.ndarray) -> np.ndarray:
    """Vectorised two-sided p of the paired t test of mean zero, along the last axis.

    A sample with no spread has p 0 when its mean is not zero (every seed agrees) and 1 when it is.
    """
    differences = np.asarray(differences, dtype=float)
    n = differences.shape[-1]
    if n < 2:
        raise ValueError(f"a t test needs at least 2 values; received n={n}")
    mean = differences.mean(axis=-1)
    std = differences.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (std / math.sqrt(n))
    p = 2 * stats.t.sf(np.abs(t), df=n - 1)
    return np.where(std > 0, p, np.where(mean != 0, 0.0, 1.0))


def mean_ci(values: Iterable[float], confidence: float = 0.95) -> Estimate:
    """Mean and Student-t confidence interval of independent values."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(data)
    if n == 0:
        return Estimate(mean=math.nan, ci95=None, n=0, std=None)
    mean = float(data.mean())
    if n < 2:
        return Estimate(mean=mean, ci95=None, n=1, std=None)
    _, low, high, std = t_interval(data, confidence)
    return Estimate(mean=mean, ci95=(float(low), float(high)), n=n, std=float(std))


def paired_difference(treatment: dict[int, float], baseline: dict[int, float]) -> Estimate:
    """Mean of `treatment[seed] - baseline[seed]` over the seeds both have, with its t interval."""
    seeds = sorted(set(treatment) & set(baseline))
    return mean_ci(treatment[s] - baseline[s] for s in seeds)


def seeds_needed(
    std: float | None, effect: float, confidence: float = 0.95, *, current: int = 1, limit: int = 1000
) -> int | None:
    """Seeds for a t interval of half-width |effect| / 2 at the observed spread (None if unknown).

    Args:
        std: the observed standard deviation of the paired differences.
        effect: the observed mean difference.
        confidence: of the interval.
        current: the seeds the study already has; the answer is always more than this, since a
            suggestion to run as many seeds as already ran (or fewer) would settle nothing.
        limit: the largest number considered; beyond it the answer is None.
    """
    if std is None or not math.isfinite(std) or std <= 0 or effect == 0:
        return None
    counts = np.arange(max(2, current + 1), limit + 1)
    if counts.size == 0:
        return None
    half = stats.t.ppf(0.5 + confidence / 2, df=counts - 1) * std / np.sqrt(counts)  # one call: fast for 1,000 n
    enough = np.flatnonzero(half <= abs(effect) / 2)
    return int(counts[enough[0]]) if enough.size else None


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values for several comparisons (family-wise error).

    The i-th smallest of m p-values is multiplied by (m - i + 1); the results are made
    non-decreasing in that order and capped at 1. Returned in the input order.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class Observation:
    """One finished trial as the statistics see it: its factor levels, seed and objective value."""

    params: Mapping[str, Level]
    seed: int
    value: float


def observations_from(records: Iterable[Any], seeds: Iterable[int] | None = None) -> list[Observation]:
    """The complete trials among `ablate.runtime.studies.TrialRecord`s, in trial order, as observations.

    Args:
        records: objects with `state`, `seed`, `params`, `value` and `number`.
        seeds: keep only these seeds (the study's current seeds), or all when None.
    """
    wanted = set(seeds) if seeds is not None else None
    return [
        Observation(params=dict(r.params), seed=int(r.seed), value=float(r.value))
        for r in sorted(records, key=lambda r: r.number)
        if r.state == "COMPLETE" and r.seed is not None and r.value is not None and (wanted is None or r.seed in wanted)
    ]


Verdict = Literal["better", "worse", "unclear", "equivalent", "insufficient", "untestable"]


@dataclass(frozen=True)
class Effect:
    """The paired effect of one factor level against the factor's baseline level.

    Attributes:
        factor: the dotted setting (`model.skip`).
        level: the level compared.
        baseline: the reference level (the factor's first level in the study file).
        difference: mean of `level - baseline` over the paired seeds, with its t interval.
        seeds: the seeds that entered the comparison.
        p_value: paired t test, two-sided (None with fewer than 2 seeds).
        p_holm: `p_value` after Holm's correction over every comparison of the study.
        wilcoxon_p: Wilcoxon signed-rank p (exact for small n); with n seeds it cannot go below
            2 / 2**n, so it only confirms the t test once there are 6 seeds or more.
        seeds_needed: seeds for an interval half as wide as the observed difference, at the
            observed spread (None when unknown).
        verdict: better / worse (than the baseline, given the objective's direction, significant
            after Holm), equivalent (not shown different, and shown inside the equivalence margin by
            two one-sided tests, Holm-adjusted), unclear (the interval or the corrected test does
            not rule out zero),
            insufficient (fewer than 2 paired seeds), or untestable (every seed gave the same
            difference: with no spread the t test has nothing to weigh the mean against).
        note: the verdict as a plain sentence.
        mde80: the smallest |difference| the paired t test detects with 80% power with these
            seeds at the observed spread (`ablate.analysis.power.mde80`; None with < 2 seeds).
        seeds_for_effect: seeds for 80% power against `analysis.effect_of_interest` (None unset).
        equivalence: with `analysis.equivalence_margin`: the margin, the TOST p, its Holm-adjusted
            p over the study's comparisons, and whether it shows the two equivalent.
        method: how the interval and the verdict were made (fixed seeds: `CI_METHOD`; a study
            with `repeats: {until: decided}`: `ablate.analysis.sequential.METHOD`).
        sequential: for a sequential study, the look the comparison was decided at, why its seeds
            stopped, and the boundary (`ablate.analysis.sequential`); None otherwise.
        confirmation: for a search's winner against its baseline, the exploratory and the
            confirmatory paired intervals (`confirm: {seeds: N}`); None otherwise.
    """

    factor: str
    level: Level
    baseline: Level
    difference: Estimate
    seeds: tuple[int, ...]
    p_value: float | None
    p_holm: float | None
    wilcoxon_p: float | None
    seeds_needed: int | None
    verdict: Verdict
    note: str
    mde80: float | None = None
    seeds_for_effect: int | None = None
    equivalence: dict[str, Any] | None = None
    method: str = CI_METHOD
    sequential: dict[str, Any] | None = None
    confirmation: dict[str, Any] | None = None

    @property
    def component(self) -> str:
        """What the baseline's setting does, read as a leave-one-out verdict: helps / hurts / removable / undecided.

        The effect is `level - baseline`: a change away from the baseline that is worse means the
        baseline's component helps; one that is better means it hurts; one shown equivalent means
        it can be removed; anything else is undecided.
        """
        return {"worse": "helps", "better": "hurts", "equivalent": "removable"}.get(self.verdict, "undecided")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "factor": self.factor,
            "level": self.level,
            "baseline": self.baseline,
            "difference": {**self.difference.as_dict(), "excludes_zero": self.difference.excludes_zero},
            "seeds": list(self.seeds),
            "p_value": self.p_value,
            "p_holm": self.p_holm,
            "wilcoxon_p": self.wilcoxon_p,
            "seeds_needed": self.seeds_needed,
            "verdict": self.verdict,
            "note": self.note,
            "mde80": self.mde80,
            "seeds_for_effect": self.seeds_for_effect,
            "equivalence": self.equivalence,
            "method": self.method,
            "component": self.component,
            "sequential": self.sequential,
            "confirmation": self.confirmation,
        }


def cell_values(observations: Iterable[Observation], factors: Mapping[str, Sequence[Level]]) -> dict[CellKey, dict[int, float]]:
    """Cell (levels in factor order) -> seed -> value; a seed run twice keeps its last value.

    Non-finite values (a diverged trial that still completed) are left out.
    """
    table: dict[CellKey, dict[int, float]] = {}
    for obs in observations:
        if obs.value is None or not math.isfinite(obs.value):
            continue
        table.setdefault(cell_tuple(obs.params, factors), {})[obs.seed] = float(obs.value)
    return table


def cell_tuple(params: Mapping[str, Level], factors: Mapping[str, Sequence[Level]]) -> CellKey:
    """The key of a cell in `cell_values`' table: its levels in factor order.

    A factor absent from `params` (a conditional factor switched off) has its own marker, so it
    is never confused with a level `None`.
    """
    return tuple(_level_key(params[name]) if name in params else ABSENT for name in factors)


ABSENT: tuple[str] = ("absent",)  # a conditional factor's place in a cell key when the factor is switched off


def level_values(
    table: Mapping[CellKey, Mapping[int, float]],
    factors: Mapping[str, Sequence[Level]],
    factor: str,
    level: Level,
    cells: Sequence[Mapping[str, Level]] | None = None,
) -> dict[int, float]:
    """Seed -> mean over the other factors' level combinations of the value at `factor=level`.

    A seed enters only if every combination has a value for it, so each seed's mean is over the
    same cells. With a single factor this is just the cell's values. `cells`: the design's
    configurations when it is not the full grid of `factors` (see the module's docstring).
    """
    groups = _level_groups(factors, factor, cells)
    per_seed: dict[int, list[float]] = {}
    for group in groups:
        for seed, value in _group_values(table, group.get(_level_key(level), [])).items():
            per_seed.setdefault(seed, []).append(value)
    return {seed: float(np.mean(v)) for seed, v in sorted(per_seed.items()) if len(v) == len(groups)}


def level_estimate(
    table: Mapping[CellKey, Mapping[int, float]],
    factors: Mapping[str, Sequence[Level]],
    factor: str,
    level: Level,
    cells: Sequence[Mapping[str, Level]] | None = None,
) -> Estimate:
    """Mean and t interval over seeds of one factor level (averaged over the other factors)."""
    return mean_ci(level_values(table, factors, factor, level, cells).values())


def comparable(factors: Mapping[str, Sequence[Level]], factor: str, cells: Sequence[Mapping[str, Level]] | None = None) -> bool:
    """Whether the design ran every level of `factor` in at least one combination of the others."""
    return bool(_level_groups(factors, factor, cells))


def study_effects(
    observations: Iterable[Observation],
    factors: Mapping[str, Sequence[Level]],
    *,
    direction: Literal["minimize", "maximize"] = "minimize",
    metric: str = "val_loss",
    confidence: float = 0.95,
    baselines: Mapping[str, Level] | None = None,
    cells: Sequence[Mapping[str, Level]] | None = None,
    equivalence_margin: float | None = None,
    effect_of_interest: float | None = None,
    rule: sequential.SequentialRule | None = None,
) -> list[Effect]:
    """Every factor level against its factor's baseline, paired by seed, Holm-corrected.

    With `rule` (a study whose seeds are added until decided) every comparison is instead judged
    by repeated confidence intervals at the look it stopped at (`ablate.analysis.sequential`),
    Bonferroni over the comparisons; the rule's `comparisons` and `margin` are set here.

    Args:
        observations: finished trials (params, seed, value).
        factors: the study's factors and their levels, in file order; the first level of each
            is its baseline unless `baselines` names another.
        direction: whether a lower or a higher objective is better (for the verdict).
        metric: the objective's name, for the notes.
        confidence: of the intervals.
        baselines: factor -> the level the factor's other levels are compared against (each
            must be one of its levels); factors left out keep their first level.
        cells: the design's configurations when it is not the full grid of `factors`
            (one-at-a-time, conditional factors); factors none of whose combinations ran all
            their levels have no effect rows.
        equivalence_margin: delta, in objective units: each comparison also gets two one-sided
            tests of |difference| < delta (Holm-adjusted over the comparisons), and a comparison
            not shown different but shown inside the margin is `equivalent`.
        effect_of_interest: a difference, in objective units, whose seeds for 80% power each
            comparison reports.
        rule: the sequential design, when the study's seeds are added until decided.
    """
    table = cell_values(observations, factors)
    if rule is not None:
        return _sequential_effects(table, factors, cells, baselines, rule, direction=direction, metric=metric,
                                   margin=equivalence_margin, effect_of_interest=effect_of_interest)
    raw: list[Effect] = []
    for factor, level, reference, by_seed in paired_differences(table, factors, cells, baselines):
        seeds = tuple(sorted(by_seed))
        differences = np.asarray([by_seed[s] for s in seeds], dtype=float)
        effect = _raw_effect(factor, level, reference, seeds, differences, confidence)
        raw.append(_with_power(effect, differences, 1 - confidence, equivalence_margin, effect_of_interest))
    tested = [i for i, e in enumerate(raw) if e.p_value is not None]
    adjusted = holm([raw[i].p_value for i in tested])  # type: ignore[misc]
    effects = list(raw)
    for i, p in zip(tested, adjusted):
        effects[i] = replace(raw[i], p_holm=p)
    bounded = [i for i, e in enumerate(effects) if e.equivalence is not None and e.equivalence["p"] is not None]
    for i, p in zip(bounded, holm([effects[i].equivalence["p"] for i in bounded])):  # type: ignore[index]
        equivalence = {**(effects[i].equivalence or {}), "p_holm": p, "equivalent": p < 1 - confidence}
        effects[i] = replace(effects[i], equivalence=equivalence)
    return [_with_verdict(e, direction=direction, metric=metric, comparisons=len(tested), confidence=confidence)
            for e in effects]


def comparisons(
    factors: Mapping[str, Sequence[Level]],
    cells: Sequence[Mapping[str, Level]] | None = None,
    baselines: Mapping[str, Level] | None = None,
) -> list[tuple[str, Level, Level]]:
    """The design's comparisons, (factor, level, baseline), in the order `study_effects` reports them."""
    chosen = dict(baselines or {})
    found: list[tuple[str, Level, Level]] = []
    for factor, levels in factors.items():
        if len(levels) < 2 or not comparable(factors, factor, cells):
            continue
        reference = chosen.get(factor, levels[0])
        if all(_level_key(reference) != _level_key(level) for level in levels):
            raise ValueError(f"baseline {reference!r} of {factor!r} is not one of its levels {list(levels)}")
        found += [(factor, level, reference) for level in levels if _level_key(level) != _level_key(reference)]
    return found


def paired_differences(
    table: Mapping[CellKey, Mapping[int, float]],
    factors: Mapping[str, Sequence[Level]],
    cells: Sequence[Mapping[str, Level]] | None = None,
    baselines: Mapping[str, Level] | None = None,
) -> list[tuple[str, Level, Level, dict[int, float]]]:
    """Each comparison with its paired differences `level - baseline` by seed (the seeds both have)."""
    out: list[tuple[str, Level, Level, dict[int, float]]] = []
    for factor, level, reference in comparisons(factors, cells, baselines):
        baseline = level_values(table, factors, factor, reference, cells)
        treatment = level_values(table, factors, factor, level, cells)
        out.append((factor, level, reference, {s: treatment[s] - baseline[s] for s in sorted(set(treatment) & set(baseline))}))
    return out


def comparison_cells(
    factors: Mapping[str, Sequence[Level]],
    factor: str,
    levels: Sequence[Level],
    cells: Sequence[Mapping[str, Level]] | None = None,
) -> set[CellKey]:
    """The cells (as `cell_tuple` keys) whose values enter the comparison of `levels` of `factor`."""
    wanted = {_level_key(level) for level in levels}
    return {key for group in _level_groups(factors, factor, cells) for level, keys in group.items() if level in wanted
            for key in keys}


def _sequential_effects(
    table: Mapping[CellKey, Mapping[int, float]],
    factors: Mapping[str, Sequence[Level]],
    cells: Sequence[Mapping[str, Level]] | None,
    baselines: Mapping[str, Level] | None,
    rule: sequential.SequentialRule,
    *,
    direction: str,
    metric: str,
    margin: float | None,
    effect_of_interest: float | None,
) -> list[Effect]:
    """Every comparison judged at the look it stopped at (see `ablate.analysis.sequential`)."""
    pairs = paired_differences(table, factors, cells, baselines)
    rule = replace(rule, comparisons=len(pairs), margin=margin)
    present = {seed for values in table.values() for seed in values}
    rounds = sequential.rounds_of(sorted(present), rule)
    return [_sequential_effect(factor, level, reference, by_seed, rule, rounds, direction=direction, metric=metric,
                               effect_of_interest=effect_of_interest)
            for factor, level, reference, by_seed in pairs]


def _sequential_effect(
    factor: str, level: Level, reference: Level, by_seed: Mapping[int, float], rule: sequential.SequentialRule,
    rounds: int, *, direction: str, metric: str, effect_of_interest: float | None,
) -> Effect:
    at = sequential.decide(by_seed, rule, rounds=rounds)
    values = np.asarray([by_seed[s] for s in at.seeds], dtype=float)
    n = len(values)
    difference = Estimate(mean=at.mean, ci95=at.interval, n=n, std=at.std)
    alpha = rule.nominal(max(n, 2))  # the level of the look it stopped at
    std = at.std if at.std and at.std > 0 else None
    lower = at.mean < 0
    better = lower == (direction == "minimize")
    interval = f"[{at.interval[0]:.4g}, {at.interval[1]:.4g}]" if at.interval else "none yet"
    where = f"after {n} seed(s) (round {at.n} of at most {rule.max_seeds})"
    if at.reason == "excludes zero":
        verdict: Verdict = "better" if better else "worse"
        note = (f"{'lower' if lower else 'higher'} {metric} than {format_level(reference)} "
                f"({'better' if better else 'worse'}): decided {where}, the repeated 95% interval {interval} excludes zero")
    elif at.reason == "inside margin":
        verdict = "equivalent"
        note = (f"equivalent to {format_level(reference)} within ±{rule.margin:g} {metric}: decided {where}, the repeated "
                f"95% interval {interval} lies inside the margin; a component whose removal is equivalent is removable")
    elif n < 2:
        verdict = "insufficient"
        note = f"no answer yet: {n} seed(s) pair these variants; seeds are still being added (at most {rule.max_seeds})"
    else:
        verdict = "unclear"
        state = ("undecided at the maximum of seeds" if at.reason == "max reached"
                 else "undecided so far; more seeds are planned")
        note = f"{state}: {where} the repeated 95% interval {interval} includes zero" + (
            "" if rule.margin is None else f" and is not inside ±{rule.margin:g}")
    mde = power.mde80(n, std, alpha) if n >= 2 and std else None
    if verdict == "unclear" and mde is not None:
        note += (f"; with {n} seeds only a difference of about {mde:.3g} in {metric} or more would be found with 80% "
                 "power, so this does not show that there is no effect")
    return Effect(
        factor=factor, level=level, baseline=reference, difference=difference, seeds=at.seeds,
        p_value=at.p_nominal, p_holm=None, wilcoxon_p=_wilcoxon(values), seeds_needed=None, verdict=verdict, note=note,
        mde80=mde, seeds_for_effect=power.seeds_for(effect_of_interest, std, alpha) if effect_of_interest and std else None,
        equivalence=None if rule.margin is None else {
            "margin": rule.margin, "p": None, "p_holm": None, "equivalent": at.reason == "inside margin",
            "method": "the repeated interval inside ±margin",
        },
        method=sequential.METHOD,
        sequential={**rule.describe(), "look": at.n, "reason": at.reason, "decided": sequential.decided(at),
                    "rounds": rounds},
    )


def without_spread(differences: np.ndarray) -> bool:
    """Whether two or more paired differences are all the same (up to rounding in the last bits).

    Then the t statistic is a nonzero mean over a zero spread: p 0 and an interval [m, m], which
    only says that the seeds changed nothing, not that the difference is certain.
    """
    if len(differences) < 2:
        return False
    scale = max(1.0, float(np.max(np.abs(differences))))
    return float(np.ptp(differences)) <= 1e-12 * scale


def _raw_effect(factor: str, level: Level, baseline: Level, seeds: tuple[int, ...], differences: np.ndarray,
                confidence: float) -> Effect:
    """One comparison's statistics, before Holm's correction and the verdict."""
    difference = mean_ci(differences, confidence)
    if without_spread(differences):
        # Not a test: keep the mean, drop the degenerate interval and p, leave it out of Holm.
        return Effect(factor=factor, level=level, baseline=baseline, seeds=seeds, p_value=None, p_holm=None,
                      difference=replace(difference, ci95=None, std=0.0), wilcoxon_p=None, seeds_needed=None,
                      verdict="untestable", note="")
    return Effect(
        factor=factor,
        level=level,
        baseline=baseline,
        difference=difference,
        seeds=seeds,
        p_value=float(paired_t_pvalue(differences)) if len(seeds) >= 2 else None,
        p_holm=None,
        wilcoxon_p=_wilcoxon(differences),
        seeds_needed=seeds_needed(difference.std, difference.mean, confidence, current=difference.n)
        if difference.n >= 2 else None,
        verdict="insufficient",
        note="",
    )


def _with_power(
    effect: Effect, differences: np.ndarray, alpha: float, margin: float | None, effect_of_interest: float | None
) -> Effect:
    """The comparison's power figures and, with a margin, its (unadjusted) equivalence test."""
    std = effect.difference.std
    n = effect.difference.n if effect.verdict != "untestable" else 0
    return replace(
        effect,
        mde80=power.mde80(n, std, alpha) if n >= 2 else None,
        seeds_for_effect=power.seeds_for(effect_of_interest, std, alpha) if effect_of_interest and n >= 2 else None,
        equivalence=None if margin is None else {
            "margin": margin, "p": power.tost(differences, margin) if n >= 2 else None, "p_holm": None, "equivalent": False,
        },
    )


def _power_sentence(effect: Effect, metric: str) -> str:
    """What a null result could have found: the MDE at 80% power, and the seeds an effect of interest needs."""
    if effect.mde80 is None:
        return ""
    text = (f"; with {effect.difference.n} seeds only a difference of about {effect.mde80:.3g} in {metric} or more would be "
            "found with 80% power, so this does not show that there is no effect")
    if effect.seeds_for_effect is not None:
        text += f"; {effect.seeds_for_effect} seeds per cell would find the effect of interest with 80% power"
    return text


def _with_verdict(effect: Effect, *, direction: str, metric: str, comparisons: int, confidence: float) -> Effect:
    """Classify an effect and say it in one sentence, including how many seeds would settle it."""
    diff = effect.difference
    n = diff.n
    level = f"{confidence:.0%}"
    if effect.verdict == "untestable":
        return replace(
            effect,
            note=f"not testable: the seeds gave identical differences ({diff.mean:.4g} with each of the {n} seeds), "
            "so the seeds may not change anything (same data order and noise in every seed?); a t test needs "
            "differences that vary from seed to seed",
        )
    if n == 0:
        return replace(effect, verdict="insufficient", note="no seed has both variants finished: nothing to compare yet")
    if n < 2 or diff.ci95 is None:
        return replace(
            effect,
            verdict="insufficient",
            note=f"too few seeds to say anything: only {n} seed pairs these variants, and an interval needs "
            "at least 2; run at least 3 seeds per cell (--set repeats=3) to see the spread",
        )
    lower = diff.mean < 0
    better = lower == (direction == "minimize")
    word = "lower" if lower else "higher"
    needed = effect.seeds_needed
    more = (
        f"at the observed spread (sd {diff.std:.3g} of the paired differences) about {needed} seeds per cell "
        f"(now {n}) would give an interval half as wide as this difference (--set repeats={needed})"
        if needed is not None
        else "at the observed spread no practical number of seeds would separate a difference this small from zero"
    )
    if diff.excludes_zero and effect.p_holm is not None and effect.p_holm < 1 - confidence:
        return replace(
            effect,
            verdict="better" if better else "worse",
            note=f"{word} {metric} than {format_level(effect.baseline)} ({'better' if better else 'worse'}): the {level} "
            f"interval excludes zero and the Holm-adjusted p is {effect.p_holm:.3g} over {comparisons} comparison(s)",
        )
    equivalence = effect.equivalence or {}
    if equivalence.get("equivalent"):
        return replace(
            effect,
            verdict="equivalent",
            note=f"equivalent to {format_level(effect.baseline)} within ±{equivalence['margin']:g} {metric}: two one-sided "
            f"tests put the difference inside the margin (Holm-adjusted p {equivalence['p_holm']:.3g} over "
            f"{comparisons} comparison(s)); a component whose removal is equivalent is removable",
        )
    if diff.excludes_zero:
        return replace(
            effect,
            verdict="unclear",
            note=f"{word} {metric} than {format_level(effect.baseline)}, and the interval excludes zero, but not after "
            f"Holm's correction over {comparisons} comparisons (adjusted p {effect.p_holm:.3g}): suggestive only; {more}",
        )
    return replace(
        effect,
        verdict="unclear",
        note=f"too few seeds to tell: the {level} interval includes zero with {n} seeds; {more}{_power_sentence(effect, metric)}",
    )


def _design(factors: Mapping[str, Sequence[Level]], cells: Sequence[Mapping[str, Level]] | None) -> list[Mapping[str, Level]]:
    if cells is not None:
        return list(cells)
    names = list(factors)
    return [dict(zip(names, combo)) for combo in itertools.product(*factors.values())]


def _level_groups(
    factors: Mapping[str, Sequence[Level]], factor: str, cells: Sequence[Mapping[str, Level]] | None
) -> list[dict[LevelKey, list[CellKey]]]:
    """The contexts in which `factor`'s levels are compared: per context, level -> its cell keys.

    A context is a combination of the factors present in every cell that has `factor` (the
    others, conditional on it, are averaged over within the context); only contexts in which
    every level of `factor` ran count. The full grid: one context per combination of the other
    factors' levels, one cell per level.
    """
    with_factor = [cell for cell in _design(factors, cells) if factor in cell]
    context_names = [name for name in factors if name != factor and all(name in cell for cell in with_factor)]
    wanted = {_level_key(level) for level in factors[factor]}
    groups: dict[tuple[LevelKey, ...], dict[LevelKey, list[CellKey]]] = {}
    for cell in with_factor:
        context = tuple(_level_key(cell[name]) for name in context_names)
        keys = groups.setdefault(context, {}).setdefault(_level_key(cell[factor]), [])
        key = cell_tuple(cell, factors)
        if key not in keys:
            keys.append(key)
    return [group for group in groups.values() if wanted <= set(group)]


def _group_values(table: Mapping[CellKey, Mapping[int, float]], keys: Sequence[CellKey]) -> dict[int, float]:
    # Seed -> mean over the cells of one level within one context (several only when a
    # conditional factor varies under it); a seed counts only if every one of those cells has it.
    if not keys:
        return {}
    per_cell = [table.get(key, {}) for key in keys]
    seeds = set(per_cell[0]).intersection(*per_cell[1:])
    return {seed: float(np.mean([values[seed] for values in per_cell])) if len(per_cell) > 1 else per_cell[0][seed]
            for seed in seeds}


def _level_key(level: Level) -> LevelKey:
    # True == 1 and 1.0 == 1 in Python: tag booleans so a factor with levels [1, true] keeps two cells.
    return ("bool", level) if isinstance(level, bool) else level


def _wilcoxon(differences: np.ndarray) -> float | None:
    if len(differences) < 2 or not np.any(differences):
        return None
    try:
        return float(stats.wilcoxon(differences).pvalue)
    except ValueError:  # e.g. every difference zero after scipy's zero handling
        return None

