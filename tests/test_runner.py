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
