"""Units of work: in-process and on a Dask cluster, identical results, failures, resume."""

import json
import os
import pickle
import time

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


def _busy(seconds: float) -> None:
    c0 = time.process_time()
    while time.process_time() - c0 < seconds:
        pass


def _stepped_unit(steps: int) -> int:
    _busy(0.05)                                   # fixed part (models, evaluation)
    done = 0
    for k in parallel.metered(range(steps)):      # 0.03 s of CPU per step, first step 0.09 s
        _busy(0.09 if k == 0 else 0.03)
        done += 1
    for k in parallel.metered(range(10)):         # a loop left early records its last step
        _busy(0.01)
        if k == 1:
            break
    return done


def test_metered_loops_time_each_step_of_a_timed_unit(tmp_path, monkeypatch):
    monkeypatch.delenv(parallel.SCHEDULER_ENV, raising=False)
    assert list(parallel.metered(range(3))) == [0, 1, 2]   # outside a unit: the steps as they are
    assert map_units(_stepped_unit, [4], name="plain") == [4]   # untimed: nothing recorded
    monkeypatch.setenv(parallel.TIMES_ENV, str(tmp_path / "times.jsonl"))
    assert map_units(_stepped_unit, [4], name="timed") == [4]
    [line] = [json.loads(x) for x in (tmp_path / "times.jsonl").read_text().splitlines()]
    first, second = line["loops"]
    assert first["steps"] == 4 and second["steps"] == 2
    assert first["cpu_seconds"] == pytest.approx(0.09 + 3 * 0.03, abs=0.02)
    assert first["steady_seconds"] == pytest.approx(0.03, abs=0.006)   # the warm-up step left out
    assert second["steady_seconds"] == pytest.approx(0.01, abs=0.006)
    assert line["cpu_seconds"] == pytest.approx(0.05 + 0.18 + 0.02, abs=0.03)
    assert list(parallel.metered(range(2))) == [0, 1]   # no unit running: nothing recorded


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


_FAULTS = """
import json, resource, sys
import numpy as np
from ctdnn import parallel

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(200):   # 2 MiB arrays, allocated, touched and freed, as a training step does
        np.ones(1 << 18).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
first = faults()
changed = parallel.undo_malloc_trim()
again = parallel.undo_malloc_trim()
print(json.dumps({"before": first, "changed": changed, "again": again, "after": faults()}))
"""


@pytest.mark.skipif(not os.uname().sysname == "Linux", reason="glibc's allocator")
def test_units_undo_dasks_malloc_trim_threshold_and_stop_faulting_pages(tmp_path):
    """Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc map
    and unmap every large array anew; a unit's process takes the default thresholds back."""
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", _FAULTS], env=env, capture_output=True,
                         text=True, check=True)
    got = json.loads(out.stdout)
    assert got["changed"] is True and got["again"] is False   # once per process
    assert got["before"] > 200 * 100      # 512 pages per array, faulted in anew each time
    assert got["after"] < got["before"] / 20
    env.pop("MALLOC_TRIM_THRESHOLD_")
    plain = json.loads(subprocess.run([sys.executable, "-c", _FAULTS], env=env,
                                      capture_output=True, text=True, check=True).stdout)
    assert plain["changed"] is False      # nothing to undo without the variable


def test_the_runners_cluster_starts_workers_without_dasks_malloc_trim_threshold(monkeypatch):
    pytest.importorskip("distributed")
    from ctdnn import runner

    # A default LocalCluster leaves its pre-spawn variables in the environment of the process
    # that started it (here: the module's cluster fixture); `ctdnn run` starts no other.
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)

    cluster, _ = runner._start_cluster(2)
    try:
        with cluster.get_client() as client:
            env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset"))
            settings = client.run(_worker_settings)
    finally:
        cluster.close()
    assert len(env) == 2 and set(env.values()) == {"unset"}
    # the statistical profiler is off and the monitors slower, on every worker
    assert list(settings.values()) == [(False, "1s", "1s", "2s")] * 2


def _worker_settings():
    import dask

    return tuple(dask.config.get(k) for k in (
        "distributed.worker.profile.enabled", "distributed.admin.tick.interval",
        "distributed.worker.memory.monitor-interval", "distributed.admin.system-monitor.interval"))


def test_concurrently_runs_in_order_in_process_and_at_once_on_a_cluster(monkeypatch):
    import threading

    order = []

    def call(k):
        def run():
            order.append((k, threading.get_ident()))
            return k * 2
        return run

    assert parallel.concurrently(call(1), call(2), call(3)) == [2, 4, 6]
    assert [k for k, _ in order] == [1, 2, 3]
    assert {t for _, t in order} == {threading.get_ident()}   # in the caller's thread

    monkeypatch.setenv(parallel.SCHEDULER_ENV, "tcp://127.0.0.1:1")   # never contacted
    barrier = threading.Barrier(3, timeout=20)

    def meet(k):
        def run():
            barrier.wait()   # passes only if all three calls run at once
            return k
        return run

    assert parallel.concurrently(meet("a"), meet("b"), meet("c")) == ["a", "b", "c"]

    def fails(msg):
        def run():
            raise ValueError(msg)
        return run

    finished = []
    with pytest.raises(ValueError, match="first"):
        parallel.concurrently(fails("first"), lambda: finished.append(1), fails("second"))
    assert finished == [1]   # the others ran to the end


def test_unit_scopes_keep_their_units_apart_also_in_threads(tmp_path, monkeypatch):
    import threading

    monkeypatch.setenv(parallel.UNIT_DIR_ENV, str(tmp_path / "units"))
    monkeypatch.setenv(parallel.RUN_KEY_ENV, "key")
    calls = []

    def unit(k):
        calls.append(k)
        return k

    def scoped(tag, factor):
        with parallel.unit_scope(tag):
            return map_units(lambda k: unit(k * factor), [1, 2], name="same name")

    out = {}
    threads = [threading.Thread(target=lambda t=t, f=f: out.__setitem__(t, scoped(t, f)))
               for t, f in (("paper", 1), ("simulated", 10))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert out == {"paper": [1, 2], "simulated": [10, 20]}
    assert sorted(calls) == [1, 2, 10, 20]
    # stored under each scope's own key: found again there, not under the other scope's
    assert scoped("simulated", 1000) == [10, 20] and scoped("paper", 1000) == [1, 2]
    assert sorted(calls) == [1, 2, 10, 20]
    assert map_units(lambda k: unit(-k), [1, 2], name="same name") == [-1, -2]   # no scope
