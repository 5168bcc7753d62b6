"""The pictures a classifier's and a regressor's runs log, beside the reconstruction grids of `images`.

- `prediction_grid`: the fixed validation images with their true and predicted labels (green when
  right, red when wrong), the same images in every trial, so runs compare by eye.
- `confusion_picture`: the validation confusion matrix (rows: true class, columns: predicted).
- `regression_picture`: predicted against true on the validation examples, with the diagonal.

Each returns an RGB uint8 array for `TrialLog.log_image`, drawn with matplotlib's Agg canvas (no screen).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def predicted_classes(outputs: np.ndarray) -> np.ndarray:
    """Class indices from a classifier's outputs: argmax of scores, or > 0.5 for one sigmoid unit."""
    outputs = np.asarray(outputs)
    if outputs.ndim == 1 or outputs.shape[-1] == 1:
        return (outputs.reshape(len(outputs)) > 0.5).astype(np.int64)
    return np.argmax(outputs.reshape(len(outputs), -1), axis=-1)


def true_classes(labels: np.ndarray) -> np.ndarray:
    """Class indices from labels: as they are, or the argmax of one-hot rows."""
    labels = np.asarray(labels)
    return np.argmax(labels, axis=-1) if labels.ndim > 1 and labels.shape[-1] > 1 else labels.reshape(len(labels)).astype(np.int64)


def is_image_batch(x: np.ndarray) -> bool:
    """Whether inputs are images matplotlib can show: (N, H, W) or (N, H, W, 1 or 3)."""
    return x.ndim == 3 or (x.ndim == 4 and x.shape[-1] in (1, 3))


def prediction_grid(images: np.ndarray, true: np.ndarray, predicted: np.ndarray, classes: Sequence[str] = ()) -> np.ndarray:
    """One row of images titled `true / predicted` (class names where known)."""
    plt = _pyplot()
    count = len(images)
    figure, axes = plt.subplots(1, count, figsize=(1.3 * count, 1.6), squeeze=False)
    for axis, image, t, p in zip(axes[0], images, true, predicted, strict=True):
        shown = np.clip(image.squeeze(-1) if image.ndim == 3 and image.shape[-1] == 1 else image, 0.0, 1.0)
        axis.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0.0, vmax=1.0)
        axis.set_title(f"{_name(int(t), classes)} / {_name(int(p), classes)}", fontsize=8, color="green" if t == p else "red")
        axis.axis("off")
    figure.suptitle("true / predicted", fontsize=8)
    return _pixels(figure)


def confusion_picture(true: np.ndarray, predicted: np.ndarray, classes: Sequence[str] = ()) -> np.ndarray:
    """The confusion matrix of `true` against `predicted` class indices, counts in the cells."""
    plt = _pyplot()
    count = int(max(true.max(initial=0), predicted.max(initial=0), len(classes) - 1)) + 1
    matrix = np.zeros((count, count), dtype=np.int64)
    np.add.at(matrix, (true.astype(np.int64), predicted.astype(np.int64)), 1)
    size = min(0.3 * count + 1.5, 10.0)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    if count <= 30:
        for (row, column), value in np.ndenumerate(matrix):
            axis.text(column, row, str(value), ha="center", va="center", fontsize=7,
                      color="white" if value > matrix.max() / 2 else "black")
    labels = [_name(i, classes) for i in range(count)]
    axis.set_xticks(range(count), labels, fontsize=7, rotation=90 if count > 10 else 0)
    axis.set_yticks(range(count), labels, fontsize=7)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(f"validation: {np.trace(matrix)}/{matrix.sum()} right", fontsize=9)
    return _pixels(figure)


def regression_picture(true: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Predicted against true (every output column), with the line predicted = true."""
    plt = _pyplot()
    true, predicted = np.asarray(true, dtype=np.float64).reshape(-1), np.asarray(predicted, dtype=np.float64).reshape(-1)
    figure, axis = plt.subplots(figsize=(4.0, 4.0))
    axis.scatter(true, predicted, s=6, alpha=0.6)
    low, high = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
    axis.plot([low, high], [low, high], color="black", linewidth=0.8)
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")
    axis.set_title("validation", fontsize=9)
    return _pixels(figure)


def _name(index: int, classes: Sequence[str]) -> str:
    return classes[index] if 0 <= index < len(classes) else str(index)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no screen; the Agg canvas draws into memory
    import matplotlib.pyplot as plt

    return plt


def _pixels(figure: Any) -> np.ndarray:
    plt = _pyplot()
    figure.tight_layout()
    figure.canvas.draw()
    pixels = np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    plt.close(figure)
    return pixels
