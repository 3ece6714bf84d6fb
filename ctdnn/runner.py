"""Execute the experiment notebooks with a preset through papermill, then build the book.

``python -m ctdnn run --preset quick`` runs every notebook listed for the preset in
``notebooks/presets.yml`` into ``book/generated/`` (never over the sources), writes one
results file per run into ``book/generated/results/`` and builds the Jupyter Book into
``_build/html``. A run whose notebook, parameters, package sources, installed package versions
and data provenance (which of the paper's files are present) are unchanged since its last
successful execution is skipped (``--force`` re-runs it), so an interrupted reproduction
resumes where it stopped; inside a run, finished units of work are kept, so it resumes unit
by unit.

Parallel execution: by default a Dask ``LocalCluster`` with one single-threaded worker per core
is started and its address handed to the notebooks (``CTDNN_SCHEDULER``); they submit their
independent units (training runs, ensembles) through :func:`ctdnn.parallel.map_units` and only
wait for them, while the runner executes several notebooks at once in threads. ``--workers 1``
runs everything in-process, one notebook at a time; ``--scheduler ADDRESS`` uses an existing
cluster. Results are the same either way.

Every run executes into a staging folder; its executed copy, results file and figures move
into place only when it succeeds, so a failing run leaves the last good outputs untouched.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path

from .storage import atomic_write, write_text_atomic

__all__ = ["load_presets", "plan", "execute", "estimate", "prepare_workdir", "build_book", "main",
           "RunnerError", "run_key", "archive_folder"]

ROOT = Path(__file__).resolve().parent.parent
PRESETS_FILE = ROOT / "notebooks" / "presets.yml"
GENERATED = ROOT / "book" / "generated"


class RunnerError(RuntimeError):
    """A run that could not be carried out (bad preset, failed notebook, failed build)."""


def load_presets(path: Path = PRESETS_FILE) -> dict:
    """``{preset: {notebook_stem: [run, ...]}}`` where a run is a dict of parameters.

    A run may carry ``_name`` (suffix of the executed copy's name, e.g. the data set),
    ``_always: true`` (never skipped: the pages that summarise the other runs) and
    ``_alone: true`` (runs with no other run beside it, e.g. the page that prepares the data).
    Top-level keys starting with ``_`` are settings, not presets (``_estimate``).
    """
    import yaml

    with open(path) as fh:
        presets = yaml.safe_load(fh)
    if not isinstance(presets, dict) or not any(not str(k).startswith("_") for k in presets):
        raise RunnerError(f"{path} holds no presets")
    return presets


def plan(preset: str, only=None, presets_file: Path = PRESETS_FILE) -> list[dict]:
    """The runs of a preset, in order: ``[{"notebook", "name", "parameters"}, ...]``."""
    presets = load_presets(presets_file)
    if preset not in presets or str(preset).startswith("_"):
        names = [k for k in presets if not str(k).startswith("_")]
        raise RunnerError(f"unknown preset {preset!r}; choose one of {', '.join(names)} "
                          f"(defined in {presets_file.name})")
    runs = []
    wanted = set(only or ())
    for stem, entries in presets[preset].items():
        if wanted and stem not in wanted and not any(w.startswith(f"{stem}_") for w in wanted) \
                and not (stem == "_benchmarks" and "benchmarks" in wanted):
            continue
        if stem == "_archive":   # where the preset's results are archived (archive_folder)
            continue
        if stem == "_benchmarks":
            # The benchmark script; its table appears on the reproducibility page.
            args = [str(a) for a in (entries or [])]
            runs.append({"notebook": None, "name": "benchmarks", "always": False, "alone": True,
                         "script": ["benchmarks/bench.py", *args], "parameters": {"args": args}})
            continue
        if not (ROOT / "notebooks" / f"{stem}.ipynb").exists():
            raise RunnerError(f"preset {preset!r} names notebooks/{stem}.ipynb, which does not exist")
        entries = entries or [{}]
        for entry in entries:
            entry = dict(entry or {})
            suffix = entry.pop("_name", None)
            always = bool(entry.pop("_always", False))
            alone = bool(entry.pop("_alone", False)) or always
            after = entry.pop("_after", None) or []
            if isinstance(after, str) or not all(isinstance(a, str) for a in after):
                raise RunnerError(f"preset {preset!r}, {stem}: _after must be a list of "
                                  f"notebook names, got {after!r}")
            name = f"{stem}_{suffix}" if suffix else stem
            params = {"preset": preset, "run_name": name, "output_dir": "results", **entry}
            runs.append({"notebook": stem, "name": name, "parameters": params, "always": always,
                         "alone": alone, "after": list(after)})
    if only:
        runs = [r for r in runs if r["notebook"] in wanted or r["name"] in wanted]
        if not runs:
            raise RunnerError(f"--only {' '.join(only)} matches no run of preset {preset!r}")
    return runs


def archive_folder(preset: str, presets_file: Path = PRESETS_FILE) -> Path | None:
    """The folder a preset's results are archived in (its ``_archive`` entry), or ``None``.

    Such a preset (``table5``) runs its experiments through
    :func:`ctdnn.experiments.table5.regenerate` into that folder of the repository, with
    their provenance, instead of executing notebooks into the book.
    """
    entry = (load_presets(presets_file).get(preset) or {}).get("_archive")
    if entry is None:
        return None
    if not isinstance(entry, str) or not entry.strip() or Path(entry).is_absolute():
        raise RunnerError(f"_archive of preset {preset!r} must be a folder relative to the "
                          f"repository, got {entry!r}")
    return ROOT / entry


def _sources_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "ctdnn").rglob("*.py")):
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _versions_digest() -> str:
    """Every installed distribution and its version (a changed pin changes the numbers)."""
    names = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in metadata.distributions()
                    if d.metadata and d.metadata["Name"]})
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _data_provenance(datasets=None) -> dict:
    """Which of the paper's files a run would find now: ``{name: description}``.

    A file is described by where it lies (``CTDNN_DATA_DIR`` or the cache), its size and its
    modification time; a missing one by the offline setting (a download may bring it). So a
    reader who obtains the paper's files later gets the pages rebuilt from them.
    """
    try:
        from .data import PAPER_FILES, cache_dir
    except ImportError:   # the data layer failed to import: the run will say why
        return {}
    data_dir = os.environ.get("CTDNN_DATA_DIR", "").strip()
    offline = os.environ.get("CTDNN_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    out = {}
    for name, spec in PAPER_FILES.items():
        if datasets is not None and name not in datasets:
            continue
        desc = "absent, offline" if offline else "absent, downloadable"
        places = [("CTDNN_DATA_DIR", Path(data_dir).expanduser() / spec.filename)] if data_dir else []
        places.append(("cache", cache_dir() / "paper" / spec.filename))
        for where, path in places:
            try:
                st = path.stat()
            except OSError:
                continue
            desc = f"{where}:{path}:{st.st_size}:{st.st_mtime_ns}"
            break
        out[name] = desc
    return out


def _run_datasets(run: dict):
    """The data sets a run reads (``None``: possibly all of them)."""
    ds = run["parameters"].get("dataset")
    return [ds] if isinstance(ds, str) else None


def run_key(run: dict, sources: str | None = None, versions: str | None = None) -> str:
    """What determines a run's outputs: its notebook or script, parameters, package sources,
    installed package versions and data provenance (see :func:`_data_provenance`)."""
    h = hashlib.sha256()
    source = ROOT / run["script"][0] if run.get("script") else (
        ROOT / "notebooks" / f"{run['notebook']}.ipynb")
    h.update(source.read_bytes())
    h.update(json.dumps(run["parameters"], sort_keys=True).encode())
    h.update((sources or _sources_digest()).encode())
    h.update((versions or _versions_digest()).encode())
    h.update(json.dumps(_data_provenance(_run_datasets(run)), sort_keys=True).encode())
    return h.hexdigest()


def _load_manifest(path: Path, log) -> dict:
    """The record of finished runs; a damaged file is set aside and rebuilt, with a warning."""
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or not all(isinstance(v, dict) for v in manifest.values()):
            raise ValueError("it does not hold one record per run")
        return manifest
    except (OSError, ValueError) as exc:   # JSONDecodeError is a ValueError
        aside = path.with_name(path.name + ".damaged")
        os.replace(path, aside)
        log(f"warning: {path} is damaged ({type(exc).__name__}: {exc}); it was moved to "
            f"{aside.name} and is rebuilt: every run executes again")
        return {}


def _write_manifest(path: Path, manifest: dict) -> None:
    write_text_atomic(path, json.dumps(manifest, indent=1))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stage(out: Path, name: str) -> tuple[Path, dict]:
    """A staging folder for one run, holding a copy of the current results files.

    The summary pages read the other runs' results; the copies let them, while the run's own
    writes stay in the staging folder until it succeeds. Returns the folder and the digests of
    the copies (unchanged copies are not moved back). What a failed attempt left there
    (checkpoints) stays for the next attempt.
    """
    stage = out / ".staging" / name
    results = stage / "results"
    results.mkdir(parents=True, exist_ok=True)
    copied = {}
    for src in (out / "results").glob("*.json"):
        dest = results / src.name
        shutil.copy2(src, dest)
        copied[dest.relative_to(stage).as_posix()] = _digest(dest)
    return stage, copied


def _publish(stage: Path, out: Path, copied: dict) -> None:
    """Move what a successful run wrote (new or changed files) from ``stage`` into ``out``."""
    for path in sorted(p for p in (stage / "results").rglob("*") if p.is_file()):
        rel = path.relative_to(stage).as_posix()
        if rel in copied and copied[rel] == _digest(path):
            continue
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
    shutil.rmtree(stage, ignore_errors=True)


def _kernel_manager_class(env: dict, log_file: Path | None = None):
    """A kernel manager that adds ``env`` to the kernel's environment, encrypts its sockets
    and sends the kernel process's own output to ``log_file``.

    The kernel's channels use the CurveZMQ keys the manager provisions (where the kernelspec
    supports it, as ipykernel's does), so ipykernel has no reason to warn about plain TCP.
    What the notebook's code prints reaches the notebook; the process's own messages (e.g.
    "KeyboardInterrupt caught in kernel" when jupyter_client interrupts a kernel on its way
    to shut down) go to the log file instead of the terminal.
    """
    from jupyter_client.manager import AsyncKernelManager

    class RunKernelManager(AsyncKernelManager):
        async def start_kernel(self, **kw):
            kw["env"] = {**os.environ, **(kw.get("env") or {}), **env}
            kw.setdefault("transport_encryption", "auto")
            try:
                if log_file is None:
                    return await AsyncKernelManager.start_kernel(self, **kw)
                with open(log_file, "ab") as fh:   # the kernel keeps its own descriptor
                    kw.setdefault("stdout", fh)
                    kw.setdefault("stderr", fh)
                    return await AsyncKernelManager.start_kernel(self, **kw)
            finally:
                with _KERNELS_LOCK:   # forget the kernels that have ended
                    _KERNELS.difference_update([k for k in _KERNELS if not _alive(k)])
                    _KERNELS.add(self)

    return RunKernelManager


# The kernels this process started. Notebooks run in threads, which a Ctrl-C does not reach:
# the main thread stops them by ending their kernels (see _stop_kernels).
_KERNELS: set = set()
_KERNELS_LOCK = threading.Lock()


def _alive(km) -> bool:
    process = getattr(getattr(km, "provisioner", None), "process", None)
    return process is not None and process.poll() is None


def _stop_kernels() -> None:
    """End every kernel this process started that is still running (on Ctrl-C)."""
    with _KERNELS_LOCK:
        managers = [km for km in _KERNELS if _alive(km)]
        _KERNELS.clear()
    for km in managers:
        km.provisioner.process.kill()


def _data_summary(results_file: Path) -> str:
    """One phrase naming where a run's data came from, read from its results file.

    Understands the results' ``data`` as one record, a ``{data set: record}`` mapping or a
    list of records; a record has ``source`` (``"paper"``, ``"simulated"`` or a phrase),
    ``name``/``dataset``, ``filename`` and ``found_in``/``reason`` (at top level or in
    ``extra``).
    """
    try:
        data = json.loads(results_file.read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        return ""

    def field(d, key):
        extra = d.get("extra") if isinstance(d.get("extra"), dict) else {}
        return d.get(key) if d.get(key) not in (None, "") else extra.get(key)

    def describe(label, d):
        src = d.get("source")
        label = str(label or d.get("dataset") or d.get("name") or "")
        if src == "paper":
            where = field(d, "found_in")
            where = {"CTDNN_DATA_DIR": "from CTDNN_DATA_DIR", "cache": "from the cache",
                     "download": "downloaded"}.get(where, where or "")
            return f"{label} the paper's {field(d, 'filename') or 'file'}" + (
                f" ({where})" if where else "")
        if src == "simulated":
            why = field(d, "reason") or field(d, "description") or ""
            reason = re.sub(r"https?://\S+", "its address", str(why))
            reason = reason.strip().rstrip(".")
            reason = reason if len(reason) <= 200 else reason[:197] + "..."
            return f"{label} simulated" + (f" ({reason})" if reason else "")
        if not src or src in ("none", "analytic") or label == "none":   # no data set used
            return ""
        return f"{label} {src}".strip()

    if isinstance(data, list):
        parts = [describe("", d) for d in data if isinstance(d, dict)]
    elif isinstance(data, dict) and isinstance(data.get("source"), str):
        parts = [describe("", data)]
    elif isinstance(data, dict):
        parts = [describe(k, v) for k, v in data.items() if isinstance(v, dict) and "source" in v]
    else:
        parts = []
    parts = [p for p in parts if p]
    return "data: " + "; ".join(parts) if parts else ""


class _Display:
    """One line per active run (its units, or its cells, done so far) under an overall bar,
    with the permanent lines (started, done, data) printed above them. Without a terminal:
    the permanent lines, and a progress line per run at most once a minute."""

    HEARTBEAT_S = 60.0

    def __init__(self, n_runs: int, log, bars: bool):
        self.log, self.active, self.lock = log, {}, threading.Lock()
        self.n_runs, self.n_done, self.tqdm = n_runs, 0, None
        if bars:
            from tqdm.auto import tqdm

            self.tqdm = tqdm
            self.overall = tqdm(total=n_runs, position=0, dynamic_ncols=True, file=sys.stderr,
                                bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}]")
            self.overall.set_description_str(f"all runs (0/{n_runs} done)")

    def line(self, text: str) -> None:
        with self.lock:
            (self.tqdm.write if self.tqdm else self.log)(text)

    def start(self, name: str, progress_file: Path | None) -> None:
        with self.lock:
            bar = None
            if self.tqdm:
                bar = self.tqdm(total=1, leave=False, dynamic_ncols=True,
                                position=1 + len(self.active), file=sys.stderr,
                                bar_format="{desc} [{elapsed}]")
                bar.set_description_str(f"  {name}: starting", refresh=False)
            now = time.perf_counter()
            self.active[name] = {"bar": bar, "file": progress_file, "t0": now, "said": now,
                                 "cells": None, "last": "", "fraction": 0.0}

    def cell(self, name: str, index: int, total: int) -> None:
        with self.lock:
            if name in self.active:
                self.active[name]["cells"] = (index + 1, total)

    def _status(self, state) -> tuple[str, float]:
        from .parallel import read_progress

        p = read_progress(state["file"]) if state["file"] else None
        cells = state["cells"]
        cell_frac = cells[0] / max(1, cells[1]) if cells else 0.0
        if p and p.get("total"):
            text = f"units {p['done']}/{p['total']}"
            if cells:
                text += f", cell {cells[0]}/{cells[1]}"
            # the units are most of the work, the cells after them the rest
            return text, min(0.99, 0.8 * p["done"] / p["total"] + 0.2 * cell_frac)
        if cells:
            return f"cell {cells[0]}/{cells[1]}", min(0.99, cell_frac)
        return "starting", 0.0

    def poll(self) -> None:
        with self.lock:
            fraction = 0.0
            now = time.perf_counter()
            for name, st in self.active.items():
                text, frac = self._status(st)
                st["fraction"] = max(st["fraction"], frac)   # units follow cells: never back
                fraction += st["fraction"]
                if st["bar"] is not None:
                    st["bar"].set_description_str(f"  {name}: {text}", refresh=False)
                    st["bar"].refresh()
                elif now - st["said"] >= self.HEARTBEAT_S and text != st["last"]:
                    self.log(f"  {name}: {text}, {now - st['t0']:.0f} s")
                    st["said"], st["last"] = now, text
            if self.tqdm:
                self.overall.n = min(self.n_runs, self.n_done + fraction)
                self.overall.set_description_str(f"all runs ({self.n_done}/{self.n_runs} done)",
                                                 refresh=False)
                self.overall.refresh()

    def finish(self, name: str) -> None:
        with self.lock:
            st = self.active.pop(name, None)
            if st and st["bar"] is not None:
                st["bar"].close()
            self.n_done += 1

    def close(self) -> None:
        if self.tqdm:
            for st in self.active.values():
                if st["bar"] is not None:
                    st["bar"].close()
            self.overall.n = self.n_done
            self.overall.set_description_str(f"all runs ({self.n_done}/{self.n_runs} done)",
                                             refresh=False)
            self.overall.close()


def _stages(runs: list[dict]) -> list[list[int]]:
    """Indices of ``runs`` grouped into stages: consecutive ordinary runs share a stage (they
    may run at once); a run marked ``alone`` (and every summary page) is a stage of its own.
    A run with ``after`` shares its stage too, but starts only once the runs of those
    notebooks before it have finished (see :func:`execute`)."""
    stages, current = [], []
    for i, run in enumerate(runs):
        if run.get("alone") or run.get("always") or run.get("script"):
            if current:
                stages.append(current)
                current = []
            stages.append([i])
        else:
            current.append(i)
    if current:
        stages.append(current)
    return stages


def execute(runs: list[dict], out: Path = GENERATED, *, force: bool = False,
            kernel: str = "python3", log=print, jobs: int = 1, env: dict | None = None,
            progress: bool = False, unit_times: Path | None = None,
            cell_timeout: float | None = None) -> list[dict]:
    """Execute ``runs`` with papermill into ``out``; returns per-run records.

    Args:
        runs: from :func:`plan`.
        out: the generated folder (executed copies, ``results/``, ``manifest.json``).
        force: re-run runs whose key is unchanged (and drop their stored units).
        kernel: Jupyter kernel name.
        log: receives the lines for the terminal.
        jobs: notebooks executed at once (within a stage; see :func:`_stages`).
        env: extra environment of the kernels (e.g. ``CTDNN_SCHEDULER``).
        progress: show progress bars (when standard error is a terminal).
        unit_times: if given, each unit's wall time is appended there (``--estimate``).
        cell_timeout: seconds a cell may run before the run fails (default: no limit).

    Raises:
        RunnerError: naming the notebook and the failing cell (or the failed units). The
            runs that finished before or beside it keep their outputs; the failed run's last
            good outputs are untouched.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results").mkdir(exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = _load_manifest(manifest_path, log)
    sources, versions = _sources_digest(), _versions_digest()
    display = _Display(len(runs), log, progress and sys.stderr.isatty())
    lock = threading.Lock()
    records: list = [None] * len(runs)
    n = len(runs)

    ended = {i: threading.Event() for i in range(n)}
    failed: set = set()

    def wait_for_dependencies(i: int) -> None:
        """Block until the runs before ``i`` of the notebooks it comes ``after`` have ended."""
        deps = [j for j in range(i) if runs[j]["notebook"] in runs[i].get("after", ())]
        for j in deps:
            ended[j].wait()
        bad = [runs[j]["name"] for j in deps if j in failed]
        if bad:
            raise RunnerError(f"{runs[i]['name']} was not run: it reads the results of "
                              f"{', '.join(bad)}, which failed")

    def one(i: int) -> None:
        try:
            wait_for_dependencies(i)
            run_one(i)
        except BaseException:
            failed.add(i)
            raise
        finally:
            ended[i].set()

    def run_one(i: int) -> None:
        run = runs[i]
        name = run["name"]
        tag = f"[{i + 1}/{n}] {name}"
        target = out / f"{name}.ipynb" if not run.get("script") else (
            out / "results" / f"{name}.json")
        key = run_key(run, sources, versions)
        done = manifest.get(name, {})
        units = out / ".units" / name
        if not force and not run.get("always") and done.get("key") == key and target.exists():
            display.line(f"{tag}: unchanged since its last run, skipped")
            records[i] = done
            display.finish(name)
            return
        if force:
            shutil.rmtree(units, ignore_errors=True)
        stage, copied = _stage(out, name)
        progress_file = stage / "progress.json"
        progress_file.unlink(missing_ok=True)
        display.start(name, progress_file)
        t0 = time.perf_counter()
        try:
            if run.get("script"):
                display.line(f"{tag}: python {' '.join(run['script'])}")
                proc = subprocess.run([sys.executable, str(ROOT / run["script"][0]),
                                       *run["script"][1:], "--json",
                                       str(stage / "results" / f"{name}.json")],
                                      cwd=ROOT, capture_output=True, text=True)
                if proc.returncode != 0:
                    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                    raise RunnerError(f"{run['script'][0]} failed with exit status "
                                      f"{proc.returncode}: " + " | ".join(tail))
            else:
                display.line(f"{tag}: running notebooks/{run['notebook']}.ipynb")
                run_env = {**(env or {}), "CTDNN_UNIT_DIR": str(units.resolve()),
                           "CTDNN_RUN_KEY": key, "CTDNN_PROGRESS_FILE": str(progress_file.resolve())}
                if unit_times is not None:
                    run_env["CTDNN_UNIT_TIMES"] = str(Path(unit_times).resolve())
                _execute_notebook(run, stage, kernel, run_env,
                                  on_cell=lambda k, total: display.cell(name, k, total),
                                  cell_timeout=cell_timeout, log=display.line)
            progress_file.unlink(missing_ok=True)
            data = _data_summary(stage / "results" / f"{name}.json")
            if not run.get("script"):
                os.replace(stage / f"{name}.ipynb", out / f"{name}.ipynb")
            _publish(stage, out, copied)
        finally:
            display.finish(name)
        shutil.rmtree(units, ignore_errors=True)
        record = {"name": name, "notebook": run["notebook"], "key": key,
                  "parameters": run["parameters"], "wall_time_s": time.perf_counter() - t0,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "data": data}
        with lock:
            manifest[name] = record
            _write_manifest(manifest_path, manifest)
        display.line(f"{tag}: done in {record['wall_time_s']:.0f} s" + (f"; {data}" if data else ""))
        records[i] = record

    try:
        for stage_ids in _stages(runs):
            # The runs of a stage execute in threads; this thread keeps the display current.
            errors = []
            if jobs > 1:   # longest first (by the last run's time) packs the workers best;
                # a run that waits for others goes last, so that it never holds back a run
                # that could start
                stage_ids = sorted(stage_ids, key=lambda i: (bool(runs[i].get("after")), -float(
                    manifest.get(runs[i]["name"], {}).get("wall_time_s", math.inf))))
            with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                pending = {pool.submit(one, i): i for i in stage_ids}
                while pending:
                    try:
                        finished, _ = concurrent.futures.wait(
                            pending, timeout=0.5, return_when=concurrent.futures.FIRST_COMPLETED)
                    except KeyboardInterrupt:   # stop the notebooks, start no more
                        for fut in pending:
                            fut.cancel()
                        _stop_kernels()
                        raise
                    display.poll()
                    for fut in finished:
                        pending.pop(fut)
                        if fut.exception() is not None:
                            errors.append(fut.exception())
                            for other in pending:   # let the running ones finish, start no more
                                other.cancel()
                    pending = {f: i for f, i in pending.items() if not f.cancelled()}
            if errors:
                raise errors[0]
    finally:
        display.close()
        for folder in (out / ".staging", out / ".units"):   # gone once nothing is left there
            try:
                folder.rmdir()
            except OSError:
                pass
    return records


#: Seconds a new kernel may take to answer its first request (papermill's default is 60;
#: several kernels importing torch at once on a loaded machine can take longer).
KERNEL_START_TIMEOUT = 120.0
#: Kernels started for one notebook before its run fails: a kernel that never answered ran
#: no cell, so starting another one is safe.
KERNEL_START_ATTEMPTS = 3


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return " | ".join(line.strip() for line in tail if line.strip())


def _execute_notebook(run: dict, stage: Path, kernel: str, env: dict, on_cell=None,
                      cell_timeout: float | None = None, log=None) -> None:
    """papermill into ``stage/<name>.ipynb``, with the kernel running in ``stage``.

    The working folder goes to the kernel (not through papermill's ``cwd``, which changes the
    whole process's folder and so cannot serve notebooks running at once in threads). A kernel
    that does not start (it dies or never answers) is replaced, up to
    ``KERNEL_START_ATTEMPTS`` kernels; a failure once a cell has started fails the run.
    """
    import logging

    import papermill as pm

    from .book import prepare_executed_copy

    # papermill and nbclient log to the "papermill" logger; without a handler of its own,
    # Python prints its errors (e.g. a cell timeout) to the terminal, where the runner's own
    # error message already says what failed.
    logger = logging.getLogger("papermill")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    name = run["name"]
    target = stage / f"{name}.ipynb"
    source = ROOT / "notebooks" / f"{run['notebook']}.ipynb"
    n_cells = len(json.loads(source.read_text()).get("cells", [])) + 1   # + injected parameters

    started = []   # set once a cell starts: from then on, a failure is the notebook's

    def cell_start(**_):
        started.append(True)

    def cell_done(cell=None, cell_index=0, **_):
        if on_cell is not None:
            on_cell(cell_index, n_cells)

    kernel_log = stage / "kernel.log"
    # Written under a hidden name (papermill wants the .ipynb suffix) and moved onto the
    # target only when the notebook ran to its end.
    with atomic_write(target, prefix=".", suffix=".ipynb") as tmp:
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                pm.execute_notebook(str(source), str(tmp),
                                    parameters=run["parameters"], kernel_name=kernel,
                                    progress_bar=False, report_mode=False,
                                    kernel_manager_class=_kernel_manager_class(env, kernel_log),
                                    resources={"metadata": {"path": str(stage.resolve())}},
                                    start_timeout=KERNEL_START_TIMEOUT,
                                    on_cell_start=cell_start, on_cell_complete=cell_done,
                                    execution_timeout=cell_timeout)
                break
            except pm.PapermillExecutionError as exc:
                first_line = (exc.source or "").strip().splitlines()[:1]
                where = f" ({first_line[0][:60]!r} ...)" if first_line else ""
                raise RunnerError(f"notebook {run['notebook']}.ipynb (run {name}) failed in "
                                  f"cell [{exc.exec_count}]{where}: {exc.ename}: "
                                  f"{exc.evalue}") from None
            except Exception as exc:   # e.g. the kernel died (out of memory) or did not start
                if not started and attempt < KERNEL_START_ATTEMPTS:
                    if log is not None:
                        log(f"{name}: the kernel did not start ({exc}); starting another "
                            f"({attempt + 1} of {KERNEL_START_ATTEMPTS})")
                    continue
                tail = _log_tail(kernel_log)
                raise RunnerError(f"notebook {run['notebook']}.ipynb (run {name}) stopped: "
                                  f"{type(exc).__name__}: {exc}"
                                  + (f" after {attempt} kernels" if not started else "")
                                  + f" (the kernel's own messages, in {kernel_log}"
                                  + (f", end with: {tail})" if tail else ")")) from exc
        prepare_executed_copy(tmp)   # the run's data set into the page title


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
    log_file = root / "_build" / "jupyter-book.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log(f"building the book (jupyter-book build -W -n; its output goes to {log_file})")
    with open(log_file, "w") as fh:   # sphinx's page-by-page output stays out of the terminal
        proc = subprocess.run(cmd, cwd=root, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        lines = [re.sub(r"\x1b\[[0-9;]*m", "", line)
                 for line in log_file.read_text(errors="replace").splitlines()]
        problems = [line for line in lines if "WARNING" in line or "ERROR" in line]
        log("\n".join(problems[:30] or lines[-30:]))
        raise RunnerError(f"the book build failed (warnings count as errors): "
                          f"{len(problems)} warnings or errors, listed above; the whole log "
                          f"is {log_file}")
    return root / "_build" / "html"


_RULE_KEYS = {"scale", "probe", "seeds", "seed_counts", "per_epoch", "together", "set", "adds",
              "limit"}


def _probe_rules(presets_file: Path = PRESETS_FILE) -> dict:
    rules = load_presets(presets_file).get("_estimate") or {}
    if not isinstance(rules, dict):
        raise RunnerError(f"_estimate in {presets_file.name} must map notebooks to probe settings")
    for notebook, rule in rules.items():
        where = f"_estimate: {notebook} in {presets_file.name}"
        if not isinstance(rule, dict) or not {"scale", "probe"} <= set(rule):
            raise RunnerError(f"{where} must be a mapping with at least scale (the parameter "
                              "that sets the work) and probe (its value for the probe)")
        unknown = sorted(set(rule) - _RULE_KEYS)
        if unknown:
            raise RunnerError(f"{where}: unknown setting(s) {', '.join(unknown)}; the settings "
                              f"are {', '.join(sorted(_RULE_KEYS))}")
    return rules


def _probe(run: dict, rule: dict | None) -> tuple[dict, float, str | None]:
    """The probe's parameters, the factor for the seeds left out, and the scaled parameter
    (``None``: nothing to scale, the run is timed as it is)."""
    params = dict(run["parameters"])
    if not rule:
        return params, 1.0, None
    params.update(rule.get("set") or {})
    seed_factor = 1.0
    if "seeds" in rule and isinstance(params.get("seeds"), list) and params["seeds"]:
        k = max(1, int(rule["seeds"]))
        seed_factor = len(params["seeds"]) / min(k, len(params["seeds"]))
        params["seeds"] = params["seeds"][:k]
        # counts of seeds (e.g. the seeds with work-precision sweeps) cannot exceed the seeds
        for other in rule.get("seed_counts", ()):
            if isinstance(params.get(other), int) and not isinstance(params[other], bool):
                params[other] = min(params[other], len(params["seeds"]))
    key = rule["scale"]
    if params.get(key) is None:   # the notebook's default (a seconds-long run): as it is
        return params, seed_factor, None
    full = params[key]
    params[key] = rule["probe"]
    # Companion sizes (e.g. GNvpro's work-unit budget beside Adam's epochs) shrink by the same
    # factor, so that the probe stays short and its steps price both together.
    for other in rule.get("together", ()):
        if isinstance(params.get(other), (int, float)) and not isinstance(params[other], bool):
            params[other] = max(1, math.ceil(params[other] * rule["probe"] / full))
    return params, seed_factor, key


def _doubled(params: dict, rule: dict) -> dict:
    """The second probe's companion sizes (a notebook without units): twice the first's."""
    return {k: 2 * params[k] for k in rule.get("together", ())
            if isinstance(params.get(k), (int, float)) and not isinstance(params[k], bool)}


def _unit_cost(unit: dict, factor: float) -> float:
    """A probed unit's CPU seconds at ``factor`` times the probe's steps: its metered loops'
    steady cost per step times their steps at full size, plus what the unit did besides
    (building the models, the final evaluation, the loops' warm-up), as measured."""
    loops = unit.get("loops") or []
    in_loops = sum(loop["steady_seconds"] * loop["steps"] for loop in loops)
    fixed = max(0.0, unit["cpu_seconds"] - in_loops)
    return fixed + in_loops * factor


def _iterations_factor(results: Path, full: int) -> float:
    """The full run's iterations over the probe's, from the probe's ``metrics.protocol``:
    where iterations round up to whole epochs (sampling by epochs), so do the full run's."""
    proto = json.loads(results.read_text())["metrics"]["protocol"]
    done, per_epoch = int(proto["iterations"]), int(proto.get("iterations_per_epoch") or 0)
    if per_epoch and done == int(proto["epochs"]) * per_epoch:
        full = math.ceil(full / per_epoch) * per_epoch
    return full / max(1, done)


def estimate(runs: list[dict], workers: int, *, log=print, kernel: str = "python3",
             presets_file: Path = PRESETS_FILE, scratch: Path | None = None,
             probe_timeout: float = 300.0) -> dict:
    """Time a short probe of every run and extrapolate its cost (``ctdnn run --estimate``).

    A notebook run with an ``_estimate`` rule in ``presets.yml`` executes once, in-process,
    with the parameter named by ``scale`` set to ``probe`` (a few epochs or iterations),
    the parameters under ``set`` replaced, and, where the rule says ``seeds: k``, only the
    first ``k`` seeds (for notebooks whose units are one seed each; ``seed_counts`` names
    parameters that count seeds and so shrink with them). :func:`ctdnn.parallel.map_units`
    records every unit's CPU time and, step by step, that of its training loops
    (:func:`ctdnn.parallel.metered`). A unit's cost at full size is its steady cost per step
    (the first step, which pays for warm-up, left out) times the steps of the full run, plus
    what it did besides, as measured (building the models, the final evaluation); each seed
    left out counts as one more unit like those probed. What a notebook does outside its
    units (kernel start, data, figures) is counted once, as measured. ``per_epoch: true``
    marks a notebook whose iterations may round up to whole epochs: the ratio of the full
    run's iterations to the probe's then comes from the probe's results. ``adds: [run, ...]``
    adds the predicted cost of those runs (when they are estimated too) to a run that trains
    them again (the stand-ins page, on the other data source). A notebook with a rule but no units runs twice,
    at ``probe`` and twice that, and is extrapolated as a whole along the line through the
    two. Runs without a rule are timed as they are; the benchmark script is not timed. Probes
    run side by side, as many as there are cores (at most ``workers``). A probe with a cell
    running over ``probe_timeout`` seconds (or the rule's ``limit``) is stopped and its run
    reported as not estimated (the totals are then lower bounds).

    The wall time for ``W`` workers follows the runner's schedule: the units of one stage
    spread over the workers (at least as long as the longest unit), stages one after another.
    Adaptive solvers need more evaluations per iteration as training proceeds, so neural-ODE
    predictions from the first iterations are lower bounds.

    Returns:
        ``{"runs": [{"name", "units", "probe_s", "core_hours", "longest_unit_h"}, ...],
        "core_hours", "wall_hours": {workers: hours}}``.
    """
    rules = _probe_rules(presets_file)
    scratch = Path(scratch or tempfile.mkdtemp(prefix="ctdnn-estimate-"))

    def timed(run: dict, params: dict, tag: str, limit: float):
        folder = scratch / f"{run['name']}{tag}"
        times = folder / "unit-times.jsonl"
        folder.mkdir(parents=True, exist_ok=True)
        times.unlink(missing_ok=True)
        t0 = time.perf_counter()
        execute([{**run, "parameters": params, "always": True}], folder, force=True,
                kernel=kernel, log=lambda *_: None, env={"CTDNN_SCHEDULER": ""},
                unit_times=times, cell_timeout=limit)
        wall = time.perf_counter() - t0
        units = [json.loads(line) for line in times.read_text().splitlines()] \
            if times.exists() else []
        # A unit's cost is its CPU time, whatever else the machine is doing meanwhile; the
        # rest of the notebook is its wall time less the units' wall time.
        overhead = max(0.0, wall - sum(u["seconds"] for u in units))
        return wall, overhead, units, folder / "results" / f"{run['name']}.json"

    def limit_of(run: dict) -> float:
        return float((rules.get(run["notebook"]) or {}).get("limit", probe_timeout))

    def probe_one(i: int) -> dict:
        run = runs[i]
        if run.get("script"):
            log(f"[{i + 1}/{len(runs)}] {run['name']}: not timed (benchmark script)")
            return {"name": run["name"], "units": 0, "probe_s": 0.0, "core_hours": 0.0,
                    "longest_unit_h": 0.0, "timed": False}
        rule = rules.get(run["notebook"]) or {}
        limit = limit_of(run)
        params, seed_factor, key = _probe(run, rule)
        wall, overhead, units, results = timed(run, params, "", limit)
        probe_s = wall
        if key is None:
            costs = [u["cpu_seconds"] for u in units]
            core_s = overhead + sum(costs) * seed_factor
            longest = max(costs) if costs else wall
        elif units:
            full = run["parameters"][key]
            factor = (_iterations_factor(results, full) if rule.get("per_epoch")
                      else full / rule["probe"])
            costs = [_unit_cost(u, factor) for u in units]
            core_s = overhead + sum(costs) * seed_factor
            longest = max(costs)
        else:   # no units, so no steps: a line through two probes of the whole notebook
            twice = {**params, **_doubled(params, rule), key: 2 * rule["probe"]}
            wall2 = timed(run, twice, "-twice", limit)[0]
            probe_s += wall2
            slope = max(0.0, (wall2 - wall) / rule["probe"])
            core_s = longest = wall + slope * (run["parameters"][key] - rule["probe"])
        row = {"name": run["name"], "units": round(len(units) * seed_factor), "probe_s": probe_s,
               "core_hours": core_s / 3600, "longest_unit_h": longest / 3600, "timed": True}
        log(f"[{i + 1}/{len(runs)}] {run['name']}: probe {probe_s:.0f} s, {row['units']} units, "
            f"predicted {row['core_hours']:.3g} core-hours")
        return row

    stopping = threading.Event()

    def probe_or_report(i: int) -> dict:
        if stopping.is_set():
            raise KeyboardInterrupt
        try:
            return probe_one(i)
        except RunnerError as exc:   # one failed probe must not hide the others' figures
            if "CellTimeoutError" in str(exc):
                why = f"its probe ran past its limit of {limit_of(runs[i]):.0f} s"
            else:
                why = f"probe failed: {exc}"
            log(f"[{i + 1}/{len(runs)}] {runs[i]['name']}: not estimated: {why}")
            return {"name": runs[i]["name"], "units": 0, "probe_s": 0.0, "core_hours": 0.0,
                    "longest_unit_h": 0.0, "timed": False, "error": why}

    at_once = max(1, min(workers, os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(max_workers=at_once) as pool:
        futures = [pool.submit(probe_or_report, i) for i in range(len(runs))]
        try:
            rows = [f.result() for f in futures]
        except KeyboardInterrupt:
            for f in futures:
                f.cancel()
            stopping.set()
            _stop_kernels()
            raise
    _add_repeated(runs, rows, rules)
    total = sum(r["core_hours"] for r in rows)
    walls = {w: _wall_hours(runs, rows, w) for w in sorted({workers, 64})}
    return {"runs": rows, "core_hours": total, "wall_hours": walls}


def _add_repeated(runs: list[dict], rows: list[dict], rules: dict) -> None:
    """Add to each run whose rule ``adds`` other runs (it trains them again) their cost."""
    by_name = {r["name"]: r for r in rows}
    for run, row in zip(runs, rows):
        names = (rules.get(run.get("notebook")) or {}).get("adds") or []
        if not names or not row["timed"]:
            continue
        found = [by_name[n] for n in names if n in by_name and by_name[n]["timed"]]
        missing = [n for n in names if n not in {r["name"] for r in found}]
        row["core_hours"] += sum(r["core_hours"] for r in found)
        row["units"] += sum(r["units"] for r in found)
        row["longest_unit_h"] = max([row["longest_unit_h"]] + [r["longest_unit_h"] for r in found])
        if found:
            row["adds"] = [r["name"] for r in found]
        if missing:   # its figure is then a lower bound (said in the printed summary)
            row["not_added"] = missing


def _wall_hours(runs: list[dict], rows: list[dict], workers: int) -> float:
    by_name = {r["name"]: r for r in rows}
    hours = 0.0
    for stage in _stages(runs):
        stage_rows = [by_name[runs[i]["name"]] for i in stage]
        core = sum(r["core_hours"] for r in stage_rows)
        hours += max(core / max(1, workers), max(r["longest_unit_h"] for r in stage_rows))
    return hours


def _print_estimate(est: dict, preset: str, workers: int) -> None:
    print(f"estimate for preset {preset!r} (probe times on this machine, {os.cpu_count()} cores):")
    print(f"  {'run':<34}{'units':>7}{'probe s':>9}{'core-hours':>12}")
    for r in est["runs"]:
        if r["timed"]:
            print(f"  {r['name']:<34}{r['units']:>7}{r['probe_s']:>9.0f}{r['core_hours']:>12.3g}")
        else:
            print(f"  {r['name']:<34}{'':>7}{'':>9}"
                  f"{'not estimated' if r.get('error') else 'not timed':>12}")
    print(f"  {'total':<34}{sum(r['units'] for r in est['runs']):>7}"
          f"{sum(r['probe_s'] for r in est['runs']):>9.0f}{est['core_hours']:>12.3g}")
    for r in est["runs"]:
        if r.get("adds"):
            print(f"  {r['name']} includes the runs it trains again on the other data source: "
                  f"{', '.join(r['adds'])}")
        if r.get("not_added"):
            print(f"  {r['name']} also trains again {', '.join(r['not_added'])}, not estimated "
                  "here: its figure is a lower bound")
    failed = [f"{r['name']} ({r['error']})" for r in est["runs"] if r.get("error")]
    if failed:
        print(f"  not estimated: {'; '.join(failed)}; the totals leave them out (lower bounds)")
    for w, h in est["wall_hours"].items():
        mark = " (--workers)" if w == workers else ""
        print(f"  wall time with {w} workers{mark}: {_hours(h)}")


def _hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


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
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="size of the local Dask cluster: one single-threaded worker per core by "
                        f"default ({os.cpu_count()} here); 1 runs everything in-process, one "
                        "notebook at a time")
    p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                   help="use an existing Dask cluster (e.g. tcp://10.0.0.5:8786, from "
                        "dask-jobqueue on SLURM/PBS) instead of starting one")
    p.add_argument("--estimate", action="store_true",
                   help="time a short probe of every run and print the predicted core-hours "
                        "per run and in total, and the wall time for --workers workers")
    p.set_defaults(func=_cli)


def _free_port(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start_cluster(workers: int):
    """A LocalCluster of single-threaded worker processes; returns (cluster, dashboard or None)."""
    import importlib.util
    import logging

    from distributed import LocalCluster

    import dask

    dashboard = importlib.util.find_spec("bokeh") is not None
    address = (":8787" if _free_port(8787) else ":0") if dashboard else None
    with dask.config.set(CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=address, silence_logs=logging.ERROR)
    return cluster, (cluster.dashboard_link if dashboard else None)


#: The Dask settings of the cluster ``ctdnn run`` starts (the scheduler in this process, the
#: workers through their nannies), for units that are many small tensor operations in Python:
#:
#: * no ``MALLOC_TRIM_THRESHOLD_`` (see :func:`ctdnn.parallel.undo_malloc_trim`): with it,
#:   every tensor above 128 KiB is mapped and unmapped anew and training runs 2.5x slower;
#: * no statistical profiler in the workers, which samples every thread's stack 100 times a
#:   second and so competes with the unit for the interpreter (9 % more CPU time per unit
#:   measured; the dashboard's profile page stays empty);
#: * the event loops' tick, the memory monitor and the system monitor at 1 s, 1 s and 2 s
#:   instead of 20, 100 and 500 ms: an idle scheduler with two workers then takes 2 % of a
#:   core instead of 12 %.
CLUSTER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                  "distributed.worker.profile.enabled": False,
                  "distributed.admin.tick.interval": "1s",
                  "distributed.worker.memory.monitor-interval": "1s",
                  "distributed.admin.system-monitor.interval": "2s"}


def _cluster_size(address: str) -> int:
    """The number of workers of the Dask cluster at ``address``."""
    from distributed import Client

    try:
        with Client(address, timeout="10s", set_as_default=False) as client:
            return len(client.scheduler_info()["workers"])
    except OSError as exc:
        raise RunnerError(f"no Dask scheduler answers at {address} ({exc}); start one (e.g. "
                          "with dask-jobqueue) or leave out --scheduler") from None


def _cli(args) -> int:
    cluster = None
    try:
        workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
        if workers < 1:
            raise RunnerError(f"--workers must be at least 1, got {workers}")
        runs = plan(args.preset, args.only)
        if args.list:
            for r in runs:
                print(f"{r['name']}: {json.dumps(r['parameters'])}")
            return 0
        if args.estimate:
            est = estimate(runs, workers)
            _print_estimate(est, args.preset, workers)
            return 0
        root = ROOT if args.workdir is None else prepare_workdir(args.workdir)
        generated = root / "book" / "generated"
        if args.clean:
            shutil.rmtree(generated, ignore_errors=True)
            shutil.rmtree(root / "_build", ignore_errors=True)
        env = {}
        if args.scheduler:
            env["CTDNN_SCHEDULER"] = args.scheduler
            workers = _cluster_size(args.scheduler) if args.workers is None else workers
            print(f"ctdnn run: preset {args.preset!r}, {len(runs)} runs on the Dask cluster at "
                  f"{args.scheduler} ({workers} workers)")
        elif workers > 1:
            cluster, dashboard = _start_cluster(workers)
            env["CTDNN_SCHEDULER"] = cluster.scheduler_address
            print(f"ctdnn run: preset {args.preset!r}, {len(runs)} runs; Dask LocalCluster with "
                  f"{workers} workers, dashboard: "
                  + (dashboard or "none (install bokeh to get one)"))
        else:
            env["CTDNN_SCHEDULER"] = ""
            print(f"ctdnn run: preset {args.preset!r}, {len(runs)} runs, in-process (--workers 1)")
        archive = archive_folder(args.preset)
        if archive is not None:   # a preset archived in the repository, not a book build
            from .experiments import table5

            t0 = time.perf_counter()
            table5.regenerate(runs, archive, preset=args.preset, workers=workers, env=env)
            print(f"archive {archive.relative_to(ROOT)} written in "
                  f"{time.perf_counter() - t0:.0f} s")
            return 0
        # Notebooks only wait for their units (and do a little work of their own: data,
        # figures), so twice the workers and two more keep the workers busy to the end of a
        # stage (each kernel holds its data set in memory: at most 16 at once). Measured on
        # 2 workers, quick preset: 6 notebooks at once beat 3 and all 11 of the stage.
        jobs = 1 if not env["CTDNN_SCHEDULER"] else min(16, 2 * workers + 2)
        t0 = time.perf_counter()
        execute(runs, generated, force=args.force, env=env, jobs=jobs, progress=True)
        print(f"notebooks done in {time.perf_counter() - t0:.0f} s")
        if not args.no_book:
            html = build_book(root)
            print(f"book built: {html / 'index.html'}")
    except RunnerError as exc:
        print(f"ctdnn run: {exc}", file=sys.stderr)
        return 1
    finally:
        if cluster is not None:
            cluster.close()
    return 0


def main(argv=None) -> int:
    from .__main__ import main as cli_main

    return cli_main(["run", *(argv or [])])
