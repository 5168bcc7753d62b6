"""The report's family sections: a diffusion study's chains and samples, an ensemble's weights and scores.

Both read what the family logs to MLflow (see `ablate.families.diffusion` and
`ablate.families.ensemble` / `ablate.runtime.engines.weight_study`) for the runs the report already chose:

- **diffusion** (`model.family: diffusion`): each shown variant's median-seed run's
  `diffusion/chain.png` (the reverse chain x_T ... x_0 of the fixed validation images, then the
  clean image) and `diffusion/samples.png` (the chain started from pure noise). The pictures are
  copied into the report folder (`diffusion/trial{N}-chain.png`, `...-samples.png`) when there is
  one; without one (`--format md|json` and no `--out`) the section names them by MLflow artifact
  URI (`runs:/RUN_ID/diffusion/chain.png`).
- **ensemble** (`model.family: ensemble`): `ensemble/weights.json`, with each member's weight and
  the validation and test scores of every member, the uniform average and the searched weights.
  A weight study (`ensemble.source: study`) has one: on the study's parent run (else on its best
  run). A study that trains its members in each trial (`ensemble.source: train`) has one per
  trial run: the section shows each shown variant's median-seed run.

`sections` does the reading (MLflow) and `diffusion_section` / `ensemble_section` arrange what
was read; nothing here draws (see `ablate.report.figures`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from ablate.report.collect import StudyData, weight_study
from ablate.spec.study_spec import StudySpec
from ablate.tracking.reading import download_artifact, list_run_artifacts, read_json_artifacts

DIFFUSION_IMAGES = {"chain": "diffusion/chain.png", "samples": "diffusion/samples.png"}
EPOCH_CHAIN = re.compile(r"diffusion/chain_epoch_(\d+)\.png")
SCORES = ("val_loss", "val_mse", "test_loss", "test_mse")


def sections(answer: dict[str, Any], data: StudyData, project: Any) -> None:
    """Fill `answer["diffusion"]` or `answer["ensemble"]` from MLflow, for studies of those families."""
    spec = data.spec
    runs = [run["run_id"] for run in answer["median_runs"].values() if run["run_id"]]
    if spec.model.family == "diffusion":
        answer["diffusion"] = diffusion_section(answer, spec, list_run_artifacts(project, runs, "diffusion"))
    elif spec.model.family == "ensemble":
        # A weight study: the parent run's weights.json, else the best run's.
        wanted = [run for run in (data.parent_run_id, _best_run(answer)) if run] if weight_study(spec) else runs
        documents = read_json_artifacts(project, wanted)
        answer["ensemble"] = ensemble_section(answer, spec, documents, parent_run_id=data.parent_run_id)


def diffusion_section(answer: dict[str, Any], spec: StudySpec, listed: dict[str, list[str]]) -> dict[str, Any]:
    """Each shown variant's chain and samples pictures (its median-seed run), as artifact references.

    Args:
        answer: the answer so far (its `median_runs`, `cells` and `trials`).
        spec: the study.
        listed: run id -> the run's artifact paths under `diffusion/`.
    """
    trials = {t["number"]: t for t in answer["trials"]}
    variants = []
    for cell in _ordered_cells(answer):
        run = answer["median_runs"][cell]
        run_id = run["run_id"]
        present = set(listed.get(run_id, [])) if run_id else set()
        params = trials[run["trial"]]["params"] if run["trial"] in trials else {}
        images = {
            name: {"artifact": artifact, "run_id": run_id, "uri": f"runs:/{run_id}/{artifact}" if run_id else None,
                   "found": artifact in present, "file": None}
            for name, artifact in DIFFUSION_IMAGES.items()
        }
        epochs = sorted((int(m.group(1)), path) for path in present if (m := EPOCH_CHAIN.fullmatch(path)))
        variants.append({
            "cell": cell, "trial": run["trial"], "seed": run["seed"], "of": run["of"], "value": run["value"],
            "run_id": run_id, "settings": _diffusion_settings(spec, params, run["seed"]), "images": images,
            "chain_epochs": [{"epoch": epoch, "artifact": path} for epoch, path in epochs],
        })
    return {
        "metric": answer["objective"]["metric"],
        "variants": variants,
        "images": dict(DIFFUSION_IMAGES),
        "about": {
            "chain": "the reverse chain of the study's fixed validation images: x_T (noisiest) on the left, the "
            "denoiser applied step by step to x_0, then the clean image",
            "samples": "the same chain started from pure noise (x_T of a flat grey image): what the denoiser "
            "makes from nothing",
        },
    }


def fetch_diffusion_images(section: dict[str, Any] | None, project: Any, folder: Path) -> list[Path]:
    """Copy each variant's chain and samples into `folder/diffusion/`; set their `file` (relative to `folder`).

    Returns the files written.
    """
    written: list[Path] = []
    if not section:
        return written
    for variant in section["variants"]:
        for name, image in variant["images"].items():
            if not image["found"] or not image["run_id"]:
                continue
            relative = f"diffusion/trial{variant['trial']}-{name}.png"
            if download_artifact(project, image["run_id"], image["artifact"], folder / relative):
                image["file"] = relative
                written.append(folder / relative)
    return written


def _diffusion_settings(spec: StudySpec, params: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """The variant's diffusion settings (steps, conditioned, distribution, magnitude)."""
    try:
        run = spec.run_config(dict(params), seed=seed if seed is not None else spec.seed)
    except Exception:  # noqa: BLE001 - a trial whose params no longer validate: show the study's settings
        return spec.diffusion.model_dump(mode="json")
    return run.diffusion.model_dump(mode="json")


def ensemble_section(
    answer: dict[str, Any], spec: StudySpec, documents: dict[str, Any], *, parent_run_id: str | None
) -> dict[str, Any]:
    """The ensemble weights and the member / uniform / searched scores, per variant.

    Args:
        answer: the answer so far (its `median_runs`, `trials`, `objective`).
        spec: the study (`ensemble.source` says where the weights were logged).
        documents: run id -> its parsed `ensemble/weights.json`.
        parent_run_id: the study's parent run (a weight study's weights.json is there).
    """
    source = spec.ensemble.source
    variants: list[dict[str, Any]] = []
    missing: list[str] = []
    if source == "study":
        best = _best_run(answer)
        run_id = parent_run_id if parent_run_id in documents else best if best in documents else None
        if run_id is not None:
            document = documents[run_id]
            trial = document.get("best", {}).get("trial")
            variants.append(_variant(document, cell=f"searched weights (trial {trial})", run_id=run_id, trial=trial,
                                     seed=None, best_run_id=best, searched=f"trial {trial}"))
        else:
            missing.append(f"the parent run {parent_run_id}")
    else:
        for cell in _ordered_cells(answer):
            run = answer["median_runs"][cell]
            if run["run_id"] in documents:
                searched = f"weight vector {documents[run['run_id']].get('best', {}).get('trial')} of the trial's search"
                variant = _variant(documents[run["run_id"]], cell=cell, run_id=run["run_id"], trial=run["trial"],
                                   seed=run["seed"], best_run_id=run["run_id"], searched=searched)
                variants.append(variant | {"of": run["of"], "value": run["value"]})
            else:
                missing.append(f"{cell} (run {run['run_id']})")
    return {
        "source": source,
        "study": spec.ensemble.study if source == "study" else None,
        "members": None if "ensemble.members" in spec.factors else spec.ensemble.members,
        "artifact": "ensemble/weights.json",
        "variants": variants,
        "missing": missing,
        "scores": list(SCORES),
    }


def _variant(document: dict[str, Any], *, cell: str, run_id: str, trial: int | None, seed: int | None,
             best_run_id: str | None, searched: str) -> dict[str, Any]:
    """One weights.json arranged as a table: a row per member, then uniform, searched, and the optimum."""
    best_member = document.get("best_member", {})
    members = document.get("members", [])
    rows = [
        {"name": f"member {m['index']}", "label": m.get("label", ""), "kind": "member", "weight": _weight(m.get("weight")),
         "chosen": m["index"] == best_member.get("index"), "source_run_id": m.get("source_run_id"),
         **{k: m.get(k) for k in SCORES}}
        for m in members
    ]
    uniform = document.get("uniform", {})
    best = document.get("best", {})
    rows.append({"name": "uniform average", "label": f"each weight 1/{len(members)}", "kind": "uniform",
                 "weight": None, "chosen": False, **{k: uniform.get(k) for k in SCORES}})
    rows.append({"name": "searched weights", "label": searched, "kind": "best", "weight": None, "chosen": False,
                 **{k: best.get(k) for k in SCORES}})
    optimum = document.get("optimum")
    if optimum:
        rows.append({"name": "exact optimum", "label": "a check on the search", "kind": "optimum", "weight": None,
                     "chosen": False, **{k: optimum.get(k) for k in SCORES}})
    weights = [_as_weight(w) for w in document.get("weights", [])]
    return {
        "cell": cell,
        "trial": trial,
        "seed": seed,
        "run_id": run_id,
        "best_run_id": best_run_id,
        "loss": document.get("loss"),
        "searched_on": document.get("searched_on"),
        "weights": weights,
        "weights_sum": math.fsum(weights),
        "members": members,
        "uniform": uniform,
        "best": best,
        "best_member": best_member,
        "optimum": optimum,
        "test_gain": document.get("test_gain", {}),
        "search": document.get("search", {}),
        "rows": rows,
        "summary": _summary(document),
    }


def _summary(document: dict[str, Any]) -> str:
    """One sentence: the searched weights against the uniform average and the best member, on test."""
    best, uniform, member = document.get("best", {}), document.get("uniform", {}), document.get("best_member", {})
    if not all(isinstance(x.get("test_loss"), (int, float)) for x in (best, uniform, member)):
        return "the weights file holds no test scores"
    loss = document.get("loss", "loss")

    def versus(other: float, name: str) -> str:
        gain = other - best["test_loss"]
        if round(gain, 4) == 0:
            return f"equal to {name} at four decimals ({other:.4f})"
        return f"{'better' if gain > 0 else 'worse'} than {name} ({other:.4f}, by {abs(gain):.4f})"

    return (
        f"on the test split, which the search never saw, the searched weights score {best['test_loss']:.4f} "
        f"({loss}, lower is better): {versus(uniform['test_loss'], 'the uniform average')} and "
        f"{versus(member['test_loss'], 'the best single member')}; the best member, member {member.get('index')}, "
        f"was chosen on validation"
    )


def _weight(value: Any) -> float | None:
    """A weight as a float, -0.0 (the simplex map's weight of a coordinate at 1) as 0.0; None stays None."""
    return None if value is None else _as_weight(value)


def _as_weight(value: Any) -> float:
    """A weight as a float, -0.0 (the simplex map's weight of a coordinate at 1) as 0.0."""
    return float(value) + 0.0


def _best_run(answer: dict[str, Any]) -> str | None:
    """The run of the best trial (first objective), if it has one."""
    best = answer.get("best") or {}
    trial = best.get("trial")
    if trial is None:
        return None
    return next((t["run_id"] for t in answer["trials"] if t["number"] == trial), None)


def _ordered_cells(answer: dict[str, Any]) -> list[str]:
    """The shown variants: in the design's cell order when it has one, else best first."""
    runs = answer["median_runs"]
    order = [c["cell"] for c in answer.get("cells", []) if c["cell"] in runs]
    if len(order) == len(runs):
        return order
    sign = 1 if answer["objective"]["direction"] == "minimize" else -1
    return sorted(runs, key=lambda cell: (sign * runs[cell]["value"], cell))
