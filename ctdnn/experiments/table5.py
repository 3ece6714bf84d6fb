"""Table 5 at the authors' protocol: our neural-ODE runs beside the authors' result files.

Three parts:

* **The authors' numbers.** The authors' repository publishes one JSON file per neural-ODE run,
  ``python/surrogate/results/results_table5_<data>_<basis>_d3_seed<k>.json``. Their numbers
  (not their code) are kept in ``authors_table5.csv`` beside this module, one row per file with
  the file name and the commit it comes from; ``authors_table`` reads it and
  ``extract_authors`` regenerates it from a git copy of their repository
  (``python -m ctdnn.experiments.table5 extract GIT_DIR``).
* **The comparison.** Per data set and basis, our per-seed runs beside theirs: parameter
  counts, test error, NFE and stopping iterations, with the verdict of ``agreement``
  (``agrees``, ``differs`` or ``inconclusive``; the rule's text is ``AGREEMENT_RULE``).
* **The archive.** The results of a run at the paper's protocol are kept in a folder of the
  repository (``ARCHIVE``): the results record of every data set, flat CSV tables, the
  comparison, a figure and ``provenance.json`` (commit, a flag for uncommitted changes, the
  package versions, the machine, the date, the preset, wall time and core-hours, and a digest
  of every source file of the package). ``regenerate`` makes it
  (``python -m ctdnn run --preset table5``); ``read_archive`` reads it back and checks
  that it is complete; ``changed_sources`` says which package sources differ from those
  that produced it. The archive is replaced as a whole: an interrupted run leaves the
  previous archive as it was. The same machinery keeps the DTO surrogates of Table 2 at the
  paper's protocol (``--preset table2``, ``TABLE2_ARCHIVE``: records, ``errors.csv`` and
  provenance; the authors published no Table 2 result files to compare with).

Names: the authors' basis ``"none"`` (one time-invariant weight set) is our ``"constant"``
(Legendre of degree 0). Their NFE columns count the evaluations of one solve over a whole
split at the best checkpoint, not the evaluations spent in training.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import io
import json
import math
import os
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from ..storage import write_bytes_atomic, write_json, write_text_atomic
from .common import Table, pm
from .schema import RunResults, read_run, write_run

__all__ = ["AUTHORS_REPO", "AUTHORS_COMMIT", "AUTHORS_CSV", "AUTHORS_COLUMNS", "RUN_COLUMNS",
           "ARCHIVE", "AGREEMENT_RULE", "MARGIN", "MIN_RUNS", "Agreement", "ArchiveError",
           "Archive", "extract_authors", "write_authors_csv", "authors_table", "agreement",
           "bootstrap_diff_ci", "our_rows", "compare", "comparison_table", "per_seed_table",
           "scatter_figure", "sources_digest", "provenance", "write_archive", "read_archive",
           "changed_sources", "regenerate", "not_run", "Page", "table2_runs",
           "estimate_table2", "TABLE2_ESTIMATE", "TABLE2_ARCHIVE", "NOTEBOOKS"]

ROOT = Path(__file__).resolve().parents[2]
#: The authors' repository and the commit whose result files the table holds.
AUTHORS_REPO = "hrosso710/Continuous_DNN_Surrogates_Revised"
AUTHORS_COMMIT = "218b73f375ab1a09119aace110fd832517931a77"
AUTHORS_CSV = Path(__file__).with_name("authors_table5.csv")
_RESULTS_DIR = "python/surrogate/results"
_FILE = re.compile(r"results_table5_(ELM|CDR|DCR)_(legendre|monomial|none)_d(\d+)_seed(\d+)\.json$")
#: The authors' basis names and ours.
BASES = {"legendre": "legendre", "monomial": "monomial", "none": "constant"}
DATASETS = ("ELM", "CDR", "DCR")
OUR_BASES = ("legendre", "monomial", "constant")
LABELS = {"legendre": "Legendre", "monomial": "monomial", "constant": "constant"}

#: One row per run, for both sources (the authors' CSV adds their file, commit and protocol).
RUN_COLUMNS = ("dataset", "basis", "seed", "n_parameters", "stopped_early", "stop_iter",
               "best_iter", "train_rel_err", "val_rel_err", "test_rel_err", "train_nfe",
               "test_nfe")
AUTHORS_COLUMNS = ("file", "commit") + RUN_COLUMNS + (
    "authors_basis", "authors_degree", "iterations_requested", "batch_size", "grad_clip",
    "lr_decay_every", "lr_decay_gamma", "early_stop_patience", "rtol", "atol", "width",
    "hidden", "T")
# Their JSON keys for our columns.
_AUTHORS_KEYS = {"n_parameters": "trainable_params", "stopped_early": "stopped_early",
                 "stop_iter": "stop_iter", "best_iter": "best_iter",
                 "train_rel_err": "reported_train_relerr", "val_rel_err": "reported_val_relerr",
                 "test_rel_err": "reported_test_relerr", "train_nfe": "reported_train_nfe",
                 "test_nfe": "reported_test_nfe", "authors_basis": "basis",
                 "authors_degree": "degree", "iterations_requested": "niters_requested",
                 "batch_size": "batch_size", "grad_clip": "grad_clip",
                 "lr_decay_every": "lr_decay_every", "lr_decay_gamma": "lr_decay_gamma",
                 "early_stop_patience": "early_stop_patience", "rtol": "rtol", "atol": "atol",
                 "width": "nc", "hidden": "hidden", "T": "T"}
_INT = {"seed", "n_parameters", "stop_iter", "best_iter", "train_nfe", "test_nfe",
        "authors_degree", "iterations_requested", "batch_size", "lr_decay_every",
        "early_stop_patience", "width", "hidden"}
_FLOAT = {"train_rel_err", "val_rel_err", "test_rel_err", "grad_clip", "lr_decay_gamma", "rtol",
          "atol", "T"}

#: Where ``python -m ctdnn run --preset table5`` keeps its archive.
ARCHIVE = ROOT / "archive" / "paper_protocol" / "table5"
ARCHIVE_SCHEMA = 1
_PROVENANCE = "provenance.json"
#: The notebook whose experiment each kind of archive holds: Table 5 (neural ODEs, compared
#: with the authors' result files) and Table 2 (DTO surrogates, ours alone).
NOTEBOOKS = {"table5": "04_neural_ode_surrogates", "table2": "02_dto_surrogates"}
_RECORD = "{notebook}_{ds}.json"
_TABLE2_FILES = ("errors.csv",)
_TABLES = ("runs.csv", "comparison.csv", "per_seed.csv")
_FIGURE = "scatter.png"


# ----------------------------------------------------------------------------- authors' numbers

def _git(git_dir, *args) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(git_dir), *args], capture_output=True, text=True,
                              check=True)
    except FileNotFoundError as err:
        raise RuntimeError("git is not installed; it is needed to read the authors' "
                           "repository") from err
    except subprocess.CalledProcessError as err:
        raise RuntimeError(f"git {' '.join(args)} failed in {git_dir}: "
                           f"{err.stderr.strip()}") from err
    return proc.stdout


def extract_authors(git_dir, commit: str = AUTHORS_COMMIT) -> list[dict]:
    """The rows of the authors' table from a git copy of their repository (bare or not).

    Args:
        git_dir: the repository (a clone of :data:`AUTHORS_REPO`).
        commit: the commit to read (default: :data:`AUTHORS_COMMIT`).

    Returns:
        One dict per result file with the keys :data:`AUTHORS_COLUMNS`, sorted by data set,
        basis and seed.

    Raises:
        RuntimeError: git fails or the commit holds no Table 5 result file.
        ValueError: a file lacks one of the expected keys (named).
    """
    full = _git(git_dir, "rev-parse", f"{commit}^{{commit}}").strip()
    names = [n for n in _git(git_dir, "ls-tree", "-r", "--name-only", full, _RESULTS_DIR)
             .splitlines() if _FILE.search(n)]
    if not names:
        raise RuntimeError(f"commit {full} of {git_dir} holds no {_RESULTS_DIR}/"
                           "results_table5_*.json file")
    rows = []
    for name in names:
        data, seed = json.loads(_git(git_dir, "show", f"{full}:{name}")), _FILE.search(name)
        missing = [k for k in _AUTHORS_KEYS.values() if k not in data]
        if missing:
            raise ValueError(f"{name} at {full[:7]} lacks the keys {missing}")
        row = {"file": name, "commit": full, "dataset": seed.group(1),
               "basis": BASES[seed.group(2)], "seed": int(seed.group(4))}
        row.update({ours: data[theirs] for ours, theirs in _AUTHORS_KEYS.items()})
        rows.append(_typed(row))
    order = {b: i for i, b in enumerate(OUR_BASES)}
    return sorted(rows, key=lambda r: (DATASETS.index(r["dataset"]), order[r["basis"]], r["seed"]))


def write_authors_csv(rows: Sequence[dict], path=AUTHORS_CSV) -> Path:
    """Write the authors' rows as CSV (floats at full precision; a missing value empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(AUTHORS_COLUMNS)
    for r in rows:
        w.writerow(["" if r[c] is None else repr(r[c]) if isinstance(r[c], float) else r[c]
                    for c in AUTHORS_COLUMNS])
    return write_text_atomic(path, buf.getvalue())


def _typed(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if v in ("", None):
            out[k] = None
        elif k in _INT:
            out[k] = int(v)
        elif k in _FLOAT:
            out[k] = float(v)
        elif k == "stopped_early":
            out[k] = v if isinstance(v, bool) else {"True": True, "False": False}[v]
        else:
            out[k] = v
    return out


def authors_table(path=AUTHORS_CSV) -> list[dict]:
    """The authors' published Table 5 runs, one typed dict per result file.

    Keys: :data:`AUTHORS_COLUMNS` (``basis`` in our names; ``train_nfe`` and ``test_nfe`` are
    the evaluations of one solve over the split).

    Raises:
        ValueError: the file's columns are not :data:`AUTHORS_COLUMNS`.
    """
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != AUTHORS_COLUMNS:
            raise ValueError(f"{Path(path).name} has the columns {reader.fieldnames}; expected "
                             f"{list(AUTHORS_COLUMNS)} (regenerate it with `python -m "
                             "ctdnn.experiments.table5 extract GIT_DIR`)")
        return [_typed(r) for r in reader]


# ----------------------------------------------------------------------------- the verdict

#: The verdict's margin: a difference of means below this fraction of the authors' mean agrees.
MARGIN = 0.10
#: Fewest runs on each side for a verdict other than "inconclusive".
MIN_RUNS = 3
_LEVEL, _N_BOOT = 0.95, 10_000
#: The rule, as the book states it (and as the archive's comparison stores it).
AGREEMENT_RULE = (
    f"Per data set and basis, our per-seed values against the authors'. Inconclusive when "
    f"either side has fewer than {MIN_RUNS} runs, or when our data set is simulated (the "
    f"paper's file was not available to our run). Differs when the {_LEVEL:.0%} percentile "
    f"bootstrap interval ({_N_BOOT} resamples of each side, fixed seed) of mean(ours) minus "
    f"mean(authors') excludes 0 and the difference of the means exceeds {MARGIN:.0%} of the "
    f"authors' mean. Agrees otherwise: the interval holds 0 (the seeds cannot tell the two "
    f"apart) or the difference is within the margin. The two-sided Mann-Whitney U p-value is "
    f"shown beside it, not used.")


@dataclasses.dataclass(frozen=True)
class Agreement:
    """The verdict of ``agreement`` with its numbers.

    Attributes:
        verdict: ``"agrees"``, ``"differs"`` or ``"inconclusive"``.
        reason: the branch that decided it, with its numbers.
        n_ours, n_theirs: runs on each side.
        mean_ours, mean_theirs: means (NaN without runs).
        ci: the bootstrap interval of mean(ours) - mean(theirs) (NaN, NaN below
            :data:`MIN_RUNS`).
        relative: (mean(ours) - mean(theirs)) / |mean(theirs)|.
        p_value: two-sided Mann-Whitney U p-value (NaN below :data:`MIN_RUNS`).
    """

    verdict: str
    reason: str
    n_ours: int
    n_theirs: int
    mean_ours: float
    mean_theirs: float
    ci: tuple
    relative: float
    p_value: float


def bootstrap_diff_ci(a: Sequence[float], b: Sequence[float], *, level: float = _LEVEL,
                      n_boot: int = _N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)`` (each side resampled alone).

    Args:
        a: (n_a,) values; b: (n_b,) values; both non-empty and finite.
        level: coverage of the interval.
        n_boot: resamples.
        seed: seed of the generator (the interval is a deterministic function of the inputs).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError(f"both samples need values; got {a.size} and {b.size}")
    rng = np.random.default_rng(seed)
    ma = a[rng.integers(0, a.size, (n_boot, a.size))].mean(axis=1)
    mb = b[rng.integers(0, b.size, (n_boot, b.size))].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(ma - mb, [tail, 100.0 - tail])
    return float(lo), float(hi)


def agreement(ours: Sequence[float], theirs: Sequence[float], *, margin: float = MARGIN,
              min_runs: int = MIN_RUNS, seed: int = 0) -> Agreement:
    """Whether our per-seed values agree with the authors' (the rule ``AGREEMENT_RULE``).

    Args:
        ours: our per-seed values (e.g. test errors); non-finite values (failed runs) are
            left out and named in the reason.
        theirs: the authors' per-seed values.
        margin: the relative difference of means that counts.
        min_runs: fewest runs per side for a verdict.
        seed: seed of the bootstrap.
    """
    from scipy.stats import mannwhitneyu

    a = [float(v) for v in ours if v is not None and math.isfinite(float(v))]
    b = [float(v) for v in theirs if v is not None and math.isfinite(float(v))]
    dropped = (len(list(ours)) - len(a), len(list(theirs)) - len(b))
    ma = float(np.mean(a)) if a else math.nan
    mb = float(np.mean(b)) if b else math.nan
    rel = (ma - mb) / abs(mb) if a and b and mb != 0 else math.nan
    note = f" ({dropped[0]} of ours failed)" if dropped[0] else ""
    if len(a) < min_runs or len(b) < min_runs:
        where = ""
        if len(b) == 1 and len(a) >= 2:   # where the authors' single run falls among ours
            pos = ("below" if b[0] < min(a) else "above" if b[0] > max(a) else "inside")
            where = (f"; the authors' one run ({b[0]:.3g}) lies {pos} the range of ours "
                     f"({min(a):.3g} to {max(a):.3g})")
        return Agreement("inconclusive", f"{len(a)} runs of ours{note} and {len(b)} of the "
                         f"authors'; a verdict needs {min_runs} on each side{where}",
                         len(a), len(b), ma, mb, (math.nan, math.nan), rel, math.nan)
    lo, hi = bootstrap_diff_ci(a, b, seed=seed)
    p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
    ci = f"interval [{lo:.3g}, {hi:.3g}]"
    if (lo > 0 or hi < 0) and abs(rel) > margin:
        return Agreement("differs", f"{ci} excludes 0 and the means differ by {rel:+.0%} "
                         f"(margin {margin:.0%}){note}", len(a), len(b), ma, mb, (lo, hi), rel, p)
    why = (f"{ci} holds 0" if lo <= 0 <= hi else
           f"{ci} excludes 0 but the means differ by only {rel:+.0%} (margin {margin:.0%})")
    return Agreement("agrees", why + note, len(a), len(b), ma, mb, (lo, hi), rel, p)


# ----------------------------------------------------------------------------- the comparison

def _num(v, cast=float):
    if v is None:
        return None
    try:
        v = cast(v)
    except (TypeError, ValueError):
        return None
    return v if cast is not float or math.isfinite(v) else None


def _first(r: dict, *keys):
    return next((r[k] for k in keys if r.get(k) is not None), None)


def our_rows(record: RunResults) -> list[dict]:
    """Our runs of one results record (notebook 04 at the authors' protocol) as rows with the
    keys :data:`RUN_COLUMNS` plus ``status``, ``training_nfe`` and ``wall_time_s``.

    A failed run keeps its row with ``None`` where it has no number.
    """
    dataset = record.data[0].name if record.data else str(record.parameters.get("dataset"))
    rows = []
    for basis, model in (record.metrics.get("models") or {}).items():
        for r in model.get("runs") or []:
            stop = _num(_first(r, "stop_iteration", "stop_iter"), int)
            # The best checkpoint's iteration (the experiment's "best_epoch" counts iterations
            # when it trains by iterations, as the authors' protocol does).
            best = _first(r, "best_iteration", "best_iter")
            if best is None and r.get("unit") == "iteration":
                best = r.get("best_epoch")
            rows.append({
                "dataset": dataset, "basis": basis, "seed": int(r["seed"]),
                "n_parameters": _num(r.get("n_parameters"), int),
                "stopped_early": bool(r.get("stopped_early", stop is not None)),
                "stop_iter": stop, "best_iter": _num(best, int),
                "train_rel_err": _num(r.get("train_rel_err")),
                "val_rel_err": _num(r.get("val_rel_err")),
                "test_rel_err": _num(r.get("test_rel_err")),
                "train_nfe": _num(_first(r, "train_eval_nfe", "train_nfe"), int),
                "test_nfe": _num(r.get("test_nfe"), int),
                "status": str(r.get("status", "")),
                "iterations_requested": _num(record.parameters.get("iterations"), int),
                "training_nfe": _num(r.get("training_nfe"), int),
                "wall_time_s": _num(r.get("wall_time_s"))})
    return rows


def _stop(r: dict):
    """Where a run stopped: its early-stopping iteration, else the iterations requested."""
    return r["stop_iter"] if r.get("stop_iter") is not None else r.get("iterations_requested")


def compare(ours: Sequence[dict], theirs: Sequence[dict], *, datasets=DATASETS,
            simulated: Sequence[str] = ()) -> list[dict]:
    """One cell per data set and basis where either side has runs.

    ``simulated`` names the data sets our runs took from the package's simulator instead of
    the paper's file: their cells are ``inconclusive`` (not the same data as the authors').

    Returns:
        Dicts with ``dataset``, ``basis``, ``seeds_ours``, ``seeds_theirs``,
        ``params_ours``/``params_theirs`` (sorted distinct counts), ``params_equal``
        (``None`` when a side has no runs), ``test`` and ``test_nfe`` (:class:`Agreement`),
        ``test_ours``/``test_theirs``, ``nfe_ours``/``nfe_theirs`` (test NFE),
        ``train_nfe_ours``/``train_nfe_theirs`` and ``stop_ours``/``stop_theirs`` (lists in
        seed order).
    """
    cells = []
    for ds in datasets:
        for basis in OUR_BASES:
            a = sorted((r for r in ours if r["dataset"] == ds and r["basis"] == basis),
                       key=lambda r: r["seed"])
            b = sorted((r for r in theirs if r["dataset"] == ds and r["basis"] == basis),
                       key=lambda r: r["seed"])
            if not a and not b:
                continue
            col = lambda rows, k: [r[k] for r in rows if r.get(k) is not None]
            pa = sorted(set(col(a, "n_parameters")))
            pb = sorted(set(col(b, "n_parameters")))
            test = [r["test_rel_err"] if r["test_rel_err"] is not None else math.nan for r in a]
            cells.append({
                "dataset": ds, "basis": basis, "seeds_ours": [r["seed"] for r in a],
                "seeds_theirs": [r["seed"] for r in b], "params_ours": pa, "params_theirs": pb,
                "params_equal": (pa == pb) if pa and pb else None,
                "test_ours": col(a, "test_rel_err"), "test_theirs": col(b, "test_rel_err"),
                "nfe_ours": col(a, "test_nfe"), "nfe_theirs": col(b, "test_nfe"),
                "train_nfe_ours": col(a, "train_nfe"), "train_nfe_theirs": col(b, "train_nfe"),
                "stop_ours": [_stop(r) for r in a if _stop(r) is not None],
                "stop_theirs": [_stop(r) for r in b if _stop(r) is not None],
                "best_ours": col(a, "best_iter"), "best_theirs": col(b, "best_iter"),
                "test": agreement(test, col(b, "test_rel_err")),
                "test_nfe": agreement([r["test_nfe"] if r["test_nfe"] is not None else math.nan
                                       for r in a], col(b, "test_nfe"))})
            if ds in simulated and a and b:
                why = (f"our {ds} data are simulated, the authors' are the paper's file: not "
                       "the same data")
                for k in ("test", "test_nfe"):
                    cells[-1][k] = dataclasses.replace(cells[-1][k], verdict="inconclusive",
                                                       reason=why)
    return cells


def _span(values) -> str:
    return "n/a" if not values else (f"{min(values)}" if min(values) == max(values)
                                     else f"{min(values)}-{max(values)}")


def comparison_table(cells: Sequence[dict], caption: str = "") -> Table:
    """The comparison, one row per data set and basis, with the verdicts."""
    rows = []
    for c in cells:
        t, n = c["test"], c["test_nfe"]
        params = ("n/a" if c["params_equal"] is None else
                  f"{_span(c['params_ours'])} = {_span(c['params_theirs'])}" if c["params_equal"]
                  else f"{_span(c['params_ours'])} ≠ {_span(c['params_theirs'])}")
        ci = "n/a" if math.isnan(t.ci[0]) else f"[{t.ci[0]:+.3g}, {t.ci[1]:+.3g}]"
        rows.append([c["dataset"], LABELS[c["basis"]],
                     f"{len(c['seeds_ours'])} / {len(c['seeds_theirs'])}", params,
                     pm(c["test_ours"]), pm(c["test_theirs"]), ci,
                     "n/a" if math.isnan(t.p_value) else f"{t.p_value:.2g}", t.verdict,
                     pm(c["nfe_ours"], ".0f"), pm(c["nfe_theirs"], ".0f"), n.verdict,
                     _span(c["stop_ours"]), _span(c["stop_theirs"])])
    return Table(["data", "basis", "runs (ours / authors')", "parameters (ours, authors')",
                  "test error, ours", "test error, authors'", "95% interval of difference",
                  "Mann-Whitney p", "test error verdict", "test NFE, ours", "test NFE, authors'",
                  "test NFE verdict", "stopped at, ours", "stopped at, authors'"],
                 rows, caption=caption)


def per_seed_table(ours: Sequence[dict], theirs: Sequence[dict], caption: str = "") -> Table:
    """Every seed of both sources side by side: test error, NFE and stopping iterations."""
    fmt = lambda v, f: "" if v is None else format(v, f)
    index = {}
    for side, rows in (("ours", ours), ("theirs", theirs)):
        for r in rows:
            index.setdefault((r["dataset"], r["basis"], r["seed"]), {})[side] = r
    order = {b: i for i, b in enumerate(OUR_BASES)}
    rows = []
    for (ds, basis, seed) in sorted(index, key=lambda k: (DATASETS.index(k[0]), order[k[1]], k[2])):
        a, b = index[(ds, basis, seed)].get("ours", {}), index[(ds, basis, seed)].get("theirs", {})
        rows.append([ds, LABELS[basis], seed, fmt(a.get("test_rel_err"), ".4f"),
                     fmt(b.get("test_rel_err"), ".4f"), fmt(a.get("test_nfe"), "d"),
                     fmt(b.get("test_nfe"), "d"), fmt(a.get("train_nfe"), "d"),
                     fmt(b.get("train_nfe"), "d"),
                     f"{fmt(_stop(a) if a else None, 'd')} / {fmt(a.get('best_iter'), 'd')}",
                     f"{fmt(_stop(b) if b else None, 'd')} / {fmt(b.get('best_iter'), 'd')}"])
    return Table(["data", "basis", "seed", "test error, ours", "test error, authors'",
                  "test NFE, ours", "test NFE, authors'", "training-split NFE, ours",
                  "training-split NFE, authors'", "stopped / best, ours",
                  "stopped / best, authors'"], rows, caption=caption)


COLORS = {"legendre": "black", "monomial": "tab:blue", "constant": "tab:orange"}


def scatter_figure(ours: Sequence[dict], theirs: Sequence[dict], tag: str = ""):
    """Test error against the NFE of one solve over the training split, per data set:
    ours filled, the authors' open, one colour per basis."""
    import matplotlib.pyplot as plt

    present = [d for d in DATASETS if any(r["dataset"] == d for r in [*ours, *theirs])]
    fig, axes = plt.subplots(1, max(1, len(present)), figsize=(5 * max(1, len(present)), 4.2),
                             squeeze=False)
    for ax, ds in zip(axes[0], present):
        for basis in OUR_BASES:
            for rows, filled, who in ((ours, True, "ours"), (theirs, False, "authors'")):
                pts = [(r["train_nfe"], r["test_rel_err"]) for r in rows
                       if r["dataset"] == ds and r["basis"] == basis
                       and r.get("train_nfe") is not None and r.get("test_rel_err") is not None]
                if not pts:
                    continue
                x, y = zip(*pts)
                ax.scatter(x, y, s=42, marker="o" if filled else "s",
                           facecolors=COLORS[basis] if filled else "none",
                           edgecolors=COLORS[basis], linewidths=1.4,
                           label=f"{LABELS[basis]}, {who}")
        ax.set_title(ds)
        ax.set_xlabel("NFE of one solve over the training split")
        ax.set_ylabel("test relative error")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Neural-ODE surrogates at the authors' protocol: ours (filled) and the "
                 f"authors' result files (open)" + (f"\n{tag}" if tag else ""), fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- provenance

def _source_files(root: Path = ROOT) -> dict:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "ctdnn").rglob("*.py"))}


def sources_digest(root: Path = ROOT) -> tuple[str, dict]:
    """``(digest, {path: sha256})`` of every ``ctdnn/**/*.py`` (the runner's digest)."""
    h = hashlib.sha256()
    for p in sorted((root / "ctdnn").rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest(), _source_files(root)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_state(root: Path = ROOT) -> tuple[str, bool | None]:
    """The commit of the working tree and whether it differs from it (the archive aside)."""
    try:
        commit = _git(root, "rev-parse", "HEAD").strip()
        status = _git(root, "status", "--porcelain", "--", ".", ":(exclude)archive")
    except RuntimeError:
        return "unknown", None
    return commit, bool(status.strip())


def provenance(*, preset: str, workers: int, wall_time_s: float, cpu_seconds: float,
               device: str = "cpu") -> dict:
    """What produced one archived run: commit, dirty flag, versions, machine, date, cost.

    ``core_hours`` is wall time times workers (the cores held); ``cpu_hours`` the CPU time the
    units used.
    """
    from importlib import metadata

    from ..reporting import environment_info

    commit, dirty = _git_state()
    digest, files = sources_digest()
    env = environment_info(device)
    versions = dict(env["versions"])
    for name in ("dask", "distributed"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "preset": preset, "commit": commit, "dirty": dirty, "versions": versions,
            "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": env["platform"],
                        "python": env["python"], "device": env["device"]},
            "workers": int(workers), "wall_time_s": float(wall_time_s),
            "core_hours": float(wall_time_s) * int(workers) / 3600.0,
            "cpu_hours": float(cpu_seconds) / 3600.0,
            "sources_digest": digest, "sources": files}


# ----------------------------------------------------------------------------- the archive

class ArchiveError(ValueError):
    """An archive folder that is missing, incomplete or unreadable; the message names what."""


@dataclasses.dataclass(frozen=True)
class Archive:
    """An archive read back by ``read_archive``.

    Attributes:
        folder: where it lies.
        provenance: ``provenance.json``: ``schema``, ``planned`` (``{data set: parameters}``),
            ``runs`` (``{data set: provenance}``, see :func:`provenance`), ``authors_commit``,
            ``updated``.
        records: ``{data set: RunResults}`` of the data sets archived.
    """

    folder: Path
    provenance: dict
    records: dict

    @property
    def ours(self) -> list[dict]:
        return [r for ds in DATASETS if ds in self.records for r in our_rows(self.records[ds])]

    @property
    def data_sources(self) -> list:
        return [self.records[ds].data[0] for ds in DATASETS
                if ds in self.records and self.records[ds].data]


def _tables_csv(ours, cells, theirs) -> dict:
    def csv_text(header, rows):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        return buf.getvalue()

    run_cols = RUN_COLUMNS + ("status", "training_nfe", "wall_time_s")
    runs = csv_text(run_cols, [["" if r.get(c) is None else r[c] for c in run_cols] for r in ours])
    cell_rows = []
    for c in cells:
        row = [c["dataset"], c["basis"], len(c["seeds_ours"]), len(c["seeds_theirs"]),
               " ".join(map(str, c["params_ours"])), " ".join(map(str, c["params_theirs"])),
               c["params_equal"]]
        for k in ("test", "test_nfe"):
            a = c[k]
            row += [a.mean_ours, a.mean_theirs, a.ci[0], a.ci[1], a.relative, a.p_value,
                    a.verdict, a.reason]
        cell_rows.append(row)
    head = ["dataset", "basis", "runs_ours", "runs_authors", "parameters_ours",
            "parameters_authors", "parameters_equal"]
    for k in ("test_rel_err", "test_nfe"):
        head += [f"{k}_mean_ours", f"{k}_mean_authors", f"{k}_ci_low", f"{k}_ci_high",
                 f"{k}_relative_difference", f"{k}_mann_whitney_p", f"{k}_verdict",
                 f"{k}_reason"]
    seeds = per_seed_table(ours, theirs)
    return {"runs.csv": runs, "comparison.csv": csv_text(head, cell_rows),
            "per_seed.csv": csv_text(seeds.header, seeds.rows)}


def _dto_cells(records: dict) -> list[list]:
    """Rows ``[data, architecture, T, basis, runs, test mean, test std, diverged, failed]``
    of DTO records (Adam)."""
    rows = []
    for ds in DATASETS:
        for c in (records[ds].metrics.get("cells") or []) if ds in records else []:
            t = c.get("test_rel_err") or {}
            rows.append([ds, c.get("architecture"), c.get("T"), c.get("label") or c.get("basis"),
                         len(c.get("runs") or []), t.get("mean"), t.get("std"),
                         c.get("n_diverged"), c.get("n_failed")])
    return rows


def _dto_errors_csv(records: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["dataset", "architecture", "T", "basis", "runs", "test_rel_err_mean",
                "test_rel_err_std", "diverged", "failed"])
    w.writerows([["" if v is None else v for v in r] for r in _dto_cells(records)])
    return buf.getvalue()


def _simulated(records: dict) -> list[str]:
    return [ds for ds, rec in records.items() if any(d.source != "paper" for d in rec.data)]


def _recover(folder: Path) -> None:
    """Put back the previous archive if a swap was interrupted between its two renames."""
    old = folder.with_name(f".{folder.name}.old")
    if not folder.exists() and old.exists():
        os.replace(old, folder)
    elif old.exists():
        shutil.rmtree(old, ignore_errors=True)


def write_archive(folder, records: dict, provenance_runs: dict, planned: dict,
                  theirs: Sequence[dict] | None = None, *, kind: str = "table5") -> Path:
    """Write an archive: every record, the CSV tables, the figure and ``provenance.json``.

    ``kind="table2"`` (DTO records, no authors' numbers to compare with) writes the records,
    ``errors.csv`` (test error per data set, architecture, T and basis) and the provenance.

    Everything is written into a new folder beside ``folder``, which then takes its place
    (two renames; an interruption between them is repaired by the next write or read), so
    the archive is always the previous one or the new one, whole.

    Args:
        folder: the archive folder (e.g. ``ARCHIVE``).
        records: ``{data set: RunResults}``.
        provenance_runs: ``{data set: provenance(...)}`` for every data set of ``records``.
        planned: ``{data set: parameters}`` of every run the preset asks for.
        theirs: the authors' rows (default: ``authors_table``).
        kind: ``"table5"`` or ``"table2"`` (see :data:`NOTEBOOKS`).

    Raises:
        ArchiveError: a record has no provenance, or names another data set.
    """
    if kind not in NOTEBOOKS:
        raise ArchiveError(f"kind must be one of {sorted(NOTEBOOKS)}, got {kind!r}")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    for ds, rec in records.items():
        if ds not in provenance_runs:
            raise ArchiveError(f"the record of {ds} has no provenance; pass "
                               f"provenance_runs[{ds!r}]")
        if rec.data and rec.data[0].name != ds:
            raise ArchiveError(f"records[{ds!r}] holds data set {rec.data[0].name}")
    theirs = authors_table() if theirs is None else list(theirs)
    _recover(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.new-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for ds, rec in records.items():
            name = _RECORD.format(notebook=NOTEBOOKS[kind], ds=ds)[:-5]
            write_run(tmp, dataclasses.replace(rec, run=name))
        if kind == "table5":
            ours = [r for ds in DATASETS if ds in records for r in our_rows(records[ds])]
            cells = compare(ours, theirs, simulated=_simulated(records))
            for name, text in _tables_csv(ours, cells, theirs).items():
                write_text_atomic(tmp / name, text)
            sim = _simulated(records)
            sources = ", ".join(f"{ds} {'simulated' if ds in sim else 'paper file'}"
                                for ds in DATASETS if ds in records)
            fig = scatter_figure(ours, theirs, tag=f"archive of preset 'table5' ({sources})")
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            plt.close(fig)
            write_bytes_atomic(tmp / _FIGURE, buf.getvalue())
        else:
            write_text_atomic(tmp / "errors.csv", _dto_errors_csv(records))
        write_json(tmp / _PROVENANCE, {
            "schema": ARCHIVE_SCHEMA, "archive": kind,
            "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "authors_repository": AUTHORS_REPO, "authors_commit": AUTHORS_COMMIT,
            "rule": AGREEMENT_RULE, "planned": planned,
            "runs": {ds: provenance_runs[ds] for ds in DATASETS if ds in records}}, indent=1)
        read_archive(tmp)   # what was written must read back whole
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def read_archive(folder=ARCHIVE) -> Archive:
    """Read an archive and check that it is complete.

    Raises:
        ArchiveError: naming the missing or unreadable file, or the mismatch (a data set
            archived without its record or provenance, a record whose seeds or bases are not
            those planned).
    """
    folder = Path(folder)
    if folder.name and not folder.exists():
        _recover(folder)
    if not folder.is_dir():
        raise ArchiveError(f"no archive at {folder}; `python -m ctdnn run --preset table5` "
                           "makes it")
    try:
        prov = json.loads((folder / _PROVENANCE).read_text())
    except (OSError, ValueError) as err:
        raise ArchiveError(f"{folder.name}/{_PROVENANCE} cannot be read: {err}") from err
    for key in ("schema", "planned", "runs", "authors_commit"):
        if key not in prov:
            raise ArchiveError(f"{folder.name}/{_PROVENANCE} lacks {key!r}")
    if prov["schema"] != ARCHIVE_SCHEMA:
        raise ArchiveError(f"{folder.name} has archive schema {prov['schema']}; this package "
                           f"reads {ARCHIVE_SCHEMA}")
    kind = prov.get("archive", "table5")
    if kind not in NOTEBOOKS:
        raise ArchiveError(f"{folder.name}/{_PROVENANCE} names the archive kind {kind!r}; "
                           f"known: {sorted(NOTEBOOKS)}")
    wanted = (*_TABLES, _FIGURE) if kind == "table5" else _TABLE2_FILES
    missing = [n for n in wanted if not (folder / n).is_file()]
    if missing:
        raise ArchiveError(f"{folder.name} lacks {missing}")
    records = {}
    for ds, run_prov in prov["runs"].items():
        for key in ("commit", "dirty", "created", "versions", "machine", "wall_time_s",
                    "core_hours", "sources_digest", "sources"):
            if key not in run_prov:
                raise ArchiveError(f"{folder.name}: the provenance of {ds} lacks {key!r}")
        path = folder / _RECORD.format(notebook=NOTEBOOKS[kind], ds=ds)
        try:
            rec = read_run(path)
        except (OSError, ValueError) as err:
            raise ArchiveError(f"{folder.name}/{path.name} cannot be read: {err}") from err
        plan = prov["planned"].get(ds)
        if plan is not None and kind == "table2":
            want = sorted(plan.get("seeds", []))
            wrong = [f"{c.get('architecture')} T={c.get('T')} {c.get('basis')}"
                     for c in rec.metrics.get("cells") or []
                     if want and sorted(int(r["seed"]) for r in c.get("runs", [])
                                        if "seed" in r) not in (want, [])]
            if wrong:
                raise ArchiveError(f"{path.name}: the seeds of {wrong} are not the planned {want}")
        elif plan is not None:
            models = rec.metrics.get("models") or {}
            want_bases, want_seeds = list(plan.get("bases", [])), sorted(plan.get("seeds", []))
            got = {b: sorted(int(r["seed"]) for r in m.get("runs", [])) for b, m in models.items()}
            if want_bases and sorted(got) != sorted(want_bases):
                raise ArchiveError(f"{path.name} holds the bases {sorted(got)}; planned "
                                   f"{sorted(want_bases)}")
            wrong = [b for b, s in got.items() if want_seeds and s != want_seeds]
            if wrong:
                raise ArchiveError(f"{path.name}: the seeds of {wrong} are not the planned "
                                   f"{want_seeds}")
        records[ds] = rec
    return Archive(folder, prov, records)


def changed_sources(archive: Archive, root: Path = ROOT) -> dict:
    """Which package sources differ from those that produced each archived data set.

    Returns:
        ``{data set: {"changed": [...], "added": [...], "removed": [...]}}``, empty lists where
        the sources are the same.
    """
    now = _source_files(root)
    out = {}
    for ds, prov in archive.provenance["runs"].items():
        then = prov.get("sources") or {}
        out[ds] = {"changed": sorted(p for p in then if p in now and now[p] != then[p]),
                   "added": sorted(p for p in now if p not in then),
                   "removed": sorted(p for p in then if p not in now)}
    return out


def not_run(archive: Archive) -> list[str]:
    """The planned data sets the archive does not hold."""
    return [ds for ds in archive.provenance["planned"] if ds not in archive.records]


# ----------------------------------------------------------------------------- the page

@dataclasses.dataclass
class Page:
    """What the book's Table 5 page shows, read from the archive only (nothing is trained).

    Attributes:
        archive: the archive, or ``None`` where there is none (``problem`` says why).
        problem: why the archive could not be read ("" when it was).
        theirs: the authors' rows (``authors_table``).
        estimate: the Table 2 estimate (:data:`TABLE2_ESTIMATE`), or ``None``.
    """

    archive: Archive | None
    problem: str
    theirs: list
    estimate: dict | None
    table2: Archive | None = None

    @classmethod
    def load(cls, folder="default", estimate_file="default", table2="default") -> "Page":
        """Read the archive (``"default"``: ``ARCHIVE``), the Table 2 estimate
        (:data:`TABLE2_ESTIMATE`) and the Table 2 archive (``TABLE2_ARCHIVE``)."""
        folder = ARCHIVE if folder == "default" else Path(folder)
        est_path = TABLE2_ESTIMATE if estimate_file == "default" else Path(estimate_file)
        t2_path = TABLE2_ARCHIVE if table2 == "default" else Path(table2)
        try:
            t2 = read_archive(t2_path)
        except ArchiveError:
            t2 = None
        try:
            archive, problem = read_archive(folder), ""
        except ArchiveError as err:
            archive, problem = None, _without_paths(err)
        try:
            estimate = json.loads(est_path.read_text())
        except (OSError, ValueError):
            estimate = None
        return cls(archive, problem, authors_table(), estimate, t2)

    @property
    def ours(self) -> list[dict]:
        return self.archive.ours if self.archive else []

    @property
    def data_sources(self) -> list:
        return self.archive.data_sources if self.archive else []

    def tag(self) -> str:
        """Which archive and data sources the page's tables and figure show."""
        if self.archive is None:
            return "the authors' result files only (no archive)"
        sources = ", ".join(f"{d.name} {'paper file' if d.source == 'paper' else d.source}"
                            for d in self.data_sources)
        return f"archive of preset 'table5' ({sources}) and the authors' result files"

    def cells(self) -> list[dict]:
        sim = _simulated(self.archive.records) if self.archive else []
        return compare(self.ours, self.theirs, simulated=sim)

    def banner_note(self) -> str:
        if self.archive is None:
            return (f"No archive could be read ({self.problem}); only the authors' numbers "
                    "are shown.")
        dates = sorted(p["created"][:10] for p in self.archive.provenance["runs"].values())
        return ("The numbers of this page come from the archive of preset 'table5' (the authors' "
                f"protocol), made on {', '.join(dict.fromkeys(dates))}; this page reads it and "
                "trains nothing.")

    def status_markdown(self) -> str:
        """What was run and what was not, and whether the package changed since."""
        if self.archive is None:
            return f"**No archive**: {self.problem}."
        lines = []
        for ds, rec in self.archive.records.items():
            src = rec.data[0] if rec.data else None
            if src is not None and src.source == "paper":
                what = f"the paper's file {src.filename}"
            elif src is not None:
                what = (f"the package's simulator ({src.n_samples} samples): the paper's "
                        f"{ds} file was not available to the run, so this data set is not the "
                        "authors' and its verdicts are inconclusive")
            else:
                what = "an unrecorded source"
            models = rec.metrics.get("models") or {}
            n = sum(len(m.get("runs") or []) for m in models.values())
            lines.append(f"* **{ds}**: {n} runs ({', '.join(LABELS[b] for b in models)} x "
                         f"{len(rec.parameters.get('seeds', []))} seeds) on {what}.")
        for ds in not_run(self.archive):
            lines.append(f"* **{ds}**: planned but **not run** (not in the archive).")
        stale = {ds: sum(map(len, c.values())) for ds, c in changed_sources(self.archive).items()}
        if any(stale.values()):
            changed = sorted({f for c in changed_sources(self.archive).values()
                              for f in c["changed"] + c["added"] + c["removed"]})
            lines.append("\n**The package's sources have changed since the archive was made** "
                         f"({len(changed)} file(s): {', '.join(changed[:8])}"
                         f"{', ...' if len(changed) > 8 else ''}); the numbers are those of "
                         "the sources recorded in the archive. `python -m ctdnn run --preset "
                         "table5` remakes it.")
        else:
            lines.append("\nThe package's sources are those that made the archive.")
        return "\n".join(lines)

    def provenance_table(self) -> Table:
        """Per archived data set: date, commit, machine, workers, wall time and core-hours."""
        rows = []
        for ds, p in (self.archive.provenance["runs"].items() if self.archive else []):
            m = p["machine"]
            dirty = {True: " (with uncommitted changes)", False: "", None: " (unknown state)"}
            rows.append([ds, p["created"][:16].replace("T", " "),
                         f"{p['commit'][:10]}{dirty[p['dirty']]}",
                         f"{m['cpu']}, {m['cores']} cores", p["workers"],
                         f"{p['wall_time_s'] / 60:.0f} min", f"{p['core_hours']:.2f}",
                         f"{p.get('cpu_hours', math.nan):.2f}",
                         f"torch {p['versions'].get('torch')}, torchdiffeq "
                         f"{p['versions'].get('torchdiffeq')}"])
        return Table(["data", "made (UTC)", "commit", "machine", "workers", "wall time",
                      "core-hours (wall x workers)", "CPU hours (units)", "versions"], rows)

    def comparison_table(self) -> Table:
        return comparison_table(self.cells(), caption=(
            f"{self.tag()[0].upper()}{self.tag()[1:]}. Runs: per side; parameters: trainable "
            "counts, ours = authors' when equal; test "
            "error: mean ± std over seeds; interval: 95% bootstrap interval of mean(ours) minus "
            "mean(authors'); test NFE: evaluations of one dopri5 solve over the test split; "
            "stopped at: the iteration where early stopping ended a run (range over seeds)."))

    def per_seed_table(self) -> Table:
        return per_seed_table(self.ours, self.theirs,
                              caption=f"{self.tag()[0].upper()}{self.tag()[1:]}.")

    def figure(self):
        return scatter_figure(self.ours, self.theirs, tag=self.tag())

    def table2_markdown(self) -> str:
        """What of the DTO Table 2 was run at the paper's protocol, and what the rest costs."""
        done, parts = (sorted(self.table2.records) if self.table2 else []), []
        if done:
            runs = self.table2.provenance["runs"]
            parts.append("**Run at the paper's protocol and archived** (`archive/paper_protocol/"
                         "table2/`, preset `table2`: the authors' protocol, Adam, 1000 epochs, 5 "
                         "seeds): " + "; ".join(
                             f"{ds} on {runs[ds]['created'][:16].replace('T', ' ')} UTC in "
                             f"{runs[ds]['wall_time_s'] / 60:.0f} min "
                             f"({runs[ds]['core_hours']:.2f} core-hours)" for ds in done)
                         + ". Test errors in the table below.")
            left = not_run(self.table2)
            if left:
                parts.append(f"Planned but **not run**: {', '.join(left)}.")
        est = self.estimate
        if not est:
            parts.append("No estimate of the cost of Table 2 is archived (`python -m ctdnn run "
                         "--preset table2 --estimate` makes one).")
            return "\n\n".join(parts)
        e, prov = est["estimate"], est["provenance"]
        per_run = ", ".join(f"{r['name'].rsplit('_', 1)[-1]} {r['core_hours']:.2f}"
                            for r in e["runs"] if r.get("timed"))
        walls = ", ".join(f"{_hours(h)} with {w} worker{'s' if w != '1' else ''}"
                          for w, h in e["wall_hours"].items())
        probes = (f"by `ctdnn run --estimate`'s probes on {prov['created'][:10]} (commit "
                  f"{prov['commit'][:10]}, {prov['machine']['cpu']}, {prov['machine']['cores']} "
                  "cores, a machine shared with other jobs)")
        if done:
            spent = sum(self.table2.provenance["runs"][ds]["core_hours"] for ds in done)
            parts.append(f"Before the run, {est['what']} was priced at about "
                         f"**{e['core_hours']:.2f} core-hours** ({per_run}; {walls}) {probes}; "
                         f"the run itself took {spent:.2f} core-hours (the probes' CPU times "
                         "were measured on a busier machine).")
        else:
            parts.append(f"**Not run at the paper's protocol.** {est['what']} (both "
                         "architectures, three final times, three bases, 1000 epochs, 5 seeds) "
                         f"would take about **{e['core_hours']:.2f} core-hours** here "
                         f"({per_run}), that is {walls}, {probes}.")
        parts.append("DCR and the GNvpro optimizer were not run at the paper's protocol; the DTO "
                     "pages of this book show the quick preset's reduced runs.")
        return "\n\n".join(parts)

    def table2_table(self) -> Table | None:
        """Test error per data set, architecture, final time and basis of the Table 2
        archive (``None`` without one)."""
        if self.table2 is None:
            return None
        num = lambda v: isinstance(v, (int, float)) and math.isfinite(v)
        rows = [[ds, arch, f"{T:g}", basis, n,
                 f"{m:.3g} ± {s_:.2g}" if num(m) and num(s_) else f"{m:.3g}" if num(m) else "n/a",
                 f"{div or 0} / {fail or 0}"]
                for ds, arch, T, basis, n, m, s_, div, fail in _dto_cells(self.table2.records)]
        return Table(["data", "architecture", "T", "basis", "runs", "test error",
                      "diverged / failed"], rows,
                     caption="Archive of preset 'table2' (the paper's files; Adam).")

    def record(self, *, run_name: str, preset: str, t_start: float, device="auto") -> RunResults:
        """The page's results record: the comparison's cells, no claims and no data set."""
        from .common import finish

        cells = [{"dataset": c["dataset"], "basis": c["basis"], "runs_ours": len(c["seeds_ours"]),
                  "runs_authors": len(c["seeds_theirs"]), "parameters_equal": c["params_equal"],
                  "test_rel_err": dataclasses.asdict(c["test"]),
                  "test_nfe": dataclasses.asdict(c["test_nfe"])} for c in self.cells()]
        arc = self.archive
        return finish(run=run_name, notebook="09_table5_archive",
                      title="Table 5 at the paper's protocol", preset=preset, data=[],
                      parameters={"archive": "archive/paper_protocol/table5"},
                      metrics={"archived": sorted(arc.records) if arc else [],
                               "not_run": not_run(arc) if arc else [],
                               "problem": self.problem, "rule": AGREEMENT_RULE, "cells": cells},
                      claims=[], t_start=t_start, device=device)


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def _without_paths(err) -> str:
    from .common import without_paths

    return without_paths(err)


# ----------------------------------------------------------------------------- the run

def _unit_cpu_seconds(path: Path) -> float:
    if not path.exists():
        return 0.0
    return sum(float(json.loads(line).get("cpu_seconds", 0.0))
               for line in path.read_text().splitlines() if line.strip())


def regenerate(runs: Sequence[dict], folder=ARCHIVE, *, preset: str, workers: int,
               env: dict | None = None, log=print, unit_root: Path | None = None) -> Path:
    """Run the experiment of every run of an archived preset and archive each data set.

    The runs come from :func:`ctdnn.runner.plan`, all of one notebook of :data:`NOTEBOOKS`
    (``04_neural_ode_surrogates``: the Table 5 archive; ``02_dto_surrogates``: Table 2); each
    is the experiment's ``run`` (:func:`ctdnn.experiments.node.run` or
    :func:`ctdnn.experiments.dto.run`) with the run's parameters, its units spread over
    the Dask workers that ``env["CTDNN_SCHEDULER"]`` names (in-process when empty). After
    each data set the archive is rewritten with it (the data sets archived before and not
    run now are kept), so an interrupted run keeps every data set that finished; finished
    units are kept under ``unit_root`` and an interrupted data set resumes unit by unit.

    Args:
        runs: the preset's runs.
        folder: the archive folder.
        preset: the preset's name (recorded).
        workers: the cluster's size (for the core-hours).
        env: environment for the units (``CTDNN_SCHEDULER``).
        log: receives progress lines.
        unit_root: where finished units are kept (default ``book/generated/.units``).

    Raises:
        ValueError: the runs are not all of one notebook of :data:`NOTEBOOKS`.
    """
    from ..runner import run_key
    from . import dto, node

    notebooks = {r.get("notebook") for r in runs}
    kinds = {nb: k for k, nb in NOTEBOOKS.items()}
    if len(notebooks) != 1 or not notebooks <= set(kinds):
        raise ValueError(f"an archived preset runs one of {sorted(kinds)} only; this one names "
                         f"{sorted(map(str, notebooks))}")
    kind = kinds[notebooks.pop()]
    module = node if kind == "table5" else dto
    fields = {f.name for f in dataclasses.fields(module.Params)}
    params = {r["name"]: module.Params(**{k: v for k, v in r["parameters"].items()
                                          if k in fields}) for r in runs}
    folder = Path(folder)
    try:
        previous = read_archive(folder)
        records, prov_runs = dict(previous.records), dict(previous.provenance["runs"])
        planned = dict(previous.provenance["planned"])
    except ArchiveError:
        records, prov_runs, planned = {}, {}, {}
    planned.update({p.dataset: p.as_dict() for p in params.values()})
    unit_root = Path(unit_root or ROOT / "book" / "generated" / ".units")
    saved = {k: os.environ.get(k) for k in ("CTDNN_SCHEDULER", "CTDNN_UNIT_DIR", "CTDNN_RUN_KEY",
                                            "CTDNN_UNIT_TIMES")}
    try:
        for run in runs:
            p = params[run["name"]]
            units = unit_root / f"{preset}-{run['name']}"
            times = units / "unit-times.jsonl"
            units.mkdir(parents=True, exist_ok=True)
            times.unlink(missing_ok=True)
            os.environ.update({"CTDNN_SCHEDULER": (env or {}).get("CTDNN_SCHEDULER", ""),
                               "CTDNN_UNIT_DIR": str(units), "CTDNN_RUN_KEY": run_key(run),
                               "CTDNN_UNIT_TIMES": str(times)})
            log(f"{run['name']}: {len(p.bases)} bases x {len(p.seeds)} seeds on {p.dataset}")
            t0 = time.perf_counter()
            res = module.run(p)
            rec = module.record(res, run_name=run["name"], preset=preset,
                                claims_list=module.claims(res), t_start=t0)
            wall = time.perf_counter() - t0
            records[p.dataset] = rec
            prov_runs[p.dataset] = provenance(preset=preset, workers=workers, wall_time_s=wall,
                                              cpu_seconds=_unit_cpu_seconds(times),
                                              device=p.device)
            write_archive(folder, records, prov_runs, planned, kind=kind)
            shutil.rmtree(units, ignore_errors=True)
            log(f"{run['name']}: done in {wall:.0f} s; archived in {folder}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return folder


#: Where the estimate of the DTO Table 2 runs at the paper's protocol is kept, and their archive.
TABLE2_ESTIMATE = ROOT / "archive" / "paper_protocol" / "table2_estimate.json"
TABLE2_ARCHIVE = ROOT / "archive" / "paper_protocol" / "table2"


def table2_runs() -> list[dict]:
    """The runs of the ``table2`` preset: the DTO surrogates (Table 2) on ELM and CDR at the
    paper's protocol with Adam alone (both architectures, three final times, three bases,
    1000 epochs, 5 seeds)."""
    from ..runner import plan

    return plan("table2")


def estimate_table2(workers: int = 1, *, path=TABLE2_ESTIMATE, log=print) -> dict:
    """Price :func:`table2_runs` with :func:`ctdnn.runner.estimate` and keep the figures.

    Returns the estimate (see :func:`ctdnn.runner.estimate`) with the runs' parameters and
    the machine; it is written to ``path`` as JSON.
    """
    from ..runner import estimate

    runs = table2_runs()
    t0 = time.perf_counter()
    est = estimate(runs, workers, log=log)
    prov = provenance(preset="paper (Adam only)", workers=workers,
                      wall_time_s=time.perf_counter() - t0, cpu_seconds=0.0)
    out = {"what": "DTO surrogates (Table 2) on ELM and CDR at the paper's protocol (preset "
                   "'table2': the authors' protocol, Adam)",
           "runs": [{"name": r["name"], "parameters": r["parameters"]} for r in runs],
           "estimate": {"runs": est["runs"], "core_hours": est["core_hours"],
                        "wall_hours": {str(k): v for k, v in est["wall_hours"].items()}},
           "workers": workers,
           "provenance": {k: prov[k] for k in ("created", "commit", "dirty", "versions",
                                                 "machine", "sources_digest")},
           "probe_wall_time_s": prov["wall_time_s"]}
    write_json(path, out, indent=1)
    return out


def _main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ctdnn.experiments.table5",
                                     description="The authors' Table 5 numbers.")
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="regenerate authors_table5.csv from a git copy of the "
                                        f"authors' repository ({AUTHORS_REPO})")
    ex.add_argument("git_dir")
    ex.add_argument("--commit", default=AUTHORS_COMMIT)
    ex.add_argument("--output", default=str(AUTHORS_CSV))
    sub.add_parser("refresh", help="rewrite the archive's tables and figure from its records "
                                   "(after a change of the comparison; nothing is trained)")
    es = sub.add_parser("estimate-table2", help="price the DTO Table 2 runs (ELM, CDR, Adam) "
                                                "at the paper's protocol and keep the figures")
    es.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "refresh":
        arc = read_archive(ARCHIVE)
        write_archive(ARCHIVE, arc.records, arc.provenance["runs"], arc.provenance["planned"])
        print(f"{ARCHIVE}: tables and figure rewritten from {sorted(arc.records)}")
        return 0
    if args.command == "estimate-table2":
        est = estimate_table2(args.workers)["estimate"]
        print(f"{est['core_hours']:.2f} core-hours; wall hours by workers: {est['wall_hours']}")
        return 0
    rows = extract_authors(args.git_dir, args.commit)
    print(f"{len(rows)} result files -> {write_authors_csv(rows, args.output)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
