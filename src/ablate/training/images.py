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


def chain_steps(steps: int, columns: int = 11) -> list[int]:
    """At most `columns` evenly spaced steps T, ..., 0 of a chain, both ends always included.

    A chain of T = 1000 steps cannot be shown frame by frame; every frame of T <= 10 can.
    """
    count = max(2, min(steps + 1, columns))
    return sorted({round(step) for step in np.linspace(steps, 0, count)}, reverse=True)


def chain_grid(
    frames: list[np.ndarray], clean: np.ndarray | None = None, *, scale: int = 2, gap: int = 2
) -> np.ndarray:
    """One row per image, one column per frame (x_T ... x_0), then the clean image if given.

    Args:
        frames: the chain's frames in display order, each (N, H, W, 1) or (N, H, W) in [0, 1].
        clean: the images the chain should end at, as a last column; None for pure-noise samples.
        scale, gap: as in `reconstruction_grid`.

    Returns:
        A (N * (H + gap) - gap) * scale by (columns * (W + gap) - gap) * scale uint8 array.
    """
    columns = [*frames, *([] if clean is None else [clean])]
    if not columns:
        raise ValueError("chain_grid needs at least one frame")
    count = len(columns[0])
    shape = columns[0].shape[1:3]
    rows = [np.stack([column[i].reshape(shape) for column in columns]) for i in range(count)]
    return reconstruction_grid(*rows, scale=scale, gap=gap)
