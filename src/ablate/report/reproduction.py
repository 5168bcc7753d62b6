"""Reproductions of published comparisons: run the study, then compare with the reference figures.

`skip-vs-noskip` is the slides' exercise: the MNIST denoising autoencoder with and without
concatenation skips, 0.1664 vs 0.14 loss after 20 epochs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rich.table import Table

from ablate.analysis.effects import cell_values, level_values, mean_ci, observations_from, study_effects
from ablate.errors import AblateError
from ablate.project import Project
from ablate.redaction import redact
from ablate.report.answer import default_baselines
from ablate.runtime.rounds import judge
from ablate.runtime.studies import load_study, trial_records
from ablate.spec.loading import LoadedSpec, load_spec
from ablate.spec.shipped import studies_dir


@dataclass(frozen=True)
class Reproduction:
    """A two-variant comparison with reference figures.

    Attributes:
        study_file: file name under `studies/`.
        factor: the dotted setting that differs.
        baseline: (label, level) of the reference variant.
        treatment: (label, level) of the variant compared against it.
        reference: published figures per label, plus `epochs`.
        source: where the figures come from.
    """

    study_file: str
    factor: str
    baseline: tuple[str, Any]
    treatment: tuple[str, Any]
    reference: dict[str, float]
    source: str


REPRODUCTIONS: dict[str, Reproduction] = {
    "skip-vs-noskip": Reproduction(
        study_file="skip_vs_noskip.yaml",
        factor="model.skip",
        baseline=("noskip", "none"),
        treatment=("skip", "concat"),
        reference={"noskip": 0.1664, "skip": 0.14, "epochs": 20},
        source="course slides (SDSC, July 2022): MNIST autoencoder exercise, loss after 20 epochs",
    ),
}


def load_reproduction(name: str, *, profile: str | None, overrides: tuple[str, ...] = ()) -> LoadedSpec:
    """The reproduction's study file with its profile applied."""
    repro = REPRODUCTIONS[name]
    return load_spec(studies_dir() / repro.study_file, profile=profile, overrides=overrides)


def compare(name: str, loaded: LoadedSpec, project: Project) -> dict[str, Any]:
    """Read the finished study and compare the variants with the reference, as a JSON-ready dict."""
    repro = REPRODUCTIONS[name]
    spec = loaded.spec
    study = load_study(spec.name, project.storage)
    # The report's analysis with the report's design cells and baselines, so this table, its
    # verdict and `ablate report` always agree: each variant is its level of the factor (averaged
    # over any other factors per seed) and the difference is the report's paired effect of the
    # treatment level against the baseline level, with the report's note.
    observations = observations_from(trial_records(study), seeds=spec.seeds)
    cells, baselines = spec.cells(), default_baselines(spec)
    if baselines.get(repro.factor) != repro.baseline[1]:
        raise AblateError(f"{spec.name}: the baseline of {repro.factor} must be {repro.baseline[1]!r}; "
                          f"the study's is {baselines.get(repro.factor)!r}")
    table = cell_values(observations, spec.levels)
    values = {label: level_values(table, spec.levels, repro.factor, level, cells)
              for label, level in (repro.baseline, repro.treatment)}
    if spec.sequential is not None:  # seeds added until decided: the report's repeated intervals
        effects = judge(spec, observations, baselines)
    else:
        effects = study_effects(observations, spec.levels, direction=spec.primary.direction, metric=spec.primary.metric,
                                baselines=baselines, cells=cells)
    effect = next(e for e in effects if e.factor == repro.factor and e.level == repro.treatment[1])
    difference = effect.difference
    variants = {label: mean_ci(values[label].values()) for label in values}
    return {
        "reproduction": name,
        "study": spec.name,
        "storage": redact(project.storage),
        "tracking_uri": redact(project.tracking_uri),
        "profile": loaded.profile,
        "dataset": spec.data.dataset,
        "train_size": spec.data.train_size,
        "epochs": spec.train.epochs,
        "filters": spec.model.filters,
        "metric": spec.primary.metric,
        "variants": {label: estimate.as_dict() for label, estimate in variants.items()},
        "per_seed": {label: {str(s): v for s, v in sorted(values[label].items())} for label in values},
        "paired_difference": {
            **difference.as_dict(),
            "of": f"{repro.treatment[0]} - {repro.baseline[0]}",
            "excludes_zero": difference.excludes_zero,
            "p_value": effect.p_value,
            "p_holm": effect.p_holm,
            "wilcoxon_p": effect.wilcoxon_p,
            "verdict": effect.verdict,
            "note": effect.note,
            "method": effect.method,
            "sequential": effect.sequential,
        },
        "seeds_needed": effect.difference.n if spec.sequential is not None else None,
        "seeds_max": spec.max_repeats,
        "direction": spec.primary.direction,
        "reference": dict(repro.reference),
        "reference_source": repro.source,
        "ci_method": effect.method,
    }


def render(result: dict[str, Any]) -> Any:
    """The comparison as a rich table."""
    table = Table(
        title=(
            f"{result['reproduction']}: final {result['metric']} on {result['dataset']}, profile "
            f"{result['profile'] or 'none'}, {result['epochs']} epochs, {result['filters']} base filters"
        )
    )
    for column in ("variant", "mean", "95% CI", "n", f"slides ({result['reference']['epochs']:g} epochs)"):
        table.add_column(column, justify="right" if column != "variant" else "left")
    for label, estimate in result["variants"].items():
        table.add_row(label, _fmt(estimate["mean"]), _fmt_ci(estimate["ci95"]), str(estimate["n"]), _fmt(result["reference"].get(label)))
    diff = result["paired_difference"]
    ref = result["reference"]
    table.add_row(
        f"paired {diff['of']}",
        _fmt(diff["mean"]),
        _fmt_ci(diff["ci95"]),
        str(diff["n"]),
        _fmt(ref["skip"] - ref["noskip"]) if {"skip", "noskip"} <= ref.keys() else "",
        style="bold",
    )
    return table


def verdict(result: dict[str, Any]) -> str:
    """Whether the reference's finding holds here, from the report's verdict and note on the effect.

    The classification and the sentence (interval, Holm's correction, how many seeds would settle
    it) are `ablate.analysis.effects`'s, exactly as `ablate report` shows them; this only says how they
    stand against the reference figures.
    """
    diff = result["paired_difference"]
    ref = result["reference"]
    treatment, _, baseline = diff["of"].partition(" - ")
    kind = diff["verdict"]
    if kind in ("better", "worse") and {treatment, baseline} <= ref.keys():
        expected_lower = ref[treatment] < ref[baseline]
        better_expected = expected_lower == (result.get("direction", "minimize") == "minimize")
        agrees = (kind == "better") == better_expected
        headline = "the reference's finding holds" if agrees else "the opposite of the reference"
    elif kind in ("better", "worse"):
        headline = f"{treatment} is {kind} than {baseline}"
    else:
        headline = f"no answer yet ({kind})"
    seeds = ""
    if result.get("seeds_needed") is not None:
        seeds = (f" The answer needed {result['seeds_needed']} seed(s) per variant, of at most {result['seeds_max']} "
                 "(repeats: until decided).")
    return f"{diff['of']}: {headline}: {diff['note']}.{seeds}"


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _fmt_ci(ci: list[float] | None) -> str:
    return "n/a" if not ci else f"[{ci[0]:.4f}, {ci[1]:.4f}]"
