"""What the libraries under a study may print: their warnings and errors, not their routine chatter."""

from __future__ import annotations

import logging
import os


def quiet_libraries() -> None:
    """Keep the libraries' INFO lines off the terminal; their warnings and errors still show.

    Every trial builds a new model, so TensorFlow's tf.function "retracing" warnings are expected
    noise (ERROR and above only). MLflow would draw a progress bar for every artifact it downloads
    (a weight study downloads one model per member).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TensorFlow loads: its C++ INFO and WARNING lines
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow", "absl", "keras_tuner"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
