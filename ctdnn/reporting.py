"""Machine-readable results of an experiment run: environment, metrics, claims, verdicts.

Every experiment notebook ends by writing one JSON file through :func:`write_results`; the
reproduction summary and the reproducibility page of the book are built from those files
only, so the book reports exactly what was run.
"""

from __future__ import annotations

import json
import math
import os
import platform
from importlib import metadata
from pathlib import Path

import torch

from .checks import resolve_device
from .storage import write_json

__all__ = ["environment_info", "write_results", "read_results", "claim", "VERDICTS",
           "mean_std"]

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")
_PACKAGES = ("ctdnn", "torch", "torchdiffeq", "numpy", "scipy", "discretize", "matplotlib",
             "papermill", "jupyter-book")


def environment_info(device: str | torch.device | None = None) -> dict:
    """Package versions, Python, platform, CPU count and the compute device in use."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    dev = resolve_device(device)
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(dev),
        "versions": versions,
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def claim(claim_id: str, statement: str, paper: str, ours: str, verdict: str,
          basis: str = "") -> dict:
    """One row of the reproduction summary.

    Args:
        claim_id: short stable identifier, e.g. ``"dto-legendre-vs-monomial-ELM"``.
        statement: the paper's claim in one sentence.
        paper: the paper's number or statement.
        ours: our number(s), formatted.
        verdict: one of :data:`VERDICTS`.
        basis: how the verdict was decided (the rule applied to the numbers).
    """
    if verdict not in VERDICTS:
        raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
    return {"id": claim_id, "claim": statement, "paper": paper, "ours": ours,
            "verdict": verdict, "rule": basis}


def mean_std(values) -> tuple[float, float]:
    """Mean and (population) standard deviation of a list of floats, NaN-safe for one value."""
    values = [float(v) for v in values]
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def write_results(path: str | os.PathLike, results: dict) -> Path:
    """Write ``results`` as JSON atomically (:func:`ctdnn.storage.write_json`).

    Non-finite floats become ``null``/``"inf"``; tensors and numpy scalars become lists and
    numbers. The file gets the permissions of an ordinary new file (``0o666`` less the
    umask). Returns the path written.

    Raises:
        TypeError: ``results`` holds an object with no JSON form; nothing is written.
    """
    return write_json(path, results, indent=1)


def read_results(directory: str | os.PathLike) -> list[dict]:
    """All results files (``*.json`` holding an object) of a directory, sorted by run name."""
    out = []
    for p in sorted(Path(directory).glob("*.json")):
        with open(p) as fh:
            data = json.load(fh)
        if isinstance(data, dict):
            out.append(data)
    return sorted(out, key=lambda r: r.get("run", ""))
