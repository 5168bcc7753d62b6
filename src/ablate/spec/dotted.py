"""Dotted setting names (`model.skip`, `data.noise.factor`) over nested mappings: one name per setting everywhere."""

from __future__ import annotations

from typing import Any

from ablate.spec.errors import SpecError


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into one level of dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


# Mappings whose keys are themselves dotted setting names: below them, the rest of a name is one key.
SETTING_KEYED = (("factors",), ("baseline",), ("confirm", "baseline"))


def set_dotted(tree: dict[str, Any], name: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for `name = "a.b.c"`, creating mappings on the way.

    Keys of `factors`, `baseline` and `confirm.baseline` are themselves dotted
    (`factors.model.skip`): below those, the rest of the name is one key.
    """
    parts = name.split(".")
    node = tree
    for index, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(f"cannot set {name}: {'.'.join(parts[: index + 1])} is {child!r}, not a mapping")
        node = child
        if tuple(parts[: index + 1]) in SETTING_KEYED and index + 1 < len(parts):
            node[".".join(parts[index + 1:])] = value
            return
    node[parts[-1]] = value
