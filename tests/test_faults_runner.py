"""Faults of the runner: stale skips, a damaged manifest, a failing run over good outputs."""

import json
from types import SimpleNamespace

import nbformat
import pytest

from ctdnn import runner

# Writes its results file and a figure, then fails if asked to: a run that breaks half-way.
NOTEBOOK = """import json, os
os.makedirs(output_dir, exist_ok=True)
with open(f'{output_dir}/{run_name}_figure.png', 'w') as fh:
    fh.write(f'figure of attempt {attempt}')
json.dump({'run': run_name, 'attempt': attempt}, open(f'{output_dir}/{run_name}.json', 'w'))
if fail:
    raise RuntimeError('the solver diverged after the figure was saved')
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "ctdnn").mkdir()
    (tmp_path / "ctdnn" / "x.py").write_text("# package source\n")
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('preset = "default"\nrun_name = "x"\noutput_dir = "results"\n'
                                       'dataset = "ELM"\nattempt = 0\nfail = False')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(NOTEBOOK)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, tmp_path / "notebooks" / "exp.ipynb")
    presets = tmp_path / "presets.yml"
    presets.write_text("smoke:\n  exp:\n    - {_name: ELM, dataset: ELM}\n")
    monkeypatch.setattr(runner, "ROOT", tmp_path)
    return tmp_path, presets


def _run(presets, out, **params):
    runs = runner.plan("smoke", presets_file=presets)
    runs[0]["parameters"].update(params)
    logs = []
    runner.execute(runs, out, log=logs.append)
    return logs


def test_obtaining_the_paper_file_later_reruns_the_pages_built_from_simulated_data(
        project, tmp_path, monkeypatch):
    root, presets = project
    out = root / "generated"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    monkeypatch.setenv("CTDNN_DATA_DIR", str(data_dir))
    _run(presets, out)
    assert any("skipped" in line for line in _run(presets, out))
    (data_dir / "NNERDS.mat").write_bytes(b"the paper's file")   # the reader obtains it
    logs = _run(presets, out)
    assert not any("skipped" in line for line in logs), logs
    (data_dir / "CDR_Data.mat").write_bytes(b"another data set's file")   # not read by this run
    assert any("skipped" in line for line in _run(presets, out))


def test_other_installed_package_versions_rerun(project, monkeypatch):
    root, presets = project
    out = root / "generated"
    _run(presets, out)
    real = list(runner.metadata.distributions())

    def changed():
        for d in real:
            if d.metadata and d.metadata["Name"] and d.metadata["Name"].lower() == "numpy":
                yield SimpleNamespace(metadata={"Name": "numpy"}, version=d.version + ".post1")
            else:
                yield d

    monkeypatch.setattr(runner.metadata, "distributions", changed)
    assert not any("skipped" in line for line in _run(presets, out))


@pytest.mark.parametrize("damage", ["{not json", "", '["a list"]', '{"exp_ELM": 3}'])
def test_a_damaged_manifest_is_rebuilt_with_a_warning(project, damage):
    root, presets = project
    out = root / "generated"
    _run(presets, out)
    (out / "manifest.json").write_text(damage)
    logs = _run(presets, out)
    warning = [line for line in logs if line.startswith("warning:")]
    assert len(warning) == 1 and "manifest.json is damaged" in warning[0]
    assert "every run executes again" in warning[0]
    assert not any("skipped" in line for line in logs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest) == {"exp_ELM"}
    assert (out / "manifest.json.damaged").read_text() == damage
    assert any("skipped" in line for line in _run(presets, out))   # and it works again


def test_a_failing_run_leaves_the_last_good_outputs_untouched(project):
    root, presets = project
    out = root / "generated"
    _run(presets, out, attempt=1)
    files = ["exp_ELM.ipynb", "results/exp_ELM.json", "results/exp_ELM_figure.png",
             "manifest.json"]
    before = {f: (out / f).read_bytes() for f in files}
    assert before["results/exp_ELM_figure.png"] == b"figure of attempt 1"
    with pytest.raises(runner.RunnerError, match="the solver diverged after the figure was saved"):
        _run(presets, out, attempt=2, fail=True)
    assert {f: (out / f).read_bytes() for f in files} == before
    assert not list(out.glob("*.ipynb.*")) and not list(out.glob(".*.ipynb"))
    _run(presets, out, attempt=3)   # the next good run replaces them
    assert (out / "results/exp_ELM_figure.png").read_bytes() == b"figure of attempt 3"
    assert not (out / ".staging" / "exp_ELM").exists()
