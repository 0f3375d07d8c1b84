"""``python -m leuko.reporting.render``: the HTML that supervisors read.

``reports/study.html`` is the executed compare notebook with code hidden, and every executed
stage notebook is rendered beside it under ``reports/html/`` (linked from the study page).
The template is JupyterLab's look without any script from the web: pages are self-contained
(figures embedded as base64) and open from disk with no external request.
"""

from __future__ import annotations

import sys
from pathlib import Path

from leuko.core.atomic import write_text_atomic

# nbformat and nbconvert are imported in render_html only: 1.7 s to import (python -X
# importtime, AMD EPYC), and the compare notebook imports this module for its paths.

TEMPLATES = Path(__file__).parent / "templates"
STUDY_NOTEBOOK = Path("reports/notebooks/compare.ipynb")
STUDY_HTML = Path("reports/study.html")
STAGE_HTML = Path("reports/html")


def render_html(notebook: Path, output: Path, hide_code: bool = True) -> Path:
    """Render an executed notebook to one self-contained HTML file, atomically."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="leuko_report",
                            extra_template_basedirs=[str(TEMPLATES)], embed_images=True,
                            exclude_input=hide_code, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    return write_text_atomic(output, body)


def stage_html_name(notebook: Path) -> str:
    """The HTML file name of an executed stage notebook."""
    return f"{Path(notebook).stem}.html"


def main(argv: list[str] | None = None) -> int:
    """Render the study page and every executed stage notebook."""
    argv = sys.argv[1:] if argv is None else argv
    notebooks_dir = Path(argv[0]) if argv else Path("reports/notebooks")
    for notebook in sorted(notebooks_dir.glob("*.ipynb")):
        if notebook.name != STUDY_NOTEBOOK.name:
            render_html(notebook, STAGE_HTML / stage_html_name(notebook), hide_code=False)
    render_html(notebooks_dir / STUDY_NOTEBOOK.name, STUDY_HTML)
    print(f"wrote {STUDY_HTML} and {STAGE_HTML}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
