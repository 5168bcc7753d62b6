"""`ablate graph STUDY.yaml`: build a study's model once and print what structural ablation can remove.

For each merge layer: the layers its inputs come from, which input is kept when it is removed,
whether it is a skip/shortcut, and the parameter count without it; then the shape-preserving
layers (removed, they become the identity). Nothing is trained and nothing is created.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ablate.errors import AblateError


class CellChoiceError(AblateError):
    """A `--cell` the study does not have."""

    exit_status = 2


def add_parser(commands: Any, overrides: argparse.ArgumentParser) -> None:
    """Register `ablate graph`."""
    graph = commands.add_parser(
        "graph",
        parents=[overrides],
        help="print a study's model graph: its merge layers (skips, shortcuts) and what removing each costs",
        description="Build the model of one cell of a study (the first, or --cell N as `ablate validate` numbers them) "
        "and print its removable components: each merge layer (Add, Concatenate, ...) with the layers its inputs "
        "come from, the input kept when it is removed, whether it is a skip connection, and the parameter count "
        "without it; then the shape-preserving layers. Trains nothing, creates nothing.",
    )
    graph.add_argument("study_file", type=Path)
    graph.add_argument("--cell", type=int, default=1, metavar="N", help="which cell's model (1 = the first; default 1)")
    graph.set_defaults(handler=graph_command, trains=True)


def graph_command(args: argparse.Namespace, console: Any) -> int:
    """Print the removable components of the chosen cell's model."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from ablate.cli.commands import resolved
    from ablate.families import family_for, input_shape
    from ablate.models.surgery import RemovalError, components, remove_layers
    from ablate.spec.loading import load_spec

    spec = resolved(load_spec(args.study_file, profile=args.profile, overrides=tuple(args.overrides))).spec
    cells = spec.cells() if spec.design != "search" else [spec.reference_probe()]
    if not 1 <= args.cell <= len(cells):
        raise CellChoiceError(f"--cell {args.cell}: study {spec.name} has cells 1 to {len(cells)} (see `ablate validate`)")
    cell = cells[args.cell - 1]
    run = spec.run_config(cell, seed=spec.seed)
    model = family_for(run.model.family).build(run, input_shape(run))
    total = int(model.count_params())
    label = ", ".join(f"{name}={value}" for name, value in cell.items()) or "the study's settings"
    print(f"model {model.name} of study {spec.name}, cell {args.cell} ({label}): {total:,} parameters")

    found = components(model)
    # Plain lines, not a table: layer names stay whole and copyable at any terminal width.
    out = [f"merge layers (removed: the kept input passes on alone): {sum(c.merge for c in found)}"]
    for component in (c for c in found if c.merge):
        out.append(
            f"  {component.name} ({component.kind}{', skip' if component.skip else ''}): inputs from "
            f"{', '.join(component.inputs)}; keeps {component.kept}; without it "
            f"{_without(model, component.name, total, remove_layers, RemovalError)}"
        )
    preserving = [c for c in found if not c.merge]
    out.append(f"shape-preserving layers (removed: the identity): {len(preserving)}")
    out.extend(f"  {c.name} ({c.kind}): without it {_without(model, c.name, total, remove_layers, RemovalError)}" for c in preserving)
    skips = [c.name for c in found if c.merge and c.skip]
    out.append(
        "remove with the setting model.remove (a factor like any other): a layer name, or names joined by +"
        + (f", e.g. model.remove: [none, {'+'.join(skips)}]" if skips else "")
    )
    print("\n".join(out))  # the command's result: stdout (messages and errors go to stderr)
    return 0


def _without(model: Any, name: str, total: int, remove: Any, error: type[Exception]) -> str:
    try:
        count = int(remove(model, [name]).count_params())
    except error as refused:
        return f"cannot remove: {refused}"
    return f"{count:,} parameters ({count - total:+,})"
