"""The schema rules of an ensemble study (`model.family: ensemble`), and how `ablate validate` describes one.

Pure rules over the spec: they import neither Keras nor Optuna, so loading an ensemble study file
stays as light as any other (the scoring and search are `ablate.families.ensemble_weights`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ablate.spec.study_spec import StudySpec


U_LOW = 1e-6  # lower bound of each simplex coordinate: -log(1e-6) ~ 13.8 times the weight of a u near 1
WEIGHT_SAMPLERS = ("cmaes", "tpe", "random", "gp")
WEIGHT_METRICS = ("val_loss", "val_mse")


def check_ensemble_spec(spec: StudySpec) -> None:
    """What an ensemble study may ask; raises ValueError (spec validation reports it with the file).

    A weight study (`source: study`) searches the members' weights and nothing else: its trials
    are weight vectors chosen by a sampler on the validation split, so it needs `design: search`,
    no factors (the members are fixed by the source study), and a validation objective (searching
    on the test split would report a test score that was optimised, not measured).
    """
    ensemble = spec.ensemble
    if ensemble.source == "train":
        if spec.design == "search" and any(o.metric.startswith("test_") for o in spec.objective):
            raise ValueError("a search must not optimise a test_* metric (the test split is for reporting); use val_loss or val_mse")
        return
    if spec.design != "search":
        raise ValueError(
            "ensemble.source: study is a weight study: its trials are weight vectors chosen by a sampler, so use "
            "design: search (search.trials weight vectors, e.g. 1000)"
        )
    if spec.factors:
        raise ValueError(
            f"a weight study searches only the weights of the members of study {ensemble.study!r} (params "
            f"ensemble.u0 .. ensemble.u{ensemble.members - 1}); remove factors {list(spec.factors)}"
        )
    if spec.engine != "optuna":
        raise ValueError("a weight study runs on engine: optuna")
    if spec.search.sampler not in WEIGHT_SAMPLERS:
        raise ValueError(f"search.sampler {spec.search.sampler!r} cannot search weights; use one of {', '.join(WEIGHT_SAMPLERS)}")
    if len(spec.objective) != 1 or spec.primary.metric not in WEIGHT_METRICS or spec.primary.direction != "minimize":
        raise ValueError(
            "a weight study minimises one validation metric, val_loss or val_mse (test scores are reported, "
            f"never searched); got {', '.join(f'{o.direction} {o.metric}' for o in spec.objective)}"
        )
    if spec.search.pruner != "none":
        raise ValueError("a weight trial has no epochs to prune; use search.pruner: none")
    if spec.search.trials < ensemble.members + 1:
        raise ValueError(
            f"search.trials ({spec.search.trials}) must leave room for the uniform average and each member alone: "
            f"at least ensemble.members + 1 = {ensemble.members + 1}"
        )


def describe_ensemble(spec: StudySpec) -> dict[str, str]:
    """Rows for `ablate validate`: what the ensemble searches, and the work it takes."""
    ensemble = spec.ensemble
    k = ensemble.members
    coordinates = f"ensemble.u0 .. ensemble.u{k - 1} in [{U_LOW:g}, 1] (simplex coordinates of {k} weights; not factors)"
    if ensemble.source == "study":
        return {
            "data": f"the split of study {ensemble.study!r} (the members were validated and tested on it)",
            "model": f"family=ensemble: the members' own models, from study {ensemble.study!r}",
            "train": "nothing is trained",
            "ensemble": f"the {k} best complete trials of study {ensemble.study!r} (their saved models), weighted",
            "searched": f"{coordinates}; the uniform average and each member alone are the first {k + 1} trials",
            "work": f"no training: {k} members predict the validation and test images once, then "
            f"{spec.search.trials} weight vectors are scored on those predictions (seconds)",
        }
    return {
        "ensemble": f"{k} models trained per trial with the trial's model settings, seeds seed .. seed+{k - 1}",
        "searched": f"per trial: {ensemble.weight_trials} weight vectors ({ensemble.sampler}) over {coordinates}",
        "work": f"{spec.planned_trials * k * spec.train.epochs} training epochs in all ({k} members x "
        f"{spec.train.epochs} epochs per trial)",
    }
