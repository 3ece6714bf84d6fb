"""Atomic writes (whole file or the previous one, ordinary permissions) and plain/JSON data."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ctdnn import storage


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_atomic_write_replaces_the_file_only_at_the_end(tmp_path, umask):
    target = tmp_path / "sub" / "out.bin"  # the folder is created
    storage.write_bytes_atomic(target, b"old")
    with storage.atomic_write(target) as tmp:
        tmp.write_bytes(b"new content")
        assert target.read_bytes() == b"old"  # readers see the previous complete file
        assert tmp.parent == target.parent and tmp != target
    assert target.read_bytes() == b"new content"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, umask):
    target = tmp_path / "out.txt"
    storage.write_text_atomic(target, "first")
    with pytest.raises(RuntimeError, match="disk full"):
        with storage.atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with pytest.raises(KeyboardInterrupt):
        with storage.atomic_write(tmp_path / "never.txt") as tmp:
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_files_get_ordinary_permissions(tmp_path, umask):
    a = storage.write_text_atomic(tmp_path / "a.txt", "x")
    assert a.stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
    os.umask(0o077)
    assert storage.current_umask() == 0o077
    b = storage.write_text_atomic(tmp_path / "b.txt", "x")
    assert b.stat().st_mode & 0o777 == 0o600


def test_plain_data():
    value = {1: (np.arange(3), torch.tensor([[1.5], [2.5]])), "s": np.float32(0.5),
             "i": np.int64(4), "b": np.bool_(True), "t0": torch.tensor(7), "p": Path("/a/b"),
             "inf": math.inf, "none": None}
    out = storage.plain_data(value)
    assert out == {"1": [[0, 1, 2], [[1.5], [2.5]]], "s": 0.5, "i": 4, "b": True, "t0": 7,
                   "p": "/a/b", "inf": math.inf, "none": None}
    assert type(out["i"]) is int and type(out["b"]) is bool and type(out["s"]) is float
    with pytest.raises(TypeError, match="object of type object"):
        storage.plain_data({"x": object()})
    assert storage.plain_data({"x": {1, 2}}, default=sorted) == {"x": [1, 2]}


def test_json_data_writes_non_finite_floats_as_json_can_hold():
    out = storage.json_data({"nan": math.nan, "v": torch.tensor([1.0, math.inf, -math.inf]),
                             "n": [np.float64("nan")]})
    assert out == {"nan": None, "v": [1.0, "inf", "-inf"], "n": [None]}
    json.dumps(out, allow_nan=False)  # strict JSON


def test_write_json_round_trip_and_failure(tmp_path, umask):
    path = storage.write_json(tmp_path / "r.json", {"a": np.arange(2), "x": math.nan})
    assert json.loads(path.read_text()) == {"a": [0, 1], "x": None}
    with pytest.raises(TypeError):
        storage.write_json(tmp_path / "bad.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
