"""The study's parameters: each ``params/<name>.yaml`` holds one top-level block, and a stage
passes the files whole to its notebook (``papermill -f params/<name>.yaml`` makes a variable
``<name>`` holding the block). The library turns a block into a typed, frozen config, so each
value is written once, in ``params/``, and a misspelt or missing key fails naming the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

PARAMS_DIR = Path("params")

T = TypeVar("T")


def read_block(name: str, given: Mapping | None = None, path: Path | None = None) -> dict:
    """Block ``name``: as papermill passed it, or, when ``given`` is None (a notebook run on
    its own), read from ``path`` (default ``params/<name>.yaml``)."""

    if given is not None:
        return dict(given)
    path = Path(path) if path is not None else PARAMS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such parameters file (run from the project root, "
                                f"or pass the {name!r} block)")
    content = yaml.safe_load(path.read_text()) or {}
    if name not in content:
        raise ValueError(f"{path}: no top-level {name!r} block (found {sorted(content)})")
    return dict(content[name])


def typed(cls: type[T], values: Mapping[str, Any], where: str, ignore: Iterable[str] = ()
          ) -> T:
    """An instance of the dataclass ``cls`` from ``values``; keys in ``ignore`` belong to
    someone else (e.g. the pipeline's matrix lists). Unknown or missing keys raise a
    ``ValueError`` naming ``where`` (the file or block they came from)."""
    names = {f.name for f in fields(cls)}
    values = {k: v for k, v in values.items() if k not in set(ignore)}
    unknown, missing = sorted(set(values) - names), sorted(
        f.name for f in fields(cls) if f.name not in values and _required(f))
    if unknown or missing:
        raise ValueError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}; "
                         f"known: {sorted(names)}")
    return cls(**values)


def _required(field) -> bool:

    return field.default is MISSING and field.default_factory is MISSING
