"""Functional Keras builders. Each takes a frozen config and an input shape, never a trial."""

from __future__ import annotations

from ablate.models.unet import build_unet

__all__ = ["build_unet"]
