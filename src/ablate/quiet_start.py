"""Start-up without the backend's routine lines: TensorFlow's, absl's and CUDA's, which read like failures.

On a machine without a GPU, `import keras` (TensorFlow) and its first device query print, straight
to the process's stderr from C++ (before Python's logging or `TF_CPP_MIN_LOG_LEVEL` can act):

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 ... port.cc:153] oneDNN custom operations are on. ...
    I0000 ... cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
    E0000 ... cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: ...

`import_backend_quietly` imports Keras and queries the devices once with file descriptor 2
redirected to a temporary file, then writes back every captured line that is not such start-up
noise (`NOISE`): real warnings and errors still reach the user. `ABLATE_STARTUP_LOGS=1` shows
everything. Called by the commands that train (`ablate.cli.main`), before anything imports Keras.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile

VERBOSE_ENV = "ABLATE_STARTUP_LOGS"  # 1: let the backend's start-up lines through

# WARNING / ERROR lines are dropped only from the files that report a missing GPU, CUDA or
# TensorRT, or the CPU's features; INFO lines from any file.
_GPU_FILES = r"(cuda_\w+|cudart_stub|dso_loader|gpu_\w+|tensorrt\w*|trt_\w+|cpu_feature_guard|computation_placer|port|xla_bridge)"
_PATTERNS = (
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    r"^I\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\] ",
    rf"^[WE]\d{{4}} [\d:.]+\s+\d+ {_GPU_FILES}\.cc:\d+\] ",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$",
    r"^This TensorFlow binary is optimized to use available CPU instructions",
    # At a trial's first op in each forked process, an "error" that only says which CPU kernel runs.
    r"^E\d{4} [\d:.]+\s+\d+ util\.cc:\d+\] oneDNN supports \w+ only on platforms with ",
)
NOISE = re.compile("|".join(_PATTERNS))


def is_noise(line: str) -> bool:
    """Whether a captured stderr line is the backend's start-up chatter (see `NOISE`)."""
    return bool(NOISE.search(line.strip()))


def verbose() -> bool:
    """Whether the user asked to see the backend's start-up lines too (`ABLATE_STARTUP_LOGS=1`)."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes")


def shown(line: str) -> bool:
    """Whether a line of a worker's output reaches the terminal: all but the backend's noise (unless verbose).

    The supervisor relays its workers' output through this, so the lines TensorFlow prints at the
    first op of each forked trial process are filtered as the start-up ones are.
    """
    return verbose() or not is_noise(line)


def import_backend_quietly() -> None:
    """Import Keras and its backend, and initialise the devices, with the start-up noise filtered out.

    A no-op once Keras is imported (the noise comes once per process) or with `ABLATE_STARTUP_LOGS=1`.
    """
    if "keras" in sys.modules or verbose():
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr descriptor to redirect (an embedded interpreter): import as it is
        import keras  # imported for its side effect: loaded once, as the caller asked
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                tf.config.list_physical_devices("GPU")  # CUDA's first call (cuInit), and its lines, happen here
            elif importlib.util.find_spec("tensorflow") is not None:
                # On JAX or PyTorch, Keras' set_random_seed (every trial's first step) also seeds
                # TensorFlow when it is installed, importing it: done here, quietly and once, so
                # forked trials inherit it instead of each importing it and printing its lines.
                import tensorflow  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode("utf-8", "replace").splitlines() if line.strip() and not is_noise(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")
                sys.stderr.flush()

