"""Check a study's structural ablations (`model.remove`) before anything is created.

Each distinct model a study's trials would build with a removal is built once, and the removal
made: a layer name that is not removable, or a removal after which shapes no longer meet, ends
`ablate validate` and `ablate run` with the layer and the reason (exit 2), not a failed trial.
"""

from __future__ import annotations

from ablate.families import family_for
from ablate.spec.run_config import ModelConfig
from ablate.spec.study_spec import StudySpec
from ablate.training.data import load_splits


def check_removals(spec: StudySpec) -> int:
    """Make every removal the study's trials ask for on its built model; return how many were checked.

    Raises:
        RemovalError: the first removal that names no removable layer or breaks the graph's shapes.
    """
    checked: list[ModelConfig] = []
    for cell in spec.probe_cells("model"):
        run = spec.run_config(cell, seed=spec.seed)
        if not run.model.removed or run.model in checked:
            continue
        checked.append(run.model)
        family_for(run.model.family).build(run, load_splits(run.data).shape)  # builds, then removes
    return len(checked)
