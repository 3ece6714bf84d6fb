"""The environment files agree, and the README's two commands are what CI runs."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pins(lines):
    out = {}
    for line in lines:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_pyproject_and_environment_yml_pin_the_same_versions():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        deps += extra
    assert all("==" in d for d in deps), "every dependency is pinned exactly"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert _pins(deps) == _pins(pip_section)
    assert _pins(deps)["torch"] == "2.13.0"
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_readme_opens_with_exactly_two_commands_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.splitlines() if line.strip()]
    assert commands == ["./run.sh book", "./run.sh test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^\./run\.sh test\s*$", ci, re.M)


def test_jupyter_book_pinned_below_2():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    jb = [d for d in project["optional-dependencies"]["book"] if d.startswith("jupyter-book")]
    assert jb and jb[0].split("==")[1].startswith("1.")
