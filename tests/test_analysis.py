"""Means, t intervals and paired differences against values computed by hand."""

from __future__ import annotations

import math

import pytest

from ablate.analysis import mean_ci, paired_difference, seeds_needed


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
