"""The environment files agree, and the README's two commands are what CI runs."""

import importlib.util
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


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _direct_pins(extras=None):
    project = _project()
    deps = list(project["dependencies"])
    for name, extra in project["optional-dependencies"].items():
        if extras is None or name in extras:
            deps += extra
    return deps


def _lock(name):
    """{package: version} of a lock file, after checking that every entry carries hashes."""
    text = (ROOT / "requirements" / name).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])
    pins = {}
    for entry in entries:
        if not entry.strip() or entry.startswith("#"):
            continue
        head = entry.split()[0]
        assert "--hash=sha256:" in entry, f"{head} in requirements/{name} has no hash"
        pins.update(_pins([head]))
    return pins


def _conda_pip_section(path):
    env = yaml.safe_load((ROOT / path).read_text())
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])
    return next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))


def test_direct_dependencies_are_pinned_exactly():
    deps = _direct_pins()
    assert all("==" in d for d in deps), "every dependency is pinned exactly"
    pins = _pins(deps)
    assert pins["torch"] == "2.13.0"
    assert pins["dask"] == pins["distributed"] == "2026.8.0"


def test_lock_file_holds_every_package_with_hashes_at_the_pinned_versions():
    lock = _lock("lock.txt")
    header = (ROOT / "requirements" / "lock.txt").read_text().splitlines()[:2]
    assert "uv" in header[0] and "requirements/lock.sh" in header[1]
    direct = _pins(_direct_pins())
    # torch is installed by run.sh in a step of its own (the build depends on the machine)
    assert "torch" not in lock
    assert {k: v for k, v in direct.items() if k != "torch"} == {k: lock[k] for k in direct
                                                                  if k != "torch"}
    # transitive packages are locked too: the book's toolchain and torch's dependencies
    for package in ("sphinx", "sphinx-book-theme", "myst-nb", "docutils", "sympy", "networkx",
                    "setuptools"):
        assert package in lock, package
    # torch's dependencies come from its CPU build: no CUDA runtime packages
    assert not [k for k in lock if k.startswith("nvidia-") or k == "triton"]


def test_environment_yml_follows_the_lock():
    pins = _pins(_conda_pip_section("environment.yml"))
    assert pins == {**_lock("lock.txt"), "torch": _pins(_direct_pins())["torch"]}
    assert "-e ." in _conda_pip_section("environment.yml")


def test_binder_environment_is_lean_and_follows_the_lock():
    binder = _lock("binder.txt")
    full = _lock("lock.txt")
    shared = set(binder) & set(full)
    assert {k: binder[k] for k in shared} == {k: full[k] for k in shared}
    assert "ipywidgets" in binder
    assert not {"pytest", "nbval", "playwright"} & set(binder)
    for direct, version in _pins(_direct_pins(extras={"book"})).items():
        if direct != "torch":
            assert binder[direct] == version
    pins = _pins(_conda_pip_section("binder/environment.yml"))
    assert pins == {**binder, "torch": _pins(_direct_pins())["torch"]}
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "--no-deps" in post_build and "-e ." in post_build


def test_conda_files_are_what_the_export_script_writes():
    spec = importlib.util.spec_from_file_location("export_env",
                                                  ROOT / "requirements" / "export_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.TORCH == "torch==" + _pins(_direct_pins())["torch"]
    assert module.locked_pins(ROOT / "requirements" / "lock.txt") == [
        f"{k}=={v}" for k, v in _lock("lock.txt").items()]


def test_run_sh_installs_the_lock_and_lets_the_torch_index_be_chosen():
    text = (ROOT / "run.sh").read_text()
    assert "--require-hashes --no-deps -r requirements/lock.txt" in text
    assert 'CTDNN_TORCH_INDEX' in text and '--index-url "$CTDNN_TORCH_INDEX"' in text
    assert "--no-deps --no-build-isolation -e ." in text
    readme = (ROOT / "README.md").read_text()
    assert "requirements/lock.sh" in readme
    assert "CTDNN_TORCH_INDEX=https://download.pytorch.org/whl/cpu" in readme


def test_licence_citation_and_links():
    project = _project()
    assert project["license"] == "MIT"
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    # setuptools reads an SPDX string in `license` from version 77 on
    assert any(r.replace(" ", "") in ("setuptools>=77", "setuptools>=77.0.3")
               for r in build["requires"])
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "2026 the ctdnn authors" in licence
    assert "https://arxiv.org/abs/2507.22045" in project["urls"].values()
    assert any("hrosso710/Continuous_DNN_Surrogates_Revised" in url
               for url in project["urls"].values())
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["license"] == "MIT" and cff["version"] == project["version"]
    paper = cff["preferred-citation"]
    assert [a["family-names"] for a in paper["authors"]] == ["Rosso", "Ruthotto", "Sargsyan"]
    assert paper["year"] == 2025 and "2507.22045" in paper["url"]
    for page in ("README.md", "book/intro.md"):
        text = (ROOT / page).read_text()
        assert "How to cite" in text and "CITATION.cff" in text and "2507.22045" in text, page


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
