"""Training throughput (images/s) of the slides' model at the quick and slides sizes, with achieved FLOP/s.

Compares feeding `fit` plain numpy arrays (Keras shuffles) with ablate's `SeededBatches` (the
seeded, paired order), over batch sizes, XLA (`jit_compile`) off and on, and float32 against
mixed precision (`mixed_float16`), and relates achieved FLOP/s to the device's measured float32
matmul rate, so the gap to the limit is visible. Runs on whatever backend Keras uses
(`KERAS_BACKEND=jax|torch|tensorflow`), so the same builders can be measured on a GPU machine.

    .venv/bin/python benchmarks/train_throughput.py --epochs 2 --repeats 3
    .venv/bin/python benchmarks/train_throughput.py --filters 16 --batch-sizes 64,128,256 --jit off,on \
        --precisions float32,mixed_float16 --feeds SeededBatches
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def conv_flops_per_image(model: object) -> float:
    """Forward multiply-adds x 2 of every Conv2D / Conv2DTranspose layer, per image."""
    import numpy as np

    total = 0.0
    for layer in model.layers:  # type: ignore[attr-defined]
        kind = type(layer).__name__
        if kind in ("Conv2D", "Conv2DTranspose"):
            kh, kw, c_in, c_out = (layer.kernel.shape if kind == "Conv2D" else (*layer.kernel.shape[:2], layer.kernel.shape[3], layer.kernel.shape[2]))
            grid = layer.output.shape[1:3] if kind == "Conv2D" else layer.input.shape[1:3]
            total += 2.0 * float(np.prod(grid)) * kh * kw * c_in * c_out
    return total


def matmul_rate(size: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul FLOP/s through the Keras backend."""
    import keras
    import numpy as np

    a = keras.ops.convert_to_tensor(np.random.rand(size, size).astype("float32"))
    keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filters", default="16,64")
    parser.add_argument("--batch-sizes", default="128")
    parser.add_argument("--train-size", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--feeds", default="numpy,SeededBatches")
    parser.add_argument("--jit", default="off", help="comma-separated: off, on (XLA through Keras' jit_compile)")
    parser.add_argument("--precisions", default="float32", help="comma-separated Keras dtype policies")
    args = parser.parse_args()

    import keras

    from _common import median, report
    from ablate.spec.run_config import DataConfig, ModelConfig, TrainConfig
    from ablate.training.data import load_splits, training_noise
    from ablate.models import build_unet
    from ablate.training.fit import SeededBatches, compile_model

    splits = load_splits(DataConfig(train_size=args.train_size))
    noisy = training_noise(splits.x_train, DataConfig(), 0)
    peak = matmul_rate()
    rows = []
    for filters in [int(f) for f in args.filters.split(",")]:
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            for feed in args.feeds.split(","):
                for jit in args.jit.split(","):
                    for precision in args.precisions.split(","):
                        keras.mixed_precision.set_dtype_policy(precision)
                        model = build_unet(ModelConfig(filters=filters, skip="concat"), splits.shape)
                        compile_model(model, TrainConfig(batch_size=batch))
                        model.jit_compile = jit == "on"
                        flops = 3 * conv_flops_per_image(model)  # forward + backward ~ 3x forward
                        data = SeededBatches(noisy, splits.x_train, batch_size=batch, seed=0) if feed == "SeededBatches" else None
                        rates = []
                        for repeat in range(args.repeats + 1):
                            start = time.perf_counter()
                            if data is None:
                                model.fit(noisy, splits.x_train, batch_size=batch, epochs=args.epochs, shuffle=True, verbose=0)
                            else:
                                model.fit(data, epochs=args.epochs, verbose=0)
                            if repeat:  # the first fit traces (and with XLA compiles) the graph
                                rates.append(args.epochs * len(noisy) / (time.perf_counter() - start))
                        rate = median(rates)
                        rows.append([filters, batch, feed, jit, precision, rate, rate * flops / 1e9, 100 * rate * flops / peak])
                        print(rows[-1], flush=True)
                        keras.backend.clear_session()
    keras.mixed_precision.set_dtype_policy("float32")
    report(
        "train_throughput",
        f"Training throughput on {keras.backend.backend()} ({args.train_size} images, median of {args.repeats})",
        ["filters", "batch", "feed", "XLA", "precision", "images/s", "achieved GFLOP/s", "% of float32 matmul peak"],
        rows,
        {"matmul_peak_gflops": peak / 1e9, "backend": keras.backend.backend(), "args": vars(args)},
    )


if __name__ == "__main__":
    main()
