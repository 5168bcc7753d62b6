"""The data of studies/digits.yaml (`data.loader: digits_data:load`): scikit-learn's 1,797 real 8x8 digits.

A loader returns the arrays ablate splits: here `(x, y)`, one pool that `data.val_size` and
`data.test_size` are carved from. `sklearn.datasets.load_digits` ships inside scikit-learn (no
download): the UCI optical-recognition digits, 16 grey levels, labels 0..9.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits


def load() -> tuple[np.ndarray, np.ndarray]:
    """Images as float32 (1797, 8, 8, 1) in [0, 1], labels as int32 (1797,)."""
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    return x, digits.target.astype(np.int32)
