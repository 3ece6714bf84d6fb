"""Execute the experiment notebooks with a preset through papermill, then build the book.

``python -m ctdnn run --preset quick`` runs every notebook listed for the preset in
``notebooks/presets.yml`` into ``book/generated/`` (never over the sources), writes one
results file per run into ``book/generated/results/`` and builds the Jupyter Book into
``_build/html``. A run whose notebook, parameters and package sources are unchanged since
its last successful execution is skipped (``--force`` re-runs it), so an interrupted
reproduction resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["load_presets", "plan", "execute", "prepare_workdir", "build_book", "main", "RunnerError"]

ROOT = Path(__file__).resolve().parent.parent
PRESETS_FILE = ROOT / "notebooks" / "presets.yml"
GENERATED = ROOT / "book" / "generated"


class RunnerError(RuntimeError):
    """A run that could not be carried out (bad preset, failed notebook, failed build)."""


def load_presets(path: Path = PRESETS_FILE) -> dict:
    """``{preset: {notebook_stem: [run, ...]}}`` where a run is a dict of parameters.

    A run may carry ``_name`` (suffix of the executed copy's name, e.g. the data set) and
    ``_always: true`` (never skipped: the pages that summarise the other runs).
    """
    import yaml

    with open(path) as fh:
        presets = yaml.safe_load(fh)
    if not isinstance(presets, dict) or not presets:
        raise RunnerError(f"{path} holds no presets")
    return presets


def plan(preset: str, only=None, presets_file: Path = PRESETS_FILE) -> list[dict]:
    """The runs of a preset, in order: ``[{"notebook", "name", "parameters"}, ...]``."""
    presets = load_presets(presets_file)
    if preset not in presets:
        raise RunnerError(f"unknown preset {preset!r}; choose one of {', '.join(presets)} "
                          f"(defined in {presets_file.name})")
    runs = []
    wanted = set(only or ())
    for stem, entries in presets[preset].items():
        if wanted and stem not in wanted and not any(w.startswith(f"{stem}_") for w in wanted) \
                and not (stem == "_benchmarks" and "benchmarks" in wanted):
            continue
        if stem == "_benchmarks":
            # The benchmark script; its table appears on the reproducibility page.
            args = [str(a) for a in (entries or [])]
            runs.append({"notebook": None, "name": "benchmarks", "always": False,
                         "script": ["benchmarks/bench.py", *args], "parameters": {"args": args}})
            continue
        if not (ROOT / "notebooks" / f"{stem}.ipynb").exists():
            raise RunnerError(f"preset {preset!r} names notebooks/{stem}.ipynb, which does not exist")
        entries = entries or [{}]
        for entry in entries:
            entry = dict(entry or {})
            suffix = entry.pop("_name", None)
            always = bool(entry.pop("_always", False))
            name = f"{stem}_{suffix}" if suffix else stem
            params = {"preset": preset, "run_name": name, "output_dir": "results", **entry}
            runs.append({"notebook": stem, "name": name, "parameters": params, "always": always})
    if only:
        runs = [r for r in runs if r["notebook"] in wanted or r["name"] in wanted]
        if not runs:
            raise RunnerError(f"--only {' '.join(only)} matches no run of preset {preset!r}")
    return runs


def _sources_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "ctdnn").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _run_key(run: dict, sources: str) -> str:
    h = hashlib.sha256()
    source = ROOT / run["script"][0] if run.get("script") else (
        ROOT / "notebooks" / f"{run['notebook']}.ipynb")
    h.update(source.read_bytes())
    h.update(json.dumps(run["parameters"], sort_keys=True).encode())
    h.update(sources.encode())
    return h.hexdigest()


def execute(runs: list[dict], out: Path = GENERATED, *, force: bool = False,
            kernel: str = "python3", log=print) -> list[dict]:
    """Execute ``runs`` with papermill into ``out``; returns per-run records.

    Raises:
        RunnerError: naming the notebook and the failing cell.
    """
    out.mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    sources = _sources_digest()
    records = []
    for i, run in enumerate(runs, 1):
        name = run["name"]
        target = out / f"{name}.ipynb"
        key = _run_key(run, sources)
        done = manifest.get(name, {})
        if not force and not run.get("always") and done.get("key") == key and target.exists():
            log(f"[{i}/{len(runs)}] {name}: unchanged since its last run, skipped")
            records.append(done)
            continue
        if run.get("script"):
            log(f"[{i}/{len(runs)}] {name}: python {' '.join(run['script'])}")
            t0 = time.perf_counter()
            json_path = out / "results" / f"{name}.json"
            proc = subprocess.run([sys.executable, str(ROOT / run["script"][0]), *run["script"][1:],
                                   "--json", str(json_path)], cwd=ROOT)
            if proc.returncode != 0:
                raise RunnerError(f"{run['script'][0]} failed with exit status {proc.returncode}")
            target = json_path
        else:
            t0 = time.perf_counter()
            _execute_notebook(run, out, target, kernel, log, i, len(runs))
        record = {"name": name, "notebook": run["notebook"], "key": key,
                  "parameters": run["parameters"], "wall_time_s": time.perf_counter() - t0,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        manifest[name] = record
        tmp_manifest = manifest_path.with_suffix(".json.tmp")
        tmp_manifest.write_text(json.dumps(manifest, indent=1))
        os.replace(tmp_manifest, manifest_path)
        log(f"[{i}/{len(runs)}] {name}: done in {record['wall_time_s']:.0f} s")
        records.append(record)
    return records


def _execute_notebook(run, out, target, kernel, log, i, n):
    """papermill into a temp file renamed into place: no half-written executed copies."""
    import papermill as pm

    name = run["name"]
    log(f"[{i}/{n}] {name}: running notebooks/{run['notebook']}.ipynb "
        f"with {json.dumps(run['parameters'])}")
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{name}.", suffix=".ipynb")
    os.close(fd)
    try:
        pm.execute_notebook(str(ROOT / "notebooks" / f"{run['notebook']}.ipynb"), tmp,
                            parameters=run["parameters"], cwd=str(out), kernel_name=kernel,
                            progress_bar=False, report_mode=False)
    except pm.PapermillExecutionError as exc:
        Path(tmp).unlink(missing_ok=True)
        first_line = (exc.source or "").strip().splitlines()[:1]
        where = f" ({first_line[0][:60]!r} ...)" if first_line else ""
        raise RunnerError(f"notebook {run['notebook']}.ipynb (run {name}) failed in cell "
                          f"[{exc.exec_count}]{where}: {exc.ename}: {exc.evalue}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the executed copies are for readers
    os.replace(tmp, target)


def prepare_workdir(workdir: Path) -> Path:
    """Copy the book sources (config, toc, ``book/`` without generated files) to ``workdir``."""
    workdir = Path(workdir).resolve()
    (workdir / "book").mkdir(parents=True, exist_ok=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, workdir / name)
    for item in (ROOT / "book").iterdir():
        if item.name == "generated":
            continue
        dest = workdir / "book" / item.name
        if item.is_dir():
            shutil.copytree(item, dest, dirs_exist_ok=True)
        else:
            shutil.copy2(item, dest)
    return workdir


def build_book(root: Path = ROOT, *, log=print) -> Path:
    """``jupyter-book build`` with warnings as errors; returns the HTML folder."""
    root = Path(root).resolve()
    exe = Path(sys.executable).parent / "jupyter-book"
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "-W", "-n",
           "--keep-going"]
    log("building the book: " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=root)
    if proc.returncode != 0:
        raise RunnerError("the book build failed (warnings count as errors); see the log above")
    return root / "_build" / "html"


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="execute the experiment notebooks and build the book",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quick", help="smoke, quick (default) or paper")
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these notebooks/runs")
    p.add_argument("--force", action="store_true", help="re-run unchanged runs too")
    p.add_argument("--no-book", action="store_true", help="execute the notebooks only")
    p.add_argument("--clean", action="store_true",
                   help="delete book/generated and _build before running")
    p.add_argument("--list", action="store_true", help="print the runs of the preset and exit")
    p.add_argument("--workdir", type=Path, default=None,
                   help="build in a scratch copy of the book sources in this folder "
                        "(default: in place, into book/generated and _build)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    try:
        runs = plan(args.preset, args.only)
        if args.list:
            for r in runs:
                print(f"{r['name']}: {json.dumps(r['parameters'])}")
            return 0
        root = ROOT if args.workdir is None else prepare_workdir(args.workdir)
        generated = root / "book" / "generated"
        if args.clean:
            shutil.rmtree(generated, ignore_errors=True)
            shutil.rmtree(root / "_build", ignore_errors=True)
        t0 = time.perf_counter()
        execute(runs, generated, force=args.force)
        print(f"notebooks done in {time.perf_counter() - t0:.0f} s")
        if not args.no_book:
            html = build_book(root)
            print(f"book built: {html / 'index.html'}")
    except RunnerError as exc:
        print(f"ctdnn run: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    from .__main__ import main as cli_main

    return cli_main(["run", *(argv or [])])
