"""Atomic file writes: a reader sees the old file or the complete new one, never half of one.

The new content is written to a hidden temporary file in the *same folder* as the target
(so the final rename never crosses file systems), flushed to disk, and renamed onto the
target with :func:`os.replace`. If anything fails before the rename, the temporary file is
deleted and the target is left exactly as it was (or absent). Parent folders are created.

The temporary name is ``.tmp-<random>-<target name>``: it keeps the target's suffixes, so
writers that pick a format from the suffix (``DataFrame.to_csv`` with ``.csv.gz``,
``savefig``, ``keras.Model.save`` with ``.keras``) behave as they would on the target.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["atomic_write", "write_bytes_atomic", "write_csv_atomic", "write_json_atomic",
           "write_text_atomic"]


def _fsync(path: Path) -> None:
    """Flush a written file's data, or a folder's entries (the rename), to disk: best effort,
    not possible on every platform."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a leftover temporary file or folder, if any."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary Path beside ``path``; os.replace it onto ``path`` if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".tmp-{secrets.token_hex(8)}-{target.name}")
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic_write: nothing was written to {tmp} for {target}")
        if tmp.is_file():
            _fsync(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    _fsync(target.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``; return the Path."""
    target = Path(path)
    with atomic_write(target) as tmp:
        tmp.write_bytes(data)
    return target


def write_text_atomic(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Atomically write ``text`` to ``path`` (no newline translation); return the Path."""
    return write_bytes_atomic(path, text.encode(encoding))


def _json_default(obj: Any) -> Any:
    """JSON for numpy scalars and arrays and paths, which the study's metrics often contain."""

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, PurePath):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as JSON (indent=2, sorted keys, trailing newline); return the Path."""
    text = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)
    return write_text_atomic(path, text + "\n")


def write_csv_atomic(path: str | Path, frame: pd.DataFrame) -> Path:
    """Atomically write ``frame`` as CSV without its index; return the Path."""
    target = Path(path)
    with atomic_write(target) as tmp:
        frame.to_csv(tmp, index=False)
    return target
