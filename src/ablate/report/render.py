"""The answer as Markdown (terminal, CI logs, pull requests) and as a self-contained HTML page.

The page is one file that works offline: plotly.js, the CSS and the reconstruction picture are
inlined (no CDN, no external request); the Jinja2 template and its CSS live in `dashboards/`,
which ships inside the package as `ablate/dashboards`.
"""

from __future__ import annotations

import base64
import json
from importlib import resources
from pathlib import Path
from typing import Any

TEMPLATE = "report.html.j2"


def dashboards_dir() -> Path:
    """The report templates: inside the installed package, or the repository's `dashboards/`."""
    packaged = resources.files("ablate").joinpath("dashboards")
    if packaged.is_dir():
        return Path(str(packaged))
    # Editable install from a clone: src/ablate/report/render.py -> repository root.
    return Path(__file__).resolve().parents[3] / "dashboards"


def to_markdown(answer: dict[str, Any]) -> str:
    """The answer as GitHub-flavoured Markdown."""
    metric = answer["objective"]["metric"]
    objectives = answer.get("objectives") or [answer["objective"]]
    counts = answer["counts"]
    design = answer["design"]
    if design.get("enumerated", True):
        plan = f"{design['cells']} cell(s) x {len(design['seeds'])} seed(s) = {design['trials_planned']} trials"
    else:
        search = design.get("search", {})
        plan = f"{search.get('sampler', '?')} sampler, {design['trials_planned']} trials planned"
    if len(objectives) > 1:
        aim = "Objectives: " + ", ".join(f"{o['direction']} final `{o['metric']}`" for o in objectives) + "."
    else:
        aim = f"Objective: {answer['objective']['direction']} final `{metric}`."
    lines = [
        f"# Study `{answer['study']}`",
        "",
        *([answer["description"], ""] if answer["description"] else []),
        f"{aim} Design: {design['kind']}, {plan}; {counts['complete']} complete, {counts['fail']} failed, "
        f"{counts['pruned']} pruned.",
        "",
        "## Effects (each level against its factor's baseline, paired by seed)",
        "",
    ]
    if not design.get("enumerated", True):
        lines.append(effects_absent(answer))
    elif answer["effects"]:
        lines += [
            "| factor | level - baseline | mean difference | 95% CI | n | p (t) | p (Holm) | verdict |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for e in answer["effects"]:
            d = e["difference"]
            lines.append(
                f"| `{e['factor']}` | {fmt_level(e['level'])} - {fmt_level(e['baseline'])} | {fmt(d['mean'])} | "
                f"{fmt_ci(d['ci95'])} | {d['n']} | {fmt_p(e['p_value'])} | {fmt_p(e['p_holm'])} | {e['verdict']} |"
            )
        lines += [""] + [f"- `{e['factor']}` {fmt_level(e['level'])}: {e['note']}." for e in answer["effects"]]
    else:
        lines.append("No factor has two levels: there is nothing to compare.")
    if design.get("enumerated", True):
        lines += ["", f"Intervals: {answer['methods']['ci']}. Tests: {answer['methods']['test']}. {baselines_sentence(answer)}", ""]
        lines += ["## Variants", "", f"| cell | mean {metric} | 95% CI | n |", "| --- | ---: | ---: | ---: |"]
        for cell in answer["cells"]:
            est = cell["estimate"]
            lines.append(f"| {cell['cell']} | {fmt(est['mean'])} | {fmt_ci(est['ci95'])} | {est['n']} |")
    lines += ["", "## Importances", ""]
    lines += importances_markdown(answer["importances"])
    pareto = answer.get("pareto")
    if pareto:
        names = [o["metric"] for o in pareto["objectives"]]
        lines += ["", "## Pareto front", "",
                  f"{len(pareto['front'])} non-dominated of {pareto['complete']} complete trials (no other trial is at "
                  "least as good on every objective and better on one; Optuna's `study.best_trials`).", "",
                  "| # | " + " | ".join(f"{n} ({'min' if o['direction'] == 'minimize' else 'max'})" for n, o in zip(names, pareto["objectives"]))
                  + " | params |", "| ---: | " + " | ".join("---:" for _ in names) + " | --- |"]  # fmt: skip
        for t in pareto["front"]:
            lines.append(f"| {t['number']} | " + " | ".join(fmt(v) for v in t["values"]) + f" | {t['cell']} |")
    best = answer["best"]
    lines += ["", "## Best configuration", ""]
    if best:
        label = f"trial {best['trial']}, " if best.get("trial") is not None else ""
        est = best["estimate"]
        lines.append(f"`{best['cell']}` ({label}mean {metric} {fmt(est['mean'])} {fmt_ci(est['ci95'])} over {est['n']} seed(s)).")
        runner = best["runner_up"]
        if runner and "difference" in runner:
            diff = runner["difference"]
            lines.append(
                f"Against the runner-up `{runner['cell']}`: paired difference {fmt(diff['mean'])} "
                f"{fmt_ci(diff['ci95'])} over {diff['n']} seed(s)."
            )
        elif runner:
            lines.append(f"Runner-up: {runner['cell']} with {metric} {fmt(runner['value'])}.")
        if best.get("note"):
            lines.append(f"Note: {best['note']}.")
        lines += ["", f"Save as `{best['file_name']}` and retrain with `{best['command']}`:", "", "```yaml",
                  best["study_file"].rstrip(), "```"]  # fmt: skip
    elif pareto:
        lines.append("Several objectives: no single best; each trial on the Pareto front above is a best trade-off.")
    else:
        lines.append("No complete trial yet.")
    heads = [o["metric"] for o in objectives]
    lines += ["", "## Trials", "", f"| # | cell | seed | state | {' | '.join(heads)} | duration | MLflow run |",
              "| ---: | --- | ---: | --- | " + " | ".join("---:" for _ in heads) + " | ---: | --- |"]  # fmt: skip
    for t in answer["trials"]:
        link = f"[{t['run_id'][:8]}]({t['run_url']})" if t["run_url"] else (t["run_id"] or "")
        values = " | ".join(fmt(v) for v in trial_values(t, len(heads)))
        lines.append(
            f"| {t['number']} | {t['cell']} | {t['seed']} | {t['state']} | {values} | {fmt_duration(t['duration_s'])} | {link} |"
        )
    return "\n".join(lines) + "\n"


def importances_markdown(imp: dict[str, Any]) -> list[str]:
    """The importances section's Markdown lines: one table per objective, both evaluators side by side."""
    from ablate.report.figures import importance_rows
    from ablate.report.importance import LABELS

    if not imp.get("computed"):
        return [f"Not computed: {imp['reason']}."]
    lines: list[str] = []
    evaluators = imp["evaluators"]
    several = len(imp["objectives"]) > 1
    for objective in imp["objectives"]:
        if several:
            lines += [f"### {objective['direction']} `{objective['metric']}`", ""]
        rows = importance_rows({"importances": imp}, objective)
        if rows:
            lines += ["| factor | " + " | ".join(f"{LABELS[e]} | range" for e in evaluators) + " |",
                      "| --- | " + " | ".join("---: | ---:" for _ in evaluators) + " |"]  # fmt: skip
        for row in rows:
            cells = []
            for e in evaluators:
                r = row.get(e)
                cells.append(f"{r['importance']:.3f} | {fmt_ci(r['range'], 3)}" if r else "- | -")
            lines.append(f"| `{row['factor']}` | " + " | ".join(cells) + " |")
        for e in evaluators:
            if not objective[e].get("computed"):
                lines.append(f"\n{LABELS[e]} not computed: {objective[e]['reason']}.")
        lines.append("")
    lines += [f"- {LABELS[e]}: {imp['methods'][e]}." for e in evaluators]
    lines += [f"- {note}." for note in imp["notes"]]
    lines.append(f"- {imp['trials']} complete trials, {imp['resamples']} resamples.")
    return lines


def effects_absent(answer: dict[str, Any]) -> str:
    """Why a search design has no effects table."""
    return (
        f"A {answer['design']['kind']} design samples its configurations instead of enumerating levels, so there are no "
        "paired per-level effects: the importances below say which factors matter, and the best trial"
        + (" (or the Pareto front)" if answer.get("pareto") else "")
        + " what to run next."
    )


def baselines_sentence(answer: dict[str, Any]) -> str:
    """Which level each factor is compared against, and why."""
    design = answer["design"]
    chosen = set(design.get("baseline_chosen", []))
    parts = [f"`{f}={fmt_level(level)}`" + (" (--baseline)" if f in chosen else "") for f, level in design["baseline"].items()]
    if not parts:
        return ""
    default = "the study's baseline" if design["kind"] == "one-at-a-time" else "each factor's first level in the study file"
    return f"Baselines: {', '.join(parts)}; by default {default}."


def trial_values(trial: dict[str, Any], n: int) -> list[float | None]:
    """A trial's value per objective (the first alone for one objective; blanks while it has none)."""
    if n == 1:
        return [trial["value"]]
    values = trial.get("values") or []
    return [values[i] if i < len(values) else None for i in range(n)]


def to_html(answer: dict[str, Any], *, figures: dict[str, Any], reconstructions: Path | None) -> str:
    """The self-contained page: plotly.js inline once, each chart as a div, the picture as base64."""
    import jinja2
    from plotly.offline import get_plotlyjs

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(dashboards_dir())),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the render instead of showing blank
    )
    environment.filters.update(fmt=fmt, fmt_ci=fmt_ci, fmt_p=fmt_p, fmt_level=fmt_level, fmt_duration=fmt_duration)
    from ablate.report.figures import importance_rows
    from ablate.report.importance import LABELS

    environment.globals.update(
        importance_rows=importance_rows, labels=LABELS, trial_values=trial_values,
        baselines_sentence=baselines_sentence, effects_absent=effects_absent,
    )  # fmt: skip
    charts = {
        name: figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                             config={"displaylogo": False, "responsive": True})
        for name, figure in figures.items()
    }  # fmt: skip
    picture = base64.b64encode(reconstructions.read_bytes()).decode() if reconstructions else None
    return environment.get_template(TEMPLATE).render(
        a=answer,
        charts=charts,
        plotly_js=get_plotlyjs(),
        reconstructions=picture,
        # Inside <script type="application/json"> only "</" could end the element early.
        answer_json=json.dumps(answer, default=str).replace("</", "<\\/"),
    )


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table cell ('' when missing)."""
    return "" if value is None else f"{value:.{digits}f}"


def fmt_ci(ci: list[float] | tuple[float, float] | None, digits: int = 4) -> str:
    """An interval, or n/a."""
    return "n/a" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def fmt_p(p: float | None) -> str:
    """A p-value with 2 significant digits, or n/a."""
    return "n/a" if p is None else f"{p:.2g}"


def fmt_level(level: Any) -> str:
    """A factor level as written in a study file."""
    return "null" if level is None else str(level).lower() if isinstance(level, bool) else str(level)


def fmt_duration(seconds: float | None) -> str:
    """Seconds as `12.3 s` or `4 min 05 s`."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"
