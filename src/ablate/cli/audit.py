"""`ablate audit NAME`: its arguments and handler (the audit itself: `ablate.runtime.audit`).

The handler reads the study before Keras is imported, so that the re-run trains on the study's
backend whatever `$KERAS_BACKEND` says.
"""

from __future__ import annotations

import argparse
from typing import Any

from ablate.backends import select_backend
from ablate.cli.arguments import whole_number
from ablate.project import resolve_project


def trial_number(text: str) -> int:
    """`--trial N`: a trial number, 0 or more (an argparse type)."""
    return whole_number(text, least=0, what="a trial number")


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """Register `ablate audit`."""
    audit = commands.add_parser(
        "audit",
        parents=[common],
        help="the noise floor: re-run one finished trial with its seed and say how far the two runs land apart",
        description="Train one complete trial of a study again, in this process, from the same settings and the same "
        "seed, and compare its objective with the stored one. The difference is the noise floor of this machine: "
        "what two identical runs differ by (kernels that sum in a thread-dependent order, cuDNN's algorithm "
        "choice), so an effect smaller than it is within run-to-run noise. train.deterministic: true in the study "
        "file turns on the backend's deterministic ops, which should make it 0. The floor is stored on the study "
        "(user attr ablate.noise_floor), and `ablate report` prints it beside the effects; auditing again replaces "
        "it. No Optuna trial and no MLflow run is created. Default trial: the first complete trial of the "
        "baseline cell (a search: the first complete trial).",
    )
    audit.add_argument("name", help="the study's name (as `ablate run` printed it, e.g. skip-vs-noskip-quick)")
    audit.add_argument("--trial", type=trial_number, metavar="N",
                       help="re-run trial N (a complete one; its number as `ablate report` lists it)")
    audit.set_defaults(handler=audit_command)


def audit_command(args: argparse.Namespace, console: Any) -> int:
    """`ablate audit NAME`: re-run one trial, print and store the noise floor; bad input exits 2."""
    from ablate.quiet_start import import_backend_quietly
    from ablate.runtime.audit import plan_audit, run_audit  # Optuna: not for --help
    from ablate.runtime.progress import StudyProgress

    project = resolve_project(home=args.home, storage=args.storage, tracking_uri=args.tracking_uri)
    plan = plan_audit(args.name, project, trial=args.trial)  # AuditInputError (exit 2) before anything trains
    console.print(
        f"audit of study [bold]{args.name}[/bold]: trial {plan.trial.number} ({plan.cell}, {plan.chosen}), "
        f"{plan.spec.primary.metric}={plan.original:.6g}; training it again on {plan.backend}",
        highlight=False,
    )
    select_backend(plan.backend)  # before Keras is imported: the re-run trains on the study's backend
    import_backend_quietly()
    with StudyProgress(console) as progress:
        floor = run_audit(plan, progress=progress)
    relative = f"{floor['relative']:.3g}" if floor["relative"] is not None else "n/a"
    print(
        f"trial {floor['trial']} ({floor['cell']}, seed {floor['seed']}): {floor['metric']} "
        f"{floor['original']:.8g} then {floor['rerun']:.8g}; difference {floor['difference']:.3g} "
        f"(relative {relative}); deterministic ops {'on' if floor['deterministic'] else 'off'}, "
        f"{floor['backend']}, {floor['device']}",
        flush=True,
    )
    if floor["note"]:
        console.print(f"note: {floor['note']}", highlight=False)
    console.print(f"stored on the study as ablate.noise_floor; `ablate report {args.name}` shows it", highlight=False)
    return 0
