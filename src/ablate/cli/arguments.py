"""Argument types and shared options of the commands: light (argparse only), so `--help` answers at once."""

from __future__ import annotations

import argparse
import math

from ablate.backends import BACKEND_ENV, BACKENDS, DEFAULT_BACKEND
from ablate.runtime.recycling import FORK_SECONDS, RECYCLE_AFTER


def gpu_list(text: str) -> tuple[str, ...]:
    """`--gpus 0,1` → ("0", "1"): GPU indices as CUDA numbers them (an argparse type)."""
    items = tuple(item.strip() for item in text.split(","))
    if any(not item.isdigit() for item in items) or len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(f"expected distinct GPU indices separated by commas, e.g. 0,1; received {text!r}")
    return items


def worker_count(text: str) -> int:
    """`--workers N`: a whole number >= 1 (an argparse type)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, received {text!r}")
    return int(text)


def recycle_count(text: str) -> int:
    """`--recycle-after N`: a whole number >= 0, 0 meaning never (an argparse type)."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0: never), received {text!r}")
    return int(text)


def add_recycle_option(parser: argparse.ArgumentParser, *, what: str) -> None:
    """`--recycle-after N` on `run`, `reproduce` and `worker`."""
    parser.add_argument(
        "--recycle-after", type=recycle_count, default=RECYCLE_AFTER, metavar="N",
        help=f"run trials in worker processes that are replaced by fresh ones after every N trials, so memory that "
        f"TensorFlow keeps from each model (and a GPU's) is given back; on Linux each is forked from a process that "
        f"imported Keras once, and also takes no new trial after {FORK_SECONDS:g} s, so long trials each get a "
        f"fresh process (default {RECYCLE_AFTER}; 0: {what})",
    )


def add_backend_option(parser: argparse.ArgumentParser) -> None:
    """`--backend tensorflow|jax|torch` on the commands that train (and on `submit`, which records it)."""
    parser.add_argument(
        "--backend", choices=BACKENDS, metavar="NAME",
        help=f"the Keras backend that trains: {', '.join(BACKENDS)} (default: ${BACKEND_ENV}, else {DEFAULT_BACKEND}); "
        "a study keeps the backend of its first trial, and a process on another refuses to run it",
    )


def positive(text: str) -> int:
    return whole_number(text, least=1)


def whole_number(text: str, *, least: int, what: str = "a whole number") -> int:
    """An argparse type's check: `text` is a whole number >= `least` (say `what` it is when it is not)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what} >= {least}, received {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {what} >= {least}, received {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a margin, an effect size)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, received {text}")
    return value


def add_allow_large_option(parser: argparse.ArgumentParser) -> None:
    """`--allow-large`: let a study past `ablate.spec.budget`'s limits on trials and epochs."""
    parser.add_argument(
        "--allow-large",
        action="store_true",
        help="accept a study that plans more than 5,000 trials or 200,000 epochs in all (refused by default as a likely typo)",
    )
