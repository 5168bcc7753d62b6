"""A search's winner against its baseline: the search's own paired difference beside the one on fresh seeds.

The best of many noisy trials is chosen *because* its value came out well, so the search's own
estimate of how much it beats the baseline is biased in its favour: the winner's curse
(Thaler 1988; in model selection, Cawley & Talbot 2010, JMLR 11, 2079-2107). Re-running the
winner and the baseline on seeds the search never used gives an estimate that was not used to
choose it. Both are paired by seed (same seed: same data order and training noise); the
confirmatory one is judged like every effect of the report (`study_effects`: Student t interval,
paired t test, power and equivalence), as one comparison.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from ablate.analysis.effects import Effect, Observation, paired_difference, study_effects
from ablate.spec.levels import Level

FACTOR = "configuration"
BASELINE = "baseline"


def best_level(trial: int) -> str:
    """The level the winner of a search has in its confirmation effect: `best (trial N)`."""
    return f"best (trial {trial})"


def confirmation_effect(
    *,
    best: Mapping[int, float],
    baseline: Mapping[int, float],
    exploratory_seeds: Sequence[int],
    confirmatory_seeds: Sequence[int],
    best_trial: int,
    params: Mapping[str, Level],
    baseline_params: Mapping[str, Level],
    direction: Literal["minimize", "maximize"] = "minimize",
    metric: str = "val_loss",
    confidence: float = 0.95,
    equivalence_margin: float | None = None,
    effect_of_interest: float | None = None,
) -> Effect:
    """The winner against the baseline on fresh seeds, with the search's own estimate in `confirmation`.

    Args:
        best: seed -> the winner's value, on its own (exploratory) seeds and on the fresh ones.
        baseline: seed -> the baseline's value, on the same seeds.
        exploratory_seeds: the seeds the winner trained on in the search.
        confirmatory_seeds: the fresh seeds, which no search trial used.
        best_trial: the winner's trial number.
        params, baseline_params: the two configurations (factor -> level).
        direction, metric, confidence, equivalence_margin, effect_of_interest: as `study_effects`.

    Returns:
        An `Effect` whose difference, test and verdict are the confirmatory ones (`best - baseline`);
        its `confirmation` holds both intervals and the shrinkage (confirmatory minus exploratory mean).
    """
    level = best_level(best_trial)
    fresh = [s for s in confirmatory_seeds if s in best and s in baseline]
    observations = [Observation(params={FACTOR: level}, seed=s, value=best[s]) for s in fresh]
    observations += [Observation(params={FACTOR: BASELINE}, seed=s, value=baseline[s]) for s in fresh]
    (effect,) = study_effects(
        observations, {FACTOR: [BASELINE, level]}, direction=direction, metric=metric, confidence=confidence,
        equivalence_margin=equivalence_margin, effect_of_interest=effect_of_interest,
    )
    own = [s for s in exploratory_seeds if s in best and s in baseline]
    exploratory = paired_difference({s: best[s] for s in own}, {s: baseline[s] for s in own})
    confirmatory = effect.difference
    shrinkage = confirmatory.mean - exploratory.mean if exploratory.n and confirmatory.n else None
    confirmation: dict[str, Any] = {
        "best_trial": best_trial,
        "params": dict(params),
        "baseline": dict(baseline_params),
        "exploratory": {**exploratory.as_dict(), "seeds": own},
        "confirmatory": {**confirmatory.as_dict(), "seeds": list(effect.seeds), "p_value": effect.p_value},
        "shrinkage": shrinkage,
        "per_seed": {"best": {str(s): best[s] for s in sorted(best)}, "baseline": {str(s): baseline[s] for s in sorted(baseline)}},
        "summary": winners_curse(exploratory.mean, confirmatory.mean, exploratory.n, confirmatory.n,
                                 direction=direction, metric=metric),
    }
    # More seeds for this comparison are more confirmation seeds, not more repeats of the search.
    return replace(effect, confirmation=confirmation, note=effect.note.replace("--set repeats=", "--set confirm.seeds="))


def winners_curse(
    exploratory: float, confirmatory: float, n_exploratory: int, n_confirmatory: int, *, direction: str, metric: str
) -> str:
    """One sentence: how the winner's advantage over the baseline changed from the search's seeds to fresh ones."""
    if not n_confirmatory:
        return "the confirmation trials have not finished yet: no fresh seed pairs the winner and the baseline"
    if not n_exploratory:
        return f"on {n_confirmatory} fresh seed(s) the winner minus the baseline is {confirmatory:+.3g} {metric}"
    sign = -1.0 if direction == "minimize" else 1.0
    before, after = sign * exploratory, sign * confirmatory  # the advantage: > 0 when the winner is better
    if before <= 0:
        return (f"in the search the winner was no better than the baseline at its own seed(s) ({exploratory:+.3g} "
                f"{metric}); on {n_confirmatory} fresh seed(s) the difference is {confirmatory:+.3g}")
    if after <= 0:
        return (f"the winner's advantage over the baseline in the search ({before:.3g} {metric}) did not hold on "
                f"{n_confirmatory} fresh seed(s), where it was {-after:.3g} {'worse' if after < 0 else 'better'}: the "
                f"search's estimate shrank by {before - after:.3g} (the winner's curse)")
    if after < before:
        return (f"the search's estimate of the winner's advantage over the baseline shrank by {before - after:.3g} "
                f"{metric} on {n_confirmatory} fresh seed(s), from {before:.3g} to {after:.3g} ({(before - after) / before:.0%} "
                "of it: the winner's curse)")
    return (f"the winner's advantage over the baseline held up on {n_confirmatory} fresh seed(s): {before:.3g} {metric} "
            f"in the search, {after:.3g} on fresh seeds")
