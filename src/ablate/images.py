"""Image grids for MLflow: the same fixed validation images in every trial, so runs compare by eye."""

from __future__ import annotations

import numpy as np


def reconstruction_grid(*rows: np.ndarray, scale: int = 2, gap: int = 2) -> np.ndarray:
    """Stack rows of images (clean | noisy | reconstructed ...) into one uint8 picture.

    Args:
        rows: arrays of shape (N, H, W, 1) or (N, H, W) with values in [0, 1]; one row each.
        scale: integer upscaling, so 28x28 digits are readable in the MLflow UI.
        gap: white pixels between images and rows.

    Returns:
        A (rows * (H + gap) - gap) * scale by (N * (W + gap) - gap) * scale uint8 array.
    """
    if not rows:
        raise ValueError("reconstruction_grid needs at least one row of images")
    count, height, width = rows[0].shape[:3]
    canvas = np.full(
        (len(rows) * (height + gap) - gap, count * (width + gap) - gap), 255, dtype=np.uint8
    )
    for r, images in enumerate(rows):
        if images.shape[:3] != (count, height, width):
            raise ValueError(f"row {r} has shape {images.shape[:3]}, expected {(count, height, width)}")
        pixels = np.rint(np.clip(images.reshape(count, height, width), 0.0, 1.0) * 255).astype(np.uint8)
        for c in range(count):
            top, left = r * (height + gap), c * (width + gap)
            canvas[top : top + height, left : left + width] = pixels[c]
    return np.kron(canvas, np.ones((scale, scale), dtype=np.uint8))
