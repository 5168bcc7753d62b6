"""Scheduler and storage overhead: ask + tell of a no-op objective, per storage and per worker count.

Part 1: one process, N trials (default 1,000) on each storage: in memory, the local default
(SQLite in a project folder) and PostgreSQL, each opened as ablate opens it (`open_storage`);
per-trial p50/p95 and the total.
Part 2: trials/s with 1, 2, 4, 8 worker processes sharing one study (PostgreSQL, and the local
SQLite file that `ablate run --workers N` shares): a fixed total of trials split between the
workers, timed from the moment all of them have started, imported and connected (a barrier) to
the last tell, so process start-up is not in the rate; median over `--repeats`.

    .venv/bin/python benchmarks/storage_overhead.py --trials 1000 \
        --postgres postgresql+psycopg2://postgres@127.0.0.1:5432/postgres

The PostgreSQL parts need a driver (psycopg2) and create, then drop, their own database.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

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


def _worker(url: str, name: str, trials: int, ready: Any, go: Any, out: Any) -> None:
    import optuna

    from ablate.runtime.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(
        study_name=name, storage=open_storage(url, heartbeat=None, grace=None), sampler=optuna.samplers.RandomSampler()
    )
    ready.release()
    go.wait()
    for _ in range(trials):
        trial = study.ask()
        study.tell(trial, trial.suggest_float("x", -5, 5) ** 2)
    out.put(time.perf_counter())


def throughput(url: str, workers: int, total: int) -> float:
    """Trials per second of `workers` processes sharing one study for `total` trials in all."""
    import optuna

    from ablate.runtime.storage import open_storage

    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(storage=open_storage(url, heartbeat=None, grace=None), study_name=name)
    context = multiprocessing.get_context("spawn")
    ready, go, out = context.Semaphore(0), context.Event(), context.Queue()
    shares = [total // workers + (1 if i < total % workers else 0) for i in range(workers)]
    processes = [context.Process(target=_worker, args=(url, name, n, ready, go, out)) for n in shares]
    for p in processes:
        p.start()
    for _ in processes:
        ready.acquire()  # every worker has imported Optuna and loaded the study
    start = time.perf_counter()
    go.set()
    ends = [out.get() for _ in processes]
    for p in processes:
        p.join()
    return total / (max(ends) - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    parser.add_argument("--postgres", help="a PostgreSQL server URL; a fresh database is created on it")
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--scaling-trials", type=int, default=1000, help="trials in all per worker-count run (part 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count (part 2); the median is shown")
    args = parser.parse_args()

    from _common import report
    from ablate.runtime.storage import open_storage

    rows, raw = [], {}
    home = Path(tempfile.mkdtemp(prefix="ablate-bench-"))
    urls = {"local default (sqlite)": f"sqlite:///{home / 'optuna.db'}"}
    database = None
    if args.postgres:
        database = _create_database(args.postgres)
        urls["postgresql"] = database
    rates: dict[str, dict[int, list[float]]] = {}
    try:
        storages: dict[str, Any] = {"in memory": None}
        storages.update({label: open_storage(url, heartbeat=None, grace=None) for label, url in urls.items()})
        for label, storage in storages.items():
            times = np.asarray(ask_tell(storage, args.trials, args.sampler)) * 1000
            raw[label] = times.tolist()
            rows.append([label, args.trials, float(np.median(times)), float(np.percentile(times, 95)), float(times[-100:].mean()), float(times.sum() / 1000)])
        for label, url in urls.items():
            for workers in [int(w) for w in args.workers.split(",")]:
                runs = [throughput(url, workers, args.scaling_trials) for _ in range(args.repeats)]
                rates.setdefault(label, {})[workers] = runs
                rate = statistics.median(runs)
                rows.append([f"{label}, {workers} worker(s), random sampler", args.scaling_trials, "", "", "", f"{rate:.1f} trials/s"])
                print(f"{label}, {workers} worker(s): {', '.join(f'{r:.1f}' for r in runs)} trials/s", flush=True)
    finally:
        if database:
            _drop_database(args.postgres, database)
    report(
        "storage_overhead",
        f"ask+tell per trial ({args.sampler} sampler, no-op objective)",
        ["storage", "trials", "p50 ms", "p95 ms", "mean of last 100 ms", "total s"],
        rows,
        {"per_trial_ms": raw, "trials_per_s": rates, "args": vars(args)},
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
