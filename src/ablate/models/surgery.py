"""Structural ablation of a built functional model: list its removable components, and remove some.

Works on any Keras functional model, ablate's own families and a user's alike, without editing
the code that built it:

- removing a **merge layer** (Add, Concatenate, Multiply, Average, ...) drops the inputs that
  arrive from earlier in the graph (the skip or shortcut) and passes the latest one on alone;
- removing a **shape-preserving layer** (one input, output shaped like it) makes it the identity.

The model is rebuilt with `keras.models.clone_model` and a `call_function`: every layer is cloned
from its config (fresh weights), so the layers after a removal are built for their new input
shapes. A removal whose shapes no longer meet raises `RemovalError` naming the layer and why.

A merge's **latest** input is the one with the longest path from the model's inputs (the main
path); the others are earlier. The merge is a **skip connection** (what `auto` removes) when an
earlier input bypasses layers of the main path: it comes from an ancestor of the latest input (a
U-Net skip, an identity shortcut, a DenseNet concatenation), or, for an elementwise merge (Add,
Average, ...), from such an ancestor through one projection layer (a ResNet 1x1-conv shortcut).
The parallel branches of an inception block meet in a Concatenate from a common input, none
through another's layers, so that Concatenate is not a skip.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import keras

from ablate.errors import AblateError

MERGES: tuple[type, ...] = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Concatenate,
    keras.layers.Dot,
)
NONE = "none"  # the level of `model.remove` that removes nothing
AUTO = "auto"  # every skip connection of the built model, one level each


class RemovalError(AblateError):
    """A removal that names no removable layer, or whose shapes no longer meet once it is made."""

    exit_status = 2  # bad input: the study file asks for it


@dataclass(frozen=True)
class Component:
    """One removable layer of a built model.

    Attributes:
        name: the layer's name (a level of `model.remove`).
        kind: its class name (`Concatenate`, `Add`, `Dropout`, ...).
        merge: whether it merges several inputs (else it is shape-preserving).
        inputs: the names of the layers its inputs come from, in call order.
        kept: for a merge, the input passed on when it is removed (the latest in the graph).
        skip: for a merge, whether an earlier input bypasses layers to reach it (a skip/shortcut).
    """

    name: str
    kind: str
    merge: bool
    inputs: tuple[str, ...]
    kept: str | None = None
    skip: bool = False


def components(model: keras.Model) -> list[Component]:
    """The model's merge layers and shape-preserving layers, in graph order.

    Raises:
        RemovalError: when the model is not functional or calls a layer more than once.
    """
    depth = _depths(model)
    by_name = {layer.name: layer for layer in model.layers}
    found = []
    for layer in model.layers:
        sources = _sources(layer)
        if not sources:
            continue  # an input layer
        merges = isinstance(layer, MERGES)  # (not in the `if`: mypy would narrow `layer` to object)
        if merges and len(sources) > 1:
            kept = max(sources, key=depth.__getitem__)  # ties: the first in call order
            ancestors = _ancestors(model, kept)
            elementwise = not isinstance(layer, (keras.layers.Concatenate, keras.layers.Dot))
            skip = any(_bypasses(by_name, source, ancestors, elementwise=elementwise) for source in sources if source != kept)
            found.append(Component(layer.name, type(layer).__name__, True, tuple(sources), kept, skip))
        elif len(sources) == 1 and _shape_preserving(layer):
            found.append(Component(layer.name, type(layer).__name__, False, tuple(sources)))
    return found


def skip_connections(model: keras.Model) -> list[str]:
    """The names of the model's skip/shortcut merges: what `model.remove: auto` removes, one each."""
    return [c.name for c in components(model) if c.merge and c.skip]


def remove_layers(model: keras.Model, names: Iterable[str]) -> keras.Model:
    """A new, uncompiled model: `model` with the named layers removed (see the module docstring).

    Args:
        model: a functional model (it is not changed; the result has fresh weights throughout).
        names: layer names from `components(model)`; `none` removes nothing.

    Raises:
        RemovalError: a name that is no removable layer (listing those there are), or a removal
            after which some layer's input shapes no longer fit (naming the layer and why).
    """
    wanted = [n for n in names if n != NONE]
    if AUTO in wanted:
        raise RemovalError("model.remove: auto is resolved to layer names when the study is loaded (ablate validate, run, submit); it is no layer")
    removable = {c.name: c for c in components(model)}
    unknown = [n for n in wanted if n not in removable]
    if unknown:
        raise RemovalError(
            f"model.remove: {', '.join(map(repr, unknown))} is not a removable layer of model {model.name!r}; "
            f"removable: {', '.join(removable) or 'none'} (see `ablate graph`)"
        )
    if not wanted:
        return keras.models.clone_model(model)
    keep_index = {n: removable[n].inputs.index(removable[n].kept) for n in wanted if removable[n].merge}

    def call(layer: keras.layers.Layer, *args: object, **kwargs: object) -> object:
        if layer.name in keep_index:
            return args[0][keep_index[layer.name]]  # type: ignore[index]
        if layer.name in wanted:
            return args[0]
        try:
            return layer(*args, **kwargs)
        except (ValueError, TypeError) as error:
            raise RemovalError(
                f"model.remove: removing {', '.join(wanted)} breaks layer {layer.name!r} "
                f"({type(layer).__name__}): {str(error).splitlines()[0]}"
            ) from None

    clone = keras.models.clone_model(model, call_function=call)
    output = {tuple(t.shape) for t in _flat(model.outputs)}, {tuple(t.shape) for t in _flat(clone.outputs)}
    if output[0] != output[1]:
        raise RemovalError(
            f"model.remove: removing {', '.join(wanted)} changes the model's output shape from "
            f"{sorted(output[0])} to {sorted(output[1])}"
        )
    return clone


def ablated(model: keras.Model, names: tuple[str, ...]) -> keras.Model:
    """`model` itself when `names` is empty, else `remove_layers(model, names)` (the `model.remove` setting)."""
    return remove_layers(model, names) if names else model


def _flat(tensors: object) -> list[keras.KerasTensor]:
    return list(keras.tree.flatten(tensors))


def _sources(layer: keras.layers.Layer) -> list[str]:
    """The names of the layers whose outputs `layer` is called on (its single call in the graph)."""
    nodes = layer._inbound_nodes  # Keras keeps the graph here; no public accessor
    if len(nodes) > 1:
        raise RemovalError(f"layer {layer.name!r} is called {len(nodes)} times; shared layers cannot be removed one use at a time")
    if not nodes:
        return []
    return [t._keras_history.operation.name for t in nodes[0].input_tensors]


def _bypasses(by_name: dict[str, keras.layers.Layer], source: str, ancestors: set[str], *, elementwise: bool) -> bool:
    """Whether input `source` skips layers of the main path: an ancestor of it, or (elementwise) one projection of one."""
    if source in ancestors:
        return True
    projected_from = _sources(by_name[source])
    return elementwise and len(projected_from) == 1 and projected_from[0] in ancestors


def _depths(model: keras.Model) -> dict[str, int]:
    """Each layer's longest path (in layers) from the model's inputs; model.layers is in graph order."""
    if not hasattr(model, "_run_through_graph"):
        raise RemovalError(f"model {model.name!r} is not a functional model; structural ablation needs one")
    depth: dict[str, int] = {}
    for layer in model.layers:
        depth[layer.name] = max((depth[source] + 1 for source in _sources(layer)), default=0)
    return depth


def _ancestors(model: keras.Model, name: str) -> set[str]:
    """Every layer whose output reaches layer `name`, `name` included."""
    by_name = {layer.name: layer for layer in model.layers}
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(_sources(by_name[current]))
    return seen


def _shape_preserving(layer: keras.layers.Layer) -> bool:
    node = layer._inbound_nodes[0]
    inputs, outputs = _flat(node.input_tensors), _flat(node.output_tensors)
    return len(inputs) == 1 and len(outputs) == 1 and tuple(inputs[0].shape) == tuple(outputs[0].shape)


__all__ = ["AUTO", "MERGES", "NONE", "Component", "RemovalError", "ablated", "components", "remove_layers", "skip_connections"]
