"""Evaluation plots of a risk model (matplotlib figures, headless). No Dagster import."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # not pyplot: no global registry, no display, nothing leaks
from sklearn.metrics import precision_recall_curve, roc_curve


def _figure(width: float, height: float) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height))
    return fig, fig.subplots()


def markdown_table(frame: pd.DataFrame, columns: list[str], rows: int = 10) -> str:
    """The first `rows` rows of `frame` as a Markdown table (floats to 3 decimals, lists joined)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list | tuple | np.ndarray):
            return ", ".join(map(str, v))
        return str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    body = "".join(
        "| " + " | ".join(cell(v) for v in r) + " |\n"
        for r in frame[columns].head(rows).itertuples(index=False)
    )
    return head + body


def markdown_image(fig: Figure, title: str, dpi: int = 60) -> str:
    """The figure as a Markdown image with an embedded PNG (shown by the Dagster UI, offline)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return f"![{title}](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def evaluation_figures(
    y: np.ndarray, p: np.ndarray, contributions: np.ndarray, features: list[str]
) -> dict[str, Figure]:
    """ROC, precision-recall, calibration and SHAP summary (mean |contribution|) figures."""
    figs: dict[str, Figure] = {}
    fig, ax = _figure(5, 4)
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test period)")
    figs["roc.png"] = fig
    fig, ax = _figure(5, 4)
    prec, rec, _ = precision_recall_curve(y, p)
    ax.plot(rec, prec)
    ax.axhline(y.mean(), ls="--", color="grey")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test period)")
    figs["pr.png"] = fig
    fig, ax = _figure(5, 4)
    edges = np.linspace(0, 1, 11)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
    xs = [p[idx == b].mean() for b in range(10) if (idx == b).any()]
    ys = [y[idx == b].mean() for b in range(10) if (idx == b).any()]
    ax.plot(xs, ys, "o-")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="predicted", ylabel="observed", title="Calibration (test period)")
    figs["calibration.png"] = fig
    fig, ax = _figure(6, 6)
    imp = np.abs(contributions[:, :-1]).mean(axis=0)
    order = np.argsort(imp)[-15:]
    ax.barh(np.array(features)[order], imp[order])
    ax.set(xlabel="mean |SHAP contribution| (log-odds)", title="Drivers of risk (SHAP)")
    fig.tight_layout()
    figs["shap_summary.png"] = fig
    return figs


def heatmap(frame: pd.DataFrame, title: str, colorbar: str) -> Figure:
    """A rows x columns heatmap of a numeric frame, with its values written in the cells."""
    fig, ax = _figure(1.2 + 0.9 * len(frame.columns), 1.0 + 0.45 * len(frame.index))
    values = frame.to_numpy(dtype=float)
    image = ax.imshow(values, aspect="auto", cmap="viridis")
    ax.set_xticks(
        range(len(frame.columns)), [str(c) for c in frame.columns], rotation=45, ha="right"
    )
    ax.set_yticks(range(len(frame.index)), [str(i) for i in frame.index])
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="white", fontsize=7)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label=colorbar)
    fig.tight_layout()
    return fig


def uplift_figures(
    effects: pd.DataFrame, treatment: np.ndarray, y: np.ndarray
) -> dict[str, Figure]:
    """Out-of-fold Qini and uplift curves, one line per arm against control, with the random
    line of each (the diagonal to the curve's end)."""
    from cartintel_assets.models.uplift import CONTROL
    from cartintel_assets.models.uplift_metrics import qini_curve, uplift_curve

    treatment, y = np.asarray(treatment), np.asarray(y)
    figs: dict[str, Figure] = {}
    for name, curve in (("qini", qini_curve), ("uplift", uplift_curve)):
        fig, ax = _figure(6, 4)
        for arm in effects.columns:
            m = (treatment == arm) | (treatment == CONTROL)
            x, v = curve(y[m], effects[arm].to_numpy()[m], (treatment[m] == arm).astype(int))
            (line,) = ax.plot(x / x[-1], v, label=arm)
            ax.plot([0, 1], [0, v[-1]], ls=":", color=line.get_color())
        ax.axhline(0, color="grey", lw=0.5)
        ax.set(
            xlabel="share of carts targeted (by predicted effect)",
            ylabel="incremental conversions" if name == "qini" else "uplift x carts",
            title=f"{name.capitalize()} curves (out of fold; dotted: random)",
        )
        ax.legend(fontsize=7)
        figs[f"{name}_curves.png"] = fig
    return figs
