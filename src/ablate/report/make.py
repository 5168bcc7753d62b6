"""The one function that makes a report: collect the study, answer its question, write the page, log it.

The command's arguments are in `ablate.cli.report`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.analysis.importance import importances
from ablate.analysis.pareto import pareto_front
from ablate.report import figures
from ablate.report.answer import build_answer, resolve_baselines
from ablate.report.collect import collect, read_curves, weight_study
from ablate.report.family_sections import fetch_diffusion_images, sections
from ablate.report.render import to_html, to_markdown
from ablate.runtime.confirm import search_trials
from ablate.tracking.reading import download_final_images, log_report

FORMATS = ("html", "md", "json")  # the forms of a report (`ablate report --format`)



@dataclass(frozen=True)
class Report:
    """What `make_report` produced.

    Attributes:
        answer: the JSON-ready answer (what every form shows).
        text: the Markdown or JSON text for `md` / `json`, else None.
        folder: where the HTML page and its files were written (html), else None.
        logged_to: the MLflow parent run the report's files were logged to, if they were.
        files: every file this report wrote (what was logged; never other files in the folder).
        not_logged: why an html report that was to be logged was not, else None.
    """

    answer: dict[str, Any]
    text: str | None
    folder: Path | None
    logged_to: str | None
    files: tuple[Path, ...] = ()
    not_logged: str | None = None


def make_report(
    name: str,
    project: Any,
    *,
    form: str = "html",
    out: Path | None = None,
    log: bool = True,
    ui_url: str | None = None,
    bootstrap: int = 20,
    baselines: tuple[str, ...] | list[str] = (),
    analysis: dict[str, float] | None = None,
) -> Report:
    """Read study `name` from the project's stores and render its report.

    Args:
        name: the Optuna study name.
        project: an `ablate.project.Project`.
        form: html (writes `out`), md or json (returns the text; also written to `out` if given,
            with md's pictures beside it).
        out: the output folder; html defaults to `./ablate-report/NAME`.
        log: log the files the html report wrote to the study's MLflow parent run under `report/`.
        ui_url: the MLflow UI the trial links point to.
        bootstrap: resamples for the importances; 0 skips them.
        baselines: `FACTOR=LEVEL` strings (`--baseline`): the levels effects are computed against.
        analysis: `analysis.*` settings (`equivalence_margin`, `effect_of_interest`) that replace
            the stored study's for this report (`--equivalence-margin`, `--effect-of-interest`).

    Raises:
        ReportInputError: unknown study (with the known names), or no store where it looked.
        BaselineError: a baseline that names no factor or no level of it (a ReportInputError).
    """
    if form not in FORMATS:
        raise ValueError(f"Received an invalid value for `form`, expected one of {FORMATS}. Received: form={form!r}")

    data = collect(name, project, curves=False)
    if analysis:  # judged differently, trained the same: the study is not changed
        data.spec = data.spec.model_copy(update={"analysis": data.spec.analysis.model_copy(update=analysis)})
    chosen = resolve_baselines(data.spec, list(baselines))  # before anything slow: a typo fails at once
    read_curves(data, project)  # every form shows the curves: the page draws them, md and json tabulate them
    trials = search_trials(data.study.get_trials(deepcopy=False))  # a search's confirmation trials are no search points
    if weight_study(data.spec):
        # Its params are the simplex coordinates of the weights (ensemble.u0 ..), each weight a
        # function of all of them: their importances would say little, and fANOVA over a weight
        # study's 1,000 trials and resamples takes minutes. The ensemble section gives the weights.
        importance = {"computed": False, "reason": "a weight study searches simplex coordinates of the ensemble weights, "
                      "not settings; the ensemble section gives the weights and what they score"}
    else:
        importance = importances(trials, data.objectives, resamples=bootstrap)
    answer = build_answer(
        data,
        ui_url=ui_url,
        importances=importance,
        baselines=chosen,
        pareto=pareto_front(data.study, data.objectives),
    )

    sections(answer, data, project)  # diffusion chains and samples, ensemble weights: read from MLflow
    folder = (out or Path("ablate-report") / name).resolve() if form == "html" else out
    written: list[Path] = []
    if folder is not None:  # the pictures the page and the Markdown link to, beside them
        written += fetch_diffusion_images(answer["diffusion"], project, folder)
        if form != "json":
            written += _write_pictures(answer, project, folder)
    if form == "json":
        text = json.dumps(answer, indent=2, default=str) + "\n"
        written += _write_text(out, "report.json", text)
        return Report(answer=answer, text=text, folder=out, logged_to=None, files=tuple(written))

    markdown = to_markdown(answer)
    if form == "md":
        written += _write_text(out, "report.md", markdown)
        return Report(answer=answer, text=markdown, folder=out, logged_to=None, files=tuple(written))

    folder = folder or (Path("ablate-report") / name).resolve()  # set above for html; this narrows the type
    written += _write_page(answer, folder, markdown)
    logged, not_logged = None, None
    if log and data.parent_run_id:
        log_report(project, data.parent_run_id, folder, written)
        logged = data.parent_run_id
    elif log:
        not_logged = (f"study {name!r} records no MLflow parent run (its mlflow_parent_run_id attribute is missing, "
                      "so it was not started by `ablate run`): there is no run to attach the report to")
    return Report(answer=answer, text=None, folder=folder, logged_to=logged, files=tuple(written), not_logged=not_logged)


def _write_pictures(answer: dict[str, Any], project: Any, folder: Path) -> list[Path]:
    """The static PNGs and the reconstruction picture, into `folder`; their names go to `answer["pictures"]`.

    A diffusion study shows chains and samples instead of reconstructions: its final.png is
    neither downloaded nor drawn.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pictures: dict[str, Path | None] = dict(figures.write_pngs(answer, folder))
    runs = {cell: run["run_id"] for cell, run in answer["median_runs"].items() if run["run_id"]}
    if answer.get("task") in figures.TASK_PICTURES:  # a classifier's or regressor's pictures, not reconstructions
        with tempfile.TemporaryDirectory(prefix="ablate-report-") as scratch:
            found: dict[str, dict[str, Path]] = {cell: {} for cell in runs}
            for artifact in figures.TASK_PICTURES[answer["task"]]:
                for cell, file in download_final_images(project, runs, Path(scratch) / artifact.replace("/", "_"), artifact).items():
                    found[cell][artifact] = file
            pictures["reconstructions"] = figures.predictions_png(answer, found, folder / "predictions.png")
    elif answer["diffusion"] is None:
        with tempfile.TemporaryDirectory(prefix="ablate-report-") as scratch:
            images = download_final_images(project, runs, Path(scratch))
            # None: looked for, but no run had its final.png (the page and the Markdown say so)
            pictures["reconstructions"] = figures.reconstructions_png(answer, images, folder / "reconstructions.png")
    answer["pictures"] = {name: path.relative_to(folder).as_posix() if path else None for name, path in pictures.items()}
    return [path for path in pictures.values() if path is not None]


def _write_page(answer: dict[str, Any], folder: Path, markdown: str) -> list[Path]:
    """index.html, report.md, report.json and best.yaml into `folder` (the pictures are there already)."""
    charts: dict[str, Any] = {}
    if any(e["difference"]["n"] > 0 for e in answer["effects"]):
        charts["effects"] = figures.effects_figure(answer)
    if answer["curves"]:
        charts["curves"] = figures.curves_figure(answer)
    if answer["importances"].get("computed"):
        charts["importances"] = figures.importances_figure(answer)
    if answer["pareto"] and answer["pareto"]["trials"]:
        charts["pareto"] = figures.pareto_figure(answer)
    if answer["ensemble"] and answer["ensemble"]["variants"]:
        charts["ensemble"] = figures.ensemble_figure(answer)
    name = answer["pictures"].get("reconstructions")
    texts = {
        "index.html": to_html(answer, figures=charts, reconstructions=folder / name if name else None, folder=folder),
        "report.md": markdown,
        "report.json": json.dumps(answer, indent=2, default=str) + "\n",
    }
    if answer["best"] and answer["best"]["study_file"]:
        texts[answer["best"]["file_name"]] = answer["best"]["study_file"]
    for filename, text in texts.items():
        (folder / filename).write_text(text)
    return [folder / filename for filename in texts]


def _write_text(out: Path | None, filename: str, text: str) -> list[Path]:
    """Write `text` to `out/filename` when there is a folder; the files written."""
    if out is None:
        return []
    out.mkdir(parents=True, exist_ok=True)
    (out / filename).write_text(text)
    return [out / filename]
