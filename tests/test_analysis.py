"""Means, t intervals and paired differences against values computed by hand."""

from __future__ import annotations

import math

import pytest

from ablate.analysis.effects import mean_ci, paired_difference, seeds_needed


def test_mean_ci_matches_the_t_formula() -> None:
    estimate = mean_ci([1.0, 2.0, 3.0])
    # mean 2, sd 1, t(0.975, 2) = 4.302653, half width = 4.302653 / sqrt(3)
    half = 4.302652729911275 / math.sqrt(3)
    assert estimate.mean == pytest.approx(2.0)
    assert estimate.ci95 == pytest.approx((2.0 - half, 2.0 + half))
    assert estimate.n == 3 and not estimate.excludes_zero


def test_single_value_has_no_interval() -> None:
    estimate = mean_ci([0.5])
    assert estimate.ci95 is None and estimate.n == 1


def test_paired_difference_uses_common_seeds_only() -> None:
    skip = {0: 0.10, 1: 0.11, 2: 0.12, 9: 5.0}
    noskip = {0: 0.15, 1: 0.16, 2: 0.18}
    diff = paired_difference(skip, noskip)
    assert diff.n == 3
    assert diff.mean == pytest.approx((-0.05 - 0.05 - 0.06) / 3)
    assert diff.excludes_zero


def test_seeds_needed_grows_with_spread() -> None:
    assert seeds_needed(0.01, 0.05) < seeds_needed(0.05, 0.05)
    assert seeds_needed(None, 0.05) is None


# ---- effects, tests and corrections -------------------------------------------------------------

import itertools  # noqa: E402

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from ablate.analysis.effects import Observation, holm, level_estimate, cell_values, paired_t_pvalue, study_effects, t_interval


def test_holm_matches_hand_computed_values() -> None:
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> raised to 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.02]) == pytest.approx([0.02])  # one comparison: unchanged
    assert holm([]) == []


def test_paired_t_pvalue_matches_scipy_and_handles_no_spread() -> None:
    diffs = np.array([[0.1, 0.2, -0.05, 0.3], [1.0, 1.5, 0.7, 1.2]])
    expected = [stats.ttest_1samp(row, 0.0).pvalue for row in diffs]
    assert paired_t_pvalue(diffs) == pytest.approx(expected)
    assert paired_t_pvalue(np.array([0.25, 0.25, 0.25])) < 1e-12  # every seed agrees on a nonzero change
    assert paired_t_pvalue(np.zeros(3)) == 1.0


def simulated_study(
    rng: np.random.Generator, *, seeds: int, effects: dict[str, dict[object, float]], noise: float = 0.01
) -> list[Observation]:
    """A full grid with a per-seed offset shared by every cell (what pairing removes) plus noise."""
    factors = {name: list(levels) for name, levels in effects.items()}
    offsets = rng.normal(0.0, 0.05, size=seeds)  # seed-to-seed spread much larger than the noise
    observations = []
    for combo in itertools.product(*factors.values()):
        params = dict(zip(factors, combo))
        planted = sum(effects[name][level] for name, level in params.items())
        for seed in range(seeds):
            value = 0.12 + offsets[seed] + planted + rng.normal(0.0, noise)
            observations.append(Observation(params=params, seed=seed, value=float(value)))
    return observations


def test_planted_effect_is_found_and_its_interval_covers_it() -> None:
    rng = np.random.default_rng(7)
    planted = {"model.skip": {"none": 0.0, "concat": -0.03}, "model.filters": {8: 0.0, 16: 0.0, 32: 0.0}}
    observations = simulated_study(rng, seeds=5, effects=planted)
    effects = study_effects(observations, {k: list(v) for k, v in planted.items()}, direction="minimize")
    assert [(e.factor, e.level, e.baseline) for e in effects] == [
        ("model.skip", "concat", "none"), ("model.filters", 16, 8), ("model.filters", 32, 8),
    ]
    skip = effects[0]
    low, high = skip.difference.ci95
    assert low < -0.03 < high and high < 0
    assert skip.verdict == "better" and skip.p_holm < 0.05 and skip.difference.n == 5
    assert "lower val_loss than none" in skip.note
    for null in effects[1:]:
        assert null.difference.ci95[0] < 0 < null.difference.ci95[1]
        assert null.verdict == "unclear" and "too few seeds to tell" in null.note
    # Holm over the three comparisons, applied to the paired t p-values.
    assert [e.p_holm for e in effects] == pytest.approx(holm([e.p_value for e in effects]))
    # Pairing matters: the unpaired level intervals overlap heavily, yet the paired one excludes zero.
    table = cell_values(observations, {k: list(v) for k, v in planted.items()})
    none = level_estimate(table, {k: list(v) for k, v in planted.items()}, "model.skip", "none")
    concat = level_estimate(table, {k: list(v) for k, v in planted.items()}, "model.skip", "concat")
    assert concat.ci95[1] > none.ci95[0]


def test_main_effect_averages_over_the_other_factor_per_seed() -> None:
    factors = {"a": ["x", "y"], "b": [1, 2]}
    values = {("x", 1): [1.0, 2.0], ("y", 1): [1.5, 2.1], ("x", 2): [3.0, 4.0], ("y", 2): [3.1, 4.3]}
    observations = [
        Observation(params={"a": a, "b": b}, seed=seed, value=v)
        for (a, b), vs in values.items()
        for seed, v in enumerate(vs)
    ]
    effect = study_effects(observations, factors)[0]
    # seed 0: mean(1.5-1.0, 3.1-3.0) = 0.3; seed 1: mean(2.1-2.0, 4.3-4.0) = 0.2
    assert effect.factor == "a" and effect.difference.mean == pytest.approx(0.25)
    assert effect.seeds == (0, 1) and effect.difference.std == pytest.approx(math.sqrt(0.005))
    assert effect.p_value == pytest.approx(stats.ttest_1samp([0.3, 0.2], 0.0).pvalue)


def test_too_few_seeds_says_so_and_suggests_how_many() -> None:
    one = [Observation({"s": lvl}, 0, v) for lvl, v in (("a", 1.0), ("b", 0.9))]
    effect = study_effects(one, {"s": ["a", "b"]})[0]
    assert effect.verdict == "insufficient" and effect.difference.ci95 is None and effect.p_value is None
    assert "too few seeds to say anything" in effect.note and "--set repeats=3" in effect.note

    noisy = [
        Observation({"s": lvl}, seed, v)
        for seed, (a, b) in enumerate([(1.0, 0.95), (1.0, 1.02), (1.0, 0.96)])
        for lvl, v in (("a", a), ("b", b))
    ]
    effect = study_effects(noisy, {"s": ["a", "b"]})[0]
    needed = seeds_needed(effect.difference.std, effect.difference.mean)
    assert effect.verdict == "unclear" and needed is not None and needed > 3
    assert effect.seeds_needed == needed and f"--set repeats={needed}" in effect.note

    missing = study_effects([Observation({"s": "a"}, 0, 1.0)], {"s": ["a", "b"]})[0]
    assert missing.verdict == "insufficient" and missing.difference.n == 0


def test_null_effect_interval_covers_zero_at_the_nominal_rate() -> None:
    # 20,000 simulated null studies of 4 paired seeds each, vectorised. The 95% t interval must
    # cover zero 95% of the time (binomial sd 0.0015); a normal (z) interval would cover ~88%.
    rng = np.random.default_rng(2024)
    offsets = rng.normal(0, 0.05, size=(20_000, 4, 1))  # shared by both variants of a seed
    runs = 0.12 + offsets + rng.normal(0, 0.01, size=(20_000, 4, 2))
    differences = runs[..., 1] - runs[..., 0]
    _, low, high, _ = t_interval(differences)
    coverage = float(np.mean((low <= 0) & (0 <= high)))
    assert abs(coverage - 0.95) < 0.006, coverage
    # The paired t test rejects at the matching rate, and agrees with the interval study by study.
    p = paired_t_pvalue(differences)
    assert np.array_equal(p < 0.05, ~((low <= 0) & (0 <= high)))


def test_study_effects_keeps_the_nominal_rates_over_hundreds_of_simulated_studies() -> None:
    # The full pipeline (grouping by cell and seed, averaging over the other factor per seed, the
    # t interval, Holm, the verdict) on 600 simulated null 2x2 grids of 4 seeds: about 5 s on one
    # core. 600 studies give a binomial sd of 0.009 on the coverage; the 20,000 above pin the core.
    rng = np.random.default_rng(2025)
    studies, seeds = 600, 4
    factors = {"f": ["base", "other"], "g": [1, 2]}
    offsets = rng.normal(0, 0.05, size=(studies, seeds, 1, 1))  # shared by every cell of a seed
    runs = 0.12 + offsets + rng.normal(0, 0.01, size=(studies, seeds, 2, 2))  # [study, seed, f, g]
    # The expected per-seed difference of f: other - base, averaged over g.
    _, low, high, _ = t_interval((runs[:, :, 1, :] - runs[:, :, 0, :]).mean(axis=-1))
    covered, decided = 0, 0
    for study in range(studies):
        observations = [
            Observation({"f": f, "g": g}, seed, float(runs[study, seed, i, j]))
            for seed in range(seeds)
            for i, f in enumerate(factors["f"])
            for j, g in enumerate(factors["g"])
        ]
        effect_f, effect_g = study_effects(observations, factors)
        assert effect_f.difference.ci95 == pytest.approx((low[study], high[study]))
        covered += effect_f.difference.ci95[0] <= 0 <= effect_f.difference.ci95[1]
        decided += any(e.verdict in ("better", "worse") for e in (effect_f, effect_g))
    assert abs(covered / studies - 0.95) < 0.03, covered / studies
    # Holm keeps the chance of any false "better"/"worse" in a study at 5% or below.
    assert decided / studies < 0.05 + 0.025, decided / studies


def test_planted_effect_interval_covers_the_truth_at_the_nominal_rate() -> None:
    rng = np.random.default_rng(11)
    differences = -0.02 + rng.normal(0, 0.01, size=(20_000, 3)) * math.sqrt(2)
    _, low, high, _ = t_interval(differences)
    assert abs(float(np.mean((low <= -0.02) & (-0.02 <= high))) - 0.95) < 0.006


# ---- baselines, one-at-a-time designs and conditional factors ----------------------------------

from ablate.analysis.effects import comparable, level_values  # noqa: E402


def test_a_chosen_baseline_turns_the_comparison_around() -> None:
    rng = np.random.default_rng(3)
    planted = {"model.skip": {"none": 0.0, "concat": -0.03, "add": -0.01}}
    observations = simulated_study(rng, seeds=5, effects=planted, noise=0.003)
    factors = {"model.skip": ["none", "concat", "add"]}
    default = {e.level: e for e in study_effects(observations, factors)}
    chosen = {e.level: e for e in study_effects(observations, factors, baselines={"model.skip": "concat"})}
    assert set(default) == {"concat", "add"} and set(chosen) == {"none", "add"}
    assert all(e.baseline == "concat" for e in chosen.values())
    assert chosen["none"].difference.mean == pytest.approx(-default["concat"].difference.mean)
    # add - concat = (add - none) - (concat - none), seed by seed
    assert chosen["add"].difference.mean == pytest.approx(default["add"].difference.mean - default["concat"].difference.mean)
    assert chosen["none"].verdict == "worse" and default["concat"].verdict == "better"
    with pytest.raises(ValueError, match="not one of its levels"):
        study_effects(observations, factors, baselines={"model.skip": "residual"})


def test_one_at_a_time_compares_each_change_with_the_reference_only() -> None:
    # Reference (skip=none, filters=8); one change at a time. Every cell shares the seed offset.
    factors = {"skip": ["none", "concat"], "filters": [8, 16, 32]}
    cells = [{"skip": "none", "filters": 8}, {"skip": "concat", "filters": 8}, {"skip": "none", "filters": 16},
             {"skip": "none", "filters": 32}]
    planted = {("none", 8): 0.0, ("concat", 8): -0.05, ("none", 16): 0.02, ("none", 32): 0.0}
    offsets = [0.0, 0.03, -0.02]
    noise = np.random.default_rng(1).normal(0, 0.002, size=(4, 3))
    observations = [
        Observation(cell, seed, 0.1 + offsets[seed] + planted[(cell["skip"], cell["filters"])] + noise[i, seed])
        for i, cell in enumerate(cells)
        for seed in range(3)
    ]
    effects = {(e.factor, e.level): e for e in study_effects(observations, factors, cells=cells)}
    assert set(effects) == {("skip", "concat"), ("filters", 16), ("filters", 32)}
    skip = effects[("skip", "concat")]
    expected = [observations[3 + s].value - observations[s].value for s in range(3)]  # concat cell - reference
    assert skip.difference.mean == pytest.approx(np.mean(expected)) and skip.verdict == "better"
    assert effects[("filters", 16)].difference.mean == pytest.approx(0.02, abs=0.005)
    # The reference level's estimate is the reference cell, not a mean over the other variants.
    table = cell_values(observations, factors)
    assert level_values(table, factors, "skip", "none", cells) == pytest.approx({s: observations[s].value for s in range(3)})


def test_a_conditional_factor_is_averaged_over_under_its_parent() -> None:
    # model.block plain | residual; residual_blocks 1 | 2 exists only under residual.
    factors = {"block": ["plain", "residual"], "blocks": [1, 2]}
    cells = [{"block": "plain"}, {"block": "residual", "blocks": 1}, {"block": "residual", "blocks": 2}]
    value = {("plain", None): 0.10, ("residual", 1): 0.08, ("residual", 2): 0.07}
    observations = [
        Observation(cell, seed, value[(cell["block"], cell.get("blocks"))] + 0.01 * seed)
        for cell in cells
        for seed in range(3)
    ]
    effects = {(e.factor, e.level): e for e in study_effects(observations, factors, cells=cells)}
    # residual - plain: the mean over both residual cells (0.075) minus plain (0.10), every seed
    assert effects[("block", "residual")].difference.mean == pytest.approx(-0.025)
    # blocks 2 - 1 within residual only
    assert effects[("blocks", 2)].difference.mean == pytest.approx(-0.01)
    assert comparable(factors, "blocks", cells) and comparable(factors, "block", cells)
    # A conditional factor with a single level in the design has nothing to compare against.
    assert not comparable(factors, "blocks", [{"block": "plain"}, {"block": "residual", "blocks": 1}])


# ---- the verdict: its confidence, differences without spread, seeds to suggest ------------------


def paired(differences: list[float], base: float = 0.1) -> list[Observation]:
    """Two levels a (baseline) and b of one factor whose per-seed differences b - a are `differences`."""
    return [Observation({"s": level}, seed, base + 0.01 * seed + (d if level == "b" else 0.0))
            for seed, d in enumerate(differences) for level in ("a", "b")]


def test_the_verdict_uses_the_confidence_it_is_given() -> None:
    differences = [0.02 + 0.025 * z for z in (-1.3, -0.6, 0.0, 0.6, 1.3)]
    p = stats.ttest_1samp(differences, 0.0).pvalue
    assert 0.05 < p < 0.2  # unclear at 95%, decided at 80%
    at95 = study_effects(paired(differences), {"s": ["a", "b"]})[0]
    at80 = study_effects(paired(differences), {"s": ["a", "b"]}, confidence=0.8)[0]
    assert at95.verdict == "unclear" and "the 95% interval includes zero" in at95.note
    assert at80.verdict == "worse" and "the 80% interval excludes zero" in at80.note
    assert at80.difference.ci95[0] > 0 and at80.p_holm == pytest.approx(p)


def test_identical_differences_are_not_testable() -> None:
    # Every seed moves b by 0.05 (the values differ per seed, their differences only by rounding).
    identical = study_effects(paired([0.05] * 4), {"s": ["a", "b"]})[0]
    assert identical.verdict == "untestable" and identical.difference.mean == pytest.approx(0.05)
    assert identical.difference.ci95 is None and identical.p_value is None and identical.p_holm is None
    assert identical.seeds_needed is None and identical.wilcoxon_p is None and identical.difference.n == 4
    assert "the seeds gave identical differences" in identical.note and "the seeds may not change anything" in identical.note
    assert "better" not in identical.note and "worse" not in identical.note
    # Left out of Holm: the other comparison is corrected over one comparison, not two.
    observations = paired([0.05] * 4) + [Observation({"s": "c"}, seed, 0.1 + 0.01 * seed + d)
                                          for seed, d in enumerate([0.01, -0.02, 0.03, 0.005])]
    _, other = study_effects(observations, {"s": ["a", "b", "c"]})
    assert other.p_holm == other.p_value and "over 1 comparison" not in other.note
    # Differences that vary a little are a test, however small the spread.
    varied = study_effects(paired([0.05, 0.0501, 0.0499, 0.05]), {"s": ["a", "b"]})[0]
    assert varied.verdict == "worse" and varied.p_value is not None


def test_seeds_needed_is_always_more_than_the_seeds_that_ran() -> None:
    assert seeds_needed(0.001, 0.05, current=5) == 6  # a tiny spread: the next number, never 2
    assert seeds_needed(0.01, 0.05, current=0) == seeds_needed(0.01, 0.05) < 6
    assert seeds_needed(0.0, 0.05) is None  # no spread: no number of seeds to compute
    # Suggestive but not significant after Holm: the interval is already narrow enough at 5 seeds,
    # so the unbounded search would suggest 5 or fewer seeds; the suggestion must say more.
    rng = np.random.default_rng(4)
    levels = ["a", "b", *(f"n{k}" for k in range(20))]
    offsets = rng.normal(0, 0.05, size=5)
    planted = {"b": [0.01 + 0.0034 * z for z in (-1.3, -0.6, 0.0, 0.6, 1.3)]}
    observations = [
        Observation({"s": level}, seed, 0.1 + offsets[seed] + (planted["b"][seed] if level == "b" else 0.0)
                    + (rng.normal(0, 0.01) if level.startswith("n") else 0.0))
        for seed in range(5) for level in levels
    ]
    effect = study_effects(observations, {"s": levels})[0]
    assert effect.level == "b" and effect.difference.excludes_zero and effect.p_holm >= 0.05
    assert effect.verdict == "unclear" and "not after Holm's correction" in effect.note
    assert seeds_needed(effect.difference.std, effect.difference.mean) <= 5  # what the old code suggested
    assert effect.seeds_needed > 5 and f"--set repeats={effect.seeds_needed}" in effect.note


# ---- power, minimum detectable effects and equivalence ------------------------------------------


def test_power_is_the_noncentral_t_and_the_mde_is_where_it_reaches_80_percent() -> None:
    from ablate.analysis.power import mde80, power, seeds_for

    # Textbook check: a paired t test with n = 10, sd 1, d = 1 has power ~0.803 at alpha 0.05.
    assert power(10, 1.0, 1.0) == pytest.approx(0.8031, abs=2e-3)
    assert power(10, 1.0, 0.0) == pytest.approx(0.05, abs=1e-9)  # no effect: the test's own level
    mde = mde80(10, 1.0)
    assert mde == pytest.approx(0.9966, abs=5e-3) and power(10, 1.0, mde) == pytest.approx(0.8, abs=1e-4)
    assert mde80(40, 1.0) < mde80(10, 1.0) < mde80(4, 1.0)  # more seeds, smaller detectable effects
    assert seeds_for(1.0, 1.0) == 10  # the smallest n with power >= 0.8 (n = 9 gives 0.76)
    assert mde80(1, 1.0) is None and seeds_for(1.0, None) is None


def test_a_simulated_null_is_rejected_at_about_alpha_and_tost_keeps_its_level() -> None:
    from scipy import stats

    from ablate.analysis.power import tost

    rng = np.random.default_rng(11)
    n, runs = 6, 4000
    samples = rng.normal(0.0, 1.0, size=(runs, n))
    rejected = np.mean([stats.ttest_1samp(s, 0.0).pvalue < 0.05 for s in samples])
    assert rejected == pytest.approx(0.05, abs=0.012)
    # TOST at the margin's edge (true difference = margin) claims equivalence at most alpha of the time.
    edge = np.mean([(p := tost(s + 0.5, 0.5)) is not None and p < 0.05 for s in samples])
    assert edge <= 0.05 + 0.012
    # Far inside the margin with tight differences, it is found equivalent.
    assert tost(rng.normal(0.0, 0.01, size=8), 0.5) < 1e-6


def test_a_component_without_effect_is_equivalent_within_a_margin_and_a_null_states_its_mde() -> None:
    rng = np.random.default_rng(3)
    planted = {"model.remove": {"none": 0.0, "block1_add": 0.0, "block2_add": 0.05}}
    observations = simulated_study(rng, seeds=6, effects=planted, noise=0.002)
    levels = {k: list(v) for k, v in planted.items()}
    judged = {e.level: e for e in study_effects(observations, levels, direction="minimize", equivalence_margin=0.01)}
    assert judged["block1_add"].verdict == "equivalent" and "removable" in judged["block1_add"].note
    assert judged["block1_add"].equivalence["equivalent"] and judged["block1_add"].equivalence["margin"] == 0.01
    assert judged["block2_add"].verdict == "worse" and not judged["block2_add"].equivalence["equivalent"]
    # Without a margin the same null is only unclear, and says what it could have detected.
    plain = {e.level: e for e in study_effects(observations, levels, direction="minimize", effect_of_interest=0.001)}
    null = plain["block1_add"]
    assert null.verdict == "unclear" and null.equivalence is None
    assert null.mde80 is not None and null.mde80 > 0 and "80% power" in null.note and "does not show that there is no effect" in null.note
    assert null.seeds_for_effect is None or null.seeds_for_effect > 6
    assert set(null.as_dict()) >= {"mde80", "equivalence", "seeds_for_effect", "verdict", "seeds"}
