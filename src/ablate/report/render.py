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
    counts = answer["counts"]
    lines = [
        f"# Study `{answer['study']}`",
        "",
        *([answer["description"], ""] if answer["description"] else []),
        f"Objective: {answer['objective']['direction']} final `{metric}`. Design: {answer['design']['kind']}, "
        f"{answer['design']['cells']} cell(s) x {len(answer['design']['seeds'])} seed(s) = "
        f"{answer['design']['trials_planned']} trials; {counts['complete']} complete, {counts['fail']} failed, "
        f"{counts['pruned']} pruned.",
        "",
        "## Effects (each level against its factor's baseline, paired by seed)",
        "",
    ]
    if answer["effects"]:
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
    lines += ["", f"Intervals: {answer['methods']['ci']}. Tests: {answer['methods']['test']}.", ""]
    lines += ["## Variants", "", f"| cell | mean {metric} | 95% CI | n |", "| --- | ---: | ---: | ---: |"]
    for cell in answer["cells"]:
        est = cell["estimate"]
        lines.append(f"| {cell['cell']} | {fmt(est['mean'])} | {fmt_ci(est['ci95'])} | {est['n']} |")
    lines += ["", "## Importances", ""]
    imp = answer["importances"]
    if imp.get("computed"):
        lines += ["| factor | importance | bootstrap range |", "| --- | ---: | ---: |"]
        lines += [f"| `{r['factor']}` | {r['importance']:.3f} | {fmt_ci(r['range'], 3)} |" for r in imp["factors"]]
        lines += ["", f"{imp['method']} ({imp['resamples']} resamples)."]
    else:
        lines.append(f"Not computed: {imp['reason']}.")
    best = answer["best"]
    lines += ["", "## Best configuration", ""]
    if best:
        lines.append(f"`{best['cell']}`: mean {metric} {fmt(best['estimate']['mean'])} {fmt_ci(best['estimate']['ci95'])}.")
        if best["runner_up"]:
            diff = best["runner_up"]["difference"]
            lines.append(
                f"Against the runner-up `{best['runner_up']['cell']}`: paired difference {fmt(diff['mean'])} "
                f"{fmt_ci(diff['ci95'])} over {diff['n']} seed(s)."
            )
        lines += ["", f"Save as `{best['file_name']}` and retrain with `{best['command']}`:", "", "```yaml",
                  best["study_file"].rstrip(), "```"]  # fmt: skip
    else:
        lines.append("No complete trial yet.")
    lines += ["", "## Trials", "", f"| # | cell | seed | state | {metric} | duration | MLflow run |", "| ---: | --- | ---: | --- | ---: | ---: | --- |"]
    for t in answer["trials"]:
        link = f"[{t['run_id'][:8]}]({t['run_url']})" if t["run_url"] else (t["run_id"] or "")
        lines.append(
            f"| {t['number']} | {t['cell']} | {t['seed']} | {t['state']} | {fmt(t['value'])} | {fmt_duration(t['duration_s'])} | {link} |"
        )
    return "\n".join(lines) + "\n"


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
