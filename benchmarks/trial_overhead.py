"""Service overhead per trial: an `ablate` trial against a bare Keras script, same model, data, epochs.

The bare script is what a user would write: build the model, `fit` on the noisy numpy arrays with
`shuffle=True`, evaluate. The `ablate` trial is the whole thing: Optuna ask/tell on a local SQLite
storage, an MLflow nested run on a local SQLite store with params, per-epoch metrics, images and
the model summary. Both run alternately in one process, so the ratio compares like with like.

    .venv/bin/python benchmarks/trial_overhead.py --repeats 3 --epochs 3
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--train-size", type=int, default=8000)
    args = parser.parse_args()

    import keras
    from rich.console import Console

    from _common import median, report, timed
    from ablate.data import load_splits, training_noise
    from ablate.home import resolve_project
    from ablate.models import build_unet
    from ablate.progress import StudyProgress
    from ablate.spec import spec_from_dict
    from ablate.study import run_study
    from ablate.train import compile_model

    raw = {
        "name": "overhead",
        "data": {"dataset": "mnist-embedded", "train_size": args.train_size},
        "model": {"filters": args.filters, "skip": "concat"},
        "train": {"epochs": args.epochs, "batch_size": 128},
        "factors": {},
        "repeats": 1,
        "tracking": {"image_every": 1},
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
                  validation_data=(splits.x_val_noisy, splits.x_val))  # fmt: skip

    counter = iter(range(10_000))

    # One project folder for all runs, as in a real study: the stores' one-off creation (MLflow's
    # schema migrations) is not a per-trial cost.
    home = Path(tempfile.mkdtemp(prefix="ablate-bench-"))

    def ablate_trial() -> None:
        loaded = spec_from_dict({**raw, "name": f"overhead-{next(counter)}"})
        with StudyProgress(Console(file=io.StringIO())) as progress:
            run_study(loaded, resolve_project(home=home), progress=progress)

    bare()  # warm-up: graph tracing caches and the data cache
    ablate_trial()
    bare_times, ablate_times = [], []
    for _ in range(args.repeats):
        bare_times += timed(bare, 1)
        ablate_times += timed(ablate_trial, 1)
    ratio = median(ablate_times) / median(bare_times)
    rows = [
        ["bare keras fit", args.epochs, median(bare_times), min(bare_times), max(bare_times)],
        ["ablate trial (optuna + mlflow)", args.epochs, median(ablate_times), min(ablate_times), max(ablate_times)],
        ["ratio ablate / bare", "", ratio, "", ""],
    ]
    report(
        "trial_overhead",
        f"Per-trial overhead, {args.filters} filters, {args.train_size} images, median of {args.repeats}",
        ["what", "epochs", "median s", "min s", "max s"],
        rows,
        {"ratio": ratio, "bare_s": bare_times, "ablate_s": ablate_times, "args": vars(args)},
    )


if __name__ == "__main__":
    main()
