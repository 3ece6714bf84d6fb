"""ctdnn.data: loading, checking, caching and the ``data`` command line.

Paper-data tests compare against an independent computation with
``scipy.io.loadmat``; simulator tests use small fake simulators installed in
place of the real modules, so they run in milliseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import ctdnn.data as cd
from ctdnn.__main__ import main
from ctdnn.data import sources
from ctdnn.data.cache import atomic_write, save_arrays, simulated_cache_dir

ELM_SHA = "e0b1daed8b835eab8595a87e20798c17dc251cf569c35f6eac6120dcaf906bb2"
CDR_SHA = "1a19f4f69636ec6f0eac0de2bc73bc38b6a3d27e39f155f55b8c036b499d042a"


# ---------------------------------------------------------------------------
# Fake simulators (same signatures as the real ones, tiny and deterministic)
# ---------------------------------------------------------------------------

CALLS: dict[str, int] = {}


def fake_ranges():
    nominal = np.arange(1.0, 16.0)
    return np.stack([0.6 * nominal, 1.4 * nominal], axis=1)


def fake_dalec(n_samples=2486, *, seed=0, progress=True, **overrides):
    CALLS["ELM"] = CALLS.get("ELM", 0) + 1
    rng = np.random.default_rng(seed)
    r = fake_ranges()
    x = rng.uniform(r[:, 0], r[:, 1], size=(n_samples, 15))
    y = np.sin(x[:, :10]) * overrides.get("gain", 1.0) + x[:, 5:15] ** 2
    return x, y, {"n_samples": n_samples, "seed": seed, **overrides}


def fake_cdr(n_samples=800, *, seed=0, progress=True, **overrides):
    CALLS["CDR"] = CALLS.get("CDR", 0) + 1
    rng = np.random.default_rng(seed)
    x = rng.dirichlet(np.ones(55), size=n_samples)
    y = np.tanh(x @ rng.standard_normal((55, 72)))
    return x, y, {"n_samples": n_samples, "seed": seed, **overrides}


def fake_dcr(n_samples=10000, *, seed=0, progress=True, **overrides):
    CALLS["DCR"] = CALLS.get("DCR", 0) + 1
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size=(n_samples, 3))
    y = np.exp(x @ rng.standard_normal((3, 882)) / 3.0) + 5.0
    return x, y, {"n_samples": n_samples, "seed": seed, **overrides}


class Boom(RuntimeError):
    pass


def exploding_cdr(n_samples=800, *, seed=0, progress=True, **overrides):
    CALLS["CDR"] = CALLS.get("CDR", 0) + 1
    raise Boom("simulation interrupted halfway")


@pytest.fixture
def fake_simulators(monkeypatch):
    """Install the fakes as ctdnn.data.{dalec,cdr,dcr}; returns the call counter."""
    CALLS.clear()
    modules = {
        "ctdnn.data.dalec": {"simulate_dalec": fake_dalec, "dalec_parameter_ranges": fake_ranges},
        "ctdnn.data.cdr": {"simulate_cdr": fake_cdr},
        "ctdnn.data.dcr": {"simulate_dcr": fake_dcr},
    }
    for module_name, attrs in modules.items():
        module = types.ModuleType(module_name)
        for key, value in attrs.items():
            setattr(module, key, value)
        monkeypatch.setitem(sys.modules, module_name, module)
    return CALLS


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# ---------------------------------------------------------------------------
# Paper data
# ---------------------------------------------------------------------------


def test_elm_paper_matches_independent_computation(paper_data_dir):
    data = cd.load("elm", source="paper", dtype=torch.float64)
    assert data.name == "ELM" and data.source == "paper"
    assert data.sizes == (1740, 497, 249)
    assert (data.n_in, data.n_out) == (15, 10)
    for x in (data.x_train, data.x_val, data.x_test):
        assert x.min() >= -1.0 and x.max() <= 1.0
    assert data.y_train.min() >= 0.0 and data.y_train.max() <= 1.0
    assert torch.allclose(data.y_train.min(0).values, torch.zeros(10, dtype=torch.float64))
    assert torch.allclose(data.y_train.max(0).values, torch.ones(10, dtype=torch.float64))

    mat = scipy.io.loadmat(paper_data_dir / "NNERDS.mat")
    lo, hi = mat["paramrange"][:, 0], mat["paramrange"][:, 1]
    ids = {k: mat[k].astype(int).ravel() - 1 for k in ("idtrain", "idval", "idtest")}
    ymin = mat["yall"][ids["idtrain"]].min(0)
    ymax = mat["yall"][ids["idtrain"]].max(0)
    for split, key in (("train", "idtrain"), ("val", "idval"), ("test", "idtest")):
        x_ref = 2.0 * (mat["xall"][ids[key]] - (lo + hi) / 2.0) / (hi - lo)
        y_ref = (mat["yall"][ids[key]] - ymin) / (ymax - ymin)
        np.testing.assert_allclose(getattr(data, f"x_{split}").numpy(), x_ref, rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_allclose(getattr(data, f"y_{split}").numpy(), y_ref, rtol=1e-12,
                                   atol=1e-12)
    assert data.meta["file"]["sha256"] == ELM_SHA
    assert data.meta["file"]["location"] == "CTDNN_DATA_DIR"
    json.dumps(data.meta)  # the record is JSON-serialisable


def test_cdr_paper_split_and_zscore(paper_data_dir):
    a = cd.load("CDR", source="paper", seed=3, dtype=torch.float64)
    b = cd.load("CDR", source="paper", seed=3, dtype=torch.float64)
    c = cd.load("CDR", source="paper", seed=4, dtype=torch.float64)
    assert a.sizes == (400, 200, 200) and (a.n_in, a.n_out) == (55, 72)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.y_train, c.y_train)
    torch.testing.assert_close(a.x_train.mean(0), torch.zeros(55, dtype=torch.float64),
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(a.x_train.std(0, correction=0),
                               torch.ones(55, dtype=torch.float64), atol=1e-10, rtol=0)

    # Documented split: default_rng(seed).permutation; samples are columns of Y and C.
    raw = cd.load("CDR", source="paper", seed=3, normalize="none", dtype=torch.float64)
    mat = scipy.io.loadmat(paper_data_dir / "CDR_Data.mat")
    perm = np.random.default_rng(3).permutation(800)
    np.testing.assert_array_equal(raw.x_train.numpy(), mat["Y"].T[perm[:400]])
    np.testing.assert_array_equal(raw.y_val.numpy(), mat["C"].T[perm[400:600]])
    np.testing.assert_array_equal(raw.y_test.numpy(), mat["C"].T[perm[600:]])
    # z-scoring leaves outputs unchanged and is undone exactly by denormalize_x
    np.testing.assert_array_equal(a.y_train.numpy(), raw.y_train.numpy())
    np.testing.assert_allclose(a.denormalize_x(a.x_test).numpy(), raw.x_test.numpy(),
                               rtol=1e-12, atol=1e-15)


def test_round_trips_and_to(paper_data_dir):
    data = cd.load("ELM", source="paper", dtype=torch.float64)
    mat = scipy.io.loadmat(paper_data_dir / "NNERDS.mat")
    idx = mat["idtest"].astype(int).ravel() - 1
    y_raw = torch.as_tensor(mat["yall"][idx])
    x_raw = torch.as_tensor(mat["xall"][idx])
    torch.testing.assert_close(data.normalize_y(y_raw), data.y_test)
    torch.testing.assert_close(data.normalize_x(x_raw), data.x_test)
    torch.testing.assert_close(data.denormalize_y(data.normalize_y(y_raw)), y_raw,
                               rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(data.denormalize_x(data.x_test), x_raw, rtol=1e-12, atol=1e-12)
    # numpy in, numpy out
    np.testing.assert_allclose(data.denormalize_y(data.normalize_y(mat["yall"])), mat["yall"],
                               rtol=1e-12, atol=1e-9)

    f32 = cd.load("ELM", source="paper")
    assert f32.x_train.dtype == torch.float32
    f64 = f32.to(dtype=torch.float64)
    assert f64 is not f32 and f64.y_val.dtype == torch.float64
    assert f32.y_val.dtype == torch.float32  # the original is untouched
    assert f64.meta["dtype"] == "float64" and f32.meta["dtype"] == "float32"
    torch.testing.assert_close(f64.x_test, f32.x_test.double())
    assert repr(f64).count("\n") == 0 and "ELM" in repr(f64) and "1740/497/249" in repr(f64)
    summary = f64.summary()
    assert "ELM" in summary and "paper" in summary and "1740/497/249" in summary
    assert summary.count("\n") <= 1


def _corrupt_copy(src: Path, folder: Path, how: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / src.name
    shutil.copyfile(src, dst)
    raw = bytearray(dst.read_bytes())
    if how == "flip":
        for i in range(1000, 1010):
            raw[i] ^= 0xFF
    else:
        raw = raw[: len(raw) // 2]
    dst.write_bytes(bytes(raw))
    return dst


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_corrupt_file_in_data_dir_is_rejected(paper_data_dir, tmp_path, monkeypatch, how,
                                              fake_simulators):
    bad = _corrupt_copy(paper_data_dir / "NNERDS.mat", tmp_path / "bad", how)
    monkeypatch.setenv("CTDNN_DATA_DIR", str(bad.parent))
    actual = sources.sha256sum(bad)
    for source in ("paper", "auto"):  # auto must not silently skip a bad local file
        with pytest.raises(cd.DataIntegrityError) as info:
            cd.load("ELM", source=source)
        message = str(info.value)
        assert str(bad) in message and ELM_SHA in message and actual in message
    assert fake_simulators == {}


def test_corrupt_file_in_cache_is_removed(paper_data_dir, ctdnn_cache_dir, monkeypatch):
    monkeypatch.delenv("CTDNN_DATA_DIR")
    bad = _corrupt_copy(paper_data_dir / "CDR_Data.mat", ctdnn_cache_dir / "paper", "flip")
    with pytest.warns(UserWarning, match="corrupt"):
        with pytest.raises(cd.DataUnavailableError):
            cd.load("CDR", source="paper")
    assert not bad.exists()


def test_dcr_file_checked_by_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("CTDNN_DATA_DIR", str(tmp_path))
    scipy.io.savemat(tmp_path / "DCR_Data.mat", {"Y": np.zeros((3, 50)), "C": np.zeros((882, 50))})
    with pytest.raises(cd.DataIntegrityError, match=r"Y has shape \(3, 50\)"):
        cd.load("DCR", source="paper")
    (tmp_path / "DCR_Data.mat").write_bytes(b"not a MAT file at all")
    with pytest.raises(cd.DataIntegrityError, match="DCR_Data.mat"):
        cd.load("DCR", source="paper")


def test_dcr_paper_file_split_and_centering(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    Y = rng.uniform(size=(3, 10000))
    C = np.repeat(Y[:1], 882, axis=0) * np.linspace(1.0, 2.0, 882)[:, None]
    scipy.io.savemat(tmp_path / "DCR_Data.mat", {"Y": Y, "C": C})
    monkeypatch.setenv("CTDNN_DATA_DIR", str(tmp_path))
    data = cd.load("DCR", source="paper", seed=1, dtype=torch.float64)
    assert data.sizes == (400, 200, 9400) and (data.n_in, data.n_out) == (3, 882)
    perm = np.random.default_rng(1).permutation(10000)
    np.testing.assert_array_equal(data.x_train.numpy(), Y.T[perm[:400]])  # inputs unchanged
    c_train = C.T[perm[:400]]
    np.testing.assert_allclose(data.y_train.numpy(), c_train - c_train.mean(0), atol=1e-14)
    np.testing.assert_allclose(data.y_test.numpy(), C.T[perm[600:]] - c_train.mean(0),
                               atol=1e-14)
    assert len(data.meta["file"]["sha256"]) == 64


# ---------------------------------------------------------------------------
# Downloads (a fake downloader stands in for the network)
# ---------------------------------------------------------------------------


def _fake_downloader(*payloads: bytes | None | Exception):
    """pooch.HTTPDownloader stand-in: the i-th call writes payloads[i] (the last repeats).

    An exception payload is raised; ``None`` raises a plain ConnectionError, which pooch
    does not retry. ``Downloader.urls`` records every address asked for.
    """
    class Downloader:
        urls: list[str] = []

        def __init__(self, progressbar=False, timeout=None, **kwargs):
            assert timeout is not None and timeout <= 60

        def __call__(self, url, output_file, pooch, check_only=False):
            payload = payloads[min(len(Downloader.urls), len(payloads) - 1)]
            Downloader.urls.append(url)
            if payload is None:
                raise ConnectionError("network unreachable")
            if isinstance(payload, Exception):
                raise payload
            Path(output_file).write_bytes(payload)

    return Downloader


@pytest.fixture
def no_retry_wait(monkeypatch):
    """pooch waits 1, 2, 3 s between download attempts; the tests need not."""
    import pooch.core

    monkeypatch.setattr(pooch.core.time, "sleep", lambda seconds: None)


def test_download_is_verified_and_cached(paper_data_dir, ctdnn_cache_dir, monkeypatch):
    import pooch

    monkeypatch.delenv("CTDNN_DATA_DIR")
    monkeypatch.setenv("CTDNN_OFFLINE", "0")
    good = (paper_data_dir / "NNERDS.mat").read_bytes()
    monkeypatch.setattr(pooch, "HTTPDownloader", _fake_downloader(good))
    data = cd.load("ELM", source="paper")
    assert data.meta["file"]["location"] == "download"
    assert data.meta["file"]["sha256"] == ELM_SHA
    cached = ctdnn_cache_dir / "paper" / "NNERDS.mat"
    assert _files(ctdnn_cache_dir) == [cached]
    # an ordinary file (0666 less the umask), not pooch's private temporary-file mode
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(cached.stat().st_mode) == 0o666 & ~umask
    # a second load finds it in the cache, even offline
    monkeypatch.setenv("CTDNN_OFFLINE", "1")
    assert cd.load("ELM", source="paper").meta["file"]["location"] == "cache"


def test_bad_or_failed_download_leaves_nothing(ctdnn_cache_dir, monkeypatch, no_retry_wait):
    import pooch

    monkeypatch.setenv("CTDNN_OFFLINE", "0")
    garbage = _fake_downloader(b"garbage" * 100)
    monkeypatch.setattr(pooch, "HTTPDownloader", garbage)
    with pytest.raises(cd.DataUnavailableError, match="expected sha256"):
        cd.load("CDR", source="paper")
    # a checksum mismatch is retried (it may be a broken transfer), then refused
    assert garbage.urls == [sources.PAPER_FILES["CDR"].url] * (1 + sources.DOWNLOAD_RETRIES)
    monkeypatch.setattr(pooch, "HTTPDownloader", _fake_downloader(None))
    with pytest.raises(cd.DataUnavailableError, match="network unreachable"):
        cd.load("CDR", source="paper")
    assert _files(ctdnn_cache_dir) == []


def test_registry_is_a_pooch_of_the_pinned_files(ctdnn_cache_dir):
    import pooch

    reg = sources.registry()
    assert isinstance(reg, pooch.Pooch)
    assert Path(reg.abspath) == ctdnn_cache_dir / "paper"  # follows CTDNN_CACHE_DIR
    assert reg.registry == {"NNERDS.mat": f"sha256:{ELM_SHA}", "CDR_Data.mat": f"sha256:{CDR_SHA}",
                            "DCR_Data.mat": None}
    assert reg.urls["DCR_Data.mat"] == sources.PAPER_FILES["DCR"].url
    assert reg.retry_if_failed == sources.DOWNLOAD_RETRIES >= 1


def test_transient_download_failures_are_retried(paper_data_dir, ctdnn_cache_dir, monkeypatch,
                                                 no_retry_wait):
    import pooch
    import requests

    monkeypatch.delenv("CTDNN_DATA_DIR")
    monkeypatch.setenv("CTDNN_OFFLINE", "0")
    flaky = _fake_downloader(requests.exceptions.ConnectionError("reset by peer"),
                             b"half a file",
                             (paper_data_dir / "CDR_Data.mat").read_bytes())
    monkeypatch.setattr(pooch, "HTTPDownloader", flaky)
    located = cd.fetch("CDR", progress=False)
    assert located.location == "download" and located.sha256 == CDR_SHA
    assert len(flaky.urls) == 3
    assert _files(ctdnn_cache_dir) == [ctdnn_cache_dir / "paper" / "CDR_Data.mat"]


def test_dcr_download_is_checked_before_it_gets_its_name(ctdnn_cache_dir, monkeypatch, tmp_path):
    import io

    import pooch

    monkeypatch.setenv("CTDNN_OFFLINE", "0")
    buffer = io.BytesIO()
    C = np.ones((882, 10000))
    C[5, 7] = np.nan
    scipy.io.savemat(buffer, {"Y": np.zeros((3, 10000)), "C": C})
    monkeypatch.setattr(pooch, "HTTPDownloader", _fake_downloader(buffer.getvalue()))
    with pytest.raises(cd.DataUnavailableError, match=r"variable C holds 1 non-finite"):
        cd.fetch("DCR", progress=False)
    assert _files(ctdnn_cache_dir) == []


# ---------------------------------------------------------------------------
# Missing files, offline
# ---------------------------------------------------------------------------


def test_offline_without_files_paper_raises():
    with pytest.raises(cd.DataUnavailableError) as info:
        cd.load("ELM", source="paper")
    message = str(info.value)
    for needle in ("NNERDS.mat", "CTDNN_DATA_DIR", "simulated", sources.PAPER_FILES["ELM"].url):
        assert needle in message
    assert isinstance(info.value, RuntimeError)


def test_offline_auto_falls_back_to_simulator(fake_simulators):
    with pytest.warns(cd.DataSourceWarning, match="simulated"):
        data = cd.load("ELM", source="auto", n_samples=None)
    assert data.source == "simulated" and data.meta["source"] == "simulated"
    assert "NNERDS.mat" in data.meta["source_reason"]
    assert data.sizes == (1740, 497, 249)
    assert data.x_train.min() >= -1.0 and data.x_train.max() <= 1.0
    assert data.y_train.min() >= 0.0 and data.y_train.max() <= 1.0 + 1e-6
    assert fake_simulators == {"ELM": 1}
    json.dumps(data.meta)


def test_auto_uses_paper_when_present(paper_data_dir, fake_simulators):
    with warnings.catch_warnings():
        warnings.simplefilter("error", cd.DataSourceWarning)
        data = cd.load("CDR")
    assert data.source == "paper" and "CTDNN_DATA_DIR" in data.meta["source_reason"]
    # a request the file cannot serve goes to the simulator, and says why
    with pytest.warns(cd.DataSourceWarning, match="n_samples=80"):
        small = cd.load("CDR", n_samples=80)
    assert small.source == "simulated" and small.sizes == (40, 20, 20)
    with pytest.raises(ValueError, match="simulated"):
        cd.load("CDR", source="paper", n_samples=80)


# ---------------------------------------------------------------------------
# Simulated data and the cache
# ---------------------------------------------------------------------------


def test_simulated_cache_hit(fake_simulators):
    a = cd.load("CDR", source="simulated", n_samples=120, simulator_seed=1, seed=0)
    b = cd.load("CDR", source="simulated", n_samples=120, simulator_seed=1, seed=0)
    assert fake_simulators == {"CDR": 1}
    assert not a.meta["simulator"]["cache_hit"] and b.meta["simulator"]["cache_hit"]
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    # another split seed reuses the cached samples
    c = cd.load("CDR", source="simulated", n_samples=120, simulator_seed=1, seed=5)
    assert fake_simulators == {"CDR": 1} and not torch.equal(a.y_train, c.y_train)
    assert a.meta["simulator"]["settings"] == {"n_samples": 120, "seed": 1}


def test_different_settings_different_cache_files(fake_simulators):
    paths = {
        cd.simulate("ELM", n_samples=30, seed=0, progress=False).path,
        cd.simulate("ELM", n_samples=30, seed=1, progress=False).path,
        cd.simulate("ELM", n_samples=31, seed=0, progress=False).path,
        cd.simulate("ELM", n_samples=30, seed=0, progress=False, gain=2.0).path,
    }
    assert len(paths) == 4 and all(p.is_file() for p in paths)
    assert fake_simulators == {"ELM": 4}
    assert len(_files(simulated_cache_dir())) == 4


def test_interrupted_simulation_leaves_no_file(fake_simulators, monkeypatch):
    monkeypatch.setattr(sys.modules["ctdnn.data.cdr"], "simulate_cdr", exploding_cdr)
    with pytest.raises(Boom):
        cd.load("CDR", source="simulated", n_samples=50)
    assert _files(simulated_cache_dir()) == []


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out" / "result.npz"
    with pytest.raises(Boom):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"half of the")
            raise Boom("killed")
    assert _files(tmp_path) == []
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"complete")
    assert _files(tmp_path) == [target] and target.read_bytes() == b"complete"


def test_unreadable_cache_file_is_replaced(fake_simulators):
    first = cd.simulate("DCR", n_samples=40, progress=False)
    first.path.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="regenerating"):
        again = cd.simulate("DCR", n_samples=40, progress=False)
    assert not again.cache_hit and fake_simulators == {"DCR": 2}
    np.testing.assert_array_equal(first.y, again.y)


@pytest.mark.parametrize("change", ["samples", "nan"])
def test_cache_file_with_wrong_rows_or_nan_is_regenerated(fake_simulators, change):
    sim = cd.simulate("CDR", n_samples=60, progress=False)
    with np.load(sim.path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    if change == "samples":
        arrays.update(x=sim.x[:59], y=sim.y[:59])
    else:
        arrays["y"] = np.where(np.arange(sim.y.size).reshape(sim.y.shape) == 7, np.nan, sim.y)
    save_arrays(sim.path, meta, **arrays)
    with pytest.warns(UserWarning, match=r"x \(59, 55\)" if change == "samples" else "non-finite"):
        data = cd.load("CDR", source="simulated", n_samples=60, progress=False)
    assert sum(data.sizes) == 60 and fake_simulators == {"CDR": 2}
    assert torch.isfinite(data.y_train).all()


def test_dcr_simulated_split_sizes_and_centering(fake_simulators):
    data = cd.load("DCR", source="simulated", n_samples=1000, dtype=torch.float64)
    assert data.sizes == (400, 200, 400)
    torch.testing.assert_close(data.y_train.mean(0), torch.zeros(882, dtype=torch.float64))
    assert cd.split_sizes("DCR", 10000) == (400, 200, 9400)
    assert cd.split_sizes("DCR", 700) == (400, 200, 100)
    assert cd.split_sizes("DCR", 70) == (40, 20, 10)
    assert cd.split_sizes("ELM", 2486) == (1740, 497, 249)
    assert cd.split_sizes("CDR", 800) == (400, 200, 200)
    assert sum(cd.split_sizes("ELM", 100)) == 100


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="ELM, CDR, DCR"):
        cd.load("MNIST")
    with pytest.raises(ValueError, match="auto, paper, simulated"):
        cd.load("ELM", source="internet")
    with pytest.raises(ValueError, match="zscore"):
        cd.load("CDR", normalize="minmax")


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def test_cli_info(paper_data_dir, fake_simulators, capsys):
    cd.simulate("CDR", n_samples=20, progress=False)
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "NNERDS.mat" in out and "DCR_Data.mat" in out and CDR_SHA in out
    assert "valid" in out and "CDR-n20-seed0-" in out


def test_cli_fetch_offline_fails_cleanly(capsys):
    assert main(["data", "fetch", "elm"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NNERDS.mat" in err and "Traceback" not in err


def test_cli_fetch_and_simulate(paper_data_dir, fake_simulators, capsys):
    assert main(["data", "fetch", "CDR"]) == 0
    assert CDR_SHA in capsys.readouterr().out
    assert main(["data", "simulate", "DCR", "--n-samples", "30", "--seed", "2"]) == 0
    assert main(["data", "simulate", "dcr", "--n-samples", "30", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "simulated" in out and "cached" in out and fake_simulators == {"DCR": 1}
    with pytest.raises(SystemExit) as info:
        main(["data", "frobnicate"])
    assert info.value.code == 2


def test_cli_subprocess_offline_error():
    result = subprocess.run([sys.executable, "-m", "ctdnn", "data", "fetch", "CDR"],
                            capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 1
    assert "CDR_Data.mat" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------
# The paper's DCR file serves every preset's sample count
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dcr_file_dir(tmp_path_factory):
    """A stand-in for DCR_Data.mat (the right variables and shapes), written once."""
    folder = tmp_path_factory.mktemp("dcr-paper")
    rng = np.random.default_rng(7)
    Y = rng.uniform(size=(3, 10000))
    C = Y[:1] * np.linspace(1.0, 2.0, 882)[:, None] + Y[2:3] ** 2
    scipy.io.savemat(folder / "DCR_Data.mat", {"Y": Y, "C": C})
    return folder, Y, C


def test_dcr_paper_file_subsamples_only_the_test_set(dcr_file_dir, monkeypatch, fake_simulators):
    folder, Y, C = dcr_file_dir
    monkeypatch.setenv("CTDNN_DATA_DIR", str(folder))
    full = cd.load("DCR", source="paper", seed=2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cd.DataSourceWarning)  # the quick preset's request
        quick = cd.load("DCR", n_samples=2000, seed=2, dtype=torch.float64)
    assert quick.source == "paper" and fake_simulators == {}
    assert quick.sizes == (400, 200, 1400) and full.sizes == (400, 200, 9400)
    # training and validation data are the paper's split; the test set is its first 1400
    perm = np.random.default_rng(2).permutation(10000)
    np.testing.assert_array_equal(quick.x_train.numpy(), Y.T[perm[:400]])
    np.testing.assert_array_equal(quick.x_val.numpy(), full.x_val.numpy())
    np.testing.assert_array_equal(quick.y_train.numpy(), full.y_train.numpy())
    np.testing.assert_array_equal(quick.x_test.numpy(), Y.T[perm[600:2000]])
    assert quick.meta["n_samples"] == 2000
    assert quick.meta["split"]["test_subsample"] == {"kept": 1400, "of": 9400,
                                                     "n_samples_file": 10000}
    assert "1400 of its 9400 test samples" in quick.summary()
    assert "1400 of its 9400 test samples" in quick.meta["source_reason"]
    assert "test_subsample" not in full.meta["split"] and "of its" not in full.summary()
    json.dumps(quick.meta)
    # the smoke preset's 700 is served too, by source="paper" as well
    assert cd.load("DCR", source="paper", n_samples=700).sizes == (400, 200, 100)


def test_dcr_counts_the_paper_file_cannot_serve(dcr_file_dir, monkeypatch, fake_simulators):
    folder, _, _ = dcr_file_dir
    monkeypatch.setenv("CTDNN_DATA_DIR", str(folder))
    with pytest.warns(cd.DataSourceWarning, match=r"n_samples=500 .* 700 to 10000"):
        small = cd.load("DCR", n_samples=500)
    assert small.source == "simulated" and fake_simulators == {"DCR": 1}
    with pytest.raises(ValueError, match="source='simulated'"):
        cd.load("DCR", source="paper", n_samples=20000)
