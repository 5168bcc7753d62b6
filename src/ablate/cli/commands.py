"""The handlers of `ablate run`, `validate`, `reproduce` and `ui` (their arguments: `ablate.cli.main`).

Each handler imports what it drives inside its body: the layers below load pydantic, Keras,
TensorFlow, Optuna or MLflow, none of which `ablate --help` may wait for (tests/test_cli.py checks).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from ablate.errors import AblateError
from ablate.project import Project, resolve_project

if TYPE_CHECKING:
    from ablate.runtime.studies import StudyOutcome
    from ablate.spec.loading import LoadedSpec
    from ablate.spec.study_spec import StudySpec


def project_of(args: argparse.Namespace) -> Project:
    """The project the `--home`, `--storage` and `--tracking-uri` flags (or their defaults) name."""
    return resolve_project(home=args.home, storage=args.storage, tracking_uri=args.tracking_uri)


def run_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate run`: run the study file's missing trials, then say where the results are."""
    from ablate.runtime.progress import StudyProgress  # Optuna, MLflow, Keras: not for --help
    from ablate.runtime.run import run_study
    from ablate.spec.budget import check_budget
    from ablate.spec.loading import load_spec

    loaded = load_spec(args.study_file, profile=args.profile, overrides=tuple(args.overrides))
    if args.baselines:
        overrides = (*args.overrides, *baseline_overrides(loaded.spec, args.baselines))
        loaded = load_spec(args.study_file, profile=args.profile, overrides=overrides)
    loaded = resolved(loaded)
    check_budget(loaded.spec, allow_large=args.allow_large)
    check_model_removals(loaded.spec)  # a removal that breaks the graph: refused before any study exists
    check_custom_models(loaded.spec)  # a builder, loss or objective that cannot work: refused likewise
    project = project_of(args)
    workers = args.workers if args.workers is not None else max(1, len(args.gpus))
    with StudyProgress(console) as progress:
        outcome = run_study(
            loaded, project, progress=progress, workers=workers, gpus=args.gpus, recycle_after=args.recycle_after
        )
    _print_outcome(console, outcome)
    return 0 if outcome.failed == 0 else 1


def baseline_overrides(spec: Any, items: list[str]) -> list[str]:
    """`ablate run --baseline FACTOR=LEVEL` as `--set` overrides: `confirm.baseline.` (a search) or `baseline.` (one-at-a-time)."""
    from ablate.spec.errors import SpecError

    if spec.design == "search" and spec.confirm is not None:
        prefix = "confirm.baseline"
    elif spec.design == "one-at-a-time":
        prefix = "baseline"
    else:
        what = ("a search without confirm: has no baseline to run (add confirm: {seeds: N})" if spec.design == "search"
                else "a grid runs every level of every factor; choose the report's baseline with `ablate report NAME --baseline`")
        raise SpecError(f"--baseline: {what}")
    for item in items:
        if "=" not in item:
            raise SpecError(f"--baseline {item!r}: expected FACTOR=LEVEL, e.g. --baseline model.filters=32")
    return [f"{prefix}.{item.strip()}" for item in items]


def _print_outcome(console: Any, outcome: StudyOutcome) -> None:
    console.print(
        f"study [bold]{outcome.name}[/bold]: {outcome.complete}/{outcome.total} complete, "
        f"{outcome.failed} failed, {outcome.pruned} pruned ({outcome.ran} run now)\n"
        f"  optuna storage: {outcome.storage}\n  mlflow: {outcome.tracking_uri} "
        f"(experiment {outcome.experiment_id}, parent run {outcome.parent_run_id}); browse with `ablate ui`",
        highlight=False,
    )
    if outcome.failed:
        console.print("[yellow]some trials failed[/yellow]: see their MLflow runs (tag ablate.error); run again to retry them")


def validate_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate validate`: check the file and each of its profiles, print the plan; creates nothing."""
    from rich.console import Console  # rich and pydantic: not for --help
    from rich.table import Table

    from ablate.spec.budget import check_budget
    from ablate.spec.loading import check_profiles, load_spec
    from ablate.spec.samplers import require_samplers
    from ablate.training.arrays import describe_data

    check_profiles(args.study_file, overrides=tuple(args.overrides))  # every profile must apply, not only the chosen one
    loaded = resolved(load_spec(args.study_file, profile=args.profile, overrides=tuple(args.overrides)))
    spec = loaded.spec
    require_samplers(spec)  # what `ablate run` would refuse, refused here too
    planned = check_budget(spec, allow_large=args.allow_large)
    sources = [describe_data(data) for data in spec.data_configs()]  # a missing data.path, sizes past the dataset
    removals = check_model_removals(spec)  # model.remove: each removal made on the built model
    custom = check_custom_models(spec)  # model.family: custom: built, compiled, one batch run
    cells = spec.cells()
    trials = spec.planned_trials
    table = Table(title=f"study {spec.name}" + (f" (profile {loaded.profile})" if loaded.profile else ""), show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("question", spec.description.strip() or "-")
    size = "all" if spec.data.train_size is None else str(spec.data.train_size)
    ensemble = _ensemble_rows(spec)
    # The diffusion family noises with its own chain (diffusion.*), not data.noise.
    noise = "" if spec.model.family == "diffusion" or spec.task != "denoise" else f", noise {spec.data.noise.factor}"
    table.add_row("data", ensemble.get("data") or f"{spec.data.dataset}, {size} train / {spec.data.val_size} val / {spec.data.test_size} test{noise}")
    if spec.model.family == "custom":
        table.add_row("task", spec.task)
        model = spec.run_config({}, seed=spec.seed).flat()
        table.add_row("model", ", ".join(f"{k.removeprefix('model.')}={v}" for k, v in model.items() if k.startswith("model.") and k != "model.builder_digest"))
    else:
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
        table.add_row("seeds", f"{spec.max_repeats} ({search.seeds}: {'each trial trains every seed' if search.seeds == 'average' else 'one per trial, in turn'}): {spec.seeds}")
    else:
        table.add_row("design", f"{spec.design}: {len(cells)} cell(s)")
        if spec.sequential is not None:
            rounds = spec.sequential
            table.add_row("seeds", f"{rounds.min} per cell, then one more per round for each cell an undecided comparison "
                          f"needs, up to {rounds.max}: seeds {spec.seeds[0]}..{spec.seeds[-1]} (ablate.analysis.sequential)")
        else:
            table.add_row("seeds", f"{spec.repeats} per cell: {spec.seeds}")
    if spec.sequential is not None:
        table.add_row("trials", f"{len(cells) * spec.sequential.min} to {trials}, as the answers need")
    else:
        table.add_row("trials", str(trials))
    objectives = "; ".join(f"{o.direction} {o.metric}" for o in spec.objective)
    table.add_row("objective", f"{objectives} (last epoch)")
    images = f"x {spec.data.train_size:,} images" if spec.data.train_size else "over the full training split"
    per_trial = f"{spec.train.epochs} per trial" + (", at most" if spec.design == "search" else "")
    table.add_row("work", ensemble.get("work") or f"{planned.describe()} ({per_trial}) {images}")
    table.add_row("data source", "; ".join(dict.fromkeys(sources)))
    if custom:
        table.add_row("custom model", custom)
    if removals:
        table.add_row("model.remove", f"{removals} removal(s) made on the built model: the shapes meet")
    table.add_row("profiles", ", ".join(spec.profiles) or "-")
    Console().print(table)
    console.print(f"[green]ok[/green]: {args.study_file} is valid", highlight=False)
    return 0


def resolved(loaded: LoadedSpec) -> LoadedSpec:
    """`loaded` with `model.remove: auto` made the built model's skip connections (Keras only then)."""
    if not loaded.spec.removal_auto:
        return loaded
    from ablate.quiet_start import import_backend_quietly

    import_backend_quietly()
    from ablate.families.structure import resolve_auto_removal

    return resolve_auto_removal(loaded)


def check_model_removals(spec: StudySpec) -> int:
    """Build and ablate each model a `model.remove` asks for (Keras is imported only then)."""
    if not any(name == "model.remove" for name in spec.factors) and spec.model.remove == "none":
        return 0
    from ablate.quiet_start import import_backend_quietly

    import_backend_quietly()
    from ablate.families.structure import check_removals  # Keras: only for a study that removes layers

    return check_removals(spec)


def check_custom_models(spec: StudySpec) -> str | None:
    """A custom study's models built, compiled and run on one batch (`ablate.families.custom.check_study`)."""
    if spec.model.family != "custom":
        return None
    from ablate.quiet_start import import_backend_quietly

    import_backend_quietly()
    from ablate.families.custom import check_study  # Keras and the user's builder: only for a custom study

    return check_study(spec)


def _ensemble_rows(spec: StudySpec) -> dict[str, str]:
    """`validate`'s rows for an ensemble: its members, the searched simplex coordinates, the work."""
    if spec.model.family != "ensemble":
        return {}
    from ablate.spec.ensemble_rules import describe_ensemble  # pydantic: not for --help

    return describe_ensemble(spec)


def reproduce_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate reproduce NAME`: run the reproduction's study, then compare it with the published figures."""
    from rich.console import Console  # rich, Optuna, MLflow, Keras: not for --help

    from ablate.report.reproduction import compare, load_reproduction, render, verdict
    from ablate.runtime.progress import StudyProgress
    from ablate.runtime.run import run_study

    loaded = load_reproduction(args.name, profile=args.profile, overrides=tuple(args.overrides))
    project = project_of(args)
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


class UnknownStudyError(AblateError):
    """`ablate ui NAME` for a study the tracking store has no runs of."""

    exit_status = 2


def ui_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate ui [NAME]`: the MLflow UI on 127.0.0.1 against the project's store (replaces this process).

    With a study's NAME it prints the address of that study's runs table (its experiment looked up
    in the tracking store), which MLflow 3's UI would otherwise not open on; without, the list of
    experiments.
    """
    project = project_of(args)
    project.ensure()
    ui = f"http://127.0.0.1:{args.port}"
    if args.name:
        from ablate.redaction import redact
        from ablate.tracking.reading import runs_view_url, study_experiment_id  # MLflow: not for --help

        experiment_id = study_experiment_id(project, args.name)
        if experiment_id is None:
            raise UnknownStudyError(
                f"the MLflow store {redact(project.tracking_uri)} has no runs of study {args.name!r} "
                "(run `ablate ui` without a name for every experiment it holds)"
            )
        url = runs_view_url(ui, experiment_id)
    else:
        url = f"{ui}/#/experiments"
    command = [
        sys.executable, "-m", "mlflow", "ui",
        "--backend-store-uri", project.tracking_uri,
        "--host", "127.0.0.1",
        "--port", str(args.port),
    ]
    if project.artifact_root:
        command += ["--default-artifact-root", project.artifact_root]
    console.print(f"MLflow UI for {project.home} at {url} (Ctrl-C to stop)", highlight=False)
    # MLflow 3's job runner (GenAI scorer jobs) would start a consumer process per queue (7 here,
    # ~240 MB each); the UI of ablate's runs needs none of them. An explicit setting wins.
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    sys.stderr.flush()
    os.execv(sys.executable, command)
    return 0  # not reached
