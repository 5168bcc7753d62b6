"""The backend's deterministic ops (`train.deterministic: true`): the same seed gives the same numbers.

Seeding (`keras.utils.set_random_seed`) fixes the initial weights, the batch order and the noise;
what it does not fix is the order in which an op adds up its parts, which some kernels leave to
their threads (GPU atomics, cuDNN's algorithm search). Each backend has a switch that picks the
deterministic kernels, or refuses an op that has none:

- TensorFlow: `tf.config.experimental.enable_op_determinism()`. It holds for the rest of the
  process and cannot be switched off again.
- PyTorch: `torch.use_deterministic_algorithms(True)`, with `CUBLAS_WORKSPACE_CONFIG=:4096:8`
  (cuBLAS needs it on CUDA 10.2 and later; set before its first call) and cuDNN's benchmark
  search off.
- JAX: XLA's `--xla_gpu_deterministic_ops=true`, read once, when JAX starts its backend: set here
  in `XLA_FLAGS`, it holds only for a process that has not yet run a JAX op (a fresh worker, a
  forked trial's children), and it is GPU-only: on a CPU it changes nothing (XLA's CPU kernels
  are run as compiled, and the flag is not read).

Every switch is process-wide: a trial turns it on and the process keeps it. Trials run in worker
processes (forks of a warm worker with `ablate run`'s default `--recycle-after`), and a study has
one `train.deterministic` for all its trials (it cannot be a factor), so no trial of another
setting shares the process. What it costs in speed: docs/performance.md#deterministic-ops.
"""

from __future__ import annotations

import os

import keras

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE = ":4096:8"
XLA_FLAGS_ENV = "XLA_FLAGS"
XLA_DETERMINISTIC = "--xla_gpu_deterministic_ops=true"


def use_deterministic_ops() -> str:
    """Turn on the running backend's deterministic ops for the rest of this process; say what was done.

    Returns:
        A short description of the switch (for logs and `ablate audit`), e.g.
        "tensorflow: enable_op_determinism".
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
        return "tensorflow: enable_op_determinism"
    if backend == "torch":
        os.environ.setdefault(CUBLAS_ENV, CUBLAS_WORKSPACE)
        import torch

        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        return f"torch: use_deterministic_algorithms ({CUBLAS_ENV}={os.environ[CUBLAS_ENV]})"
    if backend == "jax":
        flags = os.environ.get(XLA_FLAGS_ENV, "")
        if XLA_DETERMINISTIC not in flags.split():
            os.environ[XLA_FLAGS_ENV] = f"{flags} {XLA_DETERMINISTIC}".strip()
        return f"jax: {XLA_DETERMINISTIC} (GPU only, read when JAX starts; nothing on a CPU)"
    return f"{backend}: no deterministic switch known"
