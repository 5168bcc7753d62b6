"""How a trial gets its params and when it stops early: Optuna samplers, pruners, suggestions.

A grid or one-at-a-time study enqueues every (cell, seed) pair with fixed params, so its sampler
is never consulted and it never prunes (a pruned seed would be missing from the paired
comparisons). A search study asks its sampler for each trial's params; see `SearchSpec`.
"""

from __future__ import annotations

import os
import warnings
import zlib
from typing import Any, Literal

import optuna

from ablate.errors import AblateError
from ablate.runtime.recycling import WORKER_INDEX_ENV
from ablate.spec.levels import Level
from ablate.spec.samplers import require_samplers
from ablate.spec.study_spec import StudySpec


def sampler_for(spec: StudySpec, *, trials_so_far: int = 0, salt: str | None = None) -> optuna.samplers.BaseSampler:
    """The study's sampler, seeded so that one worker's search is reproducible.

    The seed is the study's `seed`, the number of trials already in the study (a resumed search
    does not replay its first suggestions) and the worker's index: `ablate run --workers N` numbers
    its workers, and a worker started by hand mixes in its process id, so two workers never draw
    the same random sequence. `salt="0"` (a single local run) makes the search reproducible.
    """
    if salt is None:
        salt = os.environ.get(WORKER_INDEX_ENV) or f"pid{os.getpid()}"
    seed = zlib.crc32(f"{spec.seed}:{trials_so_far}:{salt}".encode()) if salt != "0" else spec.seed + trials_so_far
    if spec.design != "search" or spec.engine != "optuna":
        # Never consulted: every trial is enqueued, or chosen by KerasTuner (ablate.runtime.engines.keras_tuner).
        return optuna.samplers.RandomSampler(seed=seed)
    name = spec.search.sampler
    multi = len(spec.objective) > 1
    if name == "tpe":
        with warnings.catch_warnings():  # multivariate, group and constant_liar are "experimental" since 2.x
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # group: conditional factors get their own joint model; constant_liar: parallel
            # workers do not all propose the same point while others' trials run.
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        require_samplers(spec)
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        require_samplers(spec)
        return optuna.samplers.GPSampler(seed=seed)
    if name == "nsga2" or multi:
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise AblateError(f"search.sampler {name!r} is not an Optuna sampler")  # spec validation prevents this


def pruner_for(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The study's pruner. Grids and one-at-a-time designs never prune.

    Optuna's default (the median pruner) would stop cells that start slowly, and an ablation
    would then lose exactly the seeds it needs for paired differences. A search may prune:
    `median`, `successive-halving` and `hyperband` with epochs as the steps (the resource), never
    during a trial's first `warmup_epochs` epochs; `wilcoxon` across the seeds of an averaging trial.
    """
    if spec.design != "search":
        return optuna.pruners.NopPruner()
    search = spec.search
    first = first_prunable_epoch(spec)
    if search.pruner in ("median", "successive-halving", "hyperband") and first > spec.train.epochs:
        # Every epoch is warm-up: nothing can be pruned (and Hyperband refuses min_resource > max_resource).
        return optuna.pruners.NopPruner()
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=first)
    if search.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=first, max_resource=spec.train.epochs, reduction_factor=3)
    if search.pruner == "wilcoxon":
        with warnings.catch_warnings():  # experimental since Optuna 3.6
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # A signed-rank test needs a few seeds: with n seeds the smallest one-sided p is 2**-n,
            # so p < 0.1 is reachable from the 4th seed on (repeats >= 5 to ever save a seed).
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1, n_startup_steps=2)
    return optuna.pruners.NopPruner()


def first_prunable_epoch(spec: StudySpec) -> int:
    """The first epoch after which an epoch-based pruner may stop a trial: `warmup_epochs` + 1.

    Epochs are reported as steps 1, 2, ...; Optuna's MedianPruner may prune at step ==
    n_warmup_steps, and SuccessiveHalving/Hyperband judge their first rung at step ==
    min_resource. So both get warmup + 1: `warmup_epochs: 1` keeps epoch 1 safe.
    """
    return spec.search.warmup_epochs + 1


def suggest(trial: optuna.Trial, spec: StudySpec) -> dict[str, Level]:
    """The trial's factor levels, in file order; a conditional factor only where its parent allows.

    Enqueued trials (grid, one-at-a-time, retries) answer with their fixed params; a search trial
    asks the sampler. Grid factors are categorical over their enumerated levels, so an int factor
    of a grid is stored as the level it ran at.
    """
    params: dict[str, Level] = {}
    for name, factor in spec.factors.items():
        if not factor.active(params):
            continue
        if spec.design != "search" or factor.type == "categorical":
            params[name] = trial.suggest_categorical(name, factor.grid_levels(name))
        elif factor.type == "int":
            step = int(factor.step or 1)
            params[name] = trial.suggest_int(name, int(factor.low or 0), int(factor.high or 0), step=step, log=factor.log)
        else:
            params[name] = trial.suggest_float(name, float(factor.low or 0), float(factor.high or 0), step=factor.step, log=factor.log)
    return params


def directions(spec: StudySpec) -> list[Literal["minimize", "maximize"]]:
    """Optuna's directions, one per objective."""
    return [objective.direction for objective in spec.objective]


def objective_values(spec: StudySpec, metrics: dict[str, Any]) -> list[float]:
    """The values to tell Optuna, in the order of the study's objectives."""
    return [float(metrics[objective.metric]) for objective in spec.objective]
