"""Faults injected into the data layer: damaged caches, damaged paper files, wrong folders.

Each test puts the data layer in a state a user can reach (a cache file cut short by a full
disk, a file from another version, a NaN-filled copy of a paper file, a misspelled
``CTDNN_DATA_DIR``) and checks the documented safe behaviour: the simulated set is
regenerated with a warning naming the file, or the load is refused with a message naming
the file and the variable, or the fallback says where it looked.
"""

from __future__ import annotations

import os
import stat
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io

import ctdnn.data as cd
from ctdnn.__main__ import main
from ctdnn.data import sources
from ctdnn.data.cache import save_arrays

CALLS: dict[str, int] = {}


def fake_cdr(n_samples=800, *, seed=0, progress=True, **overrides):
    """55 inputs on the simplex -> 72 outputs, like the CDR simulator, in microseconds."""
    CALLS["CDR"] = CALLS.get("CDR", 0) + 1
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.ones(55), size=n_samples)
    return x, np.tanh(x @ rng.standard_normal((55, 72))), {"n_samples": n_samples}


def fake_dcr(n_samples=10000, *, seed=0, progress=True, **overrides):
    CALLS["DCR"] = CALLS.get("DCR", 0) + 1
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n_samples, 3))
    return x, np.exp(x @ rng.standard_normal((3, 882)) / 3.0), {"n_samples": n_samples}


@pytest.fixture
def fake_simulators(monkeypatch):
    CALLS.clear()
    for module_name, attrs in {"ctdnn.data.cdr": {"simulate_cdr": fake_cdr},
                               "ctdnn.data.dcr": {"simulate_dcr": fake_dcr}}.items():
        module = types.ModuleType(module_name)
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, module_name, module)
    return CALLS


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _cached(name="CDR", n=60):
    """A valid cache file written by the package: (path, its x, its y)."""
    sim = cd.simulate(name, n_samples=n, progress=False)
    return sim.path, sim.x, sim.y


def _rewrite(path: Path, **changes):
    """Rewrite a cache file with some arrays replaced, keeping its metadata record."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = __import__("json").loads(str(arrays.pop("__meta__")))
    arrays.update(changes)
    save_arrays(path, meta, **arrays)


# ---------------------------------------------------------------------------
# Simulated-data cache files
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_empty_or_truncated_cache_file_is_regenerated(fake_simulators, damage):
    path, x, y = _cached()
    raw = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else raw[: len(raw) // 2])
    with pytest.warns(UserWarning, match="regenerating") as record:
        data = cd.load("CDR", source="simulated", n_samples=60, progress=False)
    assert str(path) in str(record[0].message)
    assert fake_simulators == {"CDR": 2} and data.n_in == 55
    assert path.stat().st_size > 0 and not data.meta["simulator"]["cache_hit"]
    np.testing.assert_array_equal(cd.simulate("CDR", n_samples=60).x, x)


def test_empty_cache_file_does_not_crash_the_cli(fake_simulators, capsys):
    path, _, _ = _cached("DCR", 40)
    path.write_bytes(b"")
    with pytest.warns(UserWarning, match="regenerating"):
        assert main(["data", "simulate", "DCR", "--n-samples", "40", "--no-progress"]) == 0
    assert "simulated" in capsys.readouterr().out and fake_simulators == {"DCR": 2}
    assert main(["data", "info", "DCR"]) == 0


@pytest.mark.parametrize("change, problem", [
    ("features", r"x \(60, 5\) and y \(60, 72\); expected x \(60, 55\)"),
    ("outputs", r"y \(60, 71\); expected x \(60, 55\) and y \(60, 72\)"),
])
def test_cache_file_with_wrong_features_is_regenerated(fake_simulators, change, problem):
    # (wrong sample counts and NaN were already refused: tests/test_data_load.py)
    path, x, y = _cached()
    damaged = {"features": {"x": x[:, :5]}, "outputs": {"y": y[:, :71]}}
    _rewrite(path, **damaged[change])
    with pytest.warns(UserWarning, match=problem) as record:
        data = cd.load("CDR", source="simulated", n_samples=60, progress=False)
    assert str(path) in str(record[0].message)
    assert (data.n_in, data.n_out) == (55, 72) and sum(data.sizes) == 60
    assert fake_simulators == {"CDR": 2}


def test_cache_file_of_another_request_is_regenerated(fake_simulators):
    path, _, _ = _cached()
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
    save_arrays(path, {"key": "0123456789abcdef"}, **arrays)  # e.g. copied from elsewhere
    with pytest.warns(UserWarning, match="request key"):
        cd.simulate("CDR", n_samples=60, progress=False)
    assert fake_simulators == {"CDR": 2}


def test_simulator_returning_wrong_features_is_refused(fake_simulators, monkeypatch):
    def five_inputs(n_samples=800, *, seed=0, progress=True, **overrides):
        x, y, settings = fake_cdr(n_samples, seed=seed)
        return x[:, :5], y, settings

    monkeypatch.setattr(sys.modules["ctdnn.data.cdr"], "simulate_cdr", five_inputs)
    with pytest.raises(RuntimeError, match=r"x \(30, 5\).*expected x \(30, 55\)"):
        cd.simulate("CDR", n_samples=30, progress=False)
    assert not list(cd.cache_dir().rglob("*.npz"))


def test_cache_files_get_ordinary_permissions(fake_simulators, umask_022):
    path, _, _ = _cached()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


# ---------------------------------------------------------------------------
# Paper files: shapes and finite values
# ---------------------------------------------------------------------------


def _dcr_file(folder: Path, *, nan_in: str | None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"Y": rng.uniform(size=(3, 10000)), "C": rng.standard_normal((882, 10000))}
    if nan_in:
        arrays[nan_in][1, 2] = np.nan
        arrays[nan_in][0, 5] = np.inf
    folder.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "DCR_Data.mat", arrays)
    return folder / "DCR_Data.mat"


@pytest.mark.parametrize("key", ["Y", "C"])
def test_paper_dcr_file_with_nan_is_refused(tmp_path, monkeypatch, fake_simulators, key):
    bad = _dcr_file(tmp_path / "data", nan_in=key)
    monkeypatch.setenv("CTDNN_DATA_DIR", str(bad.parent))
    for source in ("paper", "auto"):  # auto must not train on it, nor skip it silently
        with pytest.raises(cd.DataIntegrityError) as info:
            cd.load("DCR", source=source)
        message = str(info.value)
        assert str(bad) in message and f"variable {key} holds 2 non-finite" in message
    assert fake_simulators == {}


def test_cached_paper_dcr_file_with_nan_is_removed(ctdnn_cache_dir, fake_simulators):
    bad = _dcr_file(ctdnn_cache_dir / "paper", nan_in="C")
    with pytest.warns(UserWarning, match=r"corrupt.*variable C"):
        with pytest.warns(cd.DataSourceWarning):
            data = cd.load("DCR", n_samples=800, progress=False)
    assert data.source == "simulated" and not bad.exists()


@pytest.mark.parametrize("name", ["ELM", "CDR", "DCR"])
def test_every_paper_file_is_checked_for_shapes_and_finite_values(name):
    spec = sources.PAPER_FILES[name]
    good = {var: np.ones(shape) for var, shape in spec.variables.items()}
    assert sources.check_contents(spec, good) == []
    first = next(iter(spec.variables))
    nan = dict(good, **{first: np.full(spec.variables[first], np.nan)})
    assert sources.check_contents(spec, nan) == [
        f"variable {first} holds {int(np.prod(spec.variables[first]))} non-finite value(s) "
        "(NaN or inf)"]
    shape = spec.variables[first]
    wrong = dict(good, **{first: np.ones((shape[0], shape[1] + 1))})
    assert f"variable {first} has shape" in sources.check_contents(spec, wrong)[0]


def test_paper_file_changed_after_its_check_is_refused_on_read(tmp_path):
    path = _dcr_file(tmp_path, nan_in="Y")
    with pytest.raises(cd.DataIntegrityError, match=r"DCR_Data.mat.*variable Y"):
        sources.read_paper("DCR", path)


# ---------------------------------------------------------------------------
# The fallback says where it looked
# ---------------------------------------------------------------------------


def test_misspelled_data_dir_is_named_in_the_fallback_warning(tmp_path, monkeypatch,
                                                              fake_simulators, ctdnn_cache_dir):
    typo = tmp_path / "shared" / "dta"
    monkeypatch.setenv("CTDNN_DATA_DIR", str(typo))
    with pytest.warns(cd.DataSourceWarning) as record:
        data = cd.load("CDR", progress=False)
    message = str(record[0].message)
    assert data.source == "simulated"
    assert f"CTDNN_DATA_DIR={typo}, which does not exist" in message
    assert str(ctdnn_cache_dir / "paper") in message
    assert sources.PAPER_FILES["CDR"].url in message and "not tried" in message


def test_folder_without_the_file_and_a_failed_download_are_named(tmp_path, monkeypatch,
                                                                 fake_simulators):
    import pooch

    class Unreachable:
        def __init__(self, **kwargs):
            pass

        def __call__(self, url, output_file, pooch_obj):
            raise ConnectionError("no route to host")

    empty = tmp_path / "data"
    empty.mkdir()
    monkeypatch.setenv("CTDNN_DATA_DIR", str(empty))
    monkeypatch.setenv("CTDNN_OFFLINE", "0")
    monkeypatch.setattr(pooch, "HTTPDownloader", Unreachable)
    with pytest.warns(cd.DataSourceWarning) as record:
        cd.load("DCR", n_samples=800, progress=False)
    message = str(record[0].message)
    assert f"CTDNN_DATA_DIR={empty}" in message and "does not exist" not in message
    assert f"the download from {sources.PAPER_FILES['DCR'].url} failed" in message
    assert "no route to host" in message


def test_unset_data_dir_is_said(fake_simulators):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cd.load("CDR", progress=False)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, cd.DataSourceWarning)]
    assert "CTDNN_DATA_DIR is not set" in message and "CTDNN_OFFLINE=1" in message
