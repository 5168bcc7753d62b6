"""What `train.deterministic: true` costs in speed on TensorFlow, and whether two same-seed runs agree.

Trains the skip-vs-noskip study's quick model (16 filters, depth 2, concat skips, batch 128), fed
as ablate feeds it (`SeededBatches`), with TensorFlow's deterministic ops off and on. The switch
(`tf.config.experimental.enable_op_determinism`, via `ablate.training.determinism`) holds for the
whole process and cannot be switched off, so every measurement runs in its own process, off and
on alternating (`--pairs` of them), so that a machine that slows down meanwhile slows both.

Each process trains the model twice from the same seed (one warm-up epoch, then `--epochs` timed
ones): its images/s is the median over the timed epochs of both runs, and the two runs' final
training and validation losses say how far identical runs land apart with the switch in that
position (what `ablate audit` measures on a whole trial).

    .venv/bin/python benchmarks/determinism.py              # 3 pairs, 1024 images, 2 timed epochs
    .venv/bin/python benchmarks/determinism.py --pairs 5 --train-size 2048

Results: benchmarks/results/determinism.json; quoted in docs/performance.md#deterministic-ops.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "src"))  # runs from a checkout without installing ablate
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FILTERS = 16  # the quick profile's model
BATCH = 128
MARK = "DETERMINISM-RESULT "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="off/on process pairs, alternating (default 3)")
    parser.add_argument("--train-size", type=int, default=1024, help="training images per epoch (default 1024)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch (default 2)")
    parser.add_argument("--child", choices=("off", "on"), help=argparse.SUPPRESS)  # one measurement, its own process
    args = parser.parse_args()
    if args.child:
        print(MARK + json.dumps(measure(args.child == "on", args)), flush=True)
        return
    drive(args)


def drive(args: argparse.Namespace) -> None:
    """Run the off and on processes in turn, then print one table and write the JSON."""
    from _common import report

    results: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    for pair in range(args.pairs):
        for mode in ("off", "on"):
            command = [sys.executable, __file__, "--child", mode, "--train-size", str(args.train_size),
                       "--epochs", str(args.epochs)]
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
            found = [line[len(MARK):] for line in done.stdout.splitlines() if line.startswith(MARK)]
            if not found:
                tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                raise SystemExit(f"determinism: the {mode} process failed (exit {done.returncode}): {tail}")
            results[mode].append(json.loads(found[-1]))
            print(f"pair {pair + 1}, deterministic {mode}: {results[mode][-1]['images_per_s']:.0f} images/s", flush=True)
    off = statistics.median(r["images_per_s"] for r in results["off"])
    on = statistics.median(r["images_per_s"] for r in results["on"])
    device = results["off"][0]["device"]

    def gap(mode: str, key: str) -> float:
        return max(r[key] for r in results[mode])

    rows = [
        ["TensorFlow", device, f"{FILTERS} (quick)", off, on, on / off,
         f"{gap('off', 'train_loss_gap'):.3g} / {gap('off', 'val_loss_gap'):.3g}",
         f"{gap('on', 'train_loss_gap'):.3g} / {gap('on', 'val_loss_gap'):.3g}"],
    ]
    # gap: the largest |difference| of the final training / validation loss between the two same-seed runs of a process
    report("determinism",
           f"Deterministic ops on TensorFlow: images/s, median of {args.pairs} processes each "
           f"({args.train_size} images/epoch, batch {BATCH}, {args.epochs} timed epochs)",
           ["backend", "device", "filters", "images/s off", "images/s on", "on / off",
            "gap off (loss / val)", "gap on (loss / val)"],
           rows, {"results": results, "args": vars(args)})


def measure(deterministic: bool, args: argparse.Namespace) -> dict[str, Any]:
    """Train the quick model twice from seed 0 in this process; images/s and how far the two ended apart."""
    import keras

    from ablate.models import build_unet
    from ablate.spec.run_config import DataConfig, ModelConfig, TrainConfig
    from ablate.training.data import load_splits, training_noise
    from ablate.training.determinism import use_deterministic_ops
    from ablate.training.device import describe_device
    from ablate.training.fit import SeededBatches, compile_model

    switch = use_deterministic_ops() if deterministic else "off"
    data = DataConfig(train_size=args.train_size, val_size=256)
    splits = load_splits(data)
    noisy = training_noise(splits.x_train, data, 0)
    rates: list[float] = []
    finals: list[tuple[float, float]] = []
    for _ in range(2):
        keras.backend.clear_session()
        keras.utils.set_random_seed(0)
        model = build_unet(ModelConfig(filters=FILTERS, skip="concat"), splits.shape)
        compile_model(model, TrainConfig(batch_size=BATCH))
        batches = SeededBatches(noisy, splits.x_train, batch_size=BATCH, seed=0)
        loss = float("nan")
        for epoch in range(args.epochs + 1):
            start = time.perf_counter()
            history = model.fit(batches, epochs=epoch + 1, initial_epoch=epoch, verbose=0)
            if epoch:  # the first epoch traces the step
                rates.append(len(noisy) / (time.perf_counter() - start))
            loss = float(history.history["loss"][-1])
        val = float(model.evaluate(splits.x_val_noisy, splits.x_val, batch_size=BATCH, verbose=0, return_dict=True)["loss"])
        finals.append((loss, val))
    return {
        "deterministic": deterministic,
        "switch": switch,
        "device": describe_device(),
        "images_per_s": statistics.median(rates),
        "rates": rates,
        "finals": finals,
        "train_loss_gap": abs(finals[0][0] - finals[1][0]),
        "val_loss_gap": abs(finals[0][1] - finals[1][1]),
    }


if __name__ == "__main__":
    main()
