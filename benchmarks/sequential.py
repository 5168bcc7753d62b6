"""Seeds added until decided, proved by simulation: coverage, family-wise error, power and seeds saved.

Simulates studies of a one-at-a-time design (one baseline cell and m variant cells, each variant
compared with the baseline, paired by seed) under ablate's sequential rule, `repeats: {min: 3,
max: 12, until: decided}`, with the library's own code (`ablate.analysis.sequential.decide` on each
comparison's paired differences, the boundary at alpha = 0.05 shared by Bonferroni over m). A
cell's value for a seed is the seed's shared part (data order, noise) plus the cell's mean plus
independent noise, scaled so that a paired difference has standard deviation 1: an effect of 0.5
is half a paired standard deviation. Every variant of a scenario has the same effect.

Per scenario (null; 0.5, 1 and 2 paired SDs; m = 2 and 5 comparisons, 1,000 studies each) it prints:

- coverage: how often the reported interval (at the look a comparison stopped) holds the true
  difference, per comparison and for the whole study at once (every interval of it);
- family-wise error under the null: studies with any comparison claimed different;
- power: comparisons decided different, in the right direction;
- seeds: the mean seeds a comparison used, and trials per study (the baseline runs as long as any
  comparison is undecided, each variant until its own comparison is);
- the fixed design of equal power: the smallest n whose paired t test (Bonferroni, alpha / m) has
  at least the sequential power (`ablate.analysis.power.power`), its trials ((m + 1) n), and the
  share of trials the sequential design saves against it.

    .venv/bin/python benchmarks/sequential.py              # 1,000 studies per scenario (about a minute)
    .venv/bin/python benchmarks/sequential.py --shapes     # and the boundary shapes compared (500 studies each)

Results: benchmarks/results/sequential.json; docs/report.md quotes the table.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import report  # noqa: E402

from ablate.analysis import sequential  # noqa: E402
from ablate.analysis.power import power  # noqa: E402
from ablate.analysis.sequential import SHAPE, SequentialRule, decide  # noqa: E402

MIN_SEEDS, MAX_SEEDS, ALPHA = 3, 12, 0.05
EFFECTS = (0.0, 0.5, 1.0, 2.0)
COMPARISONS = (2, 5)


def simulate(effect: float, comparisons: int, studies: int, rng: np.random.Generator) -> dict[str, float]:
    """One scenario: `studies` simulated studies, each judged as ablate judges a sequential study."""
    rule = SequentialRule(min_seeds=MIN_SEEDS, max_seeds=MAX_SEEDS, seeds=tuple(range(MAX_SEEDS)),
                          comparisons=comparisons, alpha=ALPHA)
    noise = 1 / math.sqrt(2)  # two independent cell noises: a paired difference has sd 1
    covered = claims_null = right = seeds = trials = 0
    whole_covered = 0
    for _ in range(studies):
        shared = rng.standard_normal(MAX_SEEDS) * 0.7  # the seed's part: cancels in a paired difference
        baseline = shared + rng.standard_normal(MAX_SEEDS) * noise
        looks = []
        for _ in range(comparisons):
            variant = shared + effect + rng.standard_normal(MAX_SEEDS) * noise
            at = decide(dict(enumerate(variant - baseline)), rule, rounds=MAX_SEEDS)
            looks.append(at)
        holds = [at.interval is not None and at.interval[0] <= effect <= at.interval[1] for at in looks]
        covered += sum(holds)
        whole_covered += all(holds)
        differs = [at.reason == "excludes zero" for at in looks]
        claims_null += effect == 0 and any(differs)
        right += sum(d and (at.mean > 0) == (effect > 0) for d, at in zip(differs, looks)) if effect else 0
        used = [at.n for at in looks]
        seeds += sum(used)
        trials += max(used) + sum(used)
    total = studies * comparisons
    result = {
        "coverage": covered / total, "coverage_study": whole_covered / studies,
        "fwer": claims_null / studies if effect == 0 else math.nan,
        "power": right / total if effect else math.nan,
        "seeds": seeds / total, "trials": trials / studies,
    }
    result.update(fixed_design(effect, comparisons, result["power"]))
    return result


def fixed_design(effect: float, comparisons: int, sequential_power: float) -> dict[str, float]:
    """The smallest fixed n (seeds per cell) with at least the sequential power, and its trials.

    A simulated power of 100% is matched at 99.5% (no finite n has power 1). Under the null the
    fixed design is `max` seeds everywhere: what the study would run without the sequential rule.
    """
    if not effect or not sequential_power > 0:
        return {"fixed_n": float(MAX_SEEDS), "fixed_trials": float((comparisons + 1) * MAX_SEEDS)}
    target = min(sequential_power, 0.995)
    n = next((n for n in range(2, 1001) if power(n, 1.0, effect, ALPHA / comparisons) >= target), 1000)
    return {"fixed_n": float(n), "fixed_trials": float((comparisons + 1) * n)}


def compare_shapes(studies: int) -> list[dict[str, float]]:
    """Trials saved and power at each boundary shape (0.5 Pocock, 0.25 ablate's, 0 O'Brien-Fleming)."""
    found = []
    for shape in (0.5, 0.25, 0.0):
        sequential.SHAPE = shape  # the module's boundary shape; a benchmark's switch, not a setting
        sequential.boundary.cache_clear()
        rng = np.random.default_rng(20261204)
        for comparisons in COMPARISONS:
            for effect in EFFECTS[1:]:
                r = simulate(effect, comparisons, studies, rng)
                found.append({"shape": shape, "effect": effect, "comparisons": comparisons, "power": r["power"],
                              "trials": r["trials"], "saving": 1 - r["trials"] / r["fixed_trials"]})
    sequential.SHAPE = SHAPE
    sequential.boundary.cache_clear()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=1000, help="simulated studies per scenario (default 1,000)")
    parser.add_argument("--shapes", action="store_true", help="also compare boundary shapes 0.5, 0.25 and 0")
    args = parser.parse_args()
    shapes = compare_shapes(args.studies // 2) if args.shapes else []
    rng = np.random.default_rng(20261204)
    rows, results = [], []
    for comparisons in COMPARISONS:
        for effect in EFFECTS:
            r = simulate(effect, comparisons, args.studies, rng)
            r["saving"] = 1 - r["trials"] / r["fixed_trials"]
            results.append({"effect": effect, "comparisons": comparisons, **r})
            rows.append([
                "null" if effect == 0 else f"{effect:g} sd", comparisons,
                f"{r['coverage']:.1%}", f"{r['coverage_study']:.1%}",
                "" if math.isnan(r["fwer"]) else f"{r['fwer']:.1%}",
                "" if math.isnan(r["power"]) else f"{r['power']:.1%}",
                f"{r['seeds']:.2f}", f"{r['trials']:.1f}",
                f"{r['fixed_n']:.0f}" + (" (max)" if effect == 0 else ""), f"{r['fixed_trials']:.0f}", f"{r['saving']:.0%}",
            ])
    report(
        "sequential",
        f"Seeds until decided: min {MIN_SEEDS}, max {MAX_SEEDS}, alpha {ALPHA} family-wise, {args.studies} studies per scenario",
        ["effect", "comparisons", "coverage", "coverage (whole study)", "family-wise error", "power",
         "seeds per comparison", "trials per study", "fixed n, equal power", "fixed trials", "trials saved"],
        rows,
        {"min": MIN_SEEDS, "max": MAX_SEEDS, "alpha": ALPHA, "shape": SHAPE, "studies": args.studies,
         "scenarios": results, "shapes": shapes},
    )
    for row in shapes:
        print(f"shape {row['shape']:<4} effect {row['effect']:g} sd, {row['comparisons']} comparisons: power "
              f"{row['power']:.1%}, {row['trials']:.1f} trials per study, {row['saving']:+.0%} against the fixed design")


if __name__ == "__main__":
    main()
