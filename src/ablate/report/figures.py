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

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
CURVE_STYLE = {"val_loss": "solid", "train_loss": "dash"}
GRID_GAP, GRID_SCALE, GRID_ROWS = 2, 2, 3  # as `ablate.images.reconstruction_grid` draws final.png


def effects_figure(answer: dict[str, Any]) -> Any:
    """Forest plot: each level's paired difference from its baseline with the 95% interval."""
    import plotly.graph_objects as go

    rows = [e for e in answer["effects"] if e["difference"]["n"] > 0]
    labels = [f"{e['factor']}: {_level(e['level'])} - {_level(e['baseline'])}" for e in rows]
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
    )  # fmt: skip
    figure.add_vline(x=0, line_dash="dot", line_color="#555")
    metric = answer["objective"]["metric"]
    figure.update_layout(
        title=f"Paired difference of final {metric} from the baseline (95% t interval over seeds)",
        xaxis_title=f"difference in {metric}", yaxis={"autorange": "reversed"},
        height=160 + 40 * max(1, len(rows)), margin={"l": 10, "r": 10, "t": 50, "b": 40}, template="plotly_white",
    )  # fmt: skip
    return figure


def curves_figure(answer: dict[str, Any]) -> Any:
    """Train (dashed) and validation (solid) loss per epoch of every variant: mean and band over seeds."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for index, (cell, curves) in enumerate(answer["curves"].items()):
        colour = PALETTE[index % len(PALETTE)]
        for metric in ("val_loss", "train_loss"):
            if metric not in curves or not curves[metric]["epochs"]:
                continue
            curve = curves[metric]
            name = f"{cell} {metric}"
            figure.add_trace(go.Scatter(
                x=curve["epochs"] + curve["epochs"][::-1], y=curve["high"] + curve["low"][::-1],
                mode="lines", fill="toself", fillcolor=_rgba(colour, 0.15), line={"width": 0}, hoverinfo="skip",
                legendgroup=name, showlegend=False,
            ))  # fmt: skip
            figure.add_trace(go.Scatter(
                x=curve["epochs"], y=curve["mean"], mode="lines+markers", name=name, legendgroup=name,
                line={"color": colour, "dash": CURVE_STYLE[metric]},
            ))  # fmt: skip
    figure.update_layout(
        title="Learning curves: mean over seeds, band from the lowest to the highest seed",
        xaxis={"title": "epoch", "dtick": 1}, yaxis_title="loss", height=480, template="plotly_white",
        margin={"l": 10, "r": 10, "t": 50, "b": 40},
    )  # fmt: skip
    return figure


def importances_figure(answer: dict[str, Any]) -> Any:
    """Bars of fANOVA importance with the bootstrap range as error bars."""
    import plotly.graph_objects as go

    rows = answer["importances"]["factors"]
    figure = go.Figure(
        go.Bar(
            x=[r["importance"] for r in rows], y=[r["factor"] for r in rows], orientation="h",
            error_x={"type": "data", "array": [r["range"][1] - r["importance"] for r in rows],
                     "arrayminus": [r["importance"] - r["range"][0] for r in rows]},
        )
    )  # fmt: skip
    figure.update_layout(
        title=f"fANOVA importance (range over {answer['importances']['resamples']} bootstrap resamples)",
        xaxis={"range": [0, 1.05], "title": "share of the objective's variance"}, yaxis={"autorange": "reversed"},
        height=160 + 40 * len(rows), template="plotly_white", margin={"l": 10, "r": 10, "t": 50, "b": 40},
    )  # fmt: skip
    return figure


def write_pngs(answer: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Static PNGs of the effects, the learning curves and the importances; returns name -> path."""
    import matplotlib

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
        ax.set_yticks(range(len(rows)), [f"{e['factor']}: {_level(e['level'])} - {_level(e['baseline'])}" for e in rows])
        ax.invert_yaxis()
        ax.set_xlabel(f"paired difference in final {answer['objective']['metric']} (95% t interval)")
        written["effects"] = _save(fig, folder / "effects.png")
    if answer["curves"]:
        fig, ax = plt.subplots(figsize=(8, 5))
        for index, (cell, curves) in enumerate(answer["curves"].items()):
            colour = PALETTE[index % len(PALETTE)]
            for metric, style in (("val_loss", "-"), ("train_loss", "--")):
                curve = curves.get(metric)
                if curve and curve["epochs"]:
                    ax.fill_between(curve["epochs"], curve["low"], curve["high"], color=colour, alpha=0.15, linewidth=0)
                    ax.plot(curve["epochs"], curve["mean"], style, marker="o", color=colour, label=f"{cell} {metric}")
        ax.xaxis.get_major_locator().set_params(integer=True)  # epochs are whole numbers
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.legend(fontsize=8)
        ax.set_title("mean over seeds; band: lowest to highest seed")
        written["learning_curves"] = _save(fig, folder / "learning_curves.png")
    if answer["importances"].get("computed"):
        rows_i = answer["importances"]["factors"]
        fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(rows_i)))
        values = [r["importance"] for r in rows_i]
        errors = [[v - r["range"][0] for v, r in zip(values, rows_i)], [r["range"][1] - v for v, r in zip(values, rows_i)]]
        ax.barh([r["factor"] for r in rows_i], values, xerr=np.clip(errors, 0, None))
        ax.invert_yaxis()
        ax.set_xlim(0, 1.05)
        ax.set_xlabel("fANOVA importance (bootstrap range)")
        written["importances"] = _save(fig, folder / "importances.png")
    plt.close("all")
    return written


def reconstructions_png(answer: dict[str, Any], images: dict[str, Path], path: Path) -> Path | None:
    """One picture: clean | noisy, then each variant's reconstruction (its median-seed run).

    Every trial draws the same fixed validation images, so the clean and noisy rows are taken
    from the first variant and only the reconstructed row from each.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    cells = [cell for cell in answer["median_runs"] if cell in images]
    if not cells:
        return None
    grids = {cell: np.asarray(Image.open(images[cell]).convert("L")) for cell in cells}
    clean, noisy, _ = split_rows(grids[cells[0]])
    rows = [("clean", clean), ("noisy input", noisy)]
    metric = answer["objective"]["metric"]
    for cell in cells:
        run = answer["median_runs"][cell]
        label = f"{cell}\n(seed {run['seed']}, median of {run['of']}; {metric} {run['value']:.4f})"
        rows.append((label, split_rows(grids[cell])[2]))
    height, width = clean.shape
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(6, width / 60 + 3), 0.35 + len(rows) * max(0.9, height / 60)))
    for ax, (label, picture) in zip(np.atleast_1d(axes), rows):
        ax.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("same validation images: clean, noisy, and each variant's reconstruction", fontsize=9)
    out = _save(fig, path)
    plt.close("all")
    return out


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
    return {"better": "#2ca02c", "worse": "#d62728", "unclear": "#7f7f7f"}.get(verdict, "#bbbbbb")


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _level(level: Any) -> str:
    return "null" if level is None else str(level).lower() if isinstance(level, bool) else str(level)
