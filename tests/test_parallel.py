"""Units of work: in-process and on a Dask cluster, identical results, failures, resume."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from ctdnn import parallel
from ctdnn.parallel import UnitError, map_units


def draw(item):
    """A unit that does not seed itself: its numbers come from the unit's own fresh state."""
    return {"item": item, "torch": torch.rand(3).tolist(), "numpy": np.random.rand(2),
            "threads": torch.get_num_threads(), "dtype": str(torch.get_default_dtype())}


def seeded_train(seed):
    """A unit that seeds itself, as the experiment notebooks' units do."""
    torch.manual_seed(seed)
    w = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(16, 4, dtype=torch.float64)
    opt = torch.optim.SGD([w], lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        loss = torch.tanh(x @ w).square().mean()
        loss.backward()
        opt.step()
    return float(loss.detach())


def fail_on_two(item):
    if item == 2:
        raise ValueError(f"unit {item} diverged")
    return item * 10


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in (parallel.SCHEDULER_ENV, parallel.UNIT_DIR_ENV, parallel.RUN_KEY_ENV,
                parallel.PROGRESS_ENV, parallel.TIMES_ENV):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as lc:
        yield lc.scheduler_address
        for client in parallel._clients.values():
            client.close()
        parallel._clients.clear()


def test_in_process_keeps_order_and_leaves_the_callers_generators_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state().clone()
    out = map_units(draw, [3, 1, 2], name="draws")
    assert [r["item"] for r in out] == [3, 1, 2]
    assert torch.equal(torch.random.get_rng_state(), before)
    again = map_units(draw, [2], name="draws")
    assert again[0]["torch"] == out[2]["torch"]  # the state depends on (name, label) only
    assert out[0]["torch"] != out[1]["torch"]


def test_cluster_gives_the_in_process_results(cluster, monkeypatch):
    local = map_units(draw, list(range(6)), name="draws")
    local_train = map_units(seeded_train, [0, 1, 2, 3], name="train")
    monkeypatch.setenv(parallel.SCHEDULER_ENV, cluster)
    remote = map_units(draw, list(range(6)), name="draws")
    remote_train = map_units(seeded_train, [0, 1, 2, 3], name="train")
    assert remote_train == local_train   # bit-identical floats
    for a, b in zip(local, remote):
        assert a["item"] == b["item"] and a["torch"] == b["torch"]
        assert np.array_equal(a["numpy"], b["numpy"])
        assert (a["threads"], a["dtype"]) == (b["threads"], b["dtype"])


def test_cluster_runs_notebook_style_closures(cluster, monkeypatch):
    data = torch.arange(10.0)
    scale = 3.0

    def unit(k):   # closes over local data, as a notebook's function uses its globals
        return float(data[k] * scale)

    monkeypatch.setenv(parallel.SCHEDULER_ENV, cluster)
    assert map_units(unit, [9, 0, 4], name="closure") == [27.0, 0.0, 12.0]


@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_a_failed_unit_is_named_and_the_others_are_kept(where, request, monkeypatch):
    if where == "cluster":
        monkeypatch.setenv(parallel.SCHEDULER_ENV, request.getfixturevalue("cluster"))
    with pytest.raises(UnitError) as info:
        map_units(fail_on_two, [1, 2, 3], name="fits", labels=["a", "b", "c"])
    err = info.value
    assert "1 of 3 units of 'fits' failed" in str(err)
    assert "unit 'b': ValueError: unit 2 diverged" in str(err)
    assert err.results == [10, None, 30] and list(err.failures) == ["b"]


def test_finished_units_are_not_run_again_for_the_same_key(tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"

    def unit(k):
        with open(calls, "a") as fh:
            fh.write(f"{k}\n")
        if k == 2 and not (tmp_path / "fixed").exists():
            raise RuntimeError("transient failure")
        return {"k": k, "arr": np.arange(k)}

    monkeypatch.setenv(parallel.UNIT_DIR_ENV, str(tmp_path / "units"))
    monkeypatch.setenv(parallel.RUN_KEY_ENV, "key-1")
    with pytest.raises(UnitError):
        map_units(unit, [1, 2, 3], name="runs")
    (tmp_path / "fixed").touch()
    out = map_units(unit, [1, 2, 3], name="runs")   # resumes: only the failed unit runs
    assert [r["k"] for r in out] == [1, 2, 3] and np.array_equal(out[2]["arr"], np.arange(3))
    assert calls.read_text().split() == ["1", "2", "3", "2"]
    monkeypatch.setenv(parallel.RUN_KEY_ENV, "key-2")   # another key: everything runs
    map_units(unit, [1, 2, 3], name="runs")
    assert calls.read_text().split()[-3:] == ["1", "2", "3"]


def test_damaged_or_crafted_unit_files_are_run_again_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv(parallel.UNIT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(parallel.RUN_KEY_ENV, "k")
    map_units(lambda k: k + 1, [5], name="u")
    [path] = tmp_path.glob("*.pkl")
    header, payload = path.read_bytes().split(b"\n", 1)
    path.write_bytes(header + b"\n" + payload[:-3] + b"XYZ")   # corrupted payload
    assert map_units(lambda k: k + 100, [5], name="u") == [105]

    class Exploit:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    payload = pickle.dumps(Exploit())
    import hashlib
    meta = json.loads(path.read_bytes().split(b"\n", 1)[0])
    meta["sha256"] = hashlib.sha256(payload).hexdigest()
    path.write_bytes(json.dumps(meta).encode() + b"\n" + payload)
    assert map_units(lambda k: k + 7, [5], name="u") == [12]
    assert not (tmp_path / "pwned").exists()


def test_progress_and_unit_times_are_reported(tmp_path, monkeypatch):
    monkeypatch.setenv(parallel.PROGRESS_ENV, str(tmp_path / "progress.json"))
    monkeypatch.setenv(parallel.TIMES_ENV, str(tmp_path / "times.jsonl"))
    monkeypatch.setattr(parallel, "_progress", {"done": 0, "total": 0, "current": ""})
    map_units(seeded_train, [0, 1], name="train")
    assert parallel.read_progress(tmp_path / "progress.json") == {"done": 2, "total": 2,
                                                                   "current": "train"}
    times = [json.loads(line) for line in (tmp_path / "times.jsonl").read_text().splitlines()]
    assert [t["label"] for t in times] == ["0", "1"] and all(t["seconds"] > 0 for t in times)


def test_bad_arguments_are_refused_clearly():
    with pytest.raises(ValueError, match="labels must be unique; repeated: \\['a'\\]"):
        map_units(draw, [1, 2], name="x", labels=["a", "a"])
    with pytest.raises(ValueError, match="labels has 1 entries for 2 items"):
        map_units(draw, [1, 2], name="x", labels=["a"])
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        map_units(draw, [1], name=" ")
    with pytest.raises(TypeError, match="fn must be callable"):
        map_units(3, [1], name="x")


def test_statuses_are_stored_but_other_objects_are_not(tmp_path, monkeypatch):
    from ctdnn.solvers import Status

    monkeypatch.setenv(parallel.UNIT_DIR_ENV, str(tmp_path))
    monkeypatch.setenv(parallel.RUN_KEY_ENV, "k")
    map_units(lambda k: {"status": list(Status)[0]}, [1], name="s")
    map_units(lambda k: {"model": torch.nn.Linear(1, 1)}, [1], name="m")
    assert len(list(tmp_path.glob("*.pkl"))) == 1   # the module was not stored
    assert map_units(lambda k: 0, [1], name="s") == [{"status": list(Status)[0]}]


def warn_on_odd(item):
    if item % 2:
        import warnings
        warnings.warn(f"item {item} is odd", UserWarning)
    return item


@pytest.mark.parametrize("where", ["in-process", "cluster"])
def test_warnings_of_units_reach_the_caller(where, request, monkeypatch):
    if where == "cluster":
        monkeypatch.setenv(parallel.SCHEDULER_ENV, request.getfixturevalue("cluster"))
    with pytest.warns(UserWarning) as record:
        assert map_units(warn_on_odd, [1, 2, 3], name="w") == [1, 2, 3]
    assert [str(w.message) for w in record] == ["1: item 1 is odd", "3: item 3 is odd"]
