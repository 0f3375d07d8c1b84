"""Progress bars, one kind everywhere: tqdm's text bar, which a terminal, a stage's log and a
notebook all show (no widget, so no warning where ipywidgets is missing). Off a terminal (a
DVC log, a papermill notebook) it is redrawn at most every 10 s, so the log keeps a few lines
per minute instead of one per image."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm import tqdm

#: Seconds between redraws on a terminal and elsewhere.
TERMINAL_INTERVAL, LOG_INTERVAL = 0.5, 10.0


def progress_bar(iterable: Iterable | None = None, *, desc: str, unit: str = "img",
                 total: int | None = None, enabled: bool = True) -> tqdm:
    """A bar over ``iterable`` (or of ``total`` steps, advanced with ``update``)."""
    terminal = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled,
                mininterval=TERMINAL_INTERVAL if terminal else LOG_INTERVAL,
                dynamic_ncols=terminal)
