"""The effect of each difference between ctdnn and the authors' code, measured.

The method page's table of differences gives, for each row, the option that switches it, the
authors' value, ctdnn's value and a measured effect: one run each way on one data set, at
least three seeds, a small budget. Each row is a function registered in ``ROWS``
(``register(row, fn)``) that takes keyword settings (``seeds``, ``epochs``, ...) with
defaults, ignoring the ones it does not use (``**settings``), and returns an
:class:`Effect`; :func:`effects_table` writes the markdown table.

Rows of the DTO networks (ResNet, T = 1, Legendre d = 3 on the ELM paper file, Adam, the
settings of the notebook ``02_dto_surrogates`` otherwise), each switching one option from
ctdnn's protocol to the authors' (:data:`ctdnn.experiments.dto.PROTOCOLS`):

* ``e``: ``init`` (``"he_normal"`` against ``"uniform"``);
* ``f``: ``tikhonov`` (``"coefficients"`` against ``"integral"``);
* ``g``: ``warm_start_alpha`` (``1e-3`` against ``1e-6``);
* ``h``: ``degree_semantics`` (``"functions"`` against ``"degree"`` at ``degree=3``: 3
  against 4 basis functions). The authors' MATLAB DTO code reads the degree as ctdnn does;
  the number-of-functions reading is that of their Python scripts, measured here on the DTO
  network for comparison.

Command line (the data set from ``CTDNN_DATA_DIR``)::

    python -m ctdnn.experiments.fidelity --rows e f g h --seeds 0 1 2 --epochs 40 \\
        --with-protocol --out effects.md

(``--with-protocol`` adds ``dto_effect("dto")``: every DTO option at the authors' value at once.)
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Effect", "ROWS", "register", "rows", "run_rows", "effects_table", "write_table",
           "dto_effect", "node_effect"]


@dataclass
class Effect:
    """One row of the table of differences with its measurement.

    Attributes:
        row: the row's letter on the method page.
        what: what differs, in a few words.
        option: the option (parameter name) that switches it.
        authors_value, ctdnn_value: the option's value in the authors' code and in ctdnn.
        settings: the run each way (data set, model, budget, seeds), in words.
        runs: ``{"authors": {...}, "ctdnn": {...}}``, each with the per-seed
            ``test_rel_err`` list and optionally ``nfe`` (training function evaluations).
        notes: anything else worth a clause (parameter counts, ...).
        seconds: wall time of the measurement.
    """

    row: str
    what: str
    option: str
    authors_value: str
    ctdnn_value: str
    settings: str
    runs: dict
    notes: str = ""
    seconds: float = math.nan

    def stats(self, side: str, key: str = "test_rel_err") -> tuple[float, float, int]:
        """Mean, standard deviation (ddof 1; 0 for one value) and count of ``runs[side][key]``."""
        v = np.asarray(self.runs[side].get(key, []), dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return math.nan, math.nan, 0
        return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


#: Row letter -> function returning an :class:`Effect` (keyword settings only).
ROWS: dict = {}


def register(row: str, fn, *, replace: bool = False) -> None:
    """Add the measurement of a row of the table of differences.

    Args:
        row: the row's letter (``"a"`` ... ``"j"``).
        fn: callable taking keyword settings with defaults, returning an :class:`Effect`.
        replace: allow replacing a registered row.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if row in ROWS and not replace:
        raise ValueError(f"row {row!r} is already registered; pass replace=True to replace it")
    ROWS[row] = fn


def rows() -> dict:
    """The registered rows in alphabetical order of their letters."""
    return {k: ROWS[k] for k in sorted(ROWS)}


def run_rows(letters=None, **settings) -> list:
    """Measure the given rows (all registered when None); ``settings`` go to every row."""
    letters = list(rows()) if letters is None else list(letters)
    unknown = [r for r in letters if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; registered: {list(rows())}")
    return [ROWS[r](**settings) for r in letters]


def _fmt(m: float, s: float, fmt: str = ".3g") -> str:
    if not math.isfinite(m):
        return "n/a"
    if s <= 1e-12 * abs(m):  # equal values: rounding noise, not a spread
        s = 0.0
    return f"{m:{fmt}} ± {s:.2g}"


def _side(eff: Effect, side: str) -> str:
    m, s, n = eff.stats(side)
    text = _fmt(m, s)
    if eff.runs[side].get("nfe"):
        mn, sn, _ = eff.stats(side, "nfe")
        text += f", NFE {_fmt(mn, sn)}"
    return text


def _difference(eff: Effect) -> str:
    ma, sa, _ = eff.stats("authors")
    mc, sc, _ = eff.stats("ctdnn")
    if not (math.isfinite(ma) and math.isfinite(mc)):
        return "n/a"
    diff = ma - mc
    rel = f" ({100 * diff / mc:+.0f}%)" if mc else ""
    inside = abs(diff) <= math.hypot(sa, sc)
    text = f"{diff:+.3g}{rel}" + ("; inside the seed spread" if inside else "")
    if eff.runs["authors"].get("nfe") and eff.runs["ctdnn"].get("nfe"):
        na, _, _ = eff.stats("authors", "nfe")
        nc, _, _ = eff.stats("ctdnn", "nfe")
        if nc:
            text += f"; NFE x{na / nc:.2f}"
    return text


def effects_table(effects) -> str:
    """The markdown table: row, what, option, both values, the error (and NFE) each way as
    mean ± std over seeds, and the difference authors' minus ctdnn's."""
    head = ("| row | what | option | authors' value | ctdnn value | test error, authors' "
            "value | test error, ctdnn value | authors' minus ctdnn | run |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    def cell(text):  # a "|" inside a cell (norms ||x||) would end it
        return str(text).replace("|", "\\|")

    lines = []
    for e in effects:
        run = e.settings + (f"; {e.notes}" if e.notes else "")
        lines.append(f"| {cell(e.row)} | {cell(e.what)} | `{e.option}` | "
                     f"{cell(e.authors_value)} | {cell(e.ctdnn_value)} | {_side(e, 'authors')} | "
                     f"{_side(e, 'ctdnn')} | {_difference(e)} | {cell(run)} |")
    return head + "\n".join(lines) + "\n"


def write_table(effects, path, *, command: str = "") -> Path:
    """Write :func:`effects_table` to ``path`` (markdown), with the command that made it."""
    path = Path(path)
    text = "## Measured effect of each difference\n\n" + effects_table(effects)
    if command:
        text += f"\nMade by:\n\n```\n{command}\n```\n"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- DTO rows

_DTO_ROWS = {
    "e": ("initialisation", "init", "he_normal"),
    "f": ("Tikhonov term on theta", "tikhonov", "coefficients"),
    "g": ("ridge warm start of W", "warm_start_alpha", 1e-3),
    "h": ("what 'degree' counts", "degree_semantics", "functions"),
    "dto": ("every DTO option at once", "protocol", "authors"),
}
_WHAT = {
    "e": "initialisation: N(0, 2/n_in) and zero biases (MATLAB dense.m) against uniform "
         "+-1/sqrt(n_in) with non-zero biases",
    "f": "Tikhonov on theta: 0.5 alpha ||coefficients||^2 with the opening layer against "
         "0.5 alpha int_0^T ||theta(t)||^2 dt without it",
    "g": "ridge weight of the warm start of W",
    "h": "'degree 3': 3 basis functions (the Python scripts) against d + 1 = 4",
    "dto": "all DTO options of the MATLAB code together (init, tikhonov, warm_start_alpha, "
           "weight_times; degree read as d + 1 functions in both)",
}


def dto_effect(row: str, *, seeds=(0, 1, 2), epochs: int = 40, dataset: str = "ELM",
               data_source: str = "auto", arch: str = "resnet", T: float = 1.0,
               basis: str = "legendre", degree: int = 3, device: str = "cpu",
               **_ignored) -> Effect:
    """One DTO row: ctdnn's protocol against the same with one option at the authors' value
    (``row="dto"``: ``protocol="authors"`` against ``protocol="ctdnn"``, every option at once;
    not registered as a lettered row).

    Each side is one batched Adam training of every seed through
    ``ctdnn.experiments.dto.train_unit`` (the notebook's code path); the error is the
    test relative error (mean of per-sample ratios) of the best-on-validation state.
    """
    from . import dto

    what, option, authors = _DTO_ROWS[row]
    base = dto.Params(dataset=dataset, data_source=data_source, architectures=[arch],
                      T_values=[T], bases=[basis], degree=degree, seeds=list(seeds),
                      epochs=epochs, optimizers=["adam"], device=device)
    ctdnn_value = "ctdnn" if option == "protocol" else dto.PROTOCOLS["ctdnn"][option]
    t0 = time.perf_counter()
    runs, counts = {}, {}
    for side, value in (("authors", authors), ("ctdnn", ctdnn_value)):
        p = dto.Params(**{**base.as_dict(), option: value})
        unit = dto.train_unit({"params": p.as_dict(), "arch": arch,
                               "specs": [(T, basis, degree, s) for s in seeds]})
        runs[side] = {"test_rel_err": [r["test_rel_err"] for r in unit["records"]],
                      "status": [r["status"] for r in unit["records"]]}
        counts[side] = unit["n_time_parameters"][f"{basis}:{degree}"]
    notes = ""
    if counts["authors"] != counts["ctdnn"]:
        notes = (f"flow coefficients {counts['authors']} against {counts['ctdnn']}")
    settings = (f"{dto.ARCHS[arch][1]}, T = {T:g}, {basis} degree {degree}, {dataset}, Adam "
                f"{epochs} epochs, seeds {list(seeds)}")
    return Effect(row=row, what=_WHAT[row], option=option, authors_value=repr(authors),
                  ctdnn_value=repr(ctdnn_value), settings=settings, runs=runs, notes=notes,
                  seconds=time.perf_counter() - t0)


def _dto_row(letter):
    def fn(**settings):
        return dto_effect(letter, **settings)
    fn.__name__ = f"row_{letter}"
    fn.__doc__ = f"Row {letter}: {_WHAT[letter]} (see :func:`dto_effect`)."
    return fn


for _letter in ("e", "f", "g", "h"):
    register(_letter, _dto_row(_letter))


# ----------------------------------------------------------------------- neural-ODE rows

_NODE_ROWS = {
    "a": ("opening layer of the neural ODE: linear K0 x + b0 against tanh(K0 x + b0)",
          "opening", {"opening": "linear"}),
    "b": ("neural-ODE training: L1 loss, clipping at 1.0, StepLR(500, 0.5), early stop after 5 "
          "checks every 20 iterations, batches drawn with replacement; against epochs of the "
          "squared error without any of these", "sampling, loss, clip_grad_norm, "
          "lr_step_every, patience, eval_every",
          {"sampling": "with_replacement", "loss": "l1", "clip_grad_norm": 1.0,
           "lr_step_every": 500, "patience": 5, "eval_every": 20}),
    "c": ("error metric of the neural-ODE tables: one Frobenius ratio over the split against "
          "the mean of per-sample ratios (the same trained models)", "metric",
          {"metric": "frobenius"}),
    "d": ("basis time past T: clamped to the interval against the polynomial extrapolated",
          "time_past_T", {"time_past_T": "clamp"}),
}
_NODE_CACHE: dict = {}


def node_effect(row: str, *, seeds=(0, 1, 2), iterations: int = 300, dataset: str = "ELM",
                data_source: str = "auto", rtol: float = 1e-7, atol: float = 1e-9,
                **_ignored) -> Effect:
    """One neural-ODE row: ctdnn's protocol against the same with the row's options at the
    authors' values (Legendre d = 3, dopri5 at ``rtol``/``atol``, backpropagation through
    the solver, the notebook ``04_neural_ode_surrogates``'s code path).

    Row ``c`` trains nothing of its own: it evaluates ctdnn's trained models under both
    metrics. The ctdnn side is trained once per process and settings and shared by the rows.
    """
    from . import node

    what, option, authors = _NODE_ROWS[row]
    base = node.Params(dataset=dataset, data_source=data_source, seeds=list(seeds),
                       iterations=iterations, rtol=rtol, atol=atol, bases=["legendre"])
    t0 = time.perf_counter()
    keys = ("test_rel_err", "test_rel_err_mean_ratio", "test_rel_err_frobenius",
            "training_nfe", "test_nfe")
    key = tuple(sorted(base.as_dict().items(), key=lambda kv: kv[0]).__repr__())
    if key not in _NODE_CACHE:
        _NODE_CACHE[key] = node.option_effect(base, {"ctdnn": {}}, metrics_of=keys)["ctdnn"]
    ours = _NODE_CACHE[key]
    values = lambda e, k: e[k]["values"]   # noqa: E731
    if row == "c":
        runs = {"authors": {"test_rel_err": values(ours, "test_rel_err_frobenius")},
                "ctdnn": {"test_rel_err": values(ours, "test_rel_err_mean_ratio")}}
    else:
        theirs = node.option_effect(base, {"authors": authors}, metrics_of=keys)["authors"]
        runs = {side: {"test_rel_err": values(e, "test_rel_err"),
                       "nfe": values(e, "training_nfe"), "test_nfe": values(e, "test_nfe")}
                for side, e in (("authors", theirs), ("ctdnn", ours))}
    ctdnn_value = {k: node.PROTOCOLS["ctdnn"][k] for k in authors}
    fmt = lambda d: ", ".join(f"{k}={v!r}" for k, v in d.items())   # noqa: E731
    settings = (f"neural ODE, Legendre d = 3, {dataset}, Adam lr 0.01 batch 20, {iterations} "
                f"iterations, dopri5 rtol {rtol:g} atol {atol:g}, seeds {list(seeds)}")
    notes = ("the authors' side is the Frobenius ratio of the same models" if row == "c"
             else "test error: mean of per-sample ratios on both sides")
    return Effect(row=row, what=what, option=option, authors_value=fmt(authors),
                  ctdnn_value=fmt(ctdnn_value), settings=settings, runs=runs, notes=notes,
                  seconds=time.perf_counter() - t0)


def _node_row(letter):
    def fn(**settings):
        return node_effect(letter, **settings)
    fn.__name__ = f"row_{letter}"
    fn.__doc__ = f"Row {letter}: {_NODE_ROWS[letter][0]} (see :func:`node_effect`)."
    return fn


for _letter in ("a", "b", "c", "d"):
    register(_letter, _node_row(_letter))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ctdnn.experiments.fidelity",
                                     description="Measure the effect of each difference "
                                                 "between ctdnn and the authors' code.")
    parser.add_argument("--rows", nargs="+", default=None, help="row letters (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40, help="DTO rows")
    parser.add_argument("--iterations", type=int, default=300, help="neural-ODE rows")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--with-protocol", action="store_true",
                        help="add the DTO protocol as a whole (every option at once)")
    args = parser.parse_args(argv)
    import torch

    from . import stationary  # noqa: F401  (registers the stationary-ODE rows i and j)

    torch.set_num_threads(1)
    effects = run_rows(args.rows, seeds=args.seeds, epochs=args.epochs,
                       iterations=args.iterations)
    if args.with_protocol:
        effects.append(dto_effect("dto", seeds=args.seeds, epochs=args.epochs))
    command = "python -m ctdnn.experiments.fidelity " + " ".join(
        sys.argv[1:] if argv is None else argv)
    if args.out is not None:
        write_table(effects, args.out, command=command)
    print(effects_table(effects))
    for e in effects:
        print(f"row {e.row}: {e.seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
