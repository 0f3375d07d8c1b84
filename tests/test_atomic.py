"""Tests of leuko.core.atomic: complete writes or nothing, never a half file or a stray temp file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leuko.core.atomic import atomic_write, write_csv_atomic, write_json_atomic, write_text_atomic


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_success_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        assert tmp.name.endswith("out.txt") and tmp.name.startswith(".")
        assert not target.exists()  # nothing visible until the block succeeds
        tmp.write_text("hello")
    assert target.read_text() == "hello"
    assert listing(target.parent) == ["out.txt"]


def test_exception_leaves_no_file_and_no_temp(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert not target.exists()
    assert listing(target.parent) == []


def test_exception_leaves_existing_file_unchanged(tmp_path):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"v": 1})
    before = target.read_bytes()
    with pytest.raises(KeyError):
        with atomic_write(target) as tmp:
            tmp.write_text("{broken")
            raise KeyError("x")
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["out.json"]
    # Unserialisable objects fail before anything is written.
    with pytest.raises(TypeError):
        write_json_atomic(target, {"v": object()})
    assert target.read_bytes() == before
    assert listing(tmp_path) == ["out.json"]


def test_block_that_writes_nothing_is_an_error(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_write(target):
            pass
    assert listing(tmp_path) == []


def test_overwrite_replaces(tmp_path):
    target = tmp_path / "t.txt"
    write_text_atomic(target, "one")
    assert write_text_atomic(target, "two\r\nlines\n") == target
    assert target.read_bytes() == b"two\r\nlines\n"  # written as given
    assert listing(tmp_path) == ["t.txt"]


def test_write_json_format(tmp_path):
    target = tmp_path / "m" / "metrics.json"
    obj = {"b": np.float32(0.5), "a": [1, 2], "c": np.arange(2), "p": Path("x/y"), "é": 1}
    assert write_json_atomic(target, obj) == target
    text = target.read_text(encoding="utf-8")
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert json.loads(text) == {"a": [1, 2], "b": 0.5, "c": [0, 1], "p": "x/y", "é": 1}
    assert text.index('"a"') < text.index('"b"')


def test_write_csv(tmp_path):
    frame = pd.DataFrame({"path": ["x.jpg", "y.png"], "reason": ["r1", "r, with comma"]})
    target = tmp_path / "r" / "bad.csv"
    assert write_csv_atomic(target, frame) == target
    assert target.read_text().splitlines()[0] == "path,reason"  # no index column
    pd.testing.assert_frame_equal(pd.read_csv(target), frame)
    gz = tmp_path / "bad.csv.gz"  # the temp name keeps the suffixes, so compression is inferred
    write_csv_atomic(gz, frame)
    assert gzip.decompress(gz.read_bytes()).decode().startswith("path,reason")
