"""Every family and engine on one Keras backend, in this process: run by tests/test_backends.py as
`KERAS_BACKEND=jax python tests/backend_smoke.py FOLDER` (a process's backend is fixed at import).

Trains, each as a tiny real study through `run_study` with fork recycling as by default: the
U-Net under a median-pruned search (one trial with a learning rate that cannot train, so the
pruner has something to prune), a wall-time budget, the NaN guard, diffusion, the custom family
(the shipped digits example with a model.remove ablation), the keras-tuner engine and an
ensemble weight study over the first study's models. Prints one JSON line: per study, its
trials' states and values, so the test can check them.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import tiny_study  # noqa: E402 - beside this file, found through the path above


def studies(folder: Path) -> list[tuple[str, dict[str, Any] | Path]]:
    small = {"dataset": "mnist-embedded", "train_size": 128, "val_size": 32, "test_size": 32}
    one_epoch = {"epochs": 1, "batch_size": 64}
    for name in ("digits_model.py", "digits_data.py"):
        shutil.copy(REPO / "studies" / name, folder / name)
    digits = yaml.safe_load((REPO / "studies" / "digits.yaml").read_text())
    digits.pop("profiles")
    digits.update(
        name="digits", repeats=1, data={**digits["data"], "train_size": 128, "val_size": 64, "test_size": 32},
        train={**digits["train"], "epochs": 1}, factors={"model.remove": ["none", "block1_add"]},
        model={**digits["model"], "params": {"filters": 4, "blocks": 1, "classes": 10}},
    )
    (folder / "digits.yaml").write_text(yaml.safe_dump(digits, sort_keys=False))
    return [
        ("members", tiny_study("members", data=small, train=one_epoch, repeats=1)),
        ("pruned", tiny_study(
            "pruned", data=small, train={"epochs": 2, "batch_size": 64}, repeats=1, design="search",
            factors={"train.learning_rate": [0.01, 1e-9]},
            search={"sampler": "random", "trials": 8, "pruner": "median", "warmup_epochs": 0},
            tracking={"image_every": 0, "images": 2, "save_model": False},
        )),
        ("budget", tiny_study("budget", data=small, train={"epochs": 50, "batch_size": 64, "max_seconds": 0.5}, repeats=1,
                              factors={"model.skip": ["concat"]})),
        ("nan", tiny_study("nan", data=small, train={"epochs": 2, "batch_size": 64, "learning_rate": 1e30}, repeats=1,
                           factors={"model.skip": ["concat"]}, model={"filters": 4, "depth": 2, "batch_norm": False})),
        ("diffusion", tiny_study(
            "diffusion", data=small, model={"family": "diffusion", "filters": 4, "depth": 2}, train=one_epoch,
            diffusion={"steps": 3, "magnitude": 0.5}, factors={"diffusion.conditioned": [False, True]}, repeats=1,
            objective={"metric": "val_chain_loss"},
        )),
        ("digits", folder / "digits.yaml"),
        ("keras-tuner", tiny_study(
            "keras-tuner", data=small, train=one_epoch, design="search", engine="keras-tuner",
            factors={"model.skip": ["none", "concat"]}, search={"sampler": "random", "trials": 2}, repeats=1,
        )),
        ("weights", {
            "name": "weights", "model": {"family": "ensemble"},
            "ensemble": {"source": "study", "study": "members", "members": 2},
            "design": "search", "search": {"sampler": "random", "trials": 20}, "tracking": {"images": 4},
        }),
    ]


def main(folder: Path) -> None:
    import keras
    import optuna
    from rich.console import Console

    from ablate.project import resolve_project
    from ablate.runtime.progress import StudyProgress
    from ablate.runtime.run import run_study
    from ablate.spec.loading import load_spec, spec_from_dict

    project = resolve_project(home=folder / "home")
    found: dict[str, Any] = {"backend": keras.backend.backend()}
    only = set(sys.argv[2].split(",")) if len(sys.argv) > 2 else None  # a subset, by name, when debugging
    for name, study in studies(folder):
        if only and name not in only:
            continue
        loaded = load_spec(study) if isinstance(study, Path) else spec_from_dict(study)
        with StudyProgress(Console(file=io.StringIO())) as progress:
            run_study(loaded, project, progress=progress)
        trials = optuna.load_study(study_name=loaded.spec.name, storage=project.storage).trials
        found[name] = [
            {"state": t.state.name, "value": t.value if t.values else None, "epochs": len(t.intermediate_values),
             "params": t.params, "error": t.user_attrs.get("ablate.error", "")}
            for t in trials
        ]
    print("SMOKE " + json.dumps(found), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
