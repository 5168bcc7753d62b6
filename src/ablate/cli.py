"""The `ablate` command. Parsing is instant: heavy libraries load only inside the command that runs.

Exit codes: 0 done; 1 the work ran but something failed (a trial, the data); 2 bad input (a study
file, a flag), refused before anything was created; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ablate import __version__

EPILOG = """\
examples:
  ablate reproduce skip-vs-noskip --profile quick      the slides' comparison on the embedded MNIST subset
  ablate validate studies/skip_vs_noskip.yaml          check a study file and print its plan
  ablate run studies/skip_vs_noskip.yaml --set train.epochs=1 --set data.train_size=512
  ablate ui                                            browse the runs in the MLflow UI

Studies and runs live in ./.ablate/ (or $ABLATE_HOME, or --home): run every command from the same
folder and it finds the same studies. See README.md and docs/ for study files and profiles.
"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # no hard wraps: paths and URLs stay copyable
    return exit_code(lambda: int(args.handler(args, console) or 0), console)


def exit_code(call: Callable[[], int], console: Any) -> int:
    """Run a command's work and turn what ends it into the exit code, with the reason printed.

    A bad study file or setting is 2, any other error of ours 1 (the message, no traceback), an
    interrupt 130; anything else is a bug and keeps its traceback. Forked workers use it too.
    """
    from ablate.errors import AblateError
    from ablate.spec import SpecError

    try:
        return call()
    except SpecError as error:
        _print_error(console, error)
        return 2
    except AblateError as error:
        _print_error(console, error)
        return 1
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]: the current trial was recorded as failed; run the same command again to resume")
        return 130


def _print_error(console: Any, error: BaseException) -> None:
    from rich.text import Text

    # Plain text: messages hold field paths like factors.model.skip[1] that rich would read as markup.
    console.print(Text.assemble(("error: ", "bold red"), str(error)))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; imports nothing heavy, so `--help` answers at once."""
    parser = argparse.ArgumentParser(
        prog="ablate",
        description="Hyperparameter and ablation studies of Keras functional models: Optuna drives, MLflow records.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ablate {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where studies live")
    where.add_argument("--home", help="project folder of the embedded default (default: $ABLATE_HOME or ./.ablate)")
    where.add_argument("--storage", help="Optuna storage URL (default: $ABLATE_STORAGE or sqlite in the project folder)")
    where.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI or sqlite in the project folder)"
    )
    overrides = argparse.ArgumentParser(add_help=False)
    overrides.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a setting by its dotted name, e.g. --set train.epochs=1 (repeatable; value parsed as YAML)",
    )
    overrides.add_argument("--profile", help="apply a named profile of the study file (its `profiles:` section)")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        parents=[common, overrides],
        help="run a study file (resumes: finished cells are not run again)",
        description="Run every (cell, seed) trial of a study that has not finished yet, logging each to MLflow. "
        "Running the same study again resumes it.",
    )
    run.add_argument("study_file", type=Path, help="a study file, e.g. studies/skip_vs_noskip.yaml")
    from ablate.launch import gpu_list, worker_count  # light: argparse types only

    run.add_argument("--workers", type=worker_count, metavar="N", help="run N local `ablate worker` processes (default 1, or one per --gpus)")
    run.add_argument("--gpus", type=gpu_list, default=(), metavar="LIST", help="GPU indices for the workers, e.g. 0,1 (worker i uses GPU i mod count)")
    from ablate.launch import add_recycle_option  # light: argparse only

    add_recycle_option(run, what="run every trial in this process")
    run.set_defaults(handler=_run)

    validate = commands.add_parser(
        "validate",
        parents=[overrides],
        help="check a study file and print its plan, without running anything",
        description="Validate a study file (and its profiles) and print the plan: factors, cells, seeds, trials "
        "and the training work. Creates nothing. Sections of a study file: name, description, data, model, train, "
        "factors, design, repeats, seed, objective, tracking, profiles (see docs/study-files.md).",
    )
    validate.add_argument("study_file", type=Path)
    validate.set_defaults(handler=_validate)

    reproduce = commands.add_parser(
        "reproduce",
        parents=[common],
        help="reproduce a published comparison (skip-vs-noskip) and compare with its figures",
        description="Run a reproduction study and print each variant's final validation loss (mean and 95%% CI over "
        "seeds), the paired difference, and the published figures. Profiles: quick (embedded MNIST subset, small "
        "model, CPU minutes) and slides (full MNIST, 64/128 filters, 20 epochs; for a GPU).",
    )
    reproduce.add_argument("name", choices=["skip-vs-noskip"], help="which reproduction")
    reproduce.add_argument("--profile", default="quick", help="quick (default) or slides")
    reproduce.add_argument("--json", type=Path, metavar="PATH", help="also write the result as JSON to PATH")
    reproduce.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE", help="override a setting (repeatable)"
    )
    add_recycle_option(reproduce, what="run every trial in this process")
    reproduce.set_defaults(handler=_reproduce)

    ui = commands.add_parser(
        "ui",
        parents=[common],
        help="open the MLflow UI on 127.0.0.1 against this project's runs",
        description="Start the MLflow UI against the project's store: each study is an experiment with a parent run "
        "and one nested run per trial. Stop it with Ctrl-C.",
    )
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    ui.set_defaults(handler=_ui)
    # Further commands register here, each from its own module: add_parser(commands, common, overrides).
    # (report: ablate.report; submit/worker/status: ablate.service)
    from ablate.report import add_parser as add_report_parser; add_report_parser(commands, common, overrides)  # noqa: E702
    from ablate.service import add_parser as add_service_parser; add_service_parser(commands, common, overrides)  # noqa: E702
    return parser


def _project(args: argparse.Namespace) -> Any:
    from ablate.home import resolve_project

    return resolve_project(home=args.home, storage=args.storage, tracking_uri=args.tracking_uri)


def _run(args: argparse.Namespace, console: Any) -> int:
    from ablate.progress import StudyProgress
    from ablate.spec import load_spec
    from ablate.study import run_study

    loaded = load_spec(args.study_file, profile=args.profile, overrides=tuple(args.overrides))
    project = _project(args)
    workers = args.workers if args.workers is not None else max(1, len(args.gpus))
    with StudyProgress(console) as progress:
        outcome = run_study(
            loaded, project, progress=progress, workers=workers, gpus=args.gpus, recycle_after=args.recycle_after
        )
    _print_outcome(console, outcome)
    return 0 if outcome.failed == 0 else 1


def _print_outcome(console: Any, outcome: Any) -> None:
    console.print(
        f"study [bold]{outcome.name}[/bold]: {outcome.complete}/{outcome.total} complete, "
        f"{outcome.failed} failed, {outcome.pruned} pruned ({outcome.ran} run now)\n"
        f"  optuna storage: {outcome.storage}\n  mlflow: {outcome.tracking_uri} "
        f"(experiment {outcome.experiment_id}, parent run {outcome.parent_run_id}); browse with `ablate ui`",
        highlight=False,
    )
    if outcome.failed:
        console.print("[yellow]some trials failed[/yellow]: see their MLflow runs (tag ablate.error); run again to retry them")


def _validate(args: argparse.Namespace, console: Any) -> int:
    from rich.table import Table

    from ablate.spec import load_spec

    loaded = load_spec(args.study_file, profile=args.profile, overrides=tuple(args.overrides))
    spec = loaded.spec
    for profile in spec.profiles:  # every profile must apply cleanly, not only the chosen one
        load_spec(args.study_file, profile=profile, overrides=tuple(args.overrides))
    from ablate.sampling import require_samplers

    require_samplers(spec)  # what `ablate run` would refuse, refused here too
    cells = spec.cells()
    trials = spec.planned_trials
    table = Table(title=f"study {spec.name}" + (f" (profile {loaded.profile})" if loaded.profile else ""), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("question", spec.description.strip() or "-")
    size = "all" if spec.data.train_size is None else str(spec.data.train_size)
    ensemble = _ensemble_rows(spec)
    # The diffusion family noises with its own chain (diffusion.*), not data.noise.
    noise = "" if spec.model.family == "diffusion" else f", noise {spec.data.noise.factor}"
    table.add_row("data", ensemble.get("data") or f"{spec.data.dataset}, {size} train / {spec.data.val_size} val / {spec.data.test_size} test{noise}")
    table.add_row("model", ensemble.get("model") or ", ".join(f"{k}={v}" for k, v in spec.model.model_dump().items()))
    table.add_row("train", ensemble.get("train") or ", ".join(f"{k}={v}" for k, v in spec.train.model_dump().items()))
    if spec.model.family == "diffusion":
        table.add_row("diffusion", ", ".join(f"{k}={v}" for k, v in spec.diffusion.model_dump().items()))
    for name, factor in spec.factors.items():
        table.add_row(f"factor {name}", factor.describe())
    for key in ("ensemble", "searched"):
        if key in ensemble:
            table.add_row(key, ensemble[key])
    if spec.design == "search":
        search = spec.search
        table.add_row("design", f"search with {spec.engine} sampler {search.sampler}, pruner {search.pruner}")
        table.add_row("seeds", f"{spec.repeats} ({search.seeds}: {'each trial trains every seed' if search.seeds == 'average' else 'one per trial, in turn'}): {spec.seeds}")
    else:
        table.add_row("design", f"{spec.design}: {len(cells)} cell(s)")
        table.add_row("seeds", f"{spec.repeats} per cell: {spec.seeds}")
    table.add_row("trials", str(trials))
    objectives = "; ".join(f"{o.direction} {o.metric}" for o in spec.objective)
    table.add_row("objective", f"{objectives} (last epoch)")
    epochs = trials * spec.train.epochs * (spec.repeats if spec.design == "search" and spec.search.seeds == "average" else 1)
    images = f"x {spec.data.train_size:,} images" if spec.data.train_size else "over the full training split"
    table.add_row("work", ensemble.get("work") or f"{epochs} training epochs in all ({spec.train.epochs} per trial) {images}")
    table.add_row("profiles", ", ".join(spec.profiles) or "-")
    from rich.console import Console

    Console().print(table)
    console.print(f"[green]ok[/green]: {args.study_file} is valid", highlight=False)
    return 0


def _ensemble_rows(spec: Any) -> dict[str, str]:
    """`validate`'s rows for an ensemble: its members, the searched simplex coordinates, the work."""
    if spec.model.family != "ensemble":
        return {}
    from ablate.ensembles import describe_ensemble

    return describe_ensemble(spec)


def _reproduce(args: argparse.Namespace, console: Any) -> int:
    from rich.console import Console

    from ablate.progress import StudyProgress
    from ablate.reproduce import compare, load_reproduction, render, verdict
    from ablate.study import run_study

    loaded = load_reproduction(args.name, profile=args.profile, overrides=tuple(args.overrides))
    project = _project(args)
    with StudyProgress(console) as progress:
        outcome = run_study(loaded, project, progress=progress, recycle_after=args.recycle_after)
    _print_outcome(console, outcome)
    result = compare(args.name, loaded, project)
    out = Console()
    out.print(render(result))
    out.print(verdict(result), highlight=False)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.json}")
    return 0 if outcome.failed == 0 else 1


def _ui(args: argparse.Namespace, console: Any) -> int:
    project = _project(args)
    project.ensure()
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", project.tracking_uri,
        "--host", "127.0.0.1",
        "--port", str(args.port),
    ]  # fmt: skip
    if project.artifact_root:
        command += ["--default-artifact-root", project.artifact_root]
    console.print(f"MLflow UI for {project.home} at http://127.0.0.1:{args.port} (Ctrl-C to stop)")
    # MLflow 3's job runner (GenAI scorer jobs) would start a consumer process per queue (7 here,
    # ~240 MB each); the UI of ablate's runs needs none of them. An explicit setting wins.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    os.execv(sys.executable, command)
    return 0  # not reached
