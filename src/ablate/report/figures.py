"""The report's pictures: interactive plotly charts for the page, and the same charts as static PNGs.

Every function takes the answer dict (see `ablate.report.answer`), so the page, the PNGs and the
JSON show the same numbers. PNGs are drawn with matplotlib (plotly's own PNG export needs Kaleido
and a Chrome), headless with the Agg backend.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ablate.analysis.importance import LABELS
from ablate.spec.levels import format_level

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
CURVE_STYLE = {"val_loss": "solid", "train_loss": "dash"}
EXTRA_STYLES = ("dot", "dashdot", "longdash")  # the objective's metric when it is another one (val_chain_loss)
MPL_STYLES = {"solid": "-", "dash": "--", "dot": ":", "dashdot": "-.", "longdash": (0, (8, 3))}
GRID_GAP, GRID_SCALE, GRID_ROWS = 2, 2, 3  # as `ablate.training.images.reconstruction_grid` draws final.png


# An ensemble's final.png has a fourth row: clean | noisy | best single member | ensemble.
FAMILY_ROWS = {"ensemble": (("best member", 2), ("ensemble", 3))}
# The pictures a classifier's and a regressor's runs log (`ablate.families.custom`), shown per variant.
TASK_PICTURES = {
    "classify": ("predictions/final.png", "predictions/confusion.png"),
    "regress": ("predictions/regression.png",),
}


def effects_figure(answer: dict[str, Any]) -> Any:
    """Forest plot: each level's paired difference from its baseline with the 95% interval."""
    rows = [e for e in answer["effects"] if e["difference"]["n"] > 0]
    labels = [f"{e['factor']}: {format_level(e['level'])} - {format_level(e['baseline'])}" for e in rows]
    means = [e["difference"]["mean"] for e in rows]
    ci = [e["difference"]["ci95"] for e in rows]
    plus = [hi - m if c else 0 for m, c in zip(means, ci) for hi in [c[1] if c else m]]
    minus = [m - lo if c else 0 for m, c in zip(means, ci) for lo in [c[0] if c else m]]
    figure = go.Figure(
        go.Scatter(
            x=means, y=labels, mode="markers",
            error_x={"type": "data", "array": plus, "arrayminus": minus, "thickness": 2},
            marker={"size": 10, "color": [_verdict_colour(e["verdict"]) for e in rows]},
            hovertext=[e["note"] for e in rows], hoverinfo="x+y+text",
        )
    )
    figure.add_vline(x=0, line_dash="dot", line_color="#555")
    metric = answer["objective"]["metric"]
    figure.update_layout(
        title=f"Paired difference of final {metric} from the baseline (95% t interval over seeds)",
        xaxis_title=f"difference in {metric}", yaxis={"autorange": "reversed"},
        height=160 + 40 * max(1, len(rows)), margin={"l": 10, "r": 10, "t": 50, "b": 40}, template="plotly_white",
    )
    return figure


def curve_styles(answer: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Metric -> (plotly dash, on the second y axis) for every metric the curves hold, in drawing order.

    `val_loss` solid and `train_loss` dashed on the loss axis; any other metric (the objective's,
    e.g. `val_chain_loss`) dotted, on the same axis when it is a loss, else on a second axis.
    """
    metrics = list(dict.fromkeys(m for curves in answer["curves"].values() for m in curves if m != "runs"))
    order = [m for m in ("val_loss", "train_loss") if m in metrics] + [m for m in metrics if m not in CURVE_STYLE]
    styles: dict[str, tuple[str, bool]] = {}
    extra = 0
    for metric in order:
        if metric in CURVE_STYLE:
            styles[metric] = (CURVE_STYLE[metric], False)
        else:
            styles[metric] = (EXTRA_STYLES[extra % len(EXTRA_STYLES)], not metric.endswith("_loss"))
            extra += 1
    return styles


def curves_note(answer: dict[str, Any]) -> str:
    """What each line style means, for the page and the Markdown."""
    names = {"solid": "solid", "dash": "dashed", "dot": "dotted", "dashdot": "dash-dotted", "longdash": "long-dashed"}
    parts = [f"{names[dash]}: {metric}" + (" (right axis)" if second else "")
             for metric, (dash, second) in curve_styles(answer).items()]
    return "; ".join(parts)


def curves_figure(answer: dict[str, Any]) -> Any:
    """Train (dashed) and validation (solid) loss per epoch of every variant, and the objective's
    metric when it is another one (dotted): mean and band over seeds."""
    styles = curve_styles(answer)
    second = any(on_second for _, on_second in styles.values())
    figure = make_subplots(specs=[[{"secondary_y": True}]]) if second else go.Figure()
    for index, (cell, curves) in enumerate(answer["curves"].items()):
        colour = PALETTE[index % len(PALETTE)]
        for metric, (dash, on_second) in styles.items():
            if metric not in curves or not curves[metric]["epochs"]:
                continue
            curve = curves[metric]
            name = f"{cell} {metric}"
            where = {"secondary_y": on_second} if second else {}
            figure.add_trace(go.Scatter(
                x=curve["epochs"] + curve["epochs"][::-1], y=curve["high"] + curve["low"][::-1],
                mode="lines", fill="toself", fillcolor=_rgba(colour, 0.15), line={"width": 0}, hoverinfo="skip",
                legendgroup=name, showlegend=False,
            ), **where)
            figure.add_trace(go.Scatter(
                x=curve["epochs"], y=curve["mean"], mode="lines+markers", name=name, legendgroup=name,
                line={"color": colour, "dash": dash},
            ), **where)
    figure.update_layout(
        title="Learning curves: mean over seeds, band from the lowest to the highest seed",
        xaxis={"title": "epoch", "dtick": 1}, yaxis_title="loss", height=480, template="plotly_white",
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
    )
    if second:
        figure.update_yaxes(title_text=", ".join(m for m, (_, s) in styles.items() if s), secondary_y=True)
    return figure


def importance_rows(answer: dict[str, Any], objective: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per param of one objective: each evaluator's importance and range (None where not computed).

    Sorted by the first computed evaluator's importance, then the other's (params that only
    PED-ANOVA ranks, conditional ones, come after those fANOVA ranks).
    """
    evaluators = [e for e in answer["importances"]["evaluators"] if objective.get(e, {}).get("computed")]
    rows: dict[str, dict[str, Any]] = {}
    for e in evaluators:
        for r in objective[e]["factors"]:
            rows.setdefault(r["factor"], {"factor": r["factor"]})[e] = r
    order = [lambda row, e=e: -(row[e]["importance"] if e in row else -1.0) for e in evaluators]
    return sorted(rows.values(), key=lambda row: tuple(key(row) for key in order))


def importances_figure(answer: dict[str, Any]) -> Any:
    """Bars of each evaluator's importance with the bootstrap range as error bars, one panel per objective."""
    imp = answer["importances"]
    objectives = imp["objectives"]
    figure = make_subplots(rows=len(objectives), cols=1, vertical_spacing=0.12 if len(objectives) > 1 else 0.0,
                           subplot_titles=[f"{o['direction']} {o['metric']}" for o in objectives] if len(objectives) > 1 else None)
    longest = 1
    for k, objective in enumerate(objectives, start=1):
        rows = importance_rows(answer, objective)
        longest = max(longest, len(rows))
        for index, evaluator in enumerate(imp["evaluators"]):
            shown = [r[evaluator] for r in rows if evaluator in r]
            if not shown:
                continue
            figure.add_trace(go.Bar(
                x=[r["importance"] for r in shown], y=[r["factor"] for r in shown], orientation="h",
                name=LABELS[evaluator], marker_color=PALETTE[index], legendgroup=evaluator, showlegend=k == 1,
                # a point value outside its bootstrap range gets a one-sided bar, not a negative one
                error_x={"type": "data", "array": [max(0.0, r["range"][1] - r["importance"]) if r["range"] else 0 for r in shown],
                         "arrayminus": [max(0.0, r["importance"] - r["range"][0]) if r["range"] else 0 for r in shown]},
            ), row=k, col=1)
        figure.update_yaxes(autorange="reversed", categoryorder="array", categoryarray=[r["factor"] for r in rows], row=k, col=1)
        figure.update_xaxes(range=[0, 1.05], row=k, col=1)
    figure.update_xaxes(title_text="share of the importance (normalised to sum 1)", row=len(objectives), col=1)
    figure.update_layout(
        title=f"Importances: fANOVA and PED-ANOVA (range over {imp['resamples']} bootstrap resamples)", barmode="group",
        height=140 + len(objectives) * (60 + 50 * longest), template="plotly_white", margin={"l": 10, "r": 10, "t": 60, "b": 40},
    )
    return figure


def pareto_figure(answer: dict[str, Any]) -> Any:
    """Every complete trial on the first two objectives; the non-dominated ones highlighted and joined."""
    pareto = answer["pareto"]
    (x_obj, _), names = pareto["objectives"][:2], _objective_labels(pareto["objectives"][:2])
    dominated = [t for t in pareto["trials"] if not t["on_front"]]
    front = pareto["front"]
    figure = go.Figure()
    figure.add_trace(go.Scatter(
        x=[t["values"][0] for t in dominated], y=[t["values"][1] for t in dominated], mode="markers", name="dominated",
        marker={"color": "#9aa3ab", "size": 8}, text=[f"trial {t['number']}" for t in dominated], hoverinfo="x+y+text",
    ))
    figure.add_trace(go.Scatter(
        x=[t["values"][0] for t in front], y=[t["values"][1] for t in front], mode="lines+markers", name="Pareto front",
        line={"color": PALETTE[1], "shape": "hv" if x_obj["direction"] == "minimize" else "vh"},
        marker={"color": PALETTE[1], "size": 11, "symbol": "diamond"},
        text=[f"trial {t['number']}: {t['cell']}" for t in front], hoverinfo="x+y+text",
    ))
    more = f" (first two of {len(pareto['objectives'])} objectives)" if len(pareto["objectives"]) > 2 else ""
    figure.update_layout(
        title=f"Pareto front: {len(front)} non-dominated of {pareto['complete']} complete trials{more}",
        xaxis_title=names[0], yaxis_title=names[1], height=480, template="plotly_white",
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
    )
    return figure


def ensemble_bars(variant: dict[str, Any]) -> list[dict[str, Any]]:
    """The bars of one ensemble variant: each member, the uniform average and the searched weights."""
    return [r for r in variant["rows"] if r["kind"] in ("member", "uniform", "best")]


def _score_range(variants: list[dict[str, Any]], loss: str) -> list[float] | None:
    """A y range around the scores: the differences that matter are small next to the values."""
    values = [r[f"{split}_{loss}"] for v in variants for r in ensemble_bars(v) for split in ("val", "test")
              if isinstance(r.get(f"{split}_{loss}"), (int, float))]
    if not values:
        return None
    low, high = min(values), max(values)
    pad = max((high - low) * 0.15, abs(high) * 1e-3, 1e-9)
    return [max(0.0, low - pad) if low >= 0 else low - pad, high + pad]


def ensemble_figure(answer: dict[str, Any], loss: str = "loss") -> Any:
    """Per variant: validation and test scores of each member, the uniform average and the searched
    weights (grouped bars), and the searched weight of each member."""
    variants = answer["ensemble"]["variants"]
    several = len(variants) > 1
    titles = [t for v in variants for t in (f"{v['cell']}: {v['loss']} (lower is better)" if several else
                                            f"{v['loss']} (lower is better)", "searched weight of each member")]
    height = 140 + 330 * len(variants)
    figure = make_subplots(rows=len(variants), cols=2, column_widths=[0.68, 0.32], subplot_titles=titles,
                           vertical_spacing=min(0.3, 110 / height) if several else 0.0, horizontal_spacing=0.1)
    for k, variant in enumerate(variants, start=1):
        bars = ensemble_bars(variant)
        names = [r["name"] for r in bars]
        for index, (split, label) in enumerate((("val", "validation"), ("test", "test"))):
            values = [r.get(f"{split}_{loss}") for r in bars]
            figure.add_trace(go.Bar(
                x=names, y=values, name=f"{label} {loss}", marker_color=PALETTE[index], legendgroup=split,
                showlegend=k == 1, text=[f"{v:.4f}" if isinstance(v, (int, float)) else "" for v in values],
                textposition="outside", cliponaxis=False, hovertext=[r["label"] for r in bars], hoverinfo="x+y+text",
            ), row=k, col=1)
        members = [r for r in bars if r["kind"] == "member"]
        figure.add_trace(go.Bar(
            x=[r["name"] for r in members], y=[r["weight"] for r in members], name="weight", marker_color=PALETTE[2],
            showlegend=k == 1, text=[f"{r['weight']:.3f}" for r in members], textposition="outside", cliponaxis=False,
            hovertext=[r["label"] for r in members], hoverinfo="x+y+text",
        ), row=k, col=2)
        score_range = _score_range([variant], loss)
        if score_range:
            figure.update_yaxes(range=score_range, title_text=f"{variant['loss']} (axis not from 0)", row=k, col=1)
        figure.update_yaxes(range=[0, 1.1], row=k, col=2)
    figure.update_layout(
        title="Ensemble: each member, the uniform average and the searched weights, on validation and test",
        barmode="group", height=height, template="plotly_white",
        margin={"l": 10, "r": 10, "t": 80, "b": 40}, legend={"orientation": "h", "y": -0.08},
    )
    return figure


def _ensemble_png(answer: dict[str, Any], path: Path, plt: Any, loss: str = "loss") -> Path:
    variants = answer["ensemble"]["variants"]
    fig, axes = plt.subplots(len(variants), 2, squeeze=False, figsize=(10, 0.6 + 3.4 * len(variants)),
                             gridspec_kw={"width_ratios": [2.2, 1]})
    for (left, right), variant in zip(axes, variants):
        bars = ensemble_bars(variant)
        x = np.arange(len(bars))
        for index, (split, label) in enumerate((("val", "validation"), ("test", "test"))):
            values = [r.get(f"{split}_{loss}") for r in bars]
            drawn = left.bar(x + (index - 0.5) * 0.38, [v if v is not None else 0 for v in values], width=0.38,
                             color=PALETTE[index], label=f"{label} {loss}")
            left.bar_label(drawn, labels=[f"{v:.4f}" if v is not None else "" for v in values], fontsize=6, rotation=90, padding=2)
        left.set_xticks(x, [r["name"] for r in bars], rotation=20, ha="right", fontsize=8)
        score_range = _score_range([variant], loss)
        if score_range:
            low, high = score_range
            left.set_ylim(low, high + (high - low) * 0.25)
        left.set_ylabel(f"{variant['loss']} (axis not from 0)", fontsize=8)
        left.set_title(f"{variant['cell']}: lower is better", fontsize=9)
        left.legend(fontsize=7, loc="upper left")
        members = [r for r in bars if r["kind"] == "member"]
        drawn = right.bar([r["name"] for r in members], [r["weight"] for r in members], color=PALETTE[2])
        right.bar_label(drawn, labels=[f"{r['weight']:.3f}" for r in members], fontsize=7)
        right.set_ylim(0, 1.1)
        right.tick_params(axis="x", labelrotation=20, labelsize=8)
        right.set_title("searched weight of each member", fontsize=9)
    return _save(fig, path)


def write_pngs(answer: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Static PNGs of the effects, the learning curves, the importances, the Pareto front and the
    ensemble scores (those the answer has); returns name -> path."""
    import matplotlib  # only for PNGs; the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")  # headless: no display on servers and in CI
    import matplotlib.pyplot as plt

    written: dict[str, Path] = {}
    rows = [e for e in answer["effects"] if e["difference"]["n"] > 0]
    if rows:
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(rows)))
        for y, e in enumerate(rows):
            d = e["difference"]
            if d["ci95"]:
                ax.plot(d["ci95"], [y, y], color=_verdict_colour(e["verdict"]), linewidth=2)
            ax.plot([d["mean"]], [y], "o", color=_verdict_colour(e["verdict"]))
        ax.axvline(0, linestyle=":", color="#555")
        ax.set_yticks(range(len(rows)), [f"{e['factor']}: {format_level(e['level'])} - {format_level(e['baseline'])}" for e in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"paired difference in final {answer['objective']['metric']} (95% t interval)")
        written["effects"] = _save(fig, folder / "effects.png")
    if answer["curves"]:
        fig, ax = plt.subplots(figsize=(8, 5))
        styles = curve_styles(answer)
        right = ax.twinx() if any(on_second for _, on_second in styles.values()) else None
        for index, (cell, curves) in enumerate(answer["curves"].items()):
            colour = PALETTE[index % len(PALETTE)]
            for metric, (dash, on_second) in styles.items():
                curve = curves.get(metric)
                axis = right if on_second and right is not None else ax
                if curve and curve["epochs"]:
                    axis.fill_between(curve["epochs"], curve["low"], curve["high"], color=colour, alpha=0.15, linewidth=0)
                    axis.plot(curve["epochs"], curve["mean"], linestyle=MPL_STYLES[dash], marker="o", color=colour,
                              label=f"{cell} {metric}")
        # epochs are whole numbers; the default locator is a MaxNLocator, which takes `integer`
        ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # stub: Locator.set_params() lacks the runtime's **kwargs
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        handles, labels = ax.get_legend_handles_labels()
        if right is not None:
            right.set_ylabel(", ".join(m for m, (_, s) in styles.items() if s))
            more = right.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels, fontsize=8)
        ax.set_title("mean over seeds; band: lowest to highest seed")
        written["learning_curves"] = _save(fig, folder / "learning_curves.png")
    if answer["importances"].get("computed"):
        written["importances"] = _importances_png(answer, folder / "importances.png", plt)
    if answer.get("pareto") and answer["pareto"]["trials"]:
        written["pareto"] = _pareto_png(answer, folder / "pareto.png", plt)
    if answer.get("ensemble") and answer["ensemble"]["variants"]:
        written["ensemble"] = _ensemble_png(answer, folder / "ensemble.png", plt)
    plt.close("all")
    return written


def _importances_png(answer: dict[str, Any], path: Path, plt: Any) -> Path:
    imp = answer["importances"]
    panels = [(o, importance_rows(answer, o)) for o in imp["objectives"]]
    fig, axes = plt.subplots(len(panels), 1, squeeze=False,
                             figsize=(8, sum(0.9 + 0.45 * max(1, len(rows)) for _, rows in panels)))
    width = 0.8 / max(1, len(imp["evaluators"]))
    for ax, (objective, rows) in zip(axes[:, 0], panels):
        for index, evaluator in enumerate(imp["evaluators"]):
            ys = [y + index * width for y, r in enumerate(rows) if evaluator in r]
            shown = [r[evaluator] for r in rows if evaluator in r]
            if not shown:
                continue
            values = [r["importance"] for r in shown]
            errors = [[v - r["range"][0] if r["range"] else 0 for v, r in zip(values, shown)],
                      [r["range"][1] - v if r["range"] else 0 for v, r in zip(values, shown)]]
            ax.barh(ys, values, height=width, xerr=np.clip(errors, 0, None), color=PALETTE[index], label=LABELS[evaluator])
        ax.set_yticks([y + width * (len(imp["evaluators"]) - 1) / 2 for y in range(len(rows))], [r["factor"] for r in rows])
        ax.invert_yaxis()
        ax.set_xlim(0, 1.05)
        ax.set_title(f"{objective['direction']} {objective['metric']}", fontsize=9)
        if rows:
            ax.legend(fontsize=8, loc="lower right")
    axes[-1, 0].set_xlabel(f"importance (normalised to sum 1; bars: range over {imp['resamples']} bootstrap resamples)")
    return _save(fig, path)


def _pareto_png(answer: dict[str, Any], path: Path, plt: Any) -> Path:
    pareto = answer["pareto"]
    names = _objective_labels(pareto["objectives"][:2])
    fig, ax = plt.subplots(figsize=(7, 5))
    dominated = [t for t in pareto["trials"] if not t["on_front"]]
    ax.scatter([t["values"][0] for t in dominated], [t["values"][1] for t in dominated], color="#9aa3ab", label="dominated")
    front = pareto["front"]
    step = "post" if pareto["objectives"][0]["direction"] == "minimize" else "pre"
    ax.step([t["values"][0] for t in front], [t["values"][1] for t in front], where=step, color=PALETTE[1], linewidth=1)
    ax.scatter([t["values"][0] for t in front], [t["values"][1] for t in front], color=PALETTE[1], marker="D",
               label="Pareto front", zorder=3)
    for t in front:
        ax.annotate(f"#{t['number']}", (t["values"][0], t["values"][1]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.legend(fontsize=8)
    ax.set_title(f"{len(front)} non-dominated of {pareto['complete']} complete trials", fontsize=9)
    return _save(fig, path)


def _objective_labels(objectives: list[dict[str, str]]) -> list[str]:
    return [f"{o['metric']} ({'lower' if o['direction'] == 'minimize' else 'higher'} is better)" for o in objectives]


INPUT_ROWS = (("clean", 0), ("noisy input", 1))  # the rows of final.png every variant feeds its model
LABEL_CHAR_PX, LABEL_LINE_PX, ROW_GAP_PX, TITLE_PX = 7, 14, 10, 30  # the reconstruction picture's layout


def reconstruction_rows(answer: dict[str, Any], grids: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """The reconstruction picture's rows, top to bottom: (label, pixels), cut from each variant's final.png.

    An input row (clean, noisy) that every variant shares is shown once, at the top; one that
    differs between variants (a study that varies `data.noise.*`) is shown in each variant's own
    block, just above that variant's reconstruction, so no output is seen against another
    variant's input.

    Args:
        answer: the answer (its `median_runs`, `family` and `objective`).
        grids: cell -> the grey pixels of its median-seed run's `reconstructions/final.png`.
    """
    cells = [cell for cell in answer["median_runs"] if cell in grids]
    if not cells:
        return []
    reconstruct = answer.get("task") == "reconstruct"  # a custom autoencoder: input, output (no noisy row)
    inputs = (("input", 0),) if reconstruct else INPUT_ROWS
    own = (("", 1),) if reconstruct else FAMILY_ROWS.get(answer.get("family", "unet"), (("", 2),))  # the outputs, named
    count = 1 + max(index for _, index in own)
    parts = {cell: split_rows(grids[cell], count) for cell in cells}
    first = parts[cells[0]]
    shared = [(name, index) for name, index in inputs
              if all(np.array_equal(parts[cell][index], first[index]) for cell in cells)]
    rows = [(name, first[index]) for name, index in shared]
    metric = answer["objective"]["metric"]
    for cell in cells:
        run = answer["median_runs"][cell]
        rows += [(f"{cell}: {name}", parts[cell][index]) for name, index in inputs if (name, index) not in shared]
        for name, index in own:
            label = f"{cell}: {name or 'reconstruction'}\n(seed {run['seed']}, median of {run['of']}; {metric} {run['value']:.4f})"
            rows.append((label, parts[cell][index]))
    return rows


def predictions_png(answer: dict[str, Any], images: dict[str, dict[str, Path]], path: Path) -> Path | None:
    """One picture, a row per variant (its median-seed run): the task's pictures (`TASK_PICTURES`) side by side.

    Args:
        images: cell -> artifact path -> the downloaded PNG (missing pictures left out).
    """
    import matplotlib  # only for PNGs; the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    names = TASK_PICTURES.get(str(answer.get("task")), ())
    cells = [cell for cell in answer["median_runs"] if images.get(cell)]
    if not cells or not names:
        return None
    metric = answer["objective"]["metric"]
    loaded = {cell: [np.asarray(Image.open(images[cell][n]).convert("RGB")) if n in images[cell] else None for n in names] for cell in cells}
    widths = [max((pic.shape[1] for pics in loaded.values() if (pic := pics[i]) is not None), default=1) for i in range(len(names))]
    heights = [max(p.shape[0] for p in pics if p is not None) for pics in loaded.values()]
    dpi = 100
    fig, axes = plt.subplots(
        len(cells), len(names), squeeze=False, dpi=dpi, gridspec_kw={"width_ratios": widths, "height_ratios": heights},
        figsize=(sum(widths) / dpi + 0.5, sum(heights) / dpi + 0.5 * len(cells)),
    )
    for row, cell in enumerate(cells):
        run = answer["median_runs"][cell]
        for column, picture in enumerate(loaded[cell]):
            axis = axes[row][column]
            axis.axis("off")
            if picture is not None:
                axis.imshow(picture)
            if column == 0:
                axis.set_title(f"{cell} (seed {run['seed']}, median of {run['of']}; {metric} {run['value']:.4f})", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def reconstructions_png(answer: dict[str, Any], images: dict[str, Path], path: Path) -> Path | None:
    """One picture of the same validation images: the inputs, then each variant's output (its median-seed run).

    The rows are `reconstruction_rows`; their pixels are placed unscaled (as MLflow holds them),
    with the labels in a margin on the left, so the picture shows exactly what each run logged.
    """
    import matplotlib  # only for PNGs; the Agg backend must be chosen before pyplot loads

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    grids = {cell: np.asarray(Image.open(file).convert("L")) for cell, file in images.items()}
    rows = reconstruction_rows(answer, grids)
    if not rows:
        return None
    family = answer.get("family", "unet")
    what = "best single member and ensemble" if family == "ensemble" else "reconstruction"
    title = f"same validation images: inputs, and each variant's {what}"
    lines = [line for label, _ in rows for line in label.split("\n")]
    margin = LABEL_CHAR_PX * max(len(line) for line in lines) + 2 * ROW_GAP_PX
    # The title is set a point larger than the labels: a pixel more per character, and a margin.
    width = max(margin + max(p.shape[1] for _, p in rows) + ROW_GAP_PX, (LABEL_CHAR_PX + 1) * len(title) + 2 * ROW_GAP_PX)
    pitches = [max(p.shape[0], LABEL_LINE_PX * (label.count("\n") + 1)) + ROW_GAP_PX for label, p in rows]
    canvas = np.full((TITLE_PX + sum(pitches), width), 255, dtype=np.uint8)
    dpi = 110
    fig = plt.figure(figsize=(width / dpi, canvas.shape[0] / dpi), dpi=dpi)
    top = TITLE_PX
    for (label, pixels), pitch in zip(rows, pitches):
        canvas[top : top + pixels.shape[0], margin : margin + pixels.shape[1]] = pixels
        centre = top + pixels.shape[0] / 2
        fig.text((margin - ROW_GAP_PX) / width, 1 - centre / canvas.shape[0], label, ha="right", va="center", fontsize=8)
        top += pitch
    fig.figimage(np.repeat(canvas[..., None], 3, axis=2), 0, 0, origin="upper")  # RGB: no colormap rounding
    fig.text(0.5, 1 - (TITLE_PX / 2) / canvas.shape[0], title, ha="center", va="center", fontsize=9)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def split_rows(grid: np.ndarray, rows: int = GRID_ROWS, gap: int = GRID_GAP, scale: int = GRID_SCALE) -> list[np.ndarray]:
    """Cut a reconstruction grid (rows of images separated by white gaps) back into its rows."""
    pitch = (grid.shape[0] // scale + gap) // rows  # one row plus its gap, in unscaled pixels
    height = pitch - gap
    return [grid[r * pitch * scale : (r * pitch + height) * scale] for r in range(rows)]


def _save(fig: Any, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=110)
    path.write_bytes(buffer.getvalue())
    return path


def _verdict_colour(verdict: str) -> str:
    return {"better": "#2ca02c", "worse": "#d62728", "equivalent": "#1f77b4", "unclear": "#7f7f7f"}.get(verdict, "#bbbbbb")


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"

