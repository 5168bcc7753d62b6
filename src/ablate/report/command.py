"""The `report` subcommand: its arguments, and the one function that makes a report.

Nothing heavy is imported at module level: `ablate --help` builds this parser.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FORMATS = ("html", "md", "json")


@dataclass(frozen=True)
class Report:
    """What `make_report` produced.

    Attributes:
        answer: the JSON-ready answer (what every form shows).
        text: the Markdown or JSON text for `md` / `json`, else None.
        folder: where the HTML page and its files were written (html), else None.
        logged_to: the MLflow parent run the folder was logged to, if it was.
    """

    answer: dict[str, Any]
    text: str | None
    folder: Path | None
    logged_to: str | None


def add_parser(commands: Any, common: argparse.ArgumentParser, overrides: argparse.ArgumentParser) -> None:
    """Register `ablate report` (the overrides parent is not used: a report reads a finished study)."""
    report = commands.add_parser(
        "report",
        parents=[common],
        help="the study's answer: effects with CIs, curves, reconstructions, trials (HTML, Markdown, JSON)",
        description="Turn a study into the answer to its question: for each factor level, the paired difference "
        "from the baseline level over seeds with a 95%% t interval, a paired t test and Holm's correction; "
        "fANOVA and PED-ANOVA importances with bootstrap ranges (two or more factors; per objective); the Pareto "
        "front of a multi-objective study; learning curves with a band over seeds; "
        "each variant's reconstructions side by side (a diffusion study: its reverse chains and samples from "
        "noise; an ensemble study: its weights and member vs uniform vs searched scores on validation and test); "
        "every trial with a link to its MLflow run; and the best "
        "configuration as a study file. html (default) writes a self-contained page (works offline) plus PNGs, "
        "JSON and best.yaml into --out and logs them to the study's MLflow parent run; md and json print to stdout.",
    )
    report.add_argument("name", help="the study's name (as `ablate run` printed it, e.g. skip-vs-noskip-quick)")
    report.add_argument("--format", choices=FORMATS, default="html", help="html (default), md or json")
    report.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (html default: ./ablate-report/NAME); with md/json, also write the text there")  # fmt: skip
    report.add_argument("--no-log", action="store_true", help="do not log the HTML report to the study's MLflow parent run")
    report.add_argument("--ui-url", metavar="URL",
                        help="MLflow UI address for the trial links (default: the tracking server, else http://127.0.0.1:5000)")  # fmt: skip
    report.add_argument("--bootstrap", type=int, default=20, metavar="N",
                        help="bootstrap resamples for the importances' ranges (default 20; 0 skips importances)")  # fmt: skip
    report.add_argument("--baseline", action="append", default=[], metavar="FACTOR=LEVEL",
                        help="compare the factor's other levels against this level instead of its first one "
                        "(the study's baseline in a one-at-a-time design); repeatable, e.g. --baseline model.skip=none")  # fmt: skip
    report.set_defaults(handler=_handle)


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
) -> Report:
    """Read study `name` from the project's stores and render its report.

    Args:
        name: the Optuna study name.
        project: an `ablate.home.Project`.
        form: html (writes `out`), md or json (returns the text; also written to `out` if given).
        out: the output folder; html defaults to `./ablate-report/NAME`.
        log: log the html folder to the study's MLflow parent run under `report/`.
        ui_url: the MLflow UI the trial links point to.
        bootstrap: resamples for the importances; 0 skips them.
        baselines: `FACTOR=LEVEL` strings (`--baseline`): the levels effects are computed against.

    Raises:
        ReportInputError: unknown study (with the known names), or no store where it looked.
        BaselineError: a baseline that names no factor or no level of it (a ReportInputError).
    """
    if form not in FORMATS:
        raise ValueError(f"Received an invalid value for `form`, expected one of {FORMATS}. Received: form={form!r}")
    from ablate.report.answer import build_answer, resolve_baselines
    from ablate.report.collect import collect, read_curves, weight_study
    from ablate.report.importance import importances
    from ablate.report.pareto import pareto_front

    data = collect(name, project, curves=False)
    chosen = resolve_baselines(data.spec, list(baselines))  # before anything slow: a typo fails at once
    if form != "md":  # md does not draw the curves: it skips reading them from MLflow
        read_curves(data, project)
    trials = data.study.get_trials(deepcopy=False)
    if weight_study(data.spec):
        # Its params are the simplex coordinates of the weights (ensemble.u0 ..), each weight a
        # function of all of them: their importances would say little, and fANOVA over a weight
        # study's 1,000 trials and resamples takes minutes. The ensemble section gives the weights.
        importance = {"computed": False, "reason": "a weight study searches simplex coordinates of the ensemble weights, "
                      "not settings; the ensemble section gives the weights and what they score"}  # fmt: skip
    else:
        importance = importances(trials, data.objectives, resamples=bootstrap)
    answer = build_answer(
        data,
        ui_url=ui_url,
        importances=importance,
        baselines=chosen,
        pareto=pareto_front(data.study, data.objectives),
    )
    from ablate.report.families import fetch_diffusion_images, sections

    sections(answer, data, project)  # diffusion chains and samples, ensemble weights: read from MLflow
    folder = (out or Path("ablate-report") / name).resolve() if form == "html" else out
    if folder is not None:  # the pictures the page and the Markdown link to, beside them
        fetch_diffusion_images(answer["diffusion"], project, folder)
    if form == "json":
        text = json.dumps(answer, indent=2, default=str) + "\n"
        return Report(answer=answer, text=text, folder=_write_text(out, "report.json", text), logged_to=None)
    from ablate.report.render import to_markdown

    markdown = to_markdown(answer)
    if form == "md":
        return Report(answer=answer, text=markdown, folder=_write_text(out, "report.md", markdown), logged_to=None)

    folder = folder or (Path("ablate-report") / name).resolve()  # set above for html; this narrows the type
    folder.mkdir(parents=True, exist_ok=True)
    _write_page(answer, data, project, folder, markdown)
    logged = None
    if log and data.parent_run_id:
        from ablate.report.collect import log_report

        log_report(project, data.parent_run_id, folder)
        logged = data.parent_run_id
    return Report(answer=answer, text=None, folder=folder, logged_to=logged)


def _write_page(answer: dict[str, Any], data: Any, project: Any, folder: Path, markdown: str) -> None:
    from ablate.report import figures
    from ablate.report.collect import download_final_images
    from ablate.report.render import to_html

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
    figures.write_pngs(answer, folder)
    with tempfile.TemporaryDirectory(prefix="ablate-report-") as scratch:
        runs = {cell: run["run_id"] for cell, run in answer["median_runs"].items() if run["run_id"]}
        images = download_final_images(project, runs, Path(scratch))
        picture = figures.reconstructions_png(answer, images, folder / "reconstructions.png")
    (folder / "index.html").write_text(to_html(answer, figures=charts, reconstructions=picture, folder=folder))
    (folder / "report.md").write_text(markdown)
    (folder / "report.json").write_text(json.dumps(answer, indent=2, default=str) + "\n")
    if answer["best"] and answer["best"]["study_file"]:
        (folder / answer["best"]["file_name"]).write_text(answer["best"]["study_file"])


def _write_text(out: Path | None, filename: str, text: str) -> Path | None:
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)
    (out / filename).write_text(text)
    return out


def _handle(args: argparse.Namespace, console: Any) -> int:
    import sys

    from rich.text import Text

    from ablate.home import resolve_project
    from ablate.report.collect import ReportInputError

    project = resolve_project(home=args.home, storage=args.storage, tracking_uri=args.tracking_uri)
    if args.bootstrap < 0:
        console.print(Text.assemble(("error: ", "bold red"), f"--bootstrap must be 0 or more; received {args.bootstrap}"))
        return 2
    try:
        report = make_report(args.name, project, form=args.format, out=args.out, log=not args.no_log,
                             ui_url=args.ui_url, bootstrap=args.bootstrap, baselines=args.baseline)  # fmt: skip
    except ReportInputError as error:
        # A name that is not a study, or a baseline that is not a level, is bad input, like a bad
        # flag: exit 2, nothing was created.
        console.print(Text.assemble(("error: ", "bold red"), str(error)))
        return 2
    if report.text is not None:
        sys.stdout.write(report.text)
        return 0
    console.print(f"wrote {report.folder / 'index.html'} (open it in a browser; it works offline)", highlight=False)
    if report.logged_to:
        console.print(f"logged to MLflow: parent run {report.logged_to}, artifacts under report/", highlight=False)
    best = report.answer["best"]
    if best and best["file_name"]:
        console.print(f"best configuration {best['cell']}: retrain with `ablate run {report.folder / best['file_name']}`",
                      highlight=False)  # fmt: skip
    return 0


__all__ = ["FORMATS", "Report", "add_parser", "make_report"]
