"""Tests of leuko.core.figures: figures come back with the expected axes and labels, PNGs are written."""

from __future__ import annotations

import os
import struct

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from leuko.core.figures import (
    image_gallery,
    plot_bar_with_ci,
    plot_confusion_matrix,
    plot_curve_grid,
    plot_heatmap,
    plot_training_curves,
    save_figure,
)

CLASSES = ["EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"]


def _history(epochs: int = 5, val: bool = True) -> pd.DataFrame:
    e = np.arange(epochs)
    cols = {"accuracy": 0.5 + 0.08 * e, "loss": 1.2 - 0.2 * e}
    if val:
        cols |= {"val_accuracy": 0.45 + 0.07 * e, "val_loss": 1.3 - 0.15 * e}
    return pd.DataFrame(cols)


def _texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_confusion_matrix_labels_counts_and_percentages():
    cm = np.array([[8, 2, 0, 0], [1, 9, 0, 0], [0, 0, 0, 0], [0, 5, 0, 5]])
    fig = plot_confusion_matrix(cm, CLASSES, title="test set")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # heat map + colour bar
    ax, cbar = fig.axes
    assert ax.get_xlabel() == "predicted class"
    assert ax.get_ylabel() == "true class"
    assert ax.get_title() == "test set"
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert "%" in cbar.get_ylabel()
    texts = _texts(ax)
    assert len(texts) == 16
    # cell (true 0, predicted 0): 8 of the 10 true EOSINOPHIL -> 80.0 %
    assert texts[0] == "8\n(80.0 %)"
    # cell (true 3, predicted 1) is row 3, column 1: 5 of 10
    assert texts[3 * 4 + 1] == "5\n(50.0 %)"
    # an empty true class has no percentage
    assert texts[2 * 4 + 2] == "0\n(–)"
    # colours are row percentages: the image holds recall in %
    image = ax.images[0].get_array()
    assert image[0, 0] == pytest.approx(80.0)
    assert image[1, 1] == pytest.approx(90.0)


def test_confusion_matrix_counts_mode_and_existing_axes():
    outer = Figure()
    ax = outer.add_subplot()
    fig = plot_confusion_matrix([[3, 1], [0, 4]], ["ALL", "HEM"], normalize=False, ax=ax)
    assert fig is outer
    assert ax.images[0].get_array()[0, 0] == 3
    assert "count" in fig.axes[-1].get_ylabel()
    with pytest.raises(ValueError):
        plot_confusion_matrix([[1, 2]], ["ALL", "HEM"])


def test_training_curves_two_panels_with_train_and_val():
    fig = plot_training_curves(_history(), title="VGG16")
    assert len(fig.axes) == 2
    acc, loss = fig.axes
    assert acc.get_xlabel() == loss.get_xlabel() == "epoch"
    assert "accuracy" in acc.get_ylabel() and "loss" in loss.get_ylabel()
    assert [line.get_label() for line in acc.get_lines()] == ["train", "validation"]
    assert list(acc.get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]  # epochs are 1-based
    assert fig.get_suptitle() == "VGG16"


def test_training_curves_tolerate_missing_validation_and_dict_input():
    history = _history(val=False).to_dict(orient="list")
    fig = plot_training_curves(history)
    acc, loss = fig.axes
    assert [line.get_label() for line in acc.get_lines()] == ["train"]
    assert len(loss.get_lines()) == 1
    # no loss recorded at all: the panel says so instead of failing
    fig = plot_training_curves({"accuracy": [0.5, 0.6]})
    assert len(fig.axes[1].get_lines()) == 0
    assert "no 'loss'" in _texts(fig.axes[1])[0]


def test_curve_grid_one_panel_per_model_shared_y():
    histories = {name: _history(3 + i) for i, name in enumerate(["m1", "m2", "m3", "m4"])}
    fig = plot_curve_grid(histories, metric="loss")
    assert len(fig.axes) == 4
    assert [ax.get_title() for ax in fig.axes] == ["m1", "m2", "m3", "m4"]
    first = fig.axes[0]
    assert all(ax.get_shared_y_axes().joined(first, ax) for ax in fig.axes)
    assert all(len(ax.get_lines()) == 2 for ax in fig.axes)
    assert all(ax.get_xlabel() == "epoch" for ax in fig.axes)
    assert "loss" in first.get_ylabel()
    assert "loss" in fig.get_suptitle()
    assert len(plot_curve_grid({}).axes) == 1


def test_bar_with_ci_groups_error_bars_and_reference():
    frame = pd.DataFrame(
        {
            "model": ["VGG16", "VGG16", "ResNet50", "ResNet50"],
            "split": ["val", "test", "val", "test"],
            "accuracy": [86.0, 84.0, 88.0, 87.0],
            "low": [83.0, 81.0, 85.5, 84.0],
            "high": [88.5, 86.5, 90.0, 89.5],
        }
    )
    fig = plot_bar_with_ci(
        frame,
        "model",
        "accuracy",
        "low",
        "high",
        hue="split",
        ylabel="accuracy (%)",
        title="test accuracy",
        reference={"published": 87.8},
    )
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_ylabel() == "accuracy (%)"
    assert ax.get_xlabel() == "model"
    assert ax.get_title() == "test accuracy"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["VGG16", "ResNet50"]
    assert len(ax.patches) == 4  # 2 models x 2 splits
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == [84.0, 86.0, 87.0, 88.0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "published: 87.8" in legend and "val" in legend and "test" in legend
    # the reference line sits at 87.8
    ref = [line for line in ax.get_lines() if line.get_label() == "published: 87.8"]
    assert ref and list(ref[0].get_ydata()) == [87.8, 87.8]
    # error bars span low..high: one LineCollection per hue level, 2 segments each
    segments = [seg for coll in ax.collections for seg in coll.get_segments()]
    spans = sorted((round(s[0][1], 3), round(s[1][1], 3)) for s in segments)
    assert spans == sorted([(83.0, 88.5), (81.0, 86.5), (85.5, 90.0), (84.0, 89.5)])


def test_bar_with_ci_without_hue_and_missing_column():
    frame = pd.DataFrame({"m": ["a", "b"], "v": [0.5, 0.7], "lo": [0.4, np.nan], "hi": [0.6, 0.8]})
    fig = plot_bar_with_ci(frame, "m", "v", "lo", "hi")
    ax = fig.axes[0]
    assert len(ax.patches) == 2
    assert ax.get_ylabel() == "v"
    assert ax.get_legend() is None
    assert sum(len(c.get_segments()) for c in ax.collections) == 1  # NaN bound: no bar
    with pytest.raises(KeyError):
        plot_bar_with_ci(frame, "m", "nope", "lo", "hi")


def test_heatmap_writes_every_value_with_labels():
    table = pd.DataFrame([[90.0, 42.5], [np.nan, 10.0]], index=pd.Index(["m1", "m2"], name="model"),
                         columns=pd.Index(["none", "faded"], name="stain shift"))
    fig = plot_heatmap(table, label="accuracy (%)", title="robustness", vmin=0, vmax=100)
    ax = fig.axes[0]
    assert _texts(ax) == ["90.0", "42.5", "10.0"]  # NaN left blank
    assert [t.get_text() for t in ax.get_xticklabels()] == ["none", "faded"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["m1", "m2"]
    assert ax.get_xlabel() == "stain shift" and ax.get_ylabel() == "model"
    assert fig.axes[1].get_ylabel() == "accuracy (%)"
    assert ax.get_title() == "robustness"


def test_image_gallery_grid_and_titles():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(7)]
    images[1] = rng.random((16, 16))  # grey, float 0-1
    images[2] = rng.random((16, 16, 3)) * 255  # float 0-255
    titles = [f"HEM -> ALL #{i}" for i in range(7)]
    fig = image_gallery(images, titles, ncols=3, title="false positives")
    assert len(fig.axes) == 7  # 3 x 3 grid, 2 empty cells removed
    assert [ax.get_title() for ax in fig.axes] == titles
    assert fig.get_suptitle() == "false positives"
    with pytest.raises(ValueError):
        image_gallery(images, titles[:2])


def test_image_gallery_empty_says_none():
    fig = image_gallery([], [], title="false positives")
    assert len(fig.axes) == 1
    assert _texts(fig.axes[0]) == ["none"]
    assert fig.axes[0].get_title() == "false positives"


def test_save_figure_writes_png_atomically(tmp_path):
    fig = plot_training_curves(_history())
    width, height = fig.get_size_inches()
    path = save_figure(fig, tmp_path / "sub" / "dir" / "curves.png")
    assert path == tmp_path / "sub" / "dir" / "curves.png"
    assert path.stat().st_size > 1000
    assert _png_size(path) == (round(width * 120), round(height * 120))  # 120 dpi
    assert os.listdir(path.parent) == ["curves.png"]  # no temp file left behind
    assert path.stat().st_mode & 0o044  # readable by others, unlike a raw mkstemp file
    # overwriting an existing file works too
    save_figure(image_gallery([], []), path)
    assert _png_size(path)[0] > 0


def test_save_figure_closes_pyplot_figures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")  # no window even where a display is available
    import matplotlib.pyplot as plt

    fig = plt.figure()
    fig.add_subplot().plot([0, 1])
    number = fig.number
    save_figure(fig, tmp_path / "p.png")
    assert not plt.fignum_exists(number)


# --- small multiples for nine networks x five regimes -----------------------------------------

NETS = ["VGG16", "VGG19", "IncV3", "Xcept", "DN121", "DN169", "DN201", "RN50", "MNv2"]
REGIMES = ["transfer", "transfer long", "fine-tune", "fine-tune stain", "scratch",
           "transfer · pooled"]


def _overlapping(texts) -> list[tuple[str, str]]:
    """Pairs of drawn, non-empty texts whose boxes overlap (after a draw)."""
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_text()]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
            if box_a.overlaps(box_b)]


def test_curve_matrix_labels_rows_and_columns_once_with_one_legend():
    from leuko.core.figures import plot_curve_matrix

    histories = {(n, r): _history() for n in NETS for r in REGIMES if (n, r) != ("MNv2", "scratch")}
    fig = plot_curve_matrix(histories, NETS, REGIMES)
    fig.canvas.draw()
    axes = np.array(fig.axes).reshape(len(NETS), len(REGIMES))
    assert [ax.get_title() for ax in axes[0]] == REGIMES
    assert all(ax.get_title() == "" for ax in axes[1:].ravel())
    assert [ax.get_ylabel() for ax in axes[:, 0]] == NETS
    assert all(ax.get_ylabel() == "" for ax in axes[:, 1:].ravel())
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    assert "not run" in _texts(axes[-1, REGIMES.index("scratch")])
    assert _overlapping([ax.title for ax in axes[0]]) == []
    assert _overlapping([ax.yaxis.label for ax in axes[:, 0]]) == []


def test_interval_panels_keep_the_given_order_and_one_legend():
    from leuko.core.figures import plot_interval_panels

    rows = [{"network": n, "regime": r, "split": s, "acc": 50.0, "lo": 40.0, "hi": 60.0}
            for n in NETS for r in REGIMES[:5] for s in ("TEST", "TEST_SIMPLE")]
    frame = pd.DataFrame(rows).iloc[::-1]  # appearance order reversed: the orders must win
    fig = plot_interval_panels(frame, "network", "regime", "split", "acc", "lo", "hi",
                               row_order=NETS, hue_order=REGIMES[:5], legend_title="regime",
                               reference={"thesis transfer mean": 87.8})
    fig.canvas.draw()
    assert len(fig.axes) == 2 and len(fig.legends) == 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == NETS
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[:5] == REGIMES[:5] and "thesis transfer mean: 87.8" in labels
    assert _overlapping(fig.axes[0].get_yticklabels()) == []
    with pytest.raises(KeyError, match="column 'nope'"):
        plot_interval_panels(frame, "nope", "regime", "split", "acc", "lo", "hi")


def test_confusion_grid_one_colour_bar_and_shapes_checked():
    from leuko.core.figures import plot_confusion_grid

    matrices = {(n, r): np.eye(4) * 5 for n in NETS for r in REGIMES}
    fig = plot_confusion_grid(matrices, NETS, REGIMES, CLASSES, title="TEST")
    assert len(fig.axes) == len(NETS) * len(REGIMES) + 1  # panels + one colour bar
    assert _texts(fig.axes[0])[0] == "100"
    with pytest.raises(ValueError, match=r"expected \(4, 4\)"):
        plot_confusion_grid({("VGG16", "transfer"): np.eye(3)}, ["VGG16"], ["transfer"],
                            CLASSES)


def _dots(fig) -> np.ndarray:
    """The (x, y) of every scatter dot of a figure's first axes."""
    from matplotlib.collections import PathCollection

    offsets = [c.get_offsets() for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    return np.asarray(np.vstack(offsets)) if offsets else np.empty((0, 2))


def _spread_runs(split: str = "test") -> pd.DataFrame:
    """Ten kinds on TEST: the first with three runs (50, 60, 70 %), the second with two
    (80, 90 %), the rest one run each; one kind on TEST_SIMPLE."""
    if split != "test":
        return pd.DataFrame({"label": ["kind 0"], "accuracy": [0.4], "macro_f1": [0.3]})
    rows = [(f"kind {k}", acc) for k, runs in enumerate([[0.5, 0.6, 0.7], [0.8, 0.9]]
                                                       + [[0.3 + 0.05 * j] for j in range(8)])
            for acc in runs]
    frame = pd.DataFrame(rows, columns=["label", "accuracy"])
    return frame.assign(macro_f1=frame["accuracy"] - 0.1)


def test_seed_spread_one_dot_per_run_and_the_mean_per_kind():
    from matplotlib.collections import LineCollection

    from leuko.core.figures import plot_seed_spread

    fig = plot_seed_spread(_spread_runs(), title="TEST: accuracy of every training run")
    assert isinstance(fig, Figure)
    dots = _dots(fig)
    assert len(dots) == 3 + 2 + 8  # every run, one-run kinds included
    first = dots[np.abs(dots[:, 1]) < 0.5]  # row 0 (first on top)
    assert sorted(first[:, 0]) == pytest.approx([50, 60, 70])
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[:3] == ["kind 0\n3 runs, sd 10.0", "kind 1\n2 runs, sd 7.1", "kind 2\n1 run"]
    # the mean of each kind is a vertical tick across its row: {row: x}
    means = [(round((seg[0][1] + seg[1][1]) / 2), seg[0][0]) for c in ax.collections
             if isinstance(c, LineCollection) for seg in c.get_segments()
             if seg[0][0] == seg[1][0]]
    assert [row for row, _ in means] == list(range(10))
    assert [x for _, x in means[:3]] == pytest.approx([60, 85, 30])
    assert ax.get_xlabel() == "accuracy (%)" and ax.get_title().startswith("TEST:")
    fig.canvas.draw()
    assert _overlapping(ax.get_yticklabels()) == []
    f1 = plot_seed_spread(_spread_runs("test_simple"), metric="macro_f1")
    assert _dots(f1)[:, 0].tolist() == pytest.approx([30])
    assert f1.axes[0].get_xlabel() == "macro F1 (%)"
    empty = plot_seed_spread(_spread_runs().iloc[:0])
    assert len(_dots(empty)) == 0 and "no run" in _texts(empty.axes[0])


def test_a_one_row_log_scale_panel_keeps_title_legend_and_tick_labels_apart():
    """The report's training-time figure (one network, six regimes, log axis): the title,
    the legend and the x tick labels are drawn without overlapping one another."""
    from leuko.core.figures import plot_interval_panels

    regimes = [f"regime {i}" for i in range(6)]
    frame = pd.DataFrame({"network": "MobileNetV2", "regime": regimes, "panel": "time",
                          "seconds": [40.0, 95.0, 200.0, 225.0, 33.0, 60.0]})
    fig = plot_interval_panels(frame, "network", "regime", "panel", "seconds", "seconds",
                               "seconds", log=True, title="training time per network and regime")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    legend = fig.legends[0].get_window_extent(renderer)
    assert not title.overlaps(legend)
    assert fig.get_window_extent(renderer).contains(legend.x1 - 1, legend.y1 - 1)
    labels = [t.get_window_extent(renderer) for t in fig.axes[0].get_xticklabels()
              if t.get_visible() and t.get_text()]
    assert len(labels) >= 2
    assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1:])
