"""The answer as Markdown (terminal, CI logs, pull requests) and as a self-contained HTML page.

The page is one file that works offline: plotly.js, the CSS, the reconstruction picture and a
diffusion study's chain and sample pictures are inlined (no CDN, no external request); the
Jinja2 template and its CSS live in `dashboards/`, which ships inside the package as
`ablate/dashboards`.
"""

from __future__ import annotations

import base64
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from plotly.offline import get_plotlyjs

from ablate.analysis.importance import LABELS
from ablate.report.figures import curve_styles, curves_note, importance_rows
from ablate.spec.levels import format_level

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
    if design.get("sequential"):
        plan = sequential_text(design)
    elif design.get("enumerated", True):
        plan = f"{design['cells']} cell(s) x {len(design['seeds'])} seed(s) = {design['trials_planned']} trials"
    else:
        search = design.get("search", {})
        plan = f"{search.get('sampler', '?')} sampler, {design['trials_planned']} trials planned"
    if len(objectives) > 1:
        aim = "Objectives: " + ", ".join(f"{o['direction']} final {md_code(o['metric'])}" for o in objectives) + "."
    else:
        aim = f"Objective: {answer['objective']['direction']} final {md_code(metric)}."
    lines = [
        f"# Study {md_code(answer['study'])}",
        "",
        *([md_block(answer["description"]), ""] if answer["description"] else []),
        (
            f"{aim} Design: {design['kind']}, {plan}; {counts['complete']} complete, {counts['fail']} failed, "
            f"{counts['pruned']} pruned."
        ),
        "",
        "## Effects (each level against its factor's baseline, paired by seed)",
        "",
    ]
    if not design.get("enumerated", True):
        lines += confirmation_markdown(answer) or [effects_absent(answer)]
    elif answer["effects"]:
        leave_one_out = design["kind"] == "one-at-a-time"
        lines += [
            "| factor | level - baseline | mean difference | 95% CI | seeds | p (t) | p (Holm) | p (Wilcoxon) | MDE (80%) | "
            "equivalence | verdict |" + (" component |" if leave_one_out else ""),
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |" + (" --- |" if leave_one_out else ""),
        ]
        for e in answer["effects"]:
            d = e["difference"]
            lines.append(
                f"| {md_code(e['factor'], table=True)} | {md(format_level(e['level']))} - {md(format_level(e['baseline']))} | "
                f"{fmt(d['mean'])} | {fmt_ci(d['ci95'])} | {d['n']} | {fmt_p(e['p_value'])} | {fmt_p(e['p_holm'])} | "
                f"{fmt_p(e['wilcoxon_p'])} | {fmt(e.get('mde80'))} | {equivalence_text(e)} | {md(e['verdict'])} |"
                + (f" {md(e.get('component', 'undecided'))} |" if leave_one_out else "")
            )
        if leave_one_out:
            lines += ["", ("Component: what the baseline's setting does, leave-one-out: *helps* (changing it is worse), "
                      "*hurts* (changing it is better), *removable* (shown equivalent within the margin), *undecided*.")]
        lines += [""] + [f"- {md_code(e['factor'])} {md(format_level(e['level']))}: {md(e['note'])}." for e in answer["effects"]]
        lines += picture_lines(answer, "effects", "paired differences with their intervals")
    else:
        lines.append("No factor has two levels: there is nothing to compare.")
    lines += ["", "".join(md_code(text) if code else md(text) for text, code in noise_floor_parts(answer))]
    if design.get("enumerated", True):
        lines += ["", f"Intervals: {answer['methods']['ci']}. Tests: {answer['methods']['test']}. {baselines_sentence(answer)}", ""]
        lines += ["## Variants", "", f"| cell | mean {md(metric)} | 95% CI | n |", "| --- | ---: | ---: | ---: |"]
        for cell in answer["cells"]:
            est = cell["estimate"]
            lines.append(f"| {md(cell['cell'])} | {fmt(est['mean'])} | {fmt_ci(est['ci95'])} | {est['n']} |")
    lines += ["", *curves_markdown(answer)]
    for name, section_lines in (("diffusion", diffusion_markdown), ("ensemble", ensemble_markdown)):
        if answer.get(name):
            lines += ["", *section_lines(answer[name])]
            while lines[-1] == "":
                lines.pop()
    if answer.get("ensemble"):
        lines += picture_lines(answer, "ensemble", "ensemble scores and weights")
    if not answer.get("diffusion"):
        lines += ["", *reconstructions_markdown(answer)]
    lines += ["", "## Importances", ""]
    lines += importances_markdown(answer["importances"])
    lines += picture_lines(answer, "importances", "importances with their bootstrap ranges")
    pareto = answer.get("pareto")
    if pareto:
        names = [md(o["metric"]) for o in pareto["objectives"]]
        lines += ["", "## Pareto front", "",
                  (f"{len(pareto['front'])} non-dominated of {pareto['complete']} complete trials (no other trial is at "
                   "least as good on every objective and better on one; Optuna's `study.best_trials`)."), "",
                  "| # | " + " | ".join(f"{n} ({'min' if o['direction'] == 'minimize' else 'max'})" for n, o in zip(names, pareto["objectives"]))
                  + " | params |", "| ---: | " + " | ".join("---:" for _ in names) + " | --- |"]
        for t in pareto["front"]:
            lines.append(f"| {t['number']} | " + " | ".join(fmt_objective(v) for v in t["values"]) + f" | {md(t['cell'])} |")
        lines += picture_lines(answer, "pareto", "every complete trial on the first two objectives, the front joined")
    best = answer["best"]
    lines += ["", "## Best configuration", ""]
    if best:
        label = f"trial {best['trial']}, " if best.get("trial") is not None else ""
        est = best["estimate"]
        lines.append(f"{md_code(best['cell'])} ({label}mean {md(metric)} {fmt(est['mean'])} {fmt_ci(est['ci95'])} over {est['n']} seed(s)).")
        runner = best["runner_up"]
        if runner and "difference" in runner:
            diff = runner["difference"]
            lines.append(
                f"Against the runner-up {md_code(runner['cell'])}: paired difference {fmt(diff['mean'])} "
                f"{fmt_ci(diff['ci95'])} over {diff['n']} seed(s)."
            )
        elif runner:
            lines.append(f"Runner-up: {md(runner['cell'])} with {md(metric)} {fmt(runner['value'])}.")
        if best.get("weights"):
            lines.append("Weights: " + ", ".join(f"{w:.4f}" for w in best["weights"]) + ".")
        if best.get("note"):
            lines.append(f"Note: {md(best['note'])}.")
        if best.get("study_file"):
            fence = md_fence(best["study_file"])
            lines += ["", f"Save as {md_code(best['file_name'])} and retrain with {md_code(best['command'])}:", "",
                      f"{fence}yaml", best["study_file"].rstrip(), fence]
    elif pareto:
        lines.append("Several objectives: no single best; each trial on the Pareto front above is a best trade-off.")
    else:
        lines.append("No complete trial yet.")
    heads = [o["metric"] for o in objectives]
    lines += ["", "## Trials", "", f"| # | cell | seed | state | {' | '.join(md(h) for h in heads)} | duration | MLflow run |",
              "| ---: | --- | ---: | --- | " + " | ".join("---:" for _ in heads) + " | ---: | --- |"]
    for t in answer["trials"]:
        link = f"[{md(t['run_id'][:8])}]({md_url(t['run_url'])})" if t["run_url"] else md(t["run_id"] or "")
        values = " | ".join(fmt(v) for v in trial_values(t, len(heads)))
        lines.append(
            f"| {t['number']} | {md(t['cell'])} | {t['seed']} | {t['state']} | {values} | {fmt_duration(t['duration_s'])} | {link} |"
        )
    return "\n".join(lines) + "\n"


# Markdown's inline syntax, escaped wherever a study's own text lands (its name, description, factor
# names, levels, cells, labels, notes): `\\` `` ` `` `*` `[` `]` `|` (table cells) `~` (strikethrough),
# and `_` where it could open or close emphasis (GFM never emphasises inside a word: `learning_rate`
# stays as it is). HTML's `<`, `>` and `&` become entities, so `<script>` or `<img onerror=...>` in a
# study's description shows as text wherever the Markdown is rendered.
_MD_ACTIVE = re.compile(r"[\\`*\[\]|~]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
_MD_BLOCK_START = re.compile(r"^(?:[#+=-]|\d+(?=[.)]))")  # a heading, list item, setext line, ordered item


def md(text: Any) -> str:
    """Study-provided text for one line of Markdown (a cell, a heading, a sentence): inert, newlines as spaces."""
    plain = " ".join(str(text).split("\n"))
    plain = plain.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_ACTIVE.sub(lambda match: "\\" + match.group(0), plain)


def md_block(text: str) -> str:
    """Study-provided text of several lines (the description): each line inert, as in `md`, and none
    starting a block (a heading, a list, a quote, indented code); blank lines still separate paragraphs."""
    lines = []
    for raw in text.splitlines():
        line = md(raw.strip())
        start = _MD_BLOCK_START.match(line)
        if start is not None:  # `\\#`, `\\-`, ...; an ordered item's digits keep their place: `1\\.`
            cut = start.end() if start.group(0).isdigit() else 0
            line = f"{line[:cut]}\\{line[cut:]}"
        lines.append(line)
    return "\n".join(lines)


def md_code(text: Any, *, table: bool = False) -> str:
    """Text as a code span: shown as it is (HTML too), with a fence of more backticks than it holds.

    In a table cell (`table=True`) a `|` would still end the cell, so it is escaped there (GFM
    reads `\\|` as `|` even inside a code span).
    """
    plain = " ".join(str(text).split("\n"))
    longest = max((len(run) for run in re.findall(r"`+", plain)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if plain.startswith("`") or plain.endswith("`") else ""
    if table:
        plain = plain.replace("|", "\\|")
    return f"{fence}{pad}{plain}{pad}{fence}"


def md_fence(text: str) -> str:
    """A code block's fence that no line of `text` can close: more backticks than its longest run, at least 3."""
    return "`" * max(3, max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)


def md_url(url: str) -> str:
    """A link's destination that no character of it can end early: spaces, parentheses, brackets and `|` %-escaped."""
    return re.sub(r"[\s()<>|\[\]\\]", lambda match: f"%{ord(match.group(0)):02X}", url)


def picture_lines(answer: dict[str, Any], name: str, alt: str) -> list[str]:
    """A Markdown image link to one of the report's PNGs, when it was written beside the Markdown."""
    file = (answer.get("pictures") or {}).get(name)
    return ["", f"![{alt}]({file})"] if file else []


def final_epochs(answer: dict[str, Any]) -> list[dict[str, Any]]:
    """Per shown variant, each curve metric at its last epoch: the mean over the seeds that reached it."""
    metrics = list(curve_styles(answer))
    rows = []
    for cell, curves in answer["curves"].items():
        last = {m: (curves[m]["epochs"][-1], curves[m]["mean"][-1], curves[m]["n"][-1])
                for m in metrics if m in curves and curves[m]["epochs"]}
        if last:
            rows.append({
                "cell": cell,
                "epoch": max(epoch for epoch, _, _ in last.values()),
                "seeds": max(n for _, _, n in last.values()),
                "values": {m: value for m, (_, value, _) in last.items()},
            })
    return rows


def curves_markdown(answer: dict[str, Any]) -> list[str]:
    """The learning curves' Markdown lines: the final epoch of every curve per variant, and the chart's PNG."""
    lines = ["## Learning curves", ""]
    rows = final_epochs(answer)
    if not rows:
        absent = answer.get("curves_absent")
        return [*lines, f"No learning curves: {absent}." if absent else "No complete run has logged curves yet."]
    metrics = list(curve_styles(answer))
    lines += ["Final epoch, mean over seeds:", "", f"| cell | epoch | {' | '.join(md(m) for m in metrics)} | seeds |",
              "| --- | ---: | " + " | ".join("---:" for _ in metrics) + " | ---: |"]
    for row in rows:
        values = " | ".join(fmt(row["values"].get(m)) for m in metrics)
        lines.append(f"| {md(row['cell'])} | {row['epoch']} | {values} | {row['seeds']} |")
    shown = answer.get("shown_cells") or {}
    if shown and shown["shown"] < shown["of"]:
        lines += ["", f"The best {shown['shown']} of {shown['of']} variants (by mean {md(answer['objective']['metric'])}) are shown."]
    link = picture_lines(answer, "learning_curves", "learning curves: mean over seeds with a band from the lowest to the highest seed")
    if link:
        lines += [*link, "", f"{sentence(answer['methods']['band'])}. {sentence(curves_note(answer))}."]
    else:
        lines += ["", "The curves per epoch: the page, or `--format md --out DIR`, which writes `learning_curves.png` beside the Markdown."]
    return lines


def reconstructions_markdown(answer: dict[str, Any]) -> list[str]:
    """The reconstructions' Markdown lines: the picture when it was written, else the runs it would show."""
    title, alt, artifact = picture_words(answer)
    lines = [f"## {title}", ""]
    file = (answer.get("pictures") or {}).get("reconstructions")
    if file:
        return [*lines, f"![{alt}]({file})", "",
                "The same fixed validation images in every trial; each variant shows its median-seed run."]
    runs = answer["median_runs"]
    if not runs:
        return [*lines, "No complete run to show yet."]
    if "reconstructions" in (answer.get("pictures") or {}):  # looked for, but no run had a reconstructions/final.png
        return [*lines, f"No picture found in MLflow ({artifact})."]
    lines.append("Each variant's median-seed run (`--format md --out DIR` writes `reconstructions.png` beside the Markdown):")
    lines += [""] + [f"- {md(cell)}: trial {run['trial']}, seed {run['seed']} (median of {run['of']}), MLflow run {md(run['run_id'])}"
                     for cell, run in runs.items()]
    return lines


def picture_words(answer: dict[str, Any]) -> tuple[str, str, str]:
    """The per-variant picture's section title, alt text and MLflow artifact, by the study's task."""
    task = answer.get("task", "denoise")
    if task == "classify":
        return ("Predictions side by side", "each variant's predicted labels of the same validation images, and its confusion matrix",
                "predictions/final.png, predictions/confusion.png")
    if task == "regress":
        return ("Predictions side by side", "each variant's predicted against true validation targets", "predictions/regression.png")
    return ("Reconstructions side by side", "the same validation images: inputs and each variant's output", "reconstructions/final.png")


def importances_markdown(imp: dict[str, Any]) -> list[str]:
    """The importances section's Markdown lines: one table per objective, both evaluators side by side."""
    if not imp.get("computed"):
        return [f"Not computed: {md(imp['reason'])}."]
    lines: list[str] = []
    evaluators = imp["evaluators"]
    several = len(imp["objectives"]) > 1
    for objective in imp["objectives"]:
        if several:
            lines += [f"### {objective['direction']} {md_code(objective['metric'])}", ""]
        rows = importance_rows({"importances": imp}, objective)
        if rows:
            lines += ["| factor | " + " | ".join(f"{LABELS[e]} | range" for e in evaluators) + " |",
                      "| --- | " + " | ".join("---: | ---:" for _ in evaluators) + " |"]
        for row in rows:
            cells = []
            for e in evaluators:
                r = row.get(e)
                cells.append(f"{r['importance']:.3f} | {fmt_ci(r['range'], 3)}" if r else "- | -")
            lines.append(f"| {md_code(row['factor'], table=True)} | " + " | ".join(cells) + " |")
        for e in evaluators:
            if not objective[e].get("computed"):
                lines.append(f"\n{LABELS[e]} not computed: {md(objective[e]['reason'])}.")
        lines.append("")
    lines += [f"- {LABELS[e]}: {imp['methods'][e]}." for e in evaluators]
    lines += [f"- {md(note)}." for note in imp["notes"]]
    lines.append(f"- {imp['trials']} complete trials, {imp['resamples']} resamples.")
    return lines


def diffusion_settings(settings: dict[str, Any]) -> str:
    """A variant's chain settings in words: `T=4 steps of normal noise (magnitude 0.5), conditioned on t`."""
    if not settings:
        return ""
    conditioned = "conditioned on t" if settings.get("conditioned") else "not conditioned on t"
    steps = settings.get("steps")
    return (f"T={steps} step{'' if steps == 1 else 's'} of {settings.get('distribution')} noise (magnitude "
            f"{settings.get('magnitude')}), {conditioned}")


def diffusion_caption(variant: dict[str, Any], metric: str) -> str:
    """Which run a variant's pictures come from."""
    return (f"trial {variant['trial']}, seed {variant['seed']}, median of {variant['of']} seed(s); {metric} "
            f"{fmt(variant['value'])}")


def diffusion_markdown(section: dict[str, Any]) -> list[str]:
    """The diffusion section's Markdown lines: per variant its chain and samples, side by side."""
    lines = ["## Diffusion: reverse chains and samples from noise", "",
             f"Each variant's median-seed run. Chain: {section['about']['chain']}. Samples: {section['about']['samples']}.", ""]
    if not section["variants"]:
        return [*lines, "No complete run to show yet."]
    for variant in section["variants"]:
        lines += [f"### {md(variant['cell'])}", "", (f"{md(diffusion_caption(variant, section['metric']))}. "
                  f"{md(diffusion_settings(variant['settings']))}."), "", "| reverse chain (x_T ... x_0, clean) | samples from noise |",
                  "| --- | --- |"]
        cells = []
        for name, image in variant["images"].items():
            if image["file"]:
                cells.append(f"![{md(name)} of {md(variant['cell'])}]({md_url(image['file'])})")
            elif image["found"]:
                cells.append(md_code(image["uri"], table=True))
            else:
                cells.append(f"no {md(image['artifact'])} in run {md(variant['run_id'])}")
        lines += ["| " + " | ".join(cells) + " |", ""]
    if any(image["found"] and not image["file"] for v in section["variants"] for image in v["images"].values()):
        lines.append("Pictures named by MLflow artifact URI: `ablate report NAME --format md --out DIR` copies them into DIR.")
    return lines


def ensemble_intro(section: dict[str, Any]) -> str:
    """Where the ensemble's members and weights come from."""
    if section["source"] == "study":
        return (f"A weight study: the members are the {section['members']} best trials of study {md_code(section['study'])} "
                "(their saved models); the weights were searched on the validation split and every score below is from "
                f"{md_code(section['artifact'])} on the study's MLflow parent run.")
    members = f"{section['members']} member(s)" if section["members"] else "its ensemble.members members"
    return (f"Each trial trains {members} (seeds seed .. seed + members - 1) and searches their weights on the "
            f"validation split; per variant, {md_code(section['artifact'])} of its median-seed run.")


def ensemble_markdown(section: dict[str, Any]) -> list[str]:
    """The ensemble section's Markdown lines: per variant, the weights and every score on validation and test."""
    lines = ["## Ensemble: weights, members vs uniform vs searched", "", ensemble_intro(section), ""]
    if not section["variants"]:
        lines.append(f"No {md_code(section['artifact'])} found in MLflow" + (f" ({', '.join(md(m) for m in section['missing'])})" if section["missing"] else "") + ".")
        return lines
    for variant in section["variants"]:
        lines += [f"### {md(variant['cell'])}", "",
                  "| | what | weight | val_loss | val_mse | test_loss | test_mse |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for row in variant["rows"]:
            name = f"**{md(row['name'])}**" if row["kind"] == "best" else md(row["name"]) + (" (best member)" if row["chosen"] else "")
            weight = fmt(row["weight"]) if row["weight"] is not None else ""
            lines.append(f"| {name} | {md(row['label'])} | {weight} | " + " | ".join(fmt(row[k]) for k in ("val_loss", "val_mse", "test_loss", "test_mse")) + " |")
        search = variant["search"]
        lines += ["", (f"Loss: {md(variant['loss'])}; searched on {md(variant['searched_on'])} with {md(search.get('sampler'))} "
                       f"over {search.get('trials')} weight vectors; the weights sum to {variant['weights_sum']:.6f}. "
                       f"{md(sentence(variant['summary']))}."), ""]
    if section["missing"]:
        lines.append(f"No {md_code(section['artifact'])} for: {', '.join(md(m) for m in section['missing'])}.")
    return lines


def confirmation_markdown(answer: dict[str, Any]) -> list[str]:
    """A search's winner against the baseline: the exploratory and the confirmatory paired interval side by side."""
    found = [e for e in answer["effects"] if e.get("confirmation")]
    if not found:
        return []
    effect = found[0]
    c = effect["confirmation"]
    rows = [("exploratory (the search's own seeds)", c["exploratory"], None),
            ("confirmatory (fresh seeds)", c["confirmatory"], c["confirmatory"]["p_value"])]
    lines = [
        (f"The search's winner (trial {c['best_trial']}) against the baseline (each factor at the file's fixed setting), "
         f"re-run on seeds the search never used; best - baseline in {md_code(answer['objective']['metric'])}, paired by seed."),
        "",
        "| estimate | seeds | mean difference | 95% CI | n | p (t) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for label, est, p in rows:
        seeds = ", ".join(str(s) for s in est["seeds"]) or "-"
        lines.append(f"| {label} | {seeds} | {fmt(est['mean'])} | {fmt_ci(est['ci95'])} | {est['n']} | {fmt_p(p)} |")
    lines += [
        "",
        f"Winner's curse: {md(c['summary'])}.",
        f"Verdict on the fresh seeds: {md(effect['verdict'])}: {md(effect['note'])}.",
        f"Best: {md(_params_text(c['params']))}. Baseline: {md(_params_text(c['baseline']))}.",
    ]
    return lines


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={format_level(level)}" for name, level in params.items()) or "(no factor)"


def equivalence_text(effect: dict[str, Any]) -> str:
    """An effect's equivalence result in a table cell: `within ±margin` / `not shown (±margin)` / `-` without a margin."""
    eq = effect.get("equivalence")
    if not eq:
        return "-"
    return f"{'within' if eq.get('equivalent') else 'not shown'} ±{eq['margin']:g}"


def sequential_text(design: dict[str, Any]) -> str:
    """A sequential study's plan in the report's first line: seeds per cell and trials run against the fixed design."""
    seq = design["sequential"]
    return (f"{design['cells']} cell(s), seeds added until decided ({seq['min']} to {seq['max']} per cell): "
            f"{seq['trials_run']} trials run, against {seq['trials_fixed_max']} for {seq['max']} seeds everywhere")


def effects_absent(answer: dict[str, Any]) -> str:
    """Why a search design has no effects table."""
    if (answer.get("ensemble") or {}).get("source") == "study":
        return ("A weight study's trials are weight vectors over fixed members, not levels of factors, so there are no "
                "paired per-level effects: the ensemble section is its answer (the searched weights against the uniform "
                "average and the best single member, on the test split).")
    return (
        f"A {answer['design']['kind']} design samples its configurations instead of enumerating levels, so there are no "
        "paired per-level effects: the importances below say which factors matter, and the best trial"
        + (" (or the Pareto front)" if answer.get("pareto") else "")
        + " what to run next."
    )


def noise_floor_parts(answer: dict[str, Any]) -> list[tuple[str, bool]]:
    """The noise-floor sentence beside the effects, as (text, is code) parts for Markdown and HTML alike.

    With a floor (`ablate audit`): how far two runs of one trial with the same seed landed apart;
    without one, the command that measures it.
    """
    floor = answer.get("noise_floor")
    if not floor:
        return [("Noise floor: not measured; run ", False), (f"ablate audit {answer['study']}", True),
                (" to measure how far two runs with the same seed land apart on this machine.", False)]
    relative = f", relative {floor['relative']:.3g}" if floor.get("relative") is not None else ""
    switch = "on" if floor.get("deterministic") else "off"
    return [(
        f"Noise floor: two runs of trial {floor['trial']} with the same seed landed {floor['difference']:.3g} apart "
        f"in {floor['metric']} ({floor['original']:.6g} and {floor['rerun']:.6g}{relative}; deterministic ops {switch}, "
        f"{floor['backend']}, {floor['device']}, {str(floor.get('date', ''))[:10]}); effects smaller than this are "
        "within run-to-run noise." + (f" Note: {floor['note']}." if floor.get("note") else ""),
        False,
    )]


def baselines_sentence(answer: dict[str, Any]) -> str:
    """Which level each factor is compared against, and why."""
    design = answer["design"]
    chosen = set(design.get("baseline_chosen", []))
    parts = [md_code(f"{f}={format_level(level)}") + (" (--baseline)" if f in chosen else "") for f, level in design["baseline"].items()]
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


def to_html(
    answer: dict[str, Any], *, figures: dict[str, Any], reconstructions: Path | None, folder: Path | None = None
) -> str:
    """The self-contained page: plotly.js inline once, each chart as a div, the pictures as base64.

    `folder`: where the answer's diffusion pictures were copied (their `file` is relative to it).
    """
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(dashboards_dir())),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,  # a misspelt field fails the render instead of showing blank
    )
    environment.filters.update(fmt=fmt, fmt_ci=fmt_ci, fmt_p=fmt_p, fmt_level=format_level, fmt_duration=fmt_duration,
                               sentence=sentence)

    environment.globals.update(
        importance_rows=importance_rows, labels=LABELS, trial_values=trial_values,
        baselines_sentence=baselines_sentence, effects_absent=effects_absent, curves_note=curves_note,
        equivalence_text=equivalence_text, sequential_text=sequential_text,
        noise_floor_parts=noise_floor_parts,
        diffusion_settings=diffusion_settings, diffusion_caption=diffusion_caption,
    )
    inlined = {}
    for variant in (answer.get("diffusion") or {}).get("variants", []):
        for image in variant["images"].values():
            if image["file"] and folder is not None and (folder / image["file"]).is_file():
                inlined[image["file"]] = base64.b64encode((folder / image["file"]).read_bytes()).decode()
    charts = {
        name: figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"chart-{name}",
                             config={"displaylogo": False, "responsive": True})
        for name, figure in figures.items()
    }
    picture = base64.b64encode(reconstructions.read_bytes()).decode() if reconstructions else None
    return environment.get_template(TEMPLATE).render(
        a=answer,
        charts=charts,
        plotly_js=get_plotlyjs(),
        reconstructions=picture,
        picture_words=picture_words(answer),
        pictures=inlined,
        # Inside <script type="application/json"> only "</" could end the element early.
        answer_json=json.dumps(answer, default=str).replace("</", "<\\/"),
    )


def sentence(text: str) -> str:
    """The text with its first letter upper-cased (Jinja's `capitalize` would lower-case the rest)."""
    return text[:1].upper() + text[1:]


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table cell ('' when missing)."""
    return "" if value is None else f"{value:.{digits}f}"


def fmt_objective(value: float | None) -> str:
    """An objective's value: a count (such as `parameters`) as a whole number, anything else as `fmt`."""
    if value is not None and float(value).is_integer() and abs(value) >= 100:
        return f"{int(value):,}"
    return fmt(value)


def fmt_ci(ci: list[float] | tuple[float, float] | None, digits: int = 4) -> str:
    """An interval, or n/a."""
    return "n/a" if not ci else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def fmt_p(p: float | None) -> str:
    """A p-value with 2 significant digits, or n/a."""
    return "n/a" if p is None else f"{p:.2g}"




def fmt_duration(seconds: float | None) -> str:
    """Seconds as `12.3 s` or `4 min 05 s`."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"
