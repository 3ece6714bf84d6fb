"""Shared fixtures.

Every test runs with its own empty data cache (``CTDNN_CACHE_DIR``), with
downloads disabled (``CTDNN_OFFLINE=1``) and without ``CTDNN_DATA_DIR``, so no
test touches the network or the user's cache. Tests that need the paper files
request ``paper_data_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Value from the outer environment (e.g. CI), captured before any test clears it.
_ENV_DATA_DIR = os.environ.get("CTDNN_DATA_DIR", "").strip()
# Copies of the published files next to the repository, for tests and CI.
_SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"
PAPER_DATA_FILES = ("NNERDS.mat", "CDR_Data.mat")


@pytest.fixture(autouse=True)
def ctdnn_cache_dir(tmp_path_factory, monkeypatch) -> Path:
    """A fresh, empty cache directory; downloads off; no local data folder."""
    cache = tmp_path_factory.mktemp("ctdnn-cache")
    monkeypatch.setenv("CTDNN_CACHE_DIR", str(cache))
    monkeypatch.setenv("CTDNN_OFFLINE", "1")
    monkeypatch.delenv("CTDNN_DATA_DIR", raising=False)
    return cache


def _find_paper_data_dir() -> Path | None:
    for candidate in (_ENV_DATA_DIR, _SHARED_DATA_DIR):
        if candidate and all((Path(candidate) / f).is_file() for f in PAPER_DATA_FILES):
            return Path(candidate)
    return None


@pytest.fixture
def paper_data_dir(ctdnn_cache_dir, monkeypatch) -> Path:
    """Folder with the paper's ELM and CDR files, exported as ``CTDNN_DATA_DIR``.

    Taken from the outer ``CTDNN_DATA_DIR`` or the shared data folder next to
    the repository; the test is skipped when neither holds the files.
    """
    folder = _find_paper_data_dir()
    if folder is None:
        pytest.skip("paper data files not found (set CTDNN_DATA_DIR)")
    monkeypatch.setenv("CTDNN_DATA_DIR", str(folder))
    return folder
