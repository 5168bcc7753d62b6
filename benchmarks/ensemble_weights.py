"""A 1,000-trial ensemble weight study with the members' predictions cached: where does the time go?

Per sampler (CMA-ES, TPE multivariate, random) and storage (in memory, SQLite, PostgreSQL):

- **ablate's path** (`ablate.runtime.engines.weight_study`): the search runs on an in-memory Optuna study, then
  all trials are copied into the persistent study in one transaction (`bulk_add_trials`).
  Measured: sampler + in-memory storage ms per trial, scoring ms per trial, the copy, the total.
- **plain Optuna** for comparison: ask/tell on the persistent storage for every trial, and
  Optuna's own `add_trials` (one transaction per trial) for the copy.

The members' predictions are synthetic (k blurred, noisy copies of the clean images) on the real
validation images of the embedded MNIST split (1,000 by default): scoring cost depends on the
shapes and on how many target pixels are exactly 0 or 1, which real targets give.

    .venv/bin/python benchmarks/ensemble_weights.py --trials 1000 --members 5 \
        --postgres postgresql+psycopg2://postgres@127.0.0.1:5432/postgres

The PostgreSQL part needs psycopg2 and creates, then drops, its own database.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np


def predictions(members: int, val_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, N, 28, 28, 1) member outputs and the N clean validation images they should match."""
    from ablate.spec.run_config import DataConfig
    from ablate.training.data import load_splits

    clean = load_splits(DataConfig(val_size=val_images, test_size=1000)).x_val
    rng = np.random.default_rng(0)
    outputs = []
    for index in range(members):
        blurred = (clean + np.roll(clean, 1 + index % 2, axis=1) + np.roll(clean, 1, axis=2)) / 3
        noisy = blurred + rng.normal(0, 0.05 + 0.03 * index, clean.shape).astype(np.float32)
        outputs.append(np.clip(noisy, 0.001, 0.999))
    return np.stack(outputs).astype(np.float32), clean


def scoring_ms(scorer: Any, stacked: np.ndarray, targets: np.ndarray, repeats: int = 50) -> tuple[float, float]:
    """Median ms per weight vector: ablate's Scorer vs a plain weighted sum + full crossentropy."""
    from ablate.models.weighted_ensemble import simplex_weights

    rng = np.random.default_rng(1)
    weights = [simplex_weights(rng.random(stacked.shape[0])) for _ in range(repeats)]

    def plain(w: np.ndarray) -> float:
        p = np.clip(np.tensordot(w.astype(np.float32), stacked, axes=1), 1e-7, 1 - 1e-7)
        return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p))) + float(np.mean((p - targets) ** 2))

    fast, slow = [], []
    for w in weights:
        start = time.perf_counter()
        scorer.score(w)
        fast.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain(w)
        slow.append(time.perf_counter() - start)
    return 1000 * float(np.median(fast)), 1000 * float(np.median(slow))


def ablate_path(scorer: Any, storage: Any, trials: int, sampler: str) -> dict[str, float]:
    """The weight study's path: in-memory search, then one bulk copy into `storage` (None: memory only)."""
    import optuna

    from ablate.families.ensemble_weights import SearchTimes, search_weights
    from ablate.runtime.optuna_internals import bulk_add_trials

    times = SearchTimes()
    per_trial: list[float] = []
    last = [time.perf_counter()]

    def tick(number: int, value: float) -> None:
        now = time.perf_counter()
        per_trial.append(now - last[0])
        last[0] = now

    start = time.perf_counter()
    memory = search_weights(scorer, trials=trials, sampler=sampler, seed=0, times=times, on_trial=tick)
    searched = time.perf_counter()
    copy = 0.0
    if storage is not None:
        target = optuna.create_study(storage=storage, study_name=f"bench-{uuid.uuid4().hex[:8]}")
        copied = time.perf_counter()
        bulk_add_trials(target, memory.get_trials(deepcopy=True))
        copy = time.perf_counter() - copied
        assert len(target.get_trials(deepcopy=False)) == trials
    per = np.asarray(per_trial) * 1000
    return {
        "sampler_ms": 1000 * times.sampler / trials, "scoring_ms": 1000 * times.scoring / trials,
        "p50_ms": float(np.median(per)), "p95_ms": float(np.percentile(per, 95)), "last100_ms": float(per[-100:].mean()),
        "search_s": searched - start, "copy_s": copy, "total_s": searched - start + copy, "best": memory.best_value,
    }


def plain_optuna(scorer: Any, storage: Any, trials: int, sampler: str) -> dict[str, float]:
    """Plain Optuna: every ask and tell on the persistent storage (the trial loop's way)."""
    import optuna

    from ablate.spec.ensemble_rules import U_LOW
    from ablate.families.ensemble_weights import coordinate_names, weight_sampler
    from ablate.models.weighted_ensemble import simplex_weights

    study = optuna.create_study(storage=storage, sampler=weight_sampler(sampler, 0), study_name=f"bench-{uuid.uuid4().hex[:8]}")
    names = coordinate_names(scorer.members)
    overhead, scoring = [], []
    start = time.perf_counter()
    for _ in range(trials):
        asked = time.perf_counter()
        trial = study.ask()
        u = [trial.suggest_float(name, U_LOW, 1.0) for name in names]
        scored = time.perf_counter()
        value = scorer.score(simplex_weights(u)).loss
        told = time.perf_counter()
        study.tell(trial, value)
        overhead.append((scored - asked) + (time.perf_counter() - told))
        scoring.append(told - scored)
    total = time.perf_counter() - start
    per = (np.asarray(overhead) + np.asarray(scoring)) * 1000
    return {
        "sampler_ms": 1000 * float(np.mean(overhead)), "scoring_ms": 1000 * float(np.mean(scoring)), "p50_ms": float(np.median(per)),
        "p95_ms": float(np.percentile(per, 95)), "last100_ms": float(per[-100:].mean()), "search_s": total,
        "copy_s": 0.0, "total_s": total, "best": study.best_value,
    }


def optuna_add_trials(scorer: Any, storage: Any, trials: int) -> float:
    """Seconds for Optuna's own `add_trials` of a finished in-memory search into `storage`."""
    import optuna

    from ablate.families.ensemble_weights import search_weights

    memory = search_weights(scorer, trials=trials, sampler="random", seed=0)
    target = optuna.create_study(storage=storage, study_name=f"bench-{uuid.uuid4().hex[:8]}")
    start = time.perf_counter()
    target.add_trials(memory.get_trials(deepcopy=True))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--samplers", default="cmaes,tpe,random")
    parser.add_argument("--postgres", help="a PostgreSQL server URL; a fresh database is created on it")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ablate's path per row (the median is shown)")
    parser.add_argument("--no-plain", action="store_true", help="skip plain Optuna ask/tell on the persistent storages (slow; one run)")
    args = parser.parse_args()

    import optuna

    from _common import report
    from ablate.families.ensemble_weights import Scorer

    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_before = os.getloadavg()
    stacked, targets = predictions(args.members, args.val_images)
    scorer = Scorer(stacked, targets, "binary_crossentropy")
    fast, slow = scoring_ms(scorer, stacked, targets)

    home = Path(tempfile.mkdtemp(prefix="ablate-bench-"))
    storages: dict[str, Any] = {"in memory": None, "sqlite": f"sqlite:///{home / 'optuna.db'}"}
    database = None
    if args.postgres:
        from storage_overhead import _create_database

        database = _create_database(args.postgres)
        storages["postgresql"] = database
    rows: list[list[Any]] = []
    results: dict[str, Any] = {"scoring_ms": {"ablate_scorer": fast, "plain_numpy": slow}, "copy_add_trials_s": {}}
    columns = ["path", "sampler", "storage", "sampler+storage ms/trial", "trial p95 ms", "last 100 trials ms/trial",
               "scoring ms/trial", "copy s", "total s"]
    try:
        for sampler in args.samplers.split(","):
            for label, storage in storages.items():
                runs = [ablate_path(scorer, storage, args.trials, sampler) for _ in range(args.repeats)]
                measured = {key: float(np.median([r[key] for r in runs])) for key in runs[0]}
                results[f"ablate/{sampler}/{label}"] = {"median": measured, "runs": runs}
                rows.append(_row(f"ablate (memory + bulk copy), median of {args.repeats}", sampler, label, measured))
                print(rows[-1], flush=True)
            if args.no_plain:
                continue
            for label, storage in storages.items():
                if storage is None:
                    continue
                measured = plain_optuna(scorer, storage, args.trials, sampler)
                results[f"plain/{sampler}/{label}"] = measured
                rows.append(_row("plain Optuna ask/tell on the storage (one run)", sampler, label, measured))
                print(rows[-1], flush=True)
        for label, storage in storages.items():
            if storage is not None:
                seconds = optuna_add_trials(scorer, storage, args.trials)
                results["copy_add_trials_s"][label] = seconds
                rows.append(["Optuna add_trials (copy only, one run)", "-", label, "", "", "", "", seconds, seconds])
    finally:
        if database:
            from storage_overhead import _drop_database

            _drop_database(args.postgres, database)
    rows.append(["scoring one weight vector", "-", "-", "", "", "", f"{fast:.2f} (plain numpy {slow:.2f})", "", ""])
    report(
        "ensemble_weights",
        f"{args.trials}-trial weight study, {args.members} members, {args.val_images} validation images (predictions cached)",
        columns,
        rows,
        {"results": results, "args": vars(args), "load_average": {"before": load_before, "after": os.getloadavg()}},
    )
    print(f"load average (1, 5, 15 min) before {load_before}, after {os.getloadavg()}: other work on the machine slows every row")


def _row(path: str, sampler: str, storage: str, m: dict[str, float]) -> list[Any]:
    return [path, sampler, storage, m["sampler_ms"], m["p95_ms"], m["last100_ms"], m["scoring_ms"], m["copy_s"], m["total_s"]]


if __name__ == "__main__":
    main()
