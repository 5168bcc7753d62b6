"""Scheduler and storage overhead: ask + tell of a no-op objective, per storage and per worker count.

Part 1: one process, N trials (default 1,000) on each storage: in memory, the local default
(SQLite in a project folder) and PostgreSQL; per-trial p50/p95 and the total.
Part 2: trials/s with 1, 2, 4, 8 worker processes sharing one PostgreSQL study.

    .venv/bin/python benchmarks/storage_overhead.py --trials 1000 \
        --postgres postgresql+psycopg2://postgres@127.0.0.1:5432/postgres

The PostgreSQL parts need a driver (psycopg2) and create, then drop, their own database.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np


def ask_tell(storage: object, trials: int, sampler: str) -> list[float]:
    """Seconds per ask+tell of a 3-parameter no-op objective."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    make = {"tpe": lambda: optuna.samplers.TPESampler(multivariate=True, seed=0), "random": lambda: optuna.samplers.RandomSampler(seed=0)}
    study = optuna.create_study(storage=storage, sampler=make[sampler](), study_name=f"bench-{uuid.uuid4().hex[:8]}")
    times = []
    for _ in range(trials):
        start = time.perf_counter()
        trial = study.ask()
        x = trial.suggest_float("x", -5, 5)
        y = trial.suggest_int("y", 0, 10)
        z = trial.suggest_categorical("z", ["a", "b", "c"])
        study.tell(trial, x * x + y + (z == "b"))
        times.append(time.perf_counter() - start)
    return times


def _worker(url: str, name: str, trials: int, sampler: str, out: multiprocessing.Queue) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url, sampler=optuna.samplers.RandomSampler() if sampler == "random" else optuna.samplers.TPESampler(multivariate=True))
    start = time.perf_counter()
    for _ in range(trials):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", -5, 5) ** 2)
    out.put(time.perf_counter() - start)


def throughput(url: str, workers: int, trials_per_worker: int, sampler: str) -> float:
    """Trials per second with `workers` processes on one study."""
    import optuna

    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(storage=url, study_name=name)
    out: multiprocessing.Queue = multiprocessing.Queue()
    start = time.perf_counter()
    processes = [multiprocessing.Process(target=_worker, args=(url, name, trials_per_worker, sampler, out)) for _ in range(workers)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    return workers * trials_per_worker / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    parser.add_argument("--postgres", help="a PostgreSQL server URL; a fresh database is created on it")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--trials-per-worker", type=int, default=100)
    args = parser.parse_args()

    from _common import report

    rows, raw = [], {}
    storages: dict[str, object] = {"in memory": None}
    home = Path(tempfile.mkdtemp(prefix="ablate-bench-"))
    storages["local default (sqlite)"] = f"sqlite:///{home / 'optuna.db'}"
    database = None
    if args.postgres:
        database = _create_database(args.postgres)
        storages["postgresql"] = database
    try:
        for label, storage in storages.items():
            times = np.asarray(ask_tell(storage, args.trials, args.sampler)) * 1000
            raw[label] = times.tolist()
            rows.append([label, args.trials, float(np.median(times)), float(np.percentile(times, 95)), float(times[-100:].mean()), float(times.sum() / 1000)])
        scaling = []
        if database:
            for workers in [int(w) for w in args.workers.split(",")]:
                rate = throughput(database, workers, args.trials_per_worker, "random")
                scaling.append([workers, rate])
                rows.append([f"postgresql, {workers} worker(s), random sampler", workers * args.trials_per_worker, "", "", "", f"{rate:.1f} trials/s"])
    finally:
        if database:
            _drop_database(args.postgres, database)
    report(
        "storage_overhead",
        f"ask+tell per trial ({args.sampler} sampler, no-op objective)",
        ["storage", "trials", "p50 ms", "p95 ms", "mean of last 100 ms", "total s"],
        rows,
        {"per_trial_ms": raw, "args": vars(args)},
    )


def _create_database(server: str) -> str:
    import sqlalchemy

    name = f"ablate_bench_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server.rsplit("/", 1)[0] + f"/{name}"


def _drop_database(server: str, url: str) -> None:
    import sqlalchemy

    name = url.rsplit("/", 1)[1]
    engine = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


if __name__ == "__main__":
    main()
