"""Results files: JSON-safe conversion, atomic writes, claims."""

import json
import math

import numpy as np
import pytest
import torch

from ctdnn import reporting


def test_write_and_read_results(tmp_path):
    path = reporting.write_results(tmp_path / "r" / "run.json", {
        "run": "run", "a": np.arange(3), "b": torch.tensor([1.5, 2.5]), "c": np.float32(0.5),
        "nan": math.nan, "inf": math.inf, "nested": {"t": torch.tensor(3)}})
    data = json.loads(path.read_text())
    assert data == {"run": "run", "a": [0, 1, 2], "b": [1.5, 2.5], "c": 0.5, "nan": None,
                    "inf": "inf", "nested": {"t": 3}}
    assert not list(path.parent.glob("*.tmp"))
    assert reporting.read_results(tmp_path / "r")[0]["run"] == "run"


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        reporting.write_results(tmp_path / "bad.json", {"x": object()})
    assert not list(tmp_path.iterdir())


def test_claim_and_environment():
    row = reporting.claim("x", "Legendre needs fewer NFE", "8.6x", "3.1x", "partly", "ratio > 1")
    assert row["verdict"] == "partly"
    with pytest.raises(ValueError, match="verdict must be one of"):
        reporting.claim("x", "s", "p", "o", "maybe")
    env = reporting.environment_info("cpu")
    assert env["device"] == "cpu" and env["versions"]["torch"].startswith("2.13")
    assert reporting.mean_std([1.0, 3.0]) == (2.0, 1.0)
