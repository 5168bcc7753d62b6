"""Resolve and check a study's structural ablations (`model.remove`) before anything is created.

`model.remove: auto` becomes one level per skip connection of the built model (with `none`
first): the reference cell's model is built with nothing removed, and its skip/shortcut merges
(`ablate.models.surgery.skip_connections`) are the levels. The study is stored with those names,
so every worker runs the same removals.

Each distinct model a study's trials would build with a removal is built once, and the removal
made: a layer name that is not removable, or a removal after which shapes no longer meet, ends
`ablate validate` and `ablate run` with the layer and the reason (exit 2), not a failed trial.
"""

from __future__ import annotations

import dataclasses

from ablate.families import family_for, input_shape
from ablate.models.surgery import RemovalError, skip_connections
from ablate.spec.loading import LoadedSpec
from ablate.spec.run_config import ModelConfig
from ablate.spec.study_spec import AUTO_REMOVAL, StudySpec


def resolve_auto_removal(loaded: LoadedSpec) -> LoadedSpec:
    """`loaded` with `model.remove: auto` replaced by the built model's skip connections (unchanged without it).

    Raises:
        RemovalError: when the built model has no skip connection to remove.
    """
    spec = loaded.spec
    if not spec.removal_auto:
        return loaded
    cells = spec.cells() if spec.design != "search" else [spec.reference_probe()]
    cell = {**cells[0], "model.remove": "none"}
    run = spec.run_config(cell, seed=spec.seed)
    model = family_for(run.model.family).build(run, input_shape(run))
    skips = skip_connections(model)
    if not skips:
        raise RemovalError(
            f"model.remove: auto found no skip connection in model {model.name!r} (with {', '.join(f'{k}={v}' for k, v in cells[0].items() if k != 'model.remove') or 'the study settings'}); "
            "name the layers to remove instead (`ablate graph` lists them)"
        )
    raw = spec.to_file()
    factor = raw["factors"]["model.remove"]
    levels: list[str] = []
    for level in factor["levels"]:
        levels.extend(skips if level == AUTO_REMOVAL else [level])
    factor["levels"] = list(dict.fromkeys(levels))
    return dataclasses.replace(loaded, spec=StudySpec.model_validate(raw))


def check_removals(spec: StudySpec) -> int:
    """Make every removal the study's trials ask for on its built model; return how many were checked.

    Raises:
        RemovalError: the first removal that names no removable layer or breaks the graph's shapes.
    """
    if spec.removal_auto:
        raise RemovalError("model.remove: auto must be resolved first (resolve_auto_removal)")
    checked: list[ModelConfig] = []
    for cell in spec.probe_cells("model"):
        run = spec.run_config(cell, seed=spec.seed)
        if not run.model.removed or run.model in checked:
            continue
        checked.append(run.model)
        family_for(run.model.family).build(run, input_shape(run))  # builds, then removes
    return len(checked)
