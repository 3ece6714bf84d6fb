"""The runner: presets, papermill execution into a generated folder, failures, resume."""

import json

import nbformat
import pytest

from ctdnn import runner


def _notebook(path, code):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('preset = "default"\nrun_name = "x"\noutput_dir = "results"\nvalue = 1')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# Title"), params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "ctdnn").mkdir()
    (tmp_path / "ctdnn" / "x.py").write_text("# package source\n")
    _notebook(tmp_path / "notebooks" / "good.ipynb",
              "import json, os\nos.makedirs(output_dir, exist_ok=True)\n"
              "json.dump({'run': run_name, 'value': value}, open(f'{output_dir}/{run_name}.json', 'w'))")
    _notebook(tmp_path / "notebooks" / "bad.ipynb", "x = 1\nraise ValueError('boom in the notebook')")
    presets = tmp_path / "presets.yml"
    presets.write_text("smoke:\n  good:\n    - {_name: A, value: 2}\n    - {_name: B, value: 3}\n"
                       "broken:\n  bad:\n    - {}\n")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    return tmp_path, presets


def test_plan_names_runs_and_injects_parameters(project):
    root, presets = project
    runs = runner.plan("smoke", presets_file=presets)
    assert [r["name"] for r in runs] == ["good_A", "good_B"]
    assert runs[0]["parameters"] == {"preset": "smoke", "run_name": "good_A",
                                     "output_dir": "results", "value": 2}
    with pytest.raises(runner.RunnerError, match="unknown preset 'fast'; choose one of smoke, broken"):
        runner.plan("fast", presets_file=presets)
    with pytest.raises(runner.RunnerError, match="matches no run"):
        runner.plan("smoke", ["nothing"], presets_file=presets)


def test_execute_writes_copies_and_results_and_skips_unchanged(project):
    root, presets = project
    out = root / "generated"
    runs = runner.plan("smoke", presets_file=presets)
    logs = []
    runner.execute(runs, out, log=logs.append)
    assert (out / "good_A.ipynb").exists() and (out / "good_B.ipynb").exists()
    assert json.loads((out / "results" / "good_B.json").read_text()) == {"run": "good_B", "value": 3}
    source = nbformat.read(root / "notebooks" / "good.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in source.cells if c.cell_type == "code")  # untouched
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) == {"good_A", "good_B"} and manifest["good_A"]["wall_time_s"] > 0
    logs.clear()
    runner.execute(runs, out, log=logs.append)
    assert all("skipped" in line for line in logs if "good" in line)
    (root / "ctdnn" / "x.py").write_text("# changed\n")  # a package change invalidates runs
    logs.clear()
    runner.execute(runs, out, log=logs.append)
    assert not any("skipped" in line for line in logs)


def test_failing_notebook_is_named_and_leaves_no_partial_copy(project):
    root, presets = project
    out = root / "generated"
    with pytest.raises(runner.RunnerError, match=r"notebook bad.ipynb \(run bad\) failed in cell \[3\] "
                                                 r"\('x = 1' \.\.\.\): ValueError: boom in the notebook"):
        runner.execute(runner.plan("broken", presets_file=presets), out, log=lambda *_: None)
    assert not list(out.glob("*.ipynb")) and not list(out.glob(".*.ipynb"))
    assert "bad" not in json.loads((out / "manifest.json").read_text() if (out / "manifest.json").exists() else "{}")


def test_cli_reports_errors_in_one_line(project, capsys):
    root, presets = project
    from ctdnn.__main__ import main
    assert main(["run", "--preset", "nonexistent", "--list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ctdnn run: ") and "Traceback" not in err


def test_only_selects_before_checking_other_notebooks(project):
    root, presets = project
    presets.write_text("smoke:\n  good:\n    - {}\n  missing:\n    - {}\n")
    assert [r["name"] for r in runner.plan("smoke", ["good"], presets_file=presets)] == ["good"]
    with pytest.raises(runner.RunnerError, match="notebooks/missing.ipynb, which does not exist"):
        runner.plan("smoke", presets_file=presets)


# A notebook whose units go through ctdnn.parallel.map_units, as the experiment notebooks' do.
UNITS_CODE = """import json, os, time
from pathlib import Path
from ctdnn.parallel import map_units, metered
os.makedirs(output_dir, exist_ok=True)
log = Path(output_dir).resolve() / f'{run_name}_calls.txt'

def unit(seed):
    with open(log, 'a') as fh:
        fh.write(f'{seed}\\n')
    if seed in broken:
        raise ValueError(f'seed {seed} diverged')
    c0 = time.process_time()
    while time.process_time() - c0 < 0.05:            # 0.05 s of CPU besides the epochs
        pass
    for _ in metered(range(epochs)):                  # 0.02 s of CPU per epoch
        c0 = time.process_time()
        while time.process_time() - c0 < 0.02:
            pass
    import torch
    torch.manual_seed(seed)
    return {'seed': seed, 'value': float(torch.rand(1)) * value}

out = map_units(unit, seeds, name=f'{run_name} training')
json.dump({'run': run_name, 'units': out, 'scheduler': os.environ.get('CTDNN_SCHEDULER', '')},
          open(f'{output_dir}/{run_name}.json', 'w'))
"""


@pytest.fixture
def unit_project(project):
    root, presets = project
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('preset = "default"\nrun_name = "x"\noutput_dir = "results"\n'
                                       'value = 1\nseeds = [0]\nepochs = 1\nbroken = []')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(UNITS_CODE)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, root / "notebooks" / "units.ipynb")
    presets.write_text(
        "_estimate:\n  units: {scale: epochs, probe: 2, seeds: 1}\n"
        "  good: {scale: value, probe: 1, adds: [units_A, units_C]}\n"
        "smoke:\n  good:\n    - {_name: A, value: 2, _alone: true}\n"
        "  units:\n    - {_name: A, seeds: [0, 1, 2], epochs: 4}\n"
        "    - {_name: B, seeds: [3, 4], epochs: 4, value: 5}\n"
        "  bad:\n    - {_always: true}\n")
    return root, presets


def test_stages_run_ordinary_runs_together_and_marked_ones_alone(unit_project):
    root, presets = unit_project
    runs = runner.plan("smoke", presets_file=presets)
    assert [r["name"] for r in runs] == ["good_A", "units_A", "units_B", "bad"]
    assert runner._stages(runs) == [[0], [1, 2], [3]]
    with pytest.raises(runner.RunnerError, match="unknown preset '_estimate'"):
        runner.plan("_estimate", presets_file=presets)


@pytest.fixture(scope="module")
def scheduler():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as lc:
        yield lc.scheduler_address


def test_notebooks_on_a_cluster_match_the_in_process_results(unit_project, scheduler):
    root, presets = unit_project
    runs = runner.plan("smoke", ["units"], presets_file=presets)
    results = {}
    for label, env, jobs in (("seq", {"CTDNN_SCHEDULER": ""}, 1),
                             ("dask", {"CTDNN_SCHEDULER": scheduler}, 3)):
        out = root / label
        runner.execute(runs, out, log=lambda *_: None, env=env, jobs=jobs)
        results[label] = {name: json.loads((out / "results" / f"{name}.json").read_text())
                          for name in ("units_A", "units_B")}
        assert sorted(p.name for p in (out / "results").glob("*.json")) == ["units_A.json",
                                                                           "units_B.json"]
    assert results["dask"]["units_A"].pop("scheduler") == scheduler
    assert results["seq"]["units_A"].pop("scheduler") == ""
    results["dask"]["units_B"].pop("scheduler"), results["seq"]["units_B"].pop("scheduler")
    assert results["dask"] == results["seq"]
    assert [u["seed"] for u in results["seq"]["units_A"]["units"]] == [0, 1, 2]


def test_a_failed_unit_fails_its_run_by_name_and_the_rerun_resumes_unit_by_unit(unit_project):
    root, presets = unit_project
    runs = runner.plan("smoke", ["units_A"], presets_file=presets)
    runs[0]["parameters"]["broken"] = [1]
    out = root / "generated"
    with pytest.raises(runner.RunnerError, match=r"1 of 3 units of 'units_A training' failed "
                                                 r"\(2 finished and kept\): unit '1': "
                                                 r"ValueError: seed 1 diverged"):
        runner.execute(runs, out, log=lambda *_: None)
    calls = out / ".staging" / "units_A" / "results" / "units_A_calls.txt"
    assert calls.read_text().split() == ["0", "1", "2"]
    runs[0]["parameters"]["broken"] = []   # same key apart from this: a fresh key...
    runner.execute(runs, out, log=lambda *_: None)
    assert (out / "results" / "units_A_calls.txt").read_text().split() == ["0", "1", "2",
                                                                           "0", "1", "2"]
    assert not (out / ".units" / "units_A").exists()   # stored units go once the run succeeds


def test_units_of_an_interrupted_run_are_reused_for_the_same_key(unit_project, monkeypatch):
    root, presets = unit_project
    runs = runner.plan("smoke", ["units_A"], presets_file=presets)
    out = root / "generated"
    real = runner._publish

    def crash(*args):   # the notebook finished, then the machine went down
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_publish", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(runs, out, log=lambda *_: None)
    monkeypatch.setattr(runner, "_publish", real)
    runner.execute(runs, out, log=lambda *_: None)
    calls = (out / "results" / "units_A_calls.txt").read_text().split()
    assert calls == ["0", "1", "2"]   # no unit ran twice


def test_estimate_scales_probe_times_by_work_and_seeds(unit_project):
    root, presets = unit_project
    runs = runner.plan("smoke", ["units"], presets_file=presets)
    est = runner.estimate(runs, 2, log=lambda *_: None, presets_file=presets,
                          scratch=root / "probe")
    rows = {r["name"]: r for r in est["runs"]}
    assert rows["units_A"]["units"] == 3 and rows["units_B"]["units"] == 2
    # a unit costs 0.05 s plus 0.02 s of CPU per epoch: the probe (1 seed, 2 epochs, timed
    # epoch by epoch) is scaled to 4 epochs and 3 seeds (units_A), 2 seeds (units_B)
    unit = 0.05 + 4 * 0.02
    assert rows["units_A"]["longest_unit_h"] * 3600 == pytest.approx(unit, rel=0.25)
    assert rows["units_B"]["longest_unit_h"] * 3600 == pytest.approx(unit, rel=0.25)
    assert rows["units_A"]["core_hours"] * 3600 >= 3 * unit * 0.75
    assert est["core_hours"] == pytest.approx(sum(r["core_hours"] for r in est["runs"]))
    assert set(est["wall_hours"]) == {2, 64}
    assert est["wall_hours"][64] <= est["wall_hours"][2] <= est["core_hours"] + 1e-12


def test_data_summary_names_the_file_or_the_simulator_and_why(tmp_path):
    paper = tmp_path / "p.json"
    paper.write_text(json.dumps({"data": {"dataset": "ELM", "source": "paper",
                                          "filename": "NNERDS.mat", "found_in": "cache"}}))
    assert runner._data_summary(paper) == "data: ELM the paper's NNERDS.mat (from the cache)"
    sim = tmp_path / "s.json"
    sim.write_text(json.dumps({"data": {"ELM": {"source": "paper", "filename": "NNERDS.mat",
                                                "found_in": "CTDNN_DATA_DIR"},
                                        "DCR": {"source": "simulated",
                                                "reason": "downloads are disabled."}}}))
    assert runner._data_summary(sim) == ("data: ELM the paper's NNERDS.mat (from CTDNN_DATA_DIR); "
                                         "DCR simulated (downloads are disabled)")
    records = tmp_path / "r.json"
    records.write_text(json.dumps({"data": [
        {"name": "CDR", "source": "paper", "filename": "CDR_Data.mat",
         "extra": {"found_in": "download"}},
        {"name": "DCR", "source": "simulated", "description": "simulated by dcr",
         "extra": {"reason": "offline, see https://zenodo.org/x"}},
        {"name": "spiral", "source": "simulated", "description": "the spiral ODE"}]}))
    assert runner._data_summary(records) == (
        "data: CDR the paper's CDR_Data.mat (downloaded); DCR simulated (offline, see its "
        "address); spiral simulated (the spiral ODE)")
    none = tmp_path / "n.json"
    none.write_text(json.dumps({"data": {"source": "none"}}))
    assert runner._data_summary(none) == ""


def test_cli_refuses_zero_workers(project, capsys):
    from ctdnn.__main__ import main
    assert main(["run", "--preset", "smoke", "--workers", "0", "--no-book"]) == 1
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err


def _is_timing(key: str) -> bool:
    """Fields that hold times or the machine, which differ between any two runs."""
    return key in {"environment", "finished", "wall_time"} or key.endswith(("_s", "seconds"))


def _without_timing(obj):
    if isinstance(obj, dict):
        return {k: _without_timing(v) for k, v in obj.items() if not _is_timing(k)}
    if isinstance(obj, list):
        return [_without_timing(v) for v in obj]
    return obj


@pytest.mark.slow
def test_smoke_runs_with_two_workers_equal_the_sequential_ones(paper_data_dir, tmp_path):
    """The real notebooks: a DTO and a neural-ODE page, the NFE study, the bases page (three
    kinds of units queued together) and the stand-ins page (its trainings at once, started
    after the pages it reuses), on a 2-worker cluster and in-process; the same results files
    with the same numbers (timings aside)."""
    from ctdnn.__main__ import main

    only = ["02_dto_surrogates_CDR", "04_neural_ode_surrogates_CDR", "05_stationary_ode_nfe",
            "10_beyond_bases", "08_standins"]
    results = {}
    for workers in (1, 2):
        work = tmp_path / f"w{workers}"
        assert main(["run", "--preset", "smoke", "--only", *only, "--no-book", "--workdir",
                     str(work), "--workers", str(workers)]) == 0
        folder = work / "book" / "generated" / "results"
        results[workers] = {p.name: _without_timing(json.loads(p.read_text()))
                            for p in sorted(folder.glob("*.json"))}
    assert sorted(results[1]) == [f"{name}.json" for name in sorted(only)]
    assert results[2] == results[1]


CTRL_C_SCRIPT = """
import signal
import sys
# as at a terminal, even where the test itself runs as a background job (which ignores SIGINT)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
import nbformat
from ctdnn import runner

root = Path(sys.argv[1])
(root / "notebooks").mkdir()
(root / "ctdnn").mkdir()
for name in ("slow1", "slow2"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('preset = "x"\\nrun_name = "x"\\noutput_dir = "results"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("import os, time\\n"
                "open('started-' + run_name, 'w').write(str(os.getpid()))\\ntime.sleep(300)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
(root / "presets.yml").write_text("p:\\n  slow1:\\n    - {}\\n  slow2:\\n    - {}\\n")
runner.ROOT = root
runs = runner.plan("p", presets_file=root / "presets.yml")
runner.execute(runs, root / "out", jobs=2, log=print)
"""


def test_ctrl_c_stops_notebooks_running_in_threads(tmp_path):
    """Notebooks run in threads; a Ctrl-C must still end them (and their kernels) at once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stage = tmp_path / "out" / ".staging"
    markers = [stage / name / f"started-{name}" for name in ("slow1", "slow2")]
    # a kernel that did not start is replaced after runner.KERNEL_START_TIMEOUT seconds
    deadline = time.monotonic() + 2 * runner.KERNEL_START_TIMEOUT + 60
    while not all(m.exists() and m.read_text() for m in markers):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.2)
    kernels = [int(m.read_text()) for m in markers]
    proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    proc.wait(timeout=60)
    assert time.monotonic() - t0 < 20 and proc.returncode != 0
    time.sleep(0.5)
    for pid in kernels:   # the kernels are gone (or left as zombies of the ended runner)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        with open(f"/proc/{pid}/stat") as fh:
            assert fh.read().split()[2] == "Z", f"kernel {pid} still running"


# A kernel that stays silent (it never answers) for its first ``hangs`` launches, then runs
# ipykernel: what a kernel that does not start looks like from the runner.
HANGING_KERNEL = """
import os, sys, time
count = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launches")
n = len(open(count).read()) if os.path.exists(count) else 0
open(count, "a").write("x")
if n < int(os.environ.get("HANGS", "1")):
    print("silent kernel", n + 1, flush=True)
    time.sleep(600)
os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *sys.argv[1:]])
"""


@pytest.mark.parametrize("hangs", [1, 2], ids=["replaced", "fails-after-two"])
def test_a_kernel_that_does_not_start_is_replaced(project, tmp_path, monkeypatch, hangs):
    import sys

    root, presets = project
    spec = tmp_path / "jupyter" / "kernels" / "hanging"
    spec.mkdir(parents=True)
    (spec / "launch.py").write_text(HANGING_KERNEL)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(spec / "launch.py"), "-f", "{connection_file}"],
        "display_name": "hanging", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setattr(runner, "KERNEL_START_TIMEOUT", 8)
    monkeypatch.setattr(runner, "KERNEL_START_ATTEMPTS", 2)
    runs = runner.plan("smoke", ["good_A"], presets_file=presets)
    lines = []
    out = root / "generated"
    if hangs == 1:
        runner.execute(runs, out, kernel="hanging", log=lines.append, env={"HANGS": "1"})
        assert json.loads((out / "results" / "good_A.json").read_text())["value"] == 2
        assert any("good_A: the kernel did not start" in line and "2 of 2" in line
                   for line in lines)
    else:
        with pytest.raises(runner.RunnerError, match=r"(?s)didn't respond in 8 seconds after 2 "
                                                     r"kernels .*end with: .*silent kernel 2"):
            runner.execute(runs, out, kernel="hanging", log=lines.append, env={"HANGS": "2"})
        assert not (out / "good_A.ipynb").exists()
    assert len((spec / "launches").read_text()) == 2


def test_estimate_adds_the_runs_a_run_trains_again(unit_project, capsys):
    root, presets = unit_project
    runs = runner.plan("smoke", ["good", "units"], presets_file=presets)
    est = runner.estimate(runs, 2, log=lambda *_: None, presets_file=presets,
                          scratch=root / "probe")
    rows = {r["name"]: r for r in est["runs"]}
    good = rows["good_A"]
    assert good["adds"] == ["units_A"] and good["not_added"] == ["units_C"]
    assert good["units"] == 3   # units_A's, added
    assert good["core_hours"] > rows["units_A"]["core_hours"]
    assert good["longest_unit_h"] >= rows["units_A"]["longest_unit_h"]
    runner._print_estimate(est, "smoke", 2)
    assert "good_A also trains again units_C, not estimated here: its figure is a lower bound" \
        in capsys.readouterr().out


def test_a_probe_over_its_limit_is_reported_not_estimated(unit_project):
    root, presets = unit_project
    text = presets.read_text().replace("units: {scale: epochs, probe: 2, seeds: 1}",
                                       "units: {scale: epochs, probe: 200, limit: 1}")
    presets.write_text(text)
    runs = runner.plan("smoke", ["units_B"], presets_file=presets)
    lines = []
    est = runner.estimate(runs, 1, log=lines.append, presets_file=presets,
                          scratch=root / "probe")
    [row] = est["runs"]
    assert not row["timed"] and row["error"] == "its probe ran past its limit of 1 s"
    assert lines == ["[1/1] units_B: not estimated: its probe ran past its limit of 1 s"]
    assert est["core_hours"] == 0


@pytest.mark.parametrize("rule, message", [
    ("{scale: epochs, probe: 2, limt: 5}", "unknown setting\\(s\\) limt; the settings are adds"),
    ("{probe: 2}", "at least scale"),
    ("[epochs]", "must be a mapping")])
def test_estimate_rules_are_checked(tmp_path, rule, message):
    presets = tmp_path / "presets.yml"
    presets.write_text(f"_estimate:\n  units: {rule}\nsmoke:\n  units:\n    - {{}}\n")
    with pytest.raises(runner.RunnerError, match=f"_estimate: units in presets.yml.*{message}"):
        runner._probe_rules(presets)


def test_probe_iterations_that_round_up_to_whole_epochs(tmp_path):
    results = tmp_path / "r.json"

    def factor(iterations, epochs, per_epoch, full):
        results.write_text(json.dumps({"metrics": {"protocol": {
            "iterations": iterations, "epochs": epochs, "iterations_per_epoch": per_epoch}}}))
        return runner._iterations_factor(results, full)

    assert factor(20, 1, 20, 2000) == 100          # a whole epoch of 20 iterations
    assert factor(87, 1, 87, 2000) == 2001 / 87    # 2000 rounds up to 23 epochs of 87
    assert factor(20, 1, 20, 30) == 2              # 30 rounds up to 2 epochs
    assert factor(1, 1, 20, 2000) == 2000          # sampled iterations: no rounding


def test_unit_cost_scales_the_steps_and_keeps_the_rest():
    unit = {"cpu_seconds": 1.0, "loops": [{"steps": 10, "cpu_seconds": 0.6, "steady_seconds": 0.05},
                                          {"steps": 5, "cpu_seconds": 0.2, "steady_seconds": 0.04}]}
    # in loops at the steady rate: 0.5 + 0.2; besides: 0.3 (incl. the first steps' warm-up)
    assert runner._unit_cost(unit, 100) == pytest.approx(0.3 + 100 * 0.7)
    assert runner._unit_cost({"cpu_seconds": 2.0, "loops": []}, 100) == 2.0   # no loop: as is
    assert runner._unit_cost({"cpu_seconds": 2.0}, 100) == 2.0


def test_estimate_probes_shrink_companion_budgets_with_the_scaled_parameter():
    from ctdnn.runner import _doubled, _probe

    run = {"parameters": {"epochs": 1000, "gnvpro_work_units": 4000, "seeds": [0, 1, 2, 3, 4]}}
    rule = {"scale": "epochs", "probe": 10, "seeds": 1, "together": ["gnvpro_work_units"]}
    params, seed_factor, key = _probe(run, rule)
    assert key == "epochs" and params["epochs"] == 10 and params["seeds"] == [0]
    assert params["gnvpro_work_units"] == 40 and seed_factor == 5.0
    assert _doubled(params, rule) == {"gnvpro_work_units": 80}
    assert run["parameters"]["gnvpro_work_units"] == 4000   # the run's own parameters untouched
    # counts of seeds shrink with the seeds; `set` replaces parameters for the probe
    run = {"parameters": {"epochs": 1000, "seeds": [0, 1, 2, 3, 4], "wp_seeds": 5,
                          "experiments": ["a", "b"]}}
    rule = {"scale": "epochs", "probe": 2, "seeds": 1, "seed_counts": ["wp_seeds"],
            "set": {"experiments": []}}
    params, seed_factor, key = _probe(run, rule)
    assert params == {"epochs": 2, "seeds": [0], "wp_seeds": 1, "experiments": []}
    assert seed_factor == 5.0 and run["parameters"]["wp_seeds"] == 5


@pytest.mark.parametrize("broken", [False, True], ids=["runs", "dependency-failed"])
def test_a_run_after_others_shares_their_stage_but_starts_once_they_ended(unit_project, broken):
    root, presets = unit_project
    presets.write_text(
        "smoke:\n  units:\n    - {_name: A, seeds: [0, 1], epochs: 40}\n"
        f"    - {{_name: B, seeds: [2], epochs: 40, broken: {[2] if broken else []}}}\n"
        "  good:\n    - {_name: A, value: 2, _after: [units]}\n"
        "  bad:\n    - {_always: true}\n")
    runs = runner.plan("smoke", ["units", "good"], presets_file=presets)
    assert [r["after"] for r in runs] == [[], [], ["units"]]
    assert runner._stages(runs) == [[0, 1, 2]]   # one stage: no barrier after the units
    lines = []
    out = root / "generated"
    if broken:
        with pytest.raises(runner.RunnerError, match="units_B"):
            runner.execute(runs, out, log=lines.append, jobs=3, env={"CTDNN_SCHEDULER": ""})
        assert not any("good_A: running" in line for line in lines)
        assert not (out / "good_A.ipynb").exists()
        return
    runner.execute(runs, out, log=lines.append, jobs=3, env={"CTDNN_SCHEDULER": ""})
    start = next(k for k, line in enumerate(lines) if "good_A: running" in line)
    for name in ("units_A", "units_B"):
        assert next(k for k, line in enumerate(lines) if f"{name}: done" in line) < start
    assert (out / "good_A.ipynb").exists()


def test_after_must_name_notebooks(project):
    root, presets = project
    presets.write_text("smoke:\n  good:\n    - {_after: units}\n")
    with pytest.raises(runner.RunnerError, match="_after must be a list of notebook names"):
        runner.plan("smoke", presets_file=presets)
