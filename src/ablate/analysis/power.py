"""What a paired comparison over n seeds could have found, and whether it shows two variants equivalent.

- **Power** of the paired two-sided t test at level alpha, exactly, from the noncentral t
  distribution: with n seeds, paired differences of standard deviation sd and a true mean
  difference d, the statistic is noncentral t with n - 1 degrees of freedom and noncentrality
  d * sqrt(n) / sd (`power`).
- **The minimum detectable effect at 80% power** (`mde80`): the smallest |d| that test finds with
  probability 0.8, given the observed sd. A null result means "no effect larger than this was
  ruled out" at best, never "no effect".
- **Seeds for an effect of interest** (`seeds_for`): the smallest n whose power for a given d
  reaches 0.8 at the observed sd.
- **Equivalence** (`tost`): Schuirmann's two one-sided tests against a margin delta: the p that the
  mean difference lies inside (-delta, delta). p < alpha is the same as the 1 - 2 alpha t interval
  lying inside the margin. Schuirmann, D. J. (1987), "A comparison of the two one-sided tests
  procedure and the power approach for assessing the equivalence of average bioavailability",
  J. Pharmacokinetics and Biopharmaceutics 15(6), 657-680.

The observed sd stands in for the true one (these are planning figures, not guarantees).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, stats

POWER = 0.8


def power(n: int, sd: float, effect: float, alpha: float = 0.05) -> float:
    """The probability that the paired two-sided t test at `alpha` rejects, for a true mean difference `effect`."""
    if n < 2 or not sd > 0:
        return math.nan
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) * math.sqrt(n) / sd
    exact = float(stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift))
    if math.isfinite(exact):
        return exact
    # SciPy's noncentral t gives NaN far in its tail (1 or 2 degrees of freedom, a huge shift): the
    # normal approximation of the statistic's shift is then used, where the power is near 1 anyway.
    return float(stats.norm.sf(critical - shift) + stats.norm.cdf(-critical - shift))


def mde80(n: int, sd: float | None, alpha: float = 0.05) -> float | None:
    """The smallest |mean difference| the test detects with 80% power with `n` seeds at spread `sd`."""
    if sd is None or n < 2 or not math.isfinite(sd) or sd <= 0:
        return None
    high = sd
    while power(n, sd, high, alpha) < POWER:  # the bracket: double until the power is past 0.8
        high *= 2
    return float(optimize.brentq(lambda d: power(n, sd, d, alpha) - POWER, 0.0, high, xtol=sd * 1e-6))


def seeds_for(effect: float, sd: float | None, alpha: float = 0.05, *, limit: int = 1000) -> int | None:
    """The fewest seeds (>= 2) whose power for `effect` reaches 80% at spread `sd`; None past `limit` or unknown."""
    if sd is None or not math.isfinite(sd) or sd <= 0 or effect == 0:
        return None
    for n in range(2, limit + 1):
        if power(n, sd, effect, alpha) >= POWER:
            return n
    return None


def tost(differences: np.ndarray, margin: float) -> float | None:
    """Two one-sided t tests of |mean difference| < `margin`: their larger p (None with fewer than 2 seeds or no spread)."""
    n = len(differences)
    if n < 2:
        return None
    sd = float(np.std(differences, ddof=1))
    if not sd > 0:
        return None
    mean, se, df = float(np.mean(differences)), sd / math.sqrt(n), n - 1
    above_lower = stats.t.sf((mean + margin) / se, df)  # H0: mean <= -margin
    below_upper = stats.t.cdf((mean - margin) / se, df)  # H0: mean >= +margin
    return float(max(above_lower, below_upper))
