"""The `ablate` command: its arguments, and the handler each command runs. Parsing is instant.

Every command module registers its own arguments (`add_parser`) and imports its heavy layers only
inside its handler, so `ablate --help` loads no Keras, TensorFlow, Optuna, MLflow or pydantic.
Exit codes: `ablate.errors` (0 done, 1 failed, 2 bad input, 130 interrupted).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ablate import __version__
from ablate.backends import select_backend
from ablate.cli import audit, graph, report, service
from ablate.cli.arguments import add_allow_large_option, add_backend_option, add_recycle_option, gpu_list, worker_count
from ablate.cli.commands import reproduce_command, run_command, ui_command, validate_command
from ablate.errors import end_on_signals, exit_code
from ablate.quiet_start import import_backend_quietly

EPILOG = """\
examples:
  ablate reproduce skip-vs-noskip --profile quick      the slides' comparison on the embedded MNIST subset
  ablate validate studies/skip_vs_noskip.yaml          check a study file and print its plan
  ablate run studies/skip_vs_noskip.yaml --set train.epochs=1 --set data.train_size=512
  ablate ui skip-vs-noskip-quick                       browse a study's runs in the MLflow UI

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
    end_on_signals()  # SIGTERM / SIGHUP end a command as Ctrl-C does: trial recorded, runs ended, nothing RUNNING
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # no hard wraps: paths and URLs stay copyable

    def work() -> int:
        if hasattr(args, "backend"):
            select_backend(args.backend)  # before anything imports Keras; children inherit $KERAS_BACKEND
        if getattr(args, "trains", False):
            import_backend_quietly()  # before anything imports Keras: no cuInit / oneDNN lines on a CPU machine
        return int(args.handler(args, console) or 0)

    return exit_code(work, console)


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
    run.add_argument("--workers", type=worker_count, metavar="N", help="run N local `ablate worker` processes (default 1, or one per --gpus)")
    run.add_argument("--gpus", type=gpu_list, default=(), metavar="LIST", help="GPU indices for the workers, e.g. 0,1 (worker i uses GPU i mod count)")
    run.add_argument(
        "--baseline", dest="baselines", action="append", default=[], metavar="FACTOR=LEVEL",
        help="the baseline level of a factor: a search's confirmation baseline (confirm.baseline; default: the fixed "
        "setting) or a one-at-a-time design's reference (baseline); repeatable, e.g. --baseline model.filters=32",
    )
    add_recycle_option(run, what="run every trial in this process")
    add_allow_large_option(run)
    add_backend_option(run)
    run.set_defaults(handler=run_command, trains=True)

    validate = commands.add_parser(
        "validate",
        parents=[overrides],
        help="check a study file and print its plan, without running anything",
        description="Validate a study file (and its profiles) and print the plan: factors, cells, seeds, trials "
        "and the training work. Creates nothing. Sections of a study file: name, description, data, model, train, "
        "factors, design, repeats, seed, objective, tracking, profiles (see docs/study-files.md).",
    )
    validate.add_argument("study_file", type=Path)
    add_allow_large_option(validate)
    validate.set_defaults(handler=validate_command)

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
    add_backend_option(reproduce)
    reproduce.set_defaults(handler=reproduce_command, trains=True)

    ui = commands.add_parser(
        "ui",
        parents=[common],
        help="open the MLflow UI on 127.0.0.1 against this project's runs",
        description="Start the MLflow UI against the project's store: each study is an experiment with a parent run "
        "and one nested run per trial. With a study's NAME, print the address of its runs table. Stop it with Ctrl-C.",
    )
    ui.add_argument("name", nargs="?", help="a study: print the address of its runs table (default: the experiments)")
    ui.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    ui.set_defaults(handler=ui_command)
    # Further commands register here, each from its own module: add_parser(commands, common, overrides).
    report.add_parser(commands, common, overrides)
    graph.add_parser(commands, overrides)
    service.add_parser(commands, common, overrides)
    audit.add_parser(commands, common)
    return parser
