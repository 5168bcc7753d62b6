"""Which Keras backend trains: TensorFlow, JAX or PyTorch, chosen once per process before Keras is imported.

Keras 3 runs ablate's builders (only `keras.layers` / `keras.ops`) on all three. The backend is
fixed when Keras is first imported, so `--backend` (on `run`, `reproduce`, `worker`, `submit`)
sets `KERAS_BACKEND` before anything imports it; child processes (recycled workers, local
workers) inherit the variable. The default is `$KERAS_BACKEND`, else TensorFlow: docs/performance.md
gives the measured reasons (the backends table) for not defaulting to another.

A study records the backend its first trial ran on (`ablate.runtime.studies.check_backend`), and
a process on another backend refuses to run it, so no study silently mixes backends.

This module imports nothing heavy: `ablate --help` reads `BACKENDS`.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from ablate.errors import AblateError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_BACKEND = "tensorflow"
BACKEND_ENV = "KERAS_BACKEND"
# The module each backend needs, and the extra of ablate's package that installs it.
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
JAX_PREALLOCATE_ENV = "XLA_PYTHON_CLIENT_PREALLOCATE"
BACKEND_EXTRAS = {"tensorflow": "", "jax": "ablate[jax]", "torch": "ablate[torch]"}


class BackendError(AblateError):
    """A backend that cannot be used here (not installed, unknown, or not the one Keras already runs on)."""

    exit_status = 2


def requested_backend(choice: str | None = None) -> str:
    """The backend a command asks for: `choice` (its `--backend`), else `$KERAS_BACKEND`, else TensorFlow."""
    name = (choice or os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND).strip().lower()
    if name not in BACKENDS:
        where = "--backend" if choice else f"${BACKEND_ENV}"
        raise BackendError(f"{where}={name!r} is not a Keras backend ablate runs on; use one of {', '.join(BACKENDS)}")
    return name


def select_backend(choice: str | None = None) -> str:
    """Make `choice` (or the default) the backend Keras will import with; returns its name.

    Raises:
        BackendError: the backend is unknown or not installed, or Keras is already imported with another.
    """
    name = requested_backend(choice)
    keras = sys.modules.get("keras")
    if keras is not None:
        running = keras.backend.backend()
        if running != name:
            raise BackendError(
                f"Keras is already running on {running} in this process, so it cannot train on {name}; "
                f"start a new process with --backend {name} (or {BACKEND_ENV}={name})"
            )
        return name
    require_installed(name)
    os.environ[BACKEND_ENV] = name
    if name == "jax":
        # JAX takes 75% of a GPU's memory at its first op unless told not to: workers sharing a
        # GPU would each claim it (TensorFlow's counterpart: training.device.enable_gpu_memory_growth).
        os.environ.setdefault(JAX_PREALLOCATE_ENV, "false")
    return name


def require_installed(name: str, *, where: str = "--backend") -> None:
    """Refuse a backend whose library this environment lacks, naming the extra that installs it.

    Raises:
        BackendError: `name`'s library is not installed.
    """
    if importlib.util.find_spec(BACKEND_MODULES[name]) is None:
        extra = BACKEND_EXTRAS[name]
        how = f"pip install '{extra}'" if extra else "pip install tensorflow"
        raise BackendError(
            f"the {name} backend is not installed in this environment ({sys.executable}); install it ({how}) "
            f"or choose another with {where} {'|'.join(b for b in BACKENDS if b != name)}"
        )
