"""`ablate report NAME`: its arguments and handler (the report itself: `ablate.report.make`).

The handler imports the report inside its body: it loads Optuna, MLflow, plotly and matplotlib,
which `ablate --help` must not wait for.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ablate.cli.arguments import positive_float
from ablate.errors import print_error
from ablate.project import resolve_project

# `--format`: ablate.report.make.FORMATS, spelled out here so that `--help` need not import the report.
FORMATS = ("html", "md", "json")


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
        "JSON and best.yaml into --out and logs those files to the study's MLflow parent run; md and json print to "
        "stdout (with --out, md also writes its PNGs there and links them).",
    )
    report.add_argument("name", help="the study's name (as `ablate run` printed it, e.g. skip-vs-noskip-quick)")
    report.add_argument("--format", choices=FORMATS, default="html", help="html (default), md or json")
    report.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (html default: ./ablate-report/NAME); with md/json, also write the text there")
    report.add_argument("--no-log", action="store_true", help="do not log the HTML report to the study's MLflow parent run")
    report.add_argument("--ui-url", metavar="URL",
                        help="MLflow UI address for the trial links (default: the tracking server, else http://127.0.0.1:5000)")
    report.add_argument("--bootstrap", type=int, default=20, metavar="N",
                        help="bootstrap resamples for the importances' ranges (default 20; 0 skips importances)")
    report.add_argument("--equivalence-margin", type=positive_float, metavar="DELTA",
                        help="test each comparison for equivalence within ±DELTA (objective units); "
                        "default: the study's analysis.equivalence_margin")
    report.add_argument("--effect-of-interest", type=positive_float, metavar="D",
                        help="say how many seeds find a difference of D with 80%% power; default: analysis.effect_of_interest")
    report.add_argument("--baseline", action="append", default=[], metavar="FACTOR=LEVEL",
                        help="compare the factor's other levels against this level instead of its first one "
                        "(the study's baseline in a one-at-a-time design); repeatable, e.g. --baseline model.skip=none")
    report.set_defaults(handler=report_command)


def report_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate report NAME`: write or print the study's answer; a name that is no study is bad input (2)."""
    from ablate.report.make import make_report  # Optuna, MLflow, plotly: not for --help

    project = resolve_project(home=args.home, storage=args.storage, tracking_uri=args.tracking_uri)
    if args.bootstrap < 0:
        print_error(console, f"--bootstrap must be 0 or more; received {args.bootstrap}")
        return 2
    # A name that is not a study, or a baseline that is not a level, is a ReportInputError: exit 2.
    report = make_report(
        args.name, project, form=args.format, out=args.out, log=not args.no_log,
        ui_url=args.ui_url, bootstrap=args.bootstrap, baselines=args.baseline,
        analysis={name: value for name, value in (("equivalence_margin", args.equivalence_margin),
                                                   ("effect_of_interest", args.effect_of_interest)) if value is not None},
    )
    if report.text is not None:
        sys.stdout.write(report.text)
        return 0
    folder = report.folder
    if folder is None:  # cannot happen: an html report (no text) always has its folder
        raise RuntimeError("make_report returned an html report without its folder")
    console.print(f"wrote {folder / 'index.html'} (open it in a browser; it works offline)", highlight=False)
    if report.logged_to:
        console.print(f"logged to MLflow: parent run {report.logged_to}, {len(report.files)} files under report/",
                      highlight=False)
    elif report.not_logged:
        console.print(f"not logged to MLflow: {report.not_logged}", highlight=False)
    best = report.answer["best"]
    if best and best["file_name"]:
        console.print(f"best configuration {best['cell']}: retrain with `ablate run {folder / best['file_name']}`",
                      highlight=False)
    return 0
