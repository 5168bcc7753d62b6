"""Ensemble weights: score a weighted sum of members' cached predictions, and search the simplex.

Shared by both sources of members (`ensemble.source`): the weight study (`source: study`, see
`ablate.runtime.engines.weight_study`) and the ensemble trial (`source: train`, see `ablate.families.ensemble`).

Why it is fast: a weight trial trains nothing. Each member predicts the validation and test
images once; a weight vector is then scored with numpy on those cached predictions (a
matrix-vector product and the loss), and the MSE even in O(k^2) from a precomputed Gram matrix.
The trials run on an in-memory Optuna study (ask/tell without a database round trip), and the
caller copies them into the persistent study in one transaction (`bulk_add_trials`).

Why the reference points come first: the uniform average and each member alone are enqueued as
the first trials, so the searched best is never worse on validation than either reference; the
search can only improve on them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import optuna
from scipy.optimize import minimize

from ablate.errors import AblateError
from ablate.models.weighted_ensemble import simplex_coordinates, simplex_weights
from ablate.spec.attributes import CELL_ATTR, LOSS_ATTR, MSE_ATTR, WEIGHTS_ATTR
from ablate.spec.ensemble_rules import U_LOW, WEIGHT_METRICS, WEIGHT_SAMPLERS
from ablate.spec.errors import SamplerUnavailableError
from ablate.training.data import add_noise

if TYPE_CHECKING:
    from ablate.spec.run_config import DataConfig


EPSILON = 1e-7  # keras.backend.epsilon(): Keras clips probabilities to [eps, 1 - eps] in its crossentropy
TEST_NOISE_OFFSET = 2_000_003  # the test inputs' noise stream, apart from the validation noise and any seed
UNIFORM = "uniform"


class EnsembleError(AblateError):
    """An ensemble cannot be formed: its members are missing, too few, or do not fit together."""


def coordinate_names(members: int) -> list[str]:
    """The searched params: one simplex coordinate per member, `ensemble.u0` .. `ensemble.u{k-1}`."""
    return [f"ensemble.u{index}" for index in range(members)]


def only_member(index: int) -> str:
    """The cell of the reference trial that gives all weight to member `index`."""
    return f"only-member{index}"


def reference_points(members: int) -> list[tuple[str, dict[str, float]]]:
    """(cell, params) of the uniform average and of each member alone, in that order."""
    names = coordinate_names(members)
    points = [(UNIFORM, dict(zip(names, simplex_coordinates([1.0] * members))))]
    for index in range(members):
        one_hot = [1.0 if other == index else 0.0 for other in range(members)]
        points.append((only_member(index), dict(zip(names, simplex_coordinates(one_hot)))))
    return points


def test_inputs(x_test: np.ndarray, data: DataConfig) -> np.ndarray:
    """The noisy test inputs: like the validation inputs, noise fixed by `data.split_seed` alone.

    The splits carry clean test images only; every ensemble of a study must be judged on the
    same noisy test images, so their noise comes from its own seeded stream.
    """
    return add_noise(x_test, data.noise.factor, np.random.default_rng(data.split_seed + TEST_NOISE_OFFSET))


def predict(model: Any, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """A model's outputs on `x` as float32, by direct calls in batches.

    A direct call, not `predict()`: `predict()` builds a new tf.function for each new model.
    """
    parts = [
        keras.ops.convert_to_numpy(model(x[start : start + batch_size], training=False))
        for start in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Scores:
    """A weighted sum's loss (the members' training loss) and its MSE on one split."""

    loss: float
    mse: float

    def named(self, split: str, prefix: str = "") -> dict[str, float]:
        """`{prefix}{split}_loss` and `{prefix}{split}_mse`, e.g. `uniform_test_loss`."""
        return {f"{prefix}{split}_loss": self.loss, f"{prefix}{split}_mse": self.mse}


class Scorer:
    """One split's targets and the members' predictions on it, arranged to score a weight vector fast.

    The crossentropy is not linear in the weights, so it is computed per pixel; the pixels are
    grouped once by target (exactly 0, exactly 1, in between), so that most pixels (MNIST's
    background) need one logarithm instead of two. The MSE is a quadratic form in the weights,
    w'Gw - 2w'b + c, evaluated from the Gram matrix of the predictions in O(k^2).
    """

    def __init__(self, predictions: np.ndarray, targets: np.ndarray, loss: str) -> None:
        """
        Args:
            predictions: (k, N, ...) float, member i's outputs on the N images.
            targets: (N, ...) the clean images.
            loss: `binary_crossentropy` or `mse`, the members' training loss.
        """
        if predictions.shape[1:] != targets.shape:
            raise EnsembleError(f"predictions {predictions.shape[1:]} do not match the targets {targets.shape}")
        if loss not in ("binary_crossentropy", "mse"):
            raise EnsembleError(f"unknown loss {loss!r}; expected binary_crossentropy or mse")
        members = predictions.shape[0]
        flat = predictions.reshape(members, -1).astype(np.float32, copy=False)
        y = targets.reshape(-1).astype(np.float32, copy=False)
        self.members = members
        self.loss_name = loss
        self.size = y.size
        wide = flat.astype(np.float64)
        self._gram = wide @ wide.T / y.size
        self._cross = wide @ y.astype(np.float64) / y.size
        self._square = float(y.astype(np.float64) @ y.astype(np.float64)) / y.size
        zero, one = y == 0.0, y == 1.0
        mixed = ~(zero | one)
        self._on_zero = np.ascontiguousarray(flat[:, zero])
        self._on_one = np.ascontiguousarray(flat[:, one])
        self._on_mixed = np.ascontiguousarray(flat[:, mixed])
        self._mixed_targets = y[mixed]

    def mse(self, weights: np.ndarray) -> float:
        """Mean squared error of the weighted sum."""
        w = np.asarray(weights, dtype=np.float64)
        return max(float(w @ self._gram @ w - 2.0 * w @ self._cross + self._square), 0.0)

    def crossentropy(self, weights: np.ndarray) -> float:
        """Keras' binary crossentropy of the weighted sum (clipped like Keras), averaged over pixels."""
        w = np.asarray(weights, dtype=np.float32)
        total = 0.0
        if self._on_zero.shape[1]:
            total += float(np.log(1.0 - _clip(_weighted(w, self._on_zero))).sum())
        if self._on_one.shape[1]:
            total += float(np.log(_clip(_weighted(w, self._on_one))).sum())
        if self._on_mixed.shape[1]:
            p, t = _clip(_weighted(w, self._on_mixed)), self._mixed_targets
            total += float((t * np.log(p) + (1.0 - t) * np.log(1.0 - p)).sum())
        return -total / self.size

    def gradient(self, weights: np.ndarray, metric: str = "val_loss") -> np.ndarray:
        """d loss / d weights (or d MSE with `metric` val_mse); zero through clipped pixels, as in Keras."""
        w = np.asarray(weights, dtype=np.float64)
        if metric == "val_mse" or self.loss_name == "mse":
            return 2.0 * (self._gram @ w - self._cross)
        w32 = w.astype(np.float32)
        grad = np.zeros(self.members)
        blocks = ((self._on_zero, lambda p: 1.0 / (1.0 - p)), (self._on_one, lambda p: -1.0 / p),
                  (self._on_mixed, lambda p: (1.0 - self._mixed_targets) / (1.0 - p) - self._mixed_targets / p))
        for block, derivative in blocks:
            if block.shape[1]:
                raw = _weighted(w32, block)
                slope = np.where((raw > EPSILON) & (raw < 1.0 - EPSILON), derivative(_clip(raw)), 0.0).astype(np.float32)
                grad += np.einsum("ij,j->i", block, slope).astype(np.float64)
        return grad / self.size

    def loss(self, weights: np.ndarray) -> float:
        """The members' training loss of the weighted sum."""
        return self.crossentropy(weights) if self.loss_name == "binary_crossentropy" else self.mse(weights)

    def score(self, weights: Sequence[float] | np.ndarray) -> Scores:
        """Loss and MSE of the weighted sum."""
        w = np.asarray(weights, dtype=np.float64)
        return Scores(loss=self.loss(w), mse=self.mse(w))


def _clip(p: np.ndarray) -> np.ndarray:
    return np.clip(p, EPSILON, 1.0 - EPSILON)


def _weighted(w: np.ndarray, block: np.ndarray) -> np.ndarray:
    """sum_i w_i * block[i], by numpy's own loop rather than BLAS.

    A (k,) x (k, n) product in BLAS is a matrix-vector call that OpenBLAS spreads over threads;
    on a busy 2-core machine that took 10 ms instead of 1 ms (measured), and einsum's single
    loop is as fast as BLAS on an idle one.
    """
    return np.einsum("i,ij->j", w, block)


def weight_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The sampler of a weight search, configured for one sequential process and k floats.

    TPE runs multivariate, without `group` (no conditional params) and without `constant_liar`
    (one process asks and tells in turn), the two options that `ablate.runtime.sampling` sets for shared
    studies and that cost a third more per trial here. CMA-ES is the default: its cost per trial
    does not grow with the trials so far, unlike TPE's (see docs/performance.md).
    """
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        try:
            import torch  # noqa: F401 - only whether it is installed; GPSampler imports it itself
        except ImportError:
            raise SamplerUnavailableError("sampler gp is Optuna's GPSampler, which needs PyTorch; use cmaes or tpe") from None
        return optuna.samplers.GPSampler(seed=seed)
    raise EnsembleError(f"weight sampler {name!r} is not one of {', '.join(WEIGHT_SAMPLERS)}")


@dataclass
class SearchTimes:
    """Where a weight search's wall time went: the sampler and storage (ask + tell) vs scoring."""

    sampler: float = 0.0
    scoring: float = 0.0
    trials: int = 0

    def as_metrics(self) -> dict[str, float]:
        per = max(self.trials, 1)
        return {
            "weight_search_seconds": self.sampler + self.scoring,
            "weight_sampler_ms_per_trial": 1000.0 * self.sampler / per,
            "weight_scoring_ms_per_trial": 1000.0 * self.scoring / per,
        }


def search_weights(
    scorer: Scorer,
    *,
    trials: int,
    sampler: str,
    seed: int,
    metric: str = "val_loss",
    previous: Iterable[Any] = (),
    on_trial: Callable[[int, float], None] | None = None,
    times: SearchTimes | None = None,
) -> optuna.Study:
    """Search ensemble weights on an in-memory study until it holds `trials` complete trials.

    The uniform average and each member alone are enqueued first (unless `previous`, the trials
    of an earlier run, already hold them), then the sampler proposes simplex coordinates u in
    [U_LOW, 1] that `simplex_weights` maps to weights. Each trial's value is `metric` of the
    weighted sum; its user attrs hold its cell, weights, loss and MSE.

    Args:
        scorer: the validation split's scorer.
        trials: complete trials wanted in all (the reference points count).
        sampler: one of `WEIGHT_SAMPLERS`.
        seed: the sampler's seed.
        metric: `val_loss` or `val_mse`, the value minimised.
        previous: finished trials to start from (a resumed study's).
        on_trial: called with (trial number, value) after each new trial.
        times: accumulates the sampler's and the scoring's seconds.
    """
    if metric not in WEIGHT_METRICS:
        raise EnsembleError(f"ensemble weights are searched on {' or '.join(WEIGHT_METRICS)}, not {metric!r}")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    times = times if times is not None else SearchTimes()
    study = optuna.create_study(direction="minimize", sampler=weight_sampler(sampler, seed))
    study.add_trials(previous)
    present = {t.user_attrs.get(CELL_ATTR) for t in study.get_trials(deepcopy=False)}
    for cell, params in reference_points(scorer.members):
        if cell not in present:
            study.enqueue_trial(params, user_attrs={CELL_ATTR: cell})
    names = coordinate_names(scorer.members)
    done = sum(1 for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE)
    while done < trials:
        started = time.perf_counter()
        trial = study.ask()
        u = [trial.suggest_float(name, U_LOW, 1.0) for name in names]
        asked = time.perf_counter()
        weights = simplex_weights(u)
        scores = scorer.score(weights)
        value = scores.loss if metric == "val_loss" else scores.mse
        scored = time.perf_counter()
        if CELL_ATTR not in trial.user_attrs:
            trial.set_user_attr(CELL_ATTR, f"trial-{trial.number}")
        trial.set_user_attr(WEIGHTS_ATTR, [round(float(w), 8) for w in weights])
        trial.set_user_attr(LOSS_ATTR, scores.loss)
        trial.set_user_attr(MSE_ATTR, scores.mse)
        study.tell(trial, value if math.isfinite(value) else None, state=None if math.isfinite(value) else optuna.trial.TrialState.FAIL)
        times.sampler += (asked - started) + (time.perf_counter() - scored)
        times.scoring += scored - asked
        times.trials += 1
        done += 1
        if on_trial is not None:
            on_trial(trial.number, value)
    return study


def trial_weights(trial: Any) -> np.ndarray:
    """A weight trial's weights, from its simplex coordinates."""
    names = coordinate_names(len([k for k in trial.params if k.startswith("ensemble.u")]))
    return simplex_weights([trial.params[name] for name in names])


def optimum_weights(scorer: Scorer, metric: str = "val_loss") -> np.ndarray:
    """The exact minimiser of the validation metric over the simplex: a check on the search.

    Both losses are convex in the weights (a convex loss of a linear function of them), so a
    local solver (SLSQP, with the gradient, from the uniform average) finds the global optimum
    in a second. The study's answer stays the searched best; this says how far the search's
    budget got (`optimum` in weights.json).
    """
    k = scorer.members
    if k == 1:
        return np.ones(1)

    def value(w: np.ndarray) -> float:
        return scorer.loss(w) if metric == "val_loss" else scorer.mse(w)

    result = minimize(
        value, np.full(k, 1.0 / k), jac=lambda w: scorer.gradient(w, metric), method="SLSQP",
        bounds=[(0.0, 1.0)] * k, constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}],
        options={"maxiter": 200, "ftol": 1e-12},
    )
    weights = np.clip(result.x, 0.0, None)
    return weights / weights.sum()


@dataclass(frozen=True)
class Member:
    """One member as the ensemble's records show it: where it came from and how it scores."""

    index: int
    label: str
    val: Scores
    test: Scores
    source: dict[str, Any] = field(default_factory=dict)  # source run id, trial, cell, seed, logged value


@dataclass(frozen=True)
class Outcome:
    """The answer of a weight search: the members, the uniform average, and the best weights.

    `best_member` is the member with the lowest validation loss (chosen on validation, as a user
    would choose one model); every comparison is then made on the test split.
    """

    members: list[Member]
    uniform: tuple[Scores, Scores]
    best_weights: list[float]
    best_trial: int
    best_cell: str
    best: tuple[Scores, Scores]
    loss: str
    metric: str
    sampler: str
    trials: int
    times: SearchTimes
    data: dict[str, Any]
    optimum: tuple[list[float], Scores, Scores] | None = None

    @property
    def best_member(self) -> Member:
        return min(self.members, key=lambda m: m.val.loss if self.metric == "val_loss" else m.val.mse)

    def metrics(self) -> dict[str, float]:
        """Flat metrics for MLflow: the ensemble's (`val_loss`...), uniform's, best member's, each member's."""
        best_val, best_test = self.best
        out = {**best_val.named("val"), **best_test.named("test")}
        out.update({**self.uniform[0].named("val", "uniform_"), **self.uniform[1].named("test", "uniform_")})
        out.update({**self.best_member.val.named("val", "best_member_"), **self.best_member.test.named("test", "best_member_")})
        for member in self.members:
            out.update({**member.val.named("val", f"member{member.index}_"), **member.test.named("test", f"member{member.index}_")})
        out.update({f"weight{index}": float(w) for index, w in enumerate(self.best_weights)})
        out.update(self.times.as_metrics())
        if self.optimum is not None:
            out.update({**self.optimum[1].named("val", "optimum_"), **self.optimum[2].named("test", "optimum_")})
        return out

    def document(self) -> dict[str, Any]:
        """`ensemble/weights.json`: members, weights and the val and test scores of members, uniform and best."""

        def scores(pair: tuple[Scores, Scores]) -> dict[str, float]:
            return {**pair[0].named("val"), **pair[1].named("test")}

        best_member = self.best_member
        return {
            "loss": self.loss,
            "searched_on": self.metric,
            "members": [
                {"index": m.index, "label": m.label, "weight": float(self.best_weights[m.index]),
                 **scores((m.val, m.test)), **m.source}
                for m in self.members
            ],
            "weights": [float(w) for w in self.best_weights],
            "best": {"trial": self.best_trial, "cell": self.best_cell, **scores(self.best)},
            "uniform": scores(self.uniform),
            "best_member": {"index": best_member.index, "label": best_member.label, **scores((best_member.val, best_member.test))},
            "test_gain": {
                "vs_best_member": best_member.test.loss - self.best[1].loss,
                "vs_uniform": self.uniform[1].loss - self.best[1].loss,
            },
            "search": {"sampler": self.sampler, "trials": self.trials, **self.times.as_metrics()},
            "optimum": None if self.optimum is None else {
                "weights": self.optimum[0], **scores((self.optimum[1], self.optimum[2])),
                "note": "the exact minimiser of the validation metric over the simplex (convex); a check on the search",
            },
            "data": self.data,
        }

    def to_json(self) -> str:
        return json.dumps(self.document(), indent=2) + "\n"


def summarize(
    study: optuna.Study,
    val: Scorer,
    test: Scorer,
    *,
    labels: Sequence[str],
    sources: Sequence[dict[str, Any]] | None = None,
    sampler: str,
    metric: str,
    times: SearchTimes,
    data: dict[str, Any],
) -> Outcome:
    """Score the members, the uniform average and the searched best on validation and test."""
    k = val.members
    members = []
    for index in range(k):
        one_hot = np.eye(k)[index]
        members.append(
            Member(index=index, label=labels[index], val=val.score(one_hot), test=test.score(one_hot),
                   source=dict(sources[index]) if sources else {})
        )
    uniform = np.full(k, 1.0 / k)
    best = study.best_trial
    weights = trial_weights(best)
    optimum = optimum_weights(val, metric)
    return Outcome(
        members=members,
        uniform=(val.score(uniform), test.score(uniform)),
        best_weights=[float(w) for w in weights],
        best_trial=best.number,
        best_cell=str(best.user_attrs.get(CELL_ATTR, "")),
        best=(val.score(weights), test.score(weights)),
        loss=val.loss_name,
        metric=metric,
        sampler=sampler,
        trials=len(study.get_trials(deepcopy=False)),
        times=times,
        data=data,
        optimum=(optimum.tolist(), val.score(optimum), test.score(optimum)),
    )


def trials_csv(trials: Iterable[Any]) -> str:
    """Every weight trial as CSV: number, cell, state, value, loss, MSE, the weights and coordinates."""
    rows = list(trials)
    k = max((len(t.user_attrs.get(WEIGHTS_ATTR, [])) for t in rows), default=0)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["number", "cell", "state", "value", "val_loss", "val_mse",
                     *(f"weight{i}" for i in range(k)), *coordinate_names(k)])
    for t in rows:
        weights = t.user_attrs.get(WEIGHTS_ATTR, [])
        writer.writerow([
            t.number, t.user_attrs.get(CELL_ATTR, ""), t.state.name, "" if t.value is None else repr(t.value),
            repr(t.user_attrs.get(LOSS_ATTR, "")), repr(t.user_attrs.get(MSE_ATTR, "")),
            *(repr(w) for w in weights), *(repr(t.params.get(n, "")) for n in coordinate_names(k)),
        ])
    return buffer.getvalue()
