"""A real browser opens a study report from disk: every image decodes, the summary table is
there, no console error, no request leaves the machine. And it notices a broken image."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """A report rendered by the study's own template from a small executed notebook with a
    figure and a summary table."""
    import matplotlib
    import nbformat

    from leuko.reporting.render import render_html

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    ax = fig.add_subplot()
    ax.plot([1, 2, 3], [0.5, 0.7, 0.9])
    ax.set_xlabel("epoch")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    png = base64.b64encode(buffer.getvalue()).decode()
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# The leukocyte study: results"),
        nbformat.v4.new_code_cell("summary()", outputs=[
            nbformat.v4.new_output("display_data", data={
                "text/markdown": "## Summary\n\n| model | accuracy |\n|---|---|\n| a | 79 % |"}),
            nbformat.v4.new_output("display_data", data={"image/png": png,
                                                         "text/plain": "<Figure>"})]),
    ])
    folder = tmp_path_factory.mktemp("report")
    nbformat.write(nb, folder / "compare.ipynb")
    return render_html(folder / "compare.ipynb", folder / "study.html")


def test_report_opens_cleanly_in_a_browser(report_html, tmp_path, browser):
    seen = browser(report_html, tmp_path / "report.png")
    assert seen.images >= 1 and seen.broken_images == []
    assert "Summary" in seen.text and "accuracy" in seen.text
    assert seen.console_errors == []
    assert seen.external_requests == []
    assert (tmp_path / "report.png").stat().st_size > 1000


def test_browser_check_catches_a_broken_image(report_html, tmp_path, browser):
    broken = tmp_path / "broken.html"
    broken.write_text(re.sub(r'src="data:image/png;base64,[A-Za-z0-9+/=]+"',
                             'src="data:image/png;base64,AAAA"', report_html.read_text(),
                             count=1))
    seen = browser(broken, tmp_path / "broken.png")
    assert seen.broken_images, "a broken image must be noticed"
