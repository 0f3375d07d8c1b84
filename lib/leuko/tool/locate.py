"""Where the tool finds the study's files when run outside the checkout (``leuko classify``,
``leuko adapt``): the checkout this package is installed from."""

from __future__ import annotations

from pathlib import Path


def package_checkout() -> Path | None:
    """The study's checkout this package is installed from (``make env`` installs it editable
    from ``lib/``): the folder above ``lib/leuko`` when it holds ``dvc.yaml``, else None."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "dvc.yaml").is_file() else None
