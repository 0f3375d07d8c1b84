"""Figures of the study (matplotlib): confusion matrices, training curves, intervals, galleries.

Every function builds a :class:`matplotlib.figure.Figure` directly (never through
``matplotlib.pyplot``), so the module works with the Agg backend on a headless machine, keeps no
global figure state, and does not double-display in notebooks; functions return the Figure and
never call ``show``.  Write figures with :func:`save_figure` (PNG, 120 dpi, atomic).
"""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from leuko.core.atomic import atomic_write

__all__ = [
    "image_gallery",
    "plot_bar_with_ci",
    "plot_confusion_grid",
    "plot_confusion_matrix",
    "plot_curve_grid",
    "plot_curve_matrix",
    "plot_heatmap",
    "plot_interval_panels",
    "plot_seed_spread",
    "plot_training_curves",
    "save_figure",
]

DPI = 120

# axis labels (with units) of the usual keras History columns
_METRIC_LABELS = {
    "accuracy": "accuracy (fraction correct)",
    "acc": "accuracy (fraction correct)",
    "loss": "loss (cross-entropy)",
}


def _metric_label(metric: str) -> str:
    """Axis label with units for a history column name."""
    return _METRIC_LABELS.get(metric, metric.replace("_", " "))


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A fresh figure with constrained layout, outside pyplot's figure manager."""
    return Figure(figsize=figsize, layout="constrained")


# --------------------------------------------------------------------------------------------
# confusion matrix
# --------------------------------------------------------------------------------------------
def plot_confusion_matrix(
    cm, class_names: Sequence[str], title: str = "", normalize: bool = True, ax: Axes | None = None
) -> Figure:
    """Confusion matrix heat map: rows = true, columns = predicted; counts and row % annotated.

    With ``normalize`` the colour is the row-normalised percentage (the recall of each true class)
    and each cell reads "count" over "(xx.x %)"; otherwise the colour is the raw count.  Pass
    ``ax`` to draw into an existing axes (its figure is returned).
    """
    counts = np.asarray(cm, dtype=float)
    names = [str(c) for c in class_names]
    k = len(names)
    if counts.shape != (k, k):
        raise ValueError(f"cm has shape {counts.shape}, expected ({k}, {k}) for {k} class names")
    row_sums = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        percent = np.where(row_sums > 0, 100.0 * counts / row_sums, np.nan)

    if ax is None:
        side = max(3.8, 1.0 + 0.9 * k)
        fig = _new_figure((side + 1.2, side))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    if normalize:
        colour = np.nan_to_num(percent, nan=0.0)
        image = ax.imshow(colour, cmap="Blues", vmin=0.0, vmax=100.0)
        bar_label = "row-normalised (% of true class)"
        threshold = 50.0
    else:
        colour = counts
        vmax = max(float(counts.max()), 1.0)
        image = ax.imshow(colour, cmap="Blues", vmin=0.0, vmax=vmax)
        bar_label = "count (images)"
        threshold = vmax / 2
    fig.colorbar(image, ax=ax, label=bar_label, fraction=0.046, pad=0.04)

    fontsize = 10 if k <= 6 else 8
    for i in range(k):
        for j in range(k):
            pct = "–" if np.isnan(percent[i, j]) else f"{percent[i, j]:.1f} %"
            text = f"{int(counts[i, j])}\n({pct})"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if colour[i, j] > threshold else "black",
            )
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------------
# training curves
# --------------------------------------------------------------------------------------------
def _history_frame(history) -> pd.DataFrame:
    """A keras History, its ``.history`` dict, or a DataFrame, as a DataFrame."""
    if hasattr(history, "history") and not isinstance(history, pd.DataFrame):
        history = history.history
    if isinstance(history, pd.DataFrame):
        return history
    if isinstance(history, dict):
        return pd.DataFrame({k: pd.Series(v, dtype=float) for k, v in history.items()})
    raise TypeError(f"history must be a DataFrame or a dict, got {type(history).__name__}")


def _epochs(frame: pd.DataFrame) -> np.ndarray:
    """Epoch numbers: the ``epoch`` column (made 1-based if it starts at 0), else 1..n."""
    if "epoch" in frame.columns:
        epochs = frame["epoch"].to_numpy(dtype=float)
        return epochs + 1 if epochs.size and epochs.min() == 0 else epochs
    return np.arange(1, len(frame) + 1)


def _draw_curves(ax: Axes, frame: pd.DataFrame, metric: str, legend: bool = True) -> bool:
    """Train and validation lines of ``metric`` on ``ax``; False (and a note) if neither exists."""
    epochs = _epochs(frame)
    drawn = False
    for column, label, style in ((metric, "train", "-"), (f"val_{metric}", "validation", "--")):
        if column in frame.columns and frame[column].notna().any():
            ax.plot(epochs, frame[column].to_numpy(dtype=float), style, marker=".", label=label)
            drawn = True
    if not drawn:
        ax.text(
            0.5,
            0.5,
            f"no '{metric}' recorded",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="grey",
        )
    elif legend:
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
    ax.set_ylabel(_metric_label(metric))
    ax.grid(True, alpha=0.3)
    return drawn


def plot_training_curves(history, title: str = "") -> Figure:
    """Accuracy and loss per epoch, train vs validation (missing validation columns tolerated).

    ``history`` is a DataFrame or dict with keras History columns (``accuracy``,
    ``val_accuracy``, ``loss``, ``val_loss``; an optional ``epoch`` column gives the x values).
    """
    frame = _history_frame(history)
    fig = _new_figure((9.0, 3.6))
    ax_acc, ax_loss = fig.subplots(1, 2)
    _draw_curves(ax_acc, frame, "accuracy")
    ax_acc.set_title("accuracy")
    _draw_curves(ax_loss, frame, "loss")
    ax_loss.set_title("loss")
    if title:
        fig.suptitle(title)
    return fig


def plot_curve_grid(histories: dict[str, pd.DataFrame], metric: str = "accuracy") -> Figure:
    """One panel per model (name -> history) with train and validation ``metric``; shared y axis."""
    names = list(histories)
    if not names:
        fig = _new_figure((4.0, 3.0))
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        ax.set_title(f"training curves: {metric}")
        return fig
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _new_figure((3.6 * ncols, 3.0 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharey=True, squeeze=False)).ravel()
    for i, (ax, name) in enumerate(zip(axes, names, strict=False)):
        _draw_curves(ax, _history_frame(histories[name]), metric, legend=(i == 0))
        ax.set_title(name)
        # shared y: tick labels only on the left column, but keep the label readable there
        if i % ncols:
            ax.set_ylabel("")
    for ax in axes[len(names) :]:
        fig.delaxes(ax)
    fig.suptitle(f"training curves: {_metric_label(metric)}")
    return fig


# --------------------------------------------------------------------------------------------
# bars with intervals
# --------------------------------------------------------------------------------------------
def plot_bar_with_ci(
    frame: pd.DataFrame,
    x: str,
    y: str,
    low: str,
    high: str,
    hue: str | None = None,
    ylabel: str = "",
    title: str = "",
    reference: dict[str, float] | None = None,
) -> Figure:
    """Grouped bars of ``y`` per ``x`` (and ``hue``) with error bars from ``low``..``high``.

    Categories keep their order of first appearance; a missing (x, hue) pair leaves a gap and a
    missing bound leaves out that error bar.  ``reference`` draws labelled horizontal lines, e.g.
    ``{"published (Acevedo 2019)": 87.8}``.
    """
    for column in (x, y, low, high) + ((hue,) if hue else ()):
        if column not in frame.columns:
            raise KeyError(f"column {column!r} not in frame (columns: {list(frame.columns)})")
    categories = list(pd.unique(frame[x]))
    levels = list(pd.unique(frame[hue])) if hue else [None]
    n_levels = len(levels)
    width = 0.8 / n_levels
    fig = _new_figure((max(5.0, 1.1 * len(categories) * max(1, n_levels) ** 0.5 + 2.0), 4.0))
    ax = fig.add_subplot()
    positions = np.arange(len(categories), dtype=float)
    for j, level in enumerate(levels):
        sub = frame if level is None else frame[frame[hue] == level]
        sub = sub.drop_duplicates(subset=[x], keep="last").set_index(x)
        sub = sub.reindex(categories)
        values = sub[y].to_numpy(dtype=float)
        lower = np.clip(values - sub[low].to_numpy(dtype=float), 0.0, None)
        upper = np.clip(sub[high].to_numpy(dtype=float) - values, 0.0, None)
        offset = (j - (n_levels - 1) / 2) * width
        keep = ~np.isnan(values)
        ax.bar(
            positions[keep] + offset,
            values[keep],
            width=width * 0.95,
            label=None if level is None else str(level),
        )
        bars = keep & ~np.isnan(lower) & ~np.isnan(upper)
        if bars.any():
            ax.errorbar(
                positions[bars] + offset,
                values[bars],
                yerr=np.vstack([lower[bars], upper[bars]]),
                fmt="none",
                ecolor="black",
                elinewidth=1.0,
                capsize=3,
            )
    styles = ["--", ":", "-.", (0, (5, 1))]
    for i, (name, value) in enumerate((reference or {}).items()):
        ax.axhline(
            float(value),
            color="dimgrey",
            linestyle=styles[i % len(styles)],
            linewidth=1.2,
            label=f"{name}: {value:g}",
        )
    ax.set_xticks(
        positions,
        [str(c) for c in categories],
        rotation=30 if len(categories) > 4 else 0,
        ha="right" if len(categories) > 4 else "center",
    )
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel(ylabel or y.replace("_", " "))
    ax.grid(True, axis="y", alpha=0.3)
    if hue or reference:
        # outside the axes, so it never hides a bar or an error bar
        ax.legend(
            title=hue.replace("_", " ") if hue else None,
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            borderaxespad=0.0,
        )
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------------
# heat map of a table
# --------------------------------------------------------------------------------------------
def plot_heatmap(table: pd.DataFrame, label: str, title: str = "", fmt: str = "{:.1f}",
                 cmap: str = "RdYlGn", vmin: float | None = None,
                 vmax: float | None = None) -> Figure:
    """A table of numbers as a heat map: rows and columns keep the table's order and names,
    every cell is written out (``fmt``), and the colour bar says what the value is (``label``,
    with its unit)."""
    values = table.to_numpy(dtype=float)
    rows, cols = values.shape
    fig = _new_figure((max(5.0, 1.0 * cols + 3.0), max(2.5, 0.55 * rows + 1.8)))
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap=cmap, aspect="auto",
                      vmin=np.nanmin(values) if vmin is None else vmin,
                      vmax=np.nanmax(values) if vmax is None else vmax)
    fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.04)
    for i in range(rows):
        for j in range(cols):
            if not np.isnan(values[i, j]):
                ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(cols), [str(c) for c in table.columns], rotation=30, ha="right")
    ax.set_yticks(range(rows), [str(r) for r in table.index])
    ax.set_xlabel(str(table.columns.name or "").replace("_", " "))
    ax.set_ylabel(str(table.index.name or "").replace("_", " "))
    if title:
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------------
# image gallery
# --------------------------------------------------------------------------------------------
def _displayable(image: np.ndarray) -> np.ndarray:
    """An image as imshow expects it: uint8 0-255 or float 0-1, channel axis last."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim not in (2, 3):
        raise ValueError(f"image must be HxW or HxWxC, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    img = img.astype(float)
    if np.nanmax(img) > 1.0:  # 0-255 values stored as float
        return np.clip(img, 0, 255).astype(np.uint8)
    return np.clip(img, 0.0, 1.0)


def image_gallery(
    images: Sequence[np.ndarray], titles: Sequence[str], ncols: int = 6, title: str = ""
) -> Figure:
    """A grid of images with one title each (e.g. the false positives); "none" for no images."""
    images = list(images)
    titles = [str(t) for t in titles]
    if len(titles) != len(images):
        raise ValueError(f"{len(images)} images but {len(titles)} titles")
    if not images:
        fig = _new_figure((4.0, 2.0))
        ax = fig.add_subplot()
        ax.text(0.5, 0.5, "none", ha="center", va="center", fontsize=14, transform=ax.transAxes)
        ax.set_axis_off()
        if title:
            ax.set_title(title)
        return fig
    ncols = max(1, min(int(ncols), len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig = _new_figure((2.0 * ncols, 2.1 * nrows + (0.4 if title else 0.0)))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, img, label in zip(axes, images, titles, strict=False):
        shown = _displayable(img)
        ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None)
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(images) :]:
        fig.delaxes(ax)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------
def save_figure(fig: Figure, path) -> Path:
    """Write ``fig`` as PNG at 120 dpi atomically (:func:`leuko.core.atomic.atomic_write`), then
    close it."""
    path = Path(path)
    try:
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png", dpi=DPI)
    finally:
        # Figures made here are not registered with pyplot; close any that are (e.g. via ax=).
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close(fig)
    return path


def cell_gallery(raw: list[np.ndarray], prepared: list[np.ndarray], titles: list[str],
                 title: str = "") -> Figure:
    """Pairs of images as taken and as the cell classifier sees them (found, framed,
    stain-normalised): one column per image, raw above, prepared below."""
    n = len(raw)
    fig = Figure(figsize=(1.5 * n, 3.4))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        for row, image in enumerate((raw[i], prepared[i])):
            axes[row, i].imshow(image)
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
        axes[0, i].set_title(titles[i], fontsize=7)
    axes[0, 0].set_ylabel("as taken", fontsize=8)
    axes[1, 0].set_ylabel("prepared", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_coverage_curves(curves: dict[str, pd.DataFrame], title: str = "") -> Figure:
    """Accuracy of the cells kept against the share kept (least confident left out), one
    line per (model, test part)."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for label, curve in curves.items():
        ax.plot(curve["coverage"], curve["accuracy"], marker=".", label=label)
    ax.set_xlabel("coverage (share of cells classified)")
    ax.set_ylabel("accuracy of the cells classified")
    ax.set_xlim(1.02, 0.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title or "Accuracy against coverage")
    fig.tight_layout()
    return fig


def plot_reliability(tables: dict[str, pd.DataFrame], title: str = "") -> Figure:
    """Reliability diagrams (accuracy against mean confidence per bin), one panel per entry,
    with the diagonal of perfect calibration."""
    n = len(tables)
    cols = min(3, n)
    rows = -(-n // cols)
    fig = Figure(figsize=(3.2 * cols, 3.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, (label, table) in zip(axes.flat, tables.items(), strict=False):
        kept = table.dropna(subset=["accuracy"])
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        ax.bar(kept["bin_low"], kept["accuracy"], width=kept["bin_high"] - kept["bin_low"],
               align="edge", alpha=0.6, edgecolor="black")
        ax.set_title(textwrap.fill(label, 30), fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# small multiples: many networks x many regimes (the thesis's figures for nine networks)
# --------------------------------------------------------------------------------------------
_TRAIN_STYLE = {"train": "-", "validation": "--"}


def _empty_panel(ax: Axes, text: str = "not run", shared_y: bool = False) -> None:
    """A panel with nothing to draw: says so; ticks hidden (a shared y axis keeps its ticks,
    which its other panels need)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="grey",
            fontsize=7)
    ax.set_xticks([])
    if not shared_y:
        ax.set_yticks([])


def plot_curve_matrix(histories: dict[tuple[str, str], pd.DataFrame], rows: Sequence[str],
                      cols: Sequence[str], metric: str = "accuracy", title: str = "") -> Figure:
    """Training curves as small multiples: one panel per (row, column), e.g. network x regime.

    Column names head the top row only and row names label the left column only, so no
    title repeats or overlaps; the y axis is shared, every panel keeps its own epochs; one
    legend (train, validation) for the whole figure. A pair without a history reads "not run".
    """
    rows, cols = list(rows), list(cols)
    if not rows or not cols:
        raise ValueError("plot_curve_matrix needs at least one row and one column")
    fig = _new_figure((1.0 + 1.75 * len(cols), 0.8 + 1.35 * len(rows)))
    axes = fig.subplots(len(rows), len(cols), sharey=True, squeeze=False)
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            ax = axes[i, j]
            history = histories.get((row, col))
            if history is None:
                _empty_panel(ax, shared_y=True)
            else:
                frame = _history_frame(history)
                epochs = _epochs(frame)
                for column, label in ((metric, "train"), (f"val_{metric}", "validation")):
                    if column in frame.columns and frame[column].notna().any():
                        ax.plot(epochs, frame[column].to_numpy(dtype=float),
                                _TRAIN_STYLE[label], marker="." if len(frame) < 20 else None,
                                markersize=3, linewidth=1.0, label=label,
                                color="C0" if label == "train" else "C1")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=3))
                if len(epochs) == 1:  # one epoch: one tick at it, not fractions around it
                    ax.set_xticks(epochs)
                ax.grid(True, alpha=0.3)
                ax.tick_params(labelsize=7)
            if i == 0:
                ax.set_title(col, fontsize=8)
            if j == 0:
                ax.set_ylabel(row, fontsize=8)
    handles = [axes[0, 0].plot([], [], style, color=f"C{k}", label=label)[0]
               for k, (label, style) in enumerate(_TRAIN_STYLE.items())]
    fig.legend(handles=handles, loc="outside upper right", ncols=2, fontsize=8)
    fig.supxlabel("epoch", fontsize=9)
    fig.suptitle(title or f"training curves: {_metric_label(metric)}", fontsize=10)
    return fig


def _ordered(values: pd.Series, order: Sequence[str] | None) -> list:
    """The distinct ``values``, those in ``order`` first and in its order."""
    present = list(pd.unique(values))
    first = [v for v in (order or []) if v in present]
    return first + [v for v in present if v not in first]


def plot_interval_panels(frame: pd.DataFrame, row: str, hue: str, panel: str, value: str,
                         low: str, high: str, xlabel: str = "", title: str = "",
                         reference: dict[str, float] | None = None,
                         log: bool = False, row_order: Sequence[str] | None = None,
                         hue_order: Sequence[str] | None = None,
                         legend_title: str = "") -> Figure:
    """Dots with interval lines, small multiples: one panel per ``panel`` value (e.g. the test
    split), one line per ``row`` (e.g. network, short names), one colour per ``hue`` (e.g.
    regime), dodged so that nine networks x five regimes stay apart; one legend for the
    figure; ``reference`` draws labelled vertical lines (the thesis's means). ``low`` and
    ``high`` may equal ``value`` (no interval, e.g. a time). ``row_order`` / ``hue_order``
    fix the order (values not in them follow in order of appearance)."""
    for column in (row, hue, panel, value, low, high):
        if column not in frame.columns:
            raise KeyError(f"column {column!r} not in frame (columns: {list(frame.columns)})")
    rows = _ordered(frame[row], row_order)
    levels = _ordered(frame[hue], hue_order)
    panels = list(pd.unique(frame[panel]))
    if not rows:
        raise ValueError("plot_interval_panels: the frame has no rows")
    n_entries = len(levels) + len(reference or {})  # the legend's lines, beside the panels
    fig = _new_figure((1.2 + 3.3 * len(panels),
                       max(1.2 + 0.32 * len(rows) * max(1, len(levels)) ** 0.5,
                           0.9 + 0.22 * n_entries + (0.3 if title else 0.0))))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True, squeeze=False)).ravel()
    step = 0.8 / max(1, len(levels))
    styles = ["--", ":", "-.", (0, (5, 1))]
    for ax, name in zip(axes, panels, strict=True):
        sub = frame[frame[panel] == name]
        for k, level in enumerate(levels):
            part = sub[sub[hue] == level].drop_duplicates(subset=[row], keep="last")
            y = np.array([rows.index(r) for r in part[row]], dtype=float)
            y += (k - (len(levels) - 1) / 2) * step
            x = part[value].to_numpy(dtype=float)
            lower = np.clip(x - part[low].to_numpy(dtype=float), 0, None)
            upper = np.clip(part[high].to_numpy(dtype=float) - x, 0, None)
            ax.errorbar(x, y, xerr=np.vstack([lower, upper]), fmt="o", markersize=3.5,
                        elinewidth=1.0, capsize=0, color=f"C{k}", label=str(level))
        for i, (label, ref) in enumerate((reference or {}).items()):
            ax.axvline(float(ref), color="dimgrey", linestyle=styles[i % len(styles)],
                       linewidth=1.0, label=f"{label}: {ref:g}")
        if log:  # labels at 1, 2 and 5 of each decade, as plain numbers; no minor labels
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_yticks(range(len(rows)), [str(r) for r in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)  # first row on top
        for boundary in np.arange(0.5, len(rows) - 1, 1.0):
            ax.axhline(boundary, color="lightgrey", linewidth=0.6)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_title(str(name), fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    handles, labels = axes[0].get_legend_handles_labels()
    names = [str(level) for level in levels]  # the hues in their order, then the references
    order = sorted(range(len(labels)),
                   key=lambda i: names.index(labels[i]) if labels[i] in names else len(names))
    handles, labels = [handles[i] for i in order], [labels[i] for i in order]
    fig.legend(handles, labels, loc="outside right upper", fontsize=8,
               title=legend_title or None)
    fig.supxlabel(xlabel or value.replace("_", " "), fontsize=9)
    if title:  # left-aligned: the legend takes the figure's upper right corner
        fig.suptitle(title, fontsize=10, x=0.02, ha="left")
    return fig


def plot_confusion_grid(matrices: dict[tuple[str, str], np.ndarray], rows: Sequence[str],
                        cols: Sequence[str], class_names: Sequence[str],
                        title: str = "") -> Figure:
    """Confusion matrices as small multiples (row-normalised %, one colour bar): one panel per
    (row, column), e.g. network x regime; class names (first letters) on the outer panels only;
    each cell reads its row % rounded. A pair without a matrix reads "not run"."""
    rows, cols = list(rows), list(cols)
    k = len(class_names)
    short = [str(c)[:3] for c in class_names]
    fig = _new_figure((1.2 + 1.55 * len(cols), 0.9 + 1.45 * len(rows)))
    axes = fig.subplots(len(rows), len(cols), squeeze=False)
    image = None
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            ax = axes[i, j]
            cm = matrices.get((row, col))
            if cm is None:
                _empty_panel(ax)
            else:
                counts = np.asarray(cm, dtype=float)
                if counts.shape != (k, k):
                    raise ValueError(f"matrix of {(row, col)} has shape {counts.shape}, "
                                     f"expected ({k}, {k})")
                sums = counts.sum(axis=1, keepdims=True)
                with np.errstate(invalid="ignore", divide="ignore"):
                    percent = np.where(sums > 0, 100 * counts / sums, 0.0)
                image = ax.imshow(percent, cmap="Blues", vmin=0, vmax=100)
                for a in range(k):
                    for b in range(k):
                        ax.text(b, a, f"{percent[a, b]:.0f}", ha="center", va="center",
                                fontsize=5.5, color="white" if percent[a, b] > 50 else "black")
                ax.set_xticks(range(k), short if i == len(rows) - 1 else [], fontsize=6,
                              rotation=90)
                ax.set_yticks(range(k), short if j == 0 else [], fontsize=6)
            if i == 0:
                ax.set_title(col, fontsize=8)
            if j == 0:
                ax.set_ylabel(row, fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=axes, label="% of true class", shrink=0.6)
    fig.supxlabel("predicted class (columns) against true class (rows)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# spread over training seeds
# --------------------------------------------------------------------------------------------
_SPREAD_NAMES = {"accuracy": "accuracy", "macro_f1": "macro F1"}


def plot_seed_spread(runs: pd.DataFrame, metric: str = "accuracy", title: str = "") -> Figure:
    """Every run of each kind of model: ``runs`` holds one row per run with ``label`` (its
    kind's row name; rows in the order the labels first appear, e.g.
    ``leuko.reporting.report.seed_runs``) and ``metric`` (0-1). Each run (training seed) is a dot, the
    kind's mean a vertical tick and, for several runs, a line over their range; the row's
    label adds the number of runs and their sample sd (n - 1). A kind with one run shows its
    dot and tick at its score."""
    name = _SPREAD_NAMES.get(metric, metric.replace("_", " "))
    if runs.empty:
        fig = _new_figure((5.0, 2.0))
        ax = fig.add_subplot()
        _empty_panel(ax, "no run")
        ax.set_title(title or f"{name}: spread over training seeds")
        return fig
    values_of = runs.groupby("label", sort=False)[metric]
    summary = pd.DataFrame({"runs": values_of.size(), "mean": values_of.mean(),
                            "sd": values_of.std(ddof=1)})
    fig = _new_figure((7.5, 1.3 + 0.48 * len(summary)))
    ax = fig.add_subplot()
    x_runs, y_runs, ticks = [], [], []
    for i, s in enumerate(summary.itertuples()):
        values = 100 * runs.loc[runs["label"] == s.Index, metric].to_numpy(dtype=float)
        offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
        x_runs.extend(values)
        y_runs.extend(i + offsets)
        mean, sd = 100 * s.mean, 100 * s.sd
        if s.runs > 1:
            ax.hlines(i, values.min(), values.max(), color="lightgrey", linewidth=2.5,
                      zorder=1)
        ax.vlines(mean, i - 0.32, i + 0.32, color="black", linewidth=1.8, zorder=3,
                  label="mean of the runs" if i == 0 else None)
        count = "1 run" if s.runs == 1 else f"{s.runs} runs, sd {sd:.1f}"
        ticks.append(f"{s.Index}\n{count}")
    ax.scatter(x_runs, y_runs, s=22, color="C0", edgecolor="white", linewidth=0.5, zorder=4,
               label="one run (training seed)")
    ax.set_yticks(range(len(summary)), ticks, fontsize=8)
    ax.set_ylim(len(summary) - 0.5, -0.5)  # first kind on top
    for boundary in np.arange(0.5, len(summary) - 1, 1.0):
        ax.axhline(boundary, color="lightgrey", linewidth=0.6)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlabel(f"{name} (%)")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    ax.set_title(title or f"{name} of every training run")
    return fig
