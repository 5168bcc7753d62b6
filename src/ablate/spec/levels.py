"""Factor levels: their type, when two are the same, and the readable key of a cell (`model.skip=concat`)."""

from __future__ import annotations

Level = bool | int | float | str | None


def same_level(a: Level, b: Level) -> bool:
    """Whether two levels are the same: `true` is not `1` (Python's `True == 1`), but `1` is `1.0`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def cell_key(params: dict[str, Level]) -> str:
    """A stable, readable key of one cell: `model.skip=concat,train.epochs=5`."""
    return ",".join(f"{name}={format_level(params[name])}" for name in sorted(params)) or "baseline"


def format_level(level: Level) -> str:
    """A level as a study file writes it: `null`, `true` / `false`, else the value itself."""
    return "null" if level is None else str(level).lower() if isinstance(level, bool) else str(level)
