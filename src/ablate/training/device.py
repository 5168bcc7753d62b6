"""Which device a trial trains on, and GPU memory that grows as needed (so workers can share a GPU)."""

from __future__ import annotations

import contextlib

import keras


def describe_device() -> str:
    """The device training runs on, e.g. `GPU:0 (NVIDIA H100)` or `CPU`, for the trial's tags."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf  # each backend's library only when it is the one Keras runs on

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU:0 ({details.get('device_name', 'GPU')})" + (f" of {len(gpus)}" if len(gpus) > 1 else "")
        return "CPU"
    if backend == "torch":
        import torch

        return f"GPU:0 ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "CPU"
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return f"{device.platform.upper()}:0 ({device.device_kind})"
    return "CPU"


def enable_gpu_memory_growth() -> None:
    """Let TensorFlow allocate GPU memory as needed instead of grabbing it all at start."""
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf  # only on the TensorFlow backend

    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):  # already initialised: nothing to change any more
            tf.config.experimental.set_memory_growth(gpu, True)
