"""Keras backends side by side: which one trains ablate's models fastest on this machine.

For every installed backend (TensorFlow, JAX, PyTorch), in one run, each in its own process (a
process's backend is fixed when it imports Keras): training images/s and achieved FLOP/s of the
skip-vs-noskip study's quick model (16 filters) and slides model (64 filters), fed as ablate
feeds them (`SeededBatches`, the seeded paired order) and as plain arrays (Keras' own adapter:
tf.data on TensorFlow), against the float32 matmul rate measured through the same backend.

On a GPU it also measures mixed precision (`mixed_float16`) and compilation on and off (XLA on
TensorFlow, `jit` on JAX, `torch.compile` on PyTorch), the GPU memory before and after 20 trials in
one process, and studies per hour with 1, 2, 4 and 8 `ablate run --workers N` sharing the GPU
(when ablate's runtime, Optuna and MLflow, is installed there). `--budget` caps the whole run
(default 360 s, so that with start-up it ends within 8 minutes); what did not fit says so in the table.

    .venv/bin/python benchmarks/backends.py                 # here: every installed backend, CPU rows
    python3 benchmarks/backends.py --backends jax,torch     # a GPU machine without TensorFlow

A GPU machine without network needs Keras and pydantic carried as wheels: docs/performance.md
gives the one command. Results: benchmarks/results/backends.json.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent / "src"))  # runs from a checkout without installing ablate (a GPU box)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BACKENDS = ("tensorflow", "jax", "torch")
MODELS = {"quick": 16, "slides": 64}  # the study's two profiles' filters (depth 2, concat skips)
BATCH = 128
WORKER_COUNTS = (1, 2, 4, 8)
MARK = "BACKENDS-RESULT "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=",".join(b for b in BACKENDS if importlib.util.find_spec(b)))
    parser.add_argument("--train-size", type=int, default=2048, help="images per epoch (default 2048)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs after one warm-up epoch (default 2)")
    parser.add_argument("--budget", type=float, default=360.0, help="seconds for the whole run (default 360)")
    parser.add_argument("--full", action="store_true",
                        help="run the GPU-only sections on a CPU too (memory as the process's RSS): checks the script")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one backend's measurements, in its own process
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args)  # prints its results after each section (MARK lines; the last is the whole)
        return
    drive(args)


def drive(args: argparse.Namespace) -> None:
    """Run each backend's process in turn, then print one table of all of them."""
    from _common import report

    deadline = time.time() + args.budget
    names = [b for b in args.backends.split(",") if b]
    results: list[dict[str, Any]] = []
    for index, backend in enumerate(names):
        share = (deadline - time.time()) / (len(names) - index)  # what is left, shared by the backends left
        command = [sys.executable, __file__, "--child", backend, "--train-size", str(args.train_size),
                   "--epochs", str(args.epochs), "--deadline", str(time.time() + share), *(["--full"] if args.full else [])]
        print(f"backends: measuring {backend} (up to {share:.0f} s)", flush=True)
        env = {**os.environ, "KERAS_BACKEND": backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=share + 60, check=False)
            stdout, stderr, code = done.stdout, done.stderr, str(done.returncode)
        except subprocess.TimeoutExpired as late:  # keep the sections it finished (it prints after each)
            stdout, stderr, code = _text(late.stdout), _text(late.stderr), "killed past its time budget"
        found = [line[len(MARK):] for line in stdout.splitlines() if line.startswith(MARK)]
        if found:
            results.append(json.loads(found[-1]))
            if code != "0":
                results[-1]["notes"].append(f"ended early ({code}); the sections above finished")
        else:
            tail = (stderr or stdout).strip().splitlines()[-5:]
            results.append({"backend": backend, "error": f"exit {code}: " + " | ".join(tail)})
    rows = [row for result in results for row in result.get("rows", [])]
    rows += [[r["backend"], "-", "-", "-", "-", "failed: " + r["error"], "", ""] for r in results if "error" in r]
    extra = {"results": results, "args": {k: v for k, v in vars(args).items() if k not in ("child", "deadline")}}
    report("backends", f"Training throughput by Keras backend ({args.train_size} images/epoch, batch {BATCH})",
           ["backend", "device", "model", "feed", "precision / compile", "images/s", "GFLOP/s", "% of matmul peak"],
           rows, extra)
    for result in results:
        if "matmul_gflops" in result:
            print(f"{result['backend']}: float32 matmul {result['matmul_gflops']:.1f} GFLOP/s on {result['device']}")
        for line in result.get("notes", []):
            print(f"{result['backend']}: {line}")


def measure(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """One backend's rows: throughput per model and variant; on a GPU also memory and workers."""
    import keras
    from train_throughput import matmul_rate

    from ablate.training.device import describe_device

    assert keras.backend.backend() == backend, f"KERAS_BACKEND={backend} expected, Keras runs {keras.backend.backend()}"
    device = describe_device()
    gpu = device.startswith("GPU")
    every = gpu or args.full
    peak = matmul_rate()
    variants = [("SeededBatches", "float32", "default"), ("arrays", "float32", "default")]
    if every:
        variants += [("SeededBatches", "mixed_float16", "default"), ("SeededBatches", "float32", "compile on"),
                     ("SeededBatches", "float32", "compile off")]
    rows: list[list[Any]] = []
    notes: list[str] = []
    for model_name, filters in MODELS.items():
        for feed, precision, compiled in variants:
            if time.time() > args.deadline:
                notes.append(f"{model_name} {feed} {precision} {compiled}: skipped, past the time budget")
                continue
            try:
                rate, flops = train_rate(filters, feed, precision, compiled, args)
            except Exception as error:  # noqa: BLE001 - a variant a backend cannot run is a finding, not a crash
                notes.append(f"{model_name} {feed} {precision} {compiled}: {type(error).__name__}: {str(error)[:200]}")
                continue
            rows.append([backend, device, model_name, feed, f"{precision} / {compiled}", rate, rate * flops / 1e9,
                         100 * rate * flops / peak])
            print(rows[-1], file=sys.stderr, flush=True)
    result: dict[str, Any] = {"backend": backend, "device": device, "matmul_gflops": peak / 1e9, "rows": rows, "notes": notes}
    show(result)
    if every and time.time() < args.deadline:
        result["memory"] = memory_after_trials(backend, 20, gpu=gpu)
        what = "GPU memory" if gpu else "process RSS (no GPU)"
        notes.append(f"{what} in one process, MB: " + ", ".join(f"{k} {v:.0f}" for k, v in result["memory"].items()))
        show(result)
    if every and time.time() < args.deadline:
        result["studies_per_hour"] = {}
        studies_per_hour(backend, args.deadline, notes, result["studies_per_hour"], lambda: show(result))
    show(result)
    return result


def show(result: dict[str, Any]) -> None:
    """Hand the results so far to the driving process (which keeps the last it saw)."""
    print(MARK + json.dumps(result), flush=True)


def _text(captured: str | bytes | None) -> str:
    return captured.decode("utf-8", "replace") if isinstance(captured, bytes) else captured or ""


def train_rate(filters: int, feed: str, precision: str, compiled: str, args: argparse.Namespace) -> tuple[float, float]:
    """Median images/s over the timed epochs (after one warm-up epoch), and training FLOPs per image."""
    import keras
    from train_throughput import conv_flops_per_image

    from ablate.models import build_unet
    from ablate.spec.run_config import DataConfig, ModelConfig, TrainConfig
    from ablate.training.data import load_splits, training_noise
    from ablate.training.fit import SeededBatches, compile_model

    splits = load_splits(DataConfig(train_size=args.train_size))
    noisy = training_noise(splits.x_train, DataConfig(), 0)
    keras.mixed_precision.set_dtype_policy(precision)
    try:
        model = build_unet(ModelConfig(filters=filters, skip="concat"), splits.shape)
        compile_model(model, TrainConfig(batch_size=BATCH))
        if compiled != "default":
            model.jit_compile = compiled == "compile on"
        batches = SeededBatches(noisy, splits.x_train, batch_size=BATCH, seed=0) if feed == "SeededBatches" else None
        rates = []
        for epoch in range(args.epochs + 1):
            start = time.perf_counter()
            if batches is None:
                model.fit(noisy, splits.x_train, batch_size=BATCH, epochs=1, shuffle=True, verbose=0)
            else:
                model.fit(batches, epochs=1, verbose=0)
            if epoch:  # the first epoch traces (and compiles) the step
                rates.append(len(noisy) / (time.perf_counter() - start))
        return sorted(rates)[len(rates) // 2], 3 * conv_flops_per_image(model)  # backward ~ 2x forward
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
        keras.backend.clear_session()


def memory_mb(backend: str, gpu: bool) -> float:
    """GPU memory the backend holds now, in MB; without a GPU, the process's resident memory."""
    if not gpu:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")
    if backend == "torch":
        import torch

        torch.cuda.synchronize()
        return torch.cuda.memory_allocated() / 2**20
    if backend == "jax":
        import jax

        return float((jax.devices()[0].memory_stats() or {}).get("bytes_in_use", 0)) / 2**20
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["current"] / 2**20


def memory_after_trials(backend: str, trials: int, *, gpu: bool) -> dict[str, float]:
    """GPU memory after one trial and after `trials` trials in this process (each: build, fit, clear_session)."""
    import keras

    from ablate.models import build_unet
    from ablate.spec.run_config import DataConfig, ModelConfig, TrainConfig
    from ablate.training.data import load_splits, training_noise
    from ablate.training.fit import SeededBatches, compile_model

    splits = load_splits(DataConfig(train_size=1024))
    noisy = training_noise(splits.x_train, DataConfig(), 0)
    found: dict[str, float] = {"before": memory_mb(backend, gpu)}
    for trial in range(trials):
        model = build_unet(ModelConfig(filters=16, skip="concat" if trial % 2 else "none"), splits.shape)
        compile_model(model, TrainConfig(batch_size=BATCH))
        model.fit(SeededBatches(noisy, splits.x_train, batch_size=BATCH, seed=trial), epochs=1, verbose=0)
        del model
        keras.backend.clear_session()
        gc.collect()
        if trial == 0:
            found["after 1 trial"] = memory_mb(backend, gpu)
    found[f"after {trials} trials"] = memory_mb(backend, gpu)
    return found


def studies_per_hour(backend: str, deadline: float, notes: list[str], rates: dict[str, float], shown: Any) -> None:
    """`ablate run --workers N` of an 8-trial study sharing GPU 0: studies per hour for each N, into `rates`."""
    missing = [m for m in ("optuna", "mlflow", "pydantic", "yaml") if importlib.util.find_spec(m) is None]
    if missing:
        notes.append(f"studies per hour: skipped, {', '.join(missing)} not installed (ablate's runtime)")
        return
    import yaml

    study = {
        "name": "backends-workers", "data": {"dataset": "mnist-embedded", "train_size": 2048, "val_size": 256, "test_size": 64},
        "model": {"filters": 16, "depth": 2}, "train": {"epochs": 2, "batch_size": BATCH},
        "factors": {"model.skip": ["none", "concat"]}, "repeats": 4, "tracking": {"images": 4},
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "study.yaml"
        path.write_text(yaml.safe_dump(study))
        for count in WORKER_COUNTS:
            if time.time() > deadline:
                notes.append(f"studies per hour with {count} workers: skipped, past the time budget")
                continue
            start = time.perf_counter()
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "ablate", "run", str(path), "--home", f"{folder}/home-{count}", "--workers",
                     str(count), "--gpus", "0", "--backend", backend],
                    capture_output=True, text=True, check=False, timeout=max(deadline - time.time(), 1),
                    env={**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])},
                )
            except subprocess.TimeoutExpired:
                notes.append(f"studies per hour with {count} workers: stopped at the time budget")
                break
            if done.returncode:
                notes.append(f"studies per hour with {count} workers: exit {done.returncode}: {done.stderr.strip()[-300:]}")
                continue
            rates[f"{count} workers"] = 3600 / (time.perf_counter() - start)
            shown()
    notes.append("studies per hour (8 trials each): " + ", ".join(f"{k} {v:.1f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
