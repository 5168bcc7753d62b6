"""Weighted ensembles of trained models, built with the functional API (members called as layers)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import layers


@keras.saving.register_keras_serializable(package="ablate")
class WeightedSum(layers.Layer):
    """`sum_i w_i * x_i` over a list of same-shaped inputs, with fixed (non-trainable) weights.

    Only for ensembles saved before `build_ensemble` used Keras' own layers (their `.keras` files
    name `ablate>WeightedSum`): with ablate imported, they still load. New ensembles do not use it.

    Args:
        weights: one non-negative weight per input, summing to one.
    """

    def __init__(self, weights: Sequence[float], **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.ensemble_weights = [float(w) for w in weights]

    def call(self, inputs: list[Any]) -> object:  # inputs: Keras tensors, untyped
        if len(inputs) != len(self.ensemble_weights):
            raise ValueError(
                f"WeightedSum received {len(inputs)} inputs but has {len(self.ensemble_weights)} weights"
            )
        return sum(w * x for w, x in zip(self.ensemble_weights, inputs))

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        return input_shape[0]

    def get_config(self) -> dict[str, object]:
        return {**super().get_config(), "weights": self.ensemble_weights}


def simplex_weights(u: Sequence[float] | np.ndarray) -> np.ndarray:
    """Map k numbers in (0, 1] to weights on the simplex: w_i = -log(u_i) / sum_j -log(u_j).

    With u_i uniform, w is uniform on the simplex (a Dirichlet(1, ..., 1) draw), so a sampler that
    searches the unit cube searches the simplex without favouring any corner.
    """
    values = -np.log(np.clip(np.asarray(u, dtype=np.float64), 1e-12, 1.0))
    total = values.sum()
    if total <= 0:  # every u_i == 1: no preference, the uniform average
        return np.full(len(values), 1.0 / len(values))
    return values / total


def simplex_coordinates(weights: Sequence[float]) -> list[float]:
    """Coordinates u in (0, 1] that `simplex_weights` maps to `weights` (u_i = exp(-w_i)).

    Used to enqueue known weight vectors (the uniform average, each member alone) as trials of a
    search over u.
    """
    return [float(np.exp(-float(w))) for w in weights]


def build_ensemble(members: Sequence[keras.Model], weights: Sequence[float]) -> keras.Model:
    """A functional model that calls each member on one input and takes the weighted sum
    (`Rescaling(w_i)` per member, then `Add`: only Keras' own layers).

    Each member enters as a copy named `member{i}`: trained models of one family share a name
    (`unet_concat`), and Keras refuses two operations of one name in a model; a copy (not a
    wrapper sharing the member's layers) also keeps the saved `.keras` file loadable when one
    member is given twice.

    Raises:
        ValueError: if members disagree on shapes or the weights do not match them.
    """
    if not members:
        raise ValueError("build_ensemble needs at least one member")
    if len(weights) != len(members):
        raise ValueError(f"got {len(weights)} weights for {len(members)} members")
    if any(w < 0 for w in weights) or not np.isclose(sum(weights), 1.0):
        raise ValueError(f"ensemble weights must be non-negative and sum to one, received {list(weights)}")
    shape = tuple(members[0].input_shape[1:])
    for index, member in enumerate(members):
        if tuple(member.input_shape[1:]) != shape or member.output_shape != members[0].output_shape:
            raise ValueError(f"member {index} has input {member.input_shape} / output {member.output_shape}, expected those of member 0")
    inputs = keras.Input(shape=shape, name="noisy")
    outputs = [_copy(member, f"member{index}")(inputs) for index, member in enumerate(members)]
    # Keras' own layers only (Rescaling, Add), so the saved file loads where ablate is not installed;
    # the same numbers as sum(w * x): x * w + 0 per member, added in member order.
    weighted = [layers.Rescaling(float(w), name=f"weight{index}")(x) for index, (w, x) in enumerate(zip(weights, outputs))]
    combined = layers.Add(name="weighted_sum")(weighted) if len(weighted) > 1 else weighted[0]
    return keras.Model(inputs, combined, name="ensemble")


def _copy(model: keras.Model, name: str) -> keras.Model:
    """The same architecture and weights under another name, with layers of its own."""
    config = model.get_config()
    config["name"] = name
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy
