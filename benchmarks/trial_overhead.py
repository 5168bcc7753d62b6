"""Service overhead per trial: `ablate` trials against a bare Keras script, same model, data, epochs.

The bare script is what a user would write: build the model, `fit` on the noisy numpy arrays with
`shuffle=True` and the validation arrays. The `ablate` side is one study of `--trials` trials
(Optuna on a local SQLite storage, a nested MLflow run per trial on a local SQLite store with
params, per-epoch metrics, reconstruction images every epoch, the model summary and the saved
model), run in this process as `ablate run --recycle-after 0` runs it.

**Paired and interleaved.** The machine may be shared, and its load drifts by a factor of two
within minutes, so each trial is compared with a bare fit run right after it: the study's display
hook runs one bare fit whenever a trial ends (outside the trial's timing), so the sequence is
trial, bare, trial, bare... The ratio reported is the median over pairs of trial / bare. A
trial's time runs from the end of the previous trial's bare fit to its own end, so it holds
everything a trial costs in a running study (popping it, its MLflow run, the data, build, fit,
pictures, telling Optuna) and nothing that a study pays once; the first trial of each study is
left out. The study's one-off cost (storage, experiment and parent run, the study's end) is
measured apart (see `run_one_study`).

Variants, one study each per round:
- `ablate`: MLflow logging deferred to a background thread (the default);
- `ablate-sync`: the same with `ABLATE_TRACKING_SYNC=1`, every MLflow call on the training thread
  (the behaviour before deferred logging);
- with `--breakdown` also `fit loop` (ablate's own fit: seeded batches, epoch hooks, NaN guard)
  and `trial, no optuna/mlflow` (the family's whole trial, logging into a sink: noise, model
  summary, pictures, saved model, clear_session + gc), each paired with a bare fit in turn.

Wall time and the process's CPU time (all threads: TensorFlow's and the MLflow writer's) are
both reported.

    .venv/bin/python benchmarks/trial_overhead.py --rounds 3 --trials 5 --epochs 3 --breakdown
    .venv/bin/python benchmarks/trial_overhead.py --profile-trials 3    # cProfile of one study's trials
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one study per variant")
    parser.add_argument("--trials", type=int, default=5, help="trials per study (the first is not timed)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--image-every", type=int, default=1, help="tracking.image_every of the studies")
    parser.add_argument("--no-sync", action="store_true", help="skip the ablate-sync variant")
    parser.add_argument("--breakdown", action="store_true", help="also the `fit loop` and `trial, no optuna/mlflow` variants")
    parser.add_argument("--profile-trials", type=int, default=0, metavar="N",
                        help="instead: cProfile one study of N trials and print where its time goes")
    args = parser.parse_args()

    import keras

    from _common import report
    from ablate.training.data import load_splits, training_noise
    from ablate.project import resolve_project
    from ablate.models import build_unet
    from ablate.spec.loading import spec_from_dict
    from ablate.training.fit import compile_model

    raw: dict[str, Any] = {
        "name": "overhead",
        "data": {"dataset": "mnist-embedded", "train_size": args.train_size},
        "model": {"filters": args.filters, "skip": "concat"},
        "train": {"epochs": args.epochs, "batch_size": 128},
        "factors": {},
        "repeats": args.trials,
        "tracking": {"image_every": args.image_every},
    }
    spec = spec_from_dict(raw).spec
    run_cfg = spec.run_config({}, seed=0)
    splits = load_splits(run_cfg.data)
    x_noisy = training_noise(splits.x_train, run_cfg.data, 0)

    def bare() -> None:
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = build_unet(run_cfg.model, splits.shape)
        compile_model(model, run_cfg.train)
        model.fit(x_noisy, splits.x_train, batch_size=128, epochs=args.epochs, shuffle=True, verbose=0,
                  validation_data=(splits.x_val_noisy, splits.x_val))

    def fit_loop() -> None:  # ablate's fit (seeded batches, epoch hooks, NaN guard), no logging at all
        from ablate.training.fit import fit

        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = build_unet(run_cfg.model, splits.shape)
        compile_model(model, run_cfg.train)
        fit(model, x_train_noisy=x_noisy, x_train=splits.x_train, x_val_noisy=splits.x_val_noisy, x_val=splits.x_val,
            cfg=run_cfg.train, seed=0)

    def unlogged_trial() -> None:  # the whole trial (noise, summary, images, model file) into a log that drops it
        from ablate.families import family_for
        from ablate.training.trial import train_trial

        train_trial(run_cfg, family_for(run_cfg.model.family), tracking=spec.tracking, log=NullLog(), progress=NullProgress(), label="bench")

    # One project folder for all studies: the stores' one-off creation (MLflow's schema
    # migrations) is paid by the warm-up study, as it is once per project folder.
    project = resolve_project(home=Path(tempfile.mkdtemp(prefix="ablate-bench-")))
    counter = iter(range(10_000))

    def study(trials: int, *, sync: bool, between: Callable[[], None] | None = None) -> dict[str, Any]:
        return run_one_study(raw, project, f"overhead-{next(counter)}", trials, sync=sync, between=between)

    if args.profile_trials:
        profile(lambda: study(args.profile_trials, sync=False))
        return

    bare()  # warm-up: graph tracing caches and the data cache
    study(2, sync=False)
    plain = {"fit loop": fit_loop, "trial, no optuna/mlflow": unlogged_trial} if args.breakdown else {}
    for call in plain.values():
        call()
    variants = [*plain, "ablate", *([] if args.no_sync else ["ablate-sync"])]
    pairs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    per_study: dict[str, list[float]] = {v: [] for v in variants if v not in plain}

    def timed(call: Callable[[], None]) -> tuple[float, float]:
        start, start_cpu = time.perf_counter(), time.process_time()
        call()
        return time.perf_counter() - start, time.process_time() - start_cpu

    for round_ in range(args.rounds):
        for variant in variants:
            if variant in plain:
                for _ in range(args.trials - 1):
                    wall, cpu = timed(plain[variant])
                    bare_wall, bare_cpu = timed(bare)
                    pairs[variant].append({"wall": wall, "cpu": cpu, "bare_wall": bare_wall, "bare_cpu": bare_cpu})
                continue
            measured = study(args.trials, sync=variant == "ablate-sync", between=lambda: timed(bare))
            pairs[variant] += measured["pairs"][1:]  # the first trial also holds the study's setup
            per_study[variant].append(measured["study_overhead"])
        print(f"round {round_ + 1}/{args.rounds}: " + ", ".join(f"{v} x{ratio(p, 'wall'):.3f}" for v, p in pairs.items()), flush=True)

    rows = []
    for variant in variants:
        p = pairs[variant]
        rows.append([
            variant, len(p), med(p, "wall"), med(p, "bare_wall"), round(ratio(p, "wall"), 3),
            med(p, "cpu"), med(p, "bare_cpu"), round(ratio(p, "cpu"), 3),
            statistics.median(per_study[variant]) if variant in per_study else "",
        ])
    report(
        "trial_overhead",
        f"Per-trial time against a bare Keras fit run right after it: {args.filters} filters, {args.train_size} "
        f"images, {args.epochs} epochs, images every {args.image_every} epoch(s); {args.rounds} rounds of "
        f"{args.trials}-trial studies",
        ["variant", "pairs", "median wall s", "bare wall s", "wall ratio (median of pairs)", "median CPU s",
         "bare CPU s", "CPU ratio (median of pairs)", "per-study wall s"],
        rows,
        {
            "ratio": ratio(pairs["ablate"], "wall"),
            "cpu_ratio": ratio(pairs["ablate"], "cpu"),
            "ratio_sync": None if args.no_sync else ratio(pairs["ablate-sync"], "wall"),
            "cpu_ratio_sync": None if args.no_sync else ratio(pairs["ablate-sync"], "cpu"),
            "pairs": pairs,
            "per_study_s": per_study,
            "load_average_at_end": os.getloadavg(),
            "args": vars(args),
        },
    )


def med(pairs: list[dict[str, float]], key: str) -> float:
    return statistics.median(p[key] for p in pairs)


def ratio(pairs: list[dict[str, float]], key: str) -> float:
    """Median over pairs of (variant / the bare fit next to it)."""
    return statistics.median(p[key] / p[f"bare_{key}"] for p in pairs) if pairs else float("nan")


class NullLog:
    """A `TrialLog` that drops everything (the trial without MLflow)."""

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None: ...
    def log_image(self, image: Any, artifact_file: str) -> None: ...
    def log_text(self, text: str, artifact_file: str) -> None: ...
    def log_file(self, local_path: str, artifact_path: str | None = None) -> None: ...


class NullProgress:
    """A `TrialProgress` that shows nothing."""

    def start_trial(self, label: str, epochs: int, batches: int) -> None: ...
    def batch(self, epoch: int, batch: int) -> None: ...
    def epoch(self, epoch: int, metrics: dict[str, float]) -> None: ...


def run_one_study(
    raw: dict[str, Any],
    project: Any,
    name: str,
    trials: int,
    *,
    sync: bool,
    between: Callable[[], tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """Run a study of `trials` trials in this process, calling `between` after each trial.

    Returns each trial's wall and CPU time (paired with what `between` measured right after it)
    and the study's one-off cost: the time before its first trial starts training beyond a later
    trial's lead-in (from the end of the previous trial to its start of training: pop, MLflow run,
    build), plus the time after its last trial ends.
    """
    from rich.console import Console

    from ablate.runtime.progress import StudyProgress
    from ablate.spec.loading import spec_from_dict
    from ablate.runtime.run import run_study

    resumed: list[tuple[float, float]] = []  # when each trial's clock starts: the call, then after each `between`
    starts: list[float] = []  # each trial's start of training
    pairs: list[dict[str, float]] = []
    ends: list[float] = []

    class Clocked(StudyProgress):
        def start_trial(self, label: str, epochs: int, batches: int) -> None:
            starts.append(time.perf_counter())
            super().start_trial(label, epochs, batches)

        def end_trial(self, label: str, outcome: str) -> None:
            end, end_cpu = time.perf_counter(), time.process_time()
            ends.append(end)
            pair = {"wall": end - resumed[-1][0], "cpu": end_cpu - resumed[-1][1]}
            super().end_trial(label, outcome)
            if between is not None:
                pair["bare_wall"], pair["bare_cpu"] = between()
            pairs.append(pair)
            resumed.append((time.perf_counter(), time.process_time()))

    loaded = spec_from_dict({**raw, "name": name, "repeats": trials})
    previous = os.environ.get("ABLATE_TRACKING_SYNC")
    os.environ["ABLATE_TRACKING_SYNC"] = "1" if sync else "0"
    try:
        resumed.append((time.perf_counter(), time.process_time()))
        with Clocked(Console(file=io.StringIO())) as progress:
            outcome = run_study(loaded, project, progress=progress)
        finished = time.perf_counter()
    finally:
        if previous is None:
            os.environ.pop("ABLATE_TRACKING_SYNC", None)
        else:
            os.environ["ABLATE_TRACKING_SYNC"] = previous
    assert outcome.complete == trials and len(pairs) == trials, outcome
    lead_in = statistics.median(s - r[0] for r, s in zip(resumed[1:], starts[1:])) if trials > 1 else 0.0
    setup = starts[0] - resumed[0][0] - lead_in
    return {"pairs": pairs, "study_overhead": setup + (finished - resumed[-1][0])}


def profile(call: Any) -> None:
    """cProfile of the call: where the main thread's time goes, by cumulative time."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    call()
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("cumulative")
    stats.print_stats(30)
    print("--- ablate's own functions, and the tracking, storage and picture calls they make ---")
    stats.print_stats(r"ablate/|mlflow/tracking/client|optuna/study/study.py|summary|saving_api|ablate/tracking/", 60)


if __name__ == "__main__":
    main()
