"""Start-up without TensorFlow's, absl's and CUDA's routine lines, with real warnings and errors kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ablate.quiet_start import VERBOSE_ENV, is_noise

NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796279231.531571   15038 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results",
    "I0000 00:00:1796279231.531973   15038 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.",
    "E0000 00:00:1796277886.833100    5773 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    "W0000 00:00:1796277886.833100    5773 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN",
    "E0000 00:00:1796277886.833100    5773 cuda_blas.cc:1418] Unable to register cuBLAS factory",
    "To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.",
    "E0000 00:00:1796300850.093223   29797 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512. Falling back to the default Eigen-based implementation if present.",
    "E0000 00:00:1796300850.093223   29797 util.cc:131] oneDNN supports DT_BF16 only on platforms with AVX-512. Falling back to the default Eigen-based implementation if present.",
]
REAL = [
    "E0000 00:00:1796277886.833100    5773 op_kernel.cc:1857] OP_REQUIRES failed at conv_ops.cc:689 : RESOURCE_EXHAUSTED",
    "W0000 00:00:1796277886.833100    5773 loop_optimizer.cc:933] Skipping loop optimization",
    "E0000 00:00:1796277886.833100    5773 util.cc:99] Some other failure in a file of the same name",
    "UserWarning: a warning from Python",
    "error: something the user must see",
]


@pytest.mark.parametrize("line", NOISE)
def test_the_backends_start_up_chatter_is_noise(line: str) -> None:
    assert is_noise(line)


@pytest.mark.parametrize("line", REAL)
def test_real_warnings_and_errors_are_not(line: str) -> None:
    assert not is_noise(line)


MARKERS = ("absl::InitializeLog", "oneDNN custom operations", "cuda drivers", "cuInit", "rebuild TensorFlow")


def start(env: dict[str, str]) -> str:
    code = (
        "import os, sys\n"
        "from ablate.quiet_start import import_backend_quietly\n"
        "import_backend_quietly()\n"
        "import keras; keras.ops.convert_to_numpy(keras.ops.ones((2,)) * 2)\n"  # a first op runs after the import
        "print('error: a real line', file=sys.stderr)\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", VERBOSE_ENV)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=clean | env, timeout=300, check=True)
    return result.stderr


def test_keras_starts_without_noise_and_real_lines_still_show() -> None:
    quiet = start({})
    assert "error: a real line" in quiet
    assert not [m for m in MARKERS if m in quiet], quiet
    loud = start({VERBOSE_ENV: "1"})  # the same start with the filter off: the noise is really there to remove
    assert any(m in loud for m in MARKERS), loud


def test_workers_output_is_relayed_without_the_backends_noise(monkeypatch) -> None:
    """The lines TensorFlow prints at each forked trial's first op are dropped like the start-up ones."""
    import io

    from rich.console import Console

    from ablate.runtime.supervisor import _relay

    lines = [NOISE[-1], REAL[0], "  tiny #0 model.skip=none seed=0: val_loss=0.5", NOISE[1]]
    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    out = io.StringIO()
    _relay(io.StringIO("\n".join(lines) + "\n"), "[w1] ", Console(file=out, width=400))
    assert out.getvalue().splitlines() == [f"[w1] {REAL[0]}", "[w1]   tiny #0 model.skip=none seed=0: val_loss=0.5"]
    monkeypatch.setenv(VERBOSE_ENV, "1")  # asked for: everything
    out = io.StringIO()
    _relay(io.StringIO("\n".join(lines) + "\n"), "", Console(file=out, width=400))
    assert out.getvalue().splitlines() == lines
