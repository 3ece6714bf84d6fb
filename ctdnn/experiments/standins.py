"""The simulated stand-ins measured against the paper's data (ELM, CDR) and publications (DCR).

Without the paper's files the book runs on this package's simulators. This experiment measures
how well a simulator stands in for the data it replaces, on what decides the experiments:

* **Distributions** (``distribution_stats``): of the inputs and outputs as the networks see
  them (normalised with the training statistics): marginal moments, the mean absolute
  correlation between features, exact zeros of the raw outputs, the dynamic range of the
  per-sample output norms (the denominators of the relative error), and the number of
  principal components holding 99 % of the output variance. ``ks_distance`` compares the
  pooled normalised outputs of the two sources.
* **Simple references** (``reference_errors``): the test relative error of predicting the
  training mean, of linear least squares on ``[x, 1]`` and of one small DTO network (ResNet,
  Legendre degree 3, T = 1, trained by Adam; the unit of ``ctdnn.experiments.dto.train_unit``).
* **Verdicts**: every claim of the DTO, degree-sweep and neural-ODE experiments, decided on
  both sources by the experiments' own ``run`` and ``claims`` functions with the same
  parameters; ``agreement`` pairs them. Where the build's results folder already holds
  a run of an experiment on one source (the book's own pages, same preset), that run is reused
  and only the other source is trained, with the reused run's parameters.

DCR has no paper file here: ``dcr_published`` sets the simulator beside what the authors
published about the data (shapes, normalisation, the test errors in their result files).

``run(Params())`` returns a ``Results``; ``metrics(results)`` is the JSON part of the
record, whose ``agreement`` list the summary page reads (``agreement_index``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .. import parallel
from ..data import DataUnavailableError
from ..training import resolve_device
from . import degree_sweep, dto, node
from .common import ParamsBase, Table, data_source, finish, load_data, pm, without_paths
from .schema import SchemaError, read_runs

__all__ = ["Params", "Results", "run", "metrics", "record", "SOURCES", "EXPERIMENTS",
           "marginal_stats", "mean_abs_correlation", "exact_zero_fraction", "norm_range",
           "pca_components", "ks_distance", "relative_error", "linear_least_squares_error",
           "distribution_stats", "reference_errors", "agreement", "agreement_summary",
           "agreement_index", "trust_statement", "ARCHIVE", "write_archive", "read_archive",
           "error_ratio_rows", "dcr_published",
           "authors_test_errors", "distribution_table", "reference_table", "verdict_table",
           "ratio_table", "dcr_table", "trust_markdown", "tag"]

SOURCES = ("paper", "simulated")
#: The experiments whose claims are decided on both sources: notebook stem -> module.
EXPERIMENTS = {"02_dto_surrogates": dto, "03_degree_sweep": degree_sweep,
               "04_neural_ode_surrogates": node}
NOTEBOOK = "08_standins"
#: The last comparison measured with the paper's files (quick preset), kept for builds without
#: them: its paper-data verdicts stand beside such a build's simulated-data verdicts.
ARCHIVE = Path(__file__).with_name("standins_archive.json")


def authors_test_errors(dataset: str, basis: str = "constant") -> list:
    """Test relative errors of the authors' neural-ODE surrogates, per seed, from their result
    files (``python/surrogate/results/results_table5_*.json`` of
    hrosso710/Continuous_DNN_Surrogates_Revised at commit 218b73f, as tabulated by
    :func:`ctdnn.experiments.table5.authors_table`; ``"constant"`` is their time-invariant
    network). Published numbers, set beside ours to compare error levels."""
    from .table5 import authors_table

    return [r["test_rel_err"] for r in authors_table()
            if r["dataset"] == dataset and r["basis"] == basis]


@dataclass
class Params(ParamsBase):
    """Every setting of the comparison; defaults are the seconds-long smoke run.

    Attributes:
        datasets: the data sets with a paper file to compare against (ELM, CDR).
        experiments: notebook stems of :data:`EXPERIMENTS` whose claims are decided on both
            sources.
        reuse_main_runs: reuse a run of the results folder (same preset, same data set) for
            the source it used; otherwise both sources are trained here.
        results_dir: where the book's results files are (the notebook's ``output_dir``).
        preset: only runs of this preset are reused.
        overrides: per experiment, parameters for the runs trained here when none is
            reused (e.g. ``{"02_dto_surrogates": {"epochs": 4}}``).
        reference_epochs: epochs of the small DTO reference network.
        reference_seed: its seed.
        split_seed: seed of the random splits (CDR).
        n_samples_dcr: simulated DCR samples for its comparison with the publications
            (``None``: the paper's count, as on the other pages).
        compare_dcr: make that comparison (``False``: no DCR section).
        archive: the archived comparison used where a paper file is absent (default
            :data:`ARCHIVE`; ``None`` or a missing file: none).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    """

    datasets: list = field(default_factory=lambda: ["ELM", "CDR"])
    experiments: list = field(default_factory=lambda: list(EXPERIMENTS))
    reuse_main_runs: bool = True
    results_dir: str = "results"
    preset: str = "default"
    overrides: dict = field(default_factory=dict)
    reference_epochs: int = 20
    reference_seed: int = 0
    split_seed: int = 0
    n_samples_dcr: int | None = 700
    compare_dcr: bool = True
    archive: str | None = str(ARCHIVE)
    device: str = "auto"

    def __post_init__(self):
        bad = [d for d in self.datasets if d not in ("ELM", "CDR")]
        if bad:
            raise ValueError(f"datasets {bad} have no paper file to compare with; choose from "
                             "['ELM', 'CDR'] (DCR is compared with its publications)")
        bad = [e for e in self.experiments if e not in EXPERIMENTS]
        if bad:
            raise ValueError(f"unknown experiments {bad}; choose from {list(EXPERIMENTS)}")
        bad = [k for k in self.overrides if k not in EXPERIMENTS]
        if bad:
            raise ValueError(f"overrides name unknown experiments {bad}; choose from "
                             f"{list(EXPERIMENTS)}")
        if isinstance(self.reference_epochs, bool) or int(self.reference_epochs) < 1:
            raise ValueError(f"reference_epochs must be a positive integer, got "
                             f"{self.reference_epochs!r}")


# ----------------------------------------------------------------------------- statistics

def _matrix(a, name: str = "a") -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be a (samples, features) array with at least two "
                         f"samples, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values; remove or fix them first")
    return a


def marginal_stats(a) -> dict:
    """Per-feature moments of ``a``: (n, p) -> dict of (p,) arrays.

    Returns:
        ``mean``, ``std`` (population, ddof 0), ``skewness`` (the biased moment estimator,
        as ``scipy.stats.skew(bias=True)``), ``excess_kurtosis`` (Fisher, biased). A constant
        feature has skewness and kurtosis 0.
    """
    a = _matrix(a)
    mean = a.mean(axis=0)
    c = a - mean
    m2 = np.mean(c ** 2, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        skew = np.where(m2 > 0, np.mean(c ** 3, axis=0) / m2 ** 1.5, 0.0)
        kurt = np.where(m2 > 0, np.mean(c ** 4, axis=0) / m2 ** 2 - 3.0, 0.0)
    return {"mean": mean, "std": np.sqrt(m2), "skewness": skew, "excess_kurtosis": kurt}


def mean_abs_correlation(a) -> float:
    """Mean absolute Pearson correlation over the pairs of distinct, non-constant features.

    Args:
        a: (n, p) samples.

    Returns:
        A number in [0, 1]; NaN with fewer than two non-constant features.
    """
    a = _matrix(a)
    a = a[:, a.std(axis=0) > 0]
    p = a.shape[1]
    if p < 2:
        return math.nan
    r = np.corrcoef(a, rowvar=False)
    return float(np.abs(r[np.triu_indices(p, 1)]).mean())


def exact_zero_fraction(a) -> dict:
    """Exact zeros of ``a`` (n, p): ``entries`` (fraction of all entries) and ``samples``
    (fraction of rows holding at least one)."""
    a = _matrix(a)
    z = a == 0.0
    return {"entries": float(z.mean()), "samples": float(z.any(axis=1).mean())}


def norm_range(y, low: float = 0.01, high: float = 0.99) -> dict:
    """Spread of the per-sample Euclidean norms ``||y_i||`` (the relative error's denominators).

    Args:
        y: (n, p) outputs.
        low, high: quantile levels.

    Returns:
        ``ratio``: quantile ``high`` over quantile ``low`` of the norms (inf if the lower one
        is 0); ``small``: fraction of samples whose norm is below a tenth of the median.
    """
    y = _matrix(y, "y")
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(f"need 0 <= low < high <= 1, got low={low}, high={high}")
    n = np.linalg.norm(y, axis=1)
    lo, hi = np.quantile(n, [low, high])
    return {"ratio": float(hi / lo) if lo > 0 else math.inf,
            "small": float(np.mean(n < 0.1 * np.median(n)))}


def pca_components(a, fraction: float = 0.99) -> int:
    """Fewest principal components of the centred columns of ``a`` holding ``fraction`` of the
    variance (0 for constant data)."""
    a = _matrix(a)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {fraction}")
    s = np.linalg.svd(a - a.mean(axis=0), compute_uv=False) ** 2
    if s.sum() == 0:
        return 0
    share = np.cumsum(s) / s.sum()
    return int(np.searchsorted(share, fraction * (1.0 - 1e-12)) + 1)


def ks_distance(a, b) -> float:
    """Two-sample Kolmogorov-Smirnov statistic: largest gap between the empirical CDFs.

    Args:
        a, b: 1-D samples (flattened if not).
    """
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("ks_distance needs two non-empty samples")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / a.size
    fb = np.searchsorted(b, grid, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def relative_error(pred, y) -> float:
    """Mean over samples of ``||pred_i - y_i|| / ||y_i||``, the paper's metric (float64).

    Args:
        pred, y: (n, p).
    """
    pred, y = np.asarray(pred, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if pred.shape != y.shape or y.ndim != 2:
        raise ValueError(f"pred and y must be (n, p) arrays of one shape, got {pred.shape} "
                         f"and {y.shape}")
    return float(np.mean(np.linalg.norm(pred - y, axis=1) / np.linalg.norm(y, axis=1)))


def linear_least_squares_error(x_train, y_train, x_test, y_test) -> float:
    """Test relative error of the least-squares affine map ``y = [x, 1] W`` fitted on training.

    The minimum-norm solution (``numpy.linalg.lstsq``) serves inputs with an exact linear
    dependence, such as CDR's weights, which sum to one.
    """
    xt, yt = _matrix(x_train, "x_train"), _matrix(y_train, "y_train")
    xs = np.asarray(x_test, dtype=np.float64)
    w = np.linalg.lstsq(np.column_stack([xt, np.ones(len(xt))]), yt, rcond=None)[0]
    return relative_error(np.column_stack([xs, np.ones(len(xs))]) @ w, y_test)


def _arrays(ds) -> dict:
    """Normalised splits of a loaded data set as float64 numpy arrays, and raw outputs."""
    out = {}
    for s in ("train", "val", "test"):
        out[f"x_{s}"] = getattr(ds, f"x_{s}").detach().double().cpu().numpy()
        out[f"y_{s}"] = getattr(ds, f"y_{s}").detach().double().cpu().numpy()
    y_all = np.concatenate([out["y_train"], out["y_val"], out["y_test"]])
    out["x_all"] = np.concatenate([out["x_train"], out["x_val"], out["x_test"]])
    out["y_all"] = y_all
    shift = np.asarray(ds.y_map.shift, dtype=np.float64)
    scale = np.asarray(ds.y_map.scale, dtype=np.float64)
    out["y_raw"] = y_all * scale + shift
    return out


def distribution_stats(ds) -> dict:
    """What decides the experiments about one loaded data set (all samples, normalised with the
    training statistics, except the exact zeros, counted on the raw outputs)."""
    a = _arrays(ds)
    out = {}
    for side in ("x", "y"):
        m = marginal_stats(a[f"{side}_all"])
        out[side] = {"mean": float(m["mean"].mean()), "std": float(m["std"].mean()),
                     "abs_skewness": float(np.abs(m["skewness"]).mean()),
                     "excess_kurtosis": float(m["excess_kurtosis"].mean()),
                     "abs_correlation": mean_abs_correlation(a[f"{side}_all"]),
                     "min": float(a[f"{side}_all"].min()), "max": float(a[f"{side}_all"].max())}
    out["y"].update(zeros=exact_zero_fraction(a["y_raw"]), norms=norm_range(a["y_all"]),
                    pca99=pca_components(a["y_all"]))
    out["sizes"] = list(ds.sizes)
    out["shape"] = [ds.n_in, ds.n_out]
    return out


# ----------------------------------------------------------------------------- references

def _reference_unit(item: dict) -> dict:
    """The small DTO reference network of one source (a :func:`dto.train_unit` item)."""
    out = dto.train_unit(item)
    rec = out["records"][0]
    return {"test_rel_err": rec["test_rel_err"], "status": rec["status"]}


def _reference_params(p: Params, dataset: str, source: str) -> dict:
    ref = dto.Params(dataset=dataset, data_source=source, split_seed=p.split_seed,
                     optimizers=["adam"], architectures=["resnet"], T_values=[1.0],
                     bases=["legendre"], seeds=[p.reference_seed], epochs=p.reference_epochs,
                     device=p.device)
    return ref.as_dict()


def reference_errors(datasets: Mapping[str, Mapping[str, object]], p: Params) -> dict:
    """Test relative errors of the simple references, per data set and source.

    Args:
        datasets: ``{name: {source: Dataset}}``.
        p: the parameters (epochs and seed of the small network).

    Returns:
        ``{name: {source: {"mean": .., "linear": .., "dto_small": ..}}}``.
    """
    out, items, where = {}, [], []
    for name, by_source in datasets.items():
        out[name] = {}
        for source, ds in by_source.items():
            a = _arrays(ds)
            mean = np.broadcast_to(a["y_train"].mean(axis=0), a["y_test"].shape)
            out[name][source] = {
                "mean": relative_error(mean, a["y_test"]),
                "linear": linear_least_squares_error(a["x_train"], a["y_train"], a["x_test"],
                                                     a["y_test"])}
            items.append({"params": _reference_params(p, name, source), "arch": "resnet",
                          "specs": [(1.0, "legendre", 3, p.reference_seed)]})
            where.append((name, source))
    if not items:
        return out
    with _unit_scope("reference"):
        units = parallel.map_units(_reference_unit, items, name="stand-in references",
                                   labels=[f"{n} {s}" for n, s in where])
    for (name, source), u in zip(where, units):
        out[name][source]["dto_small"] = u["test_rel_err"]
    return out


def _unit_scope(tag: str):
    """Store this block's units under their own run key.

    :func:`ctdnn.parallel.map_units` stores finished units by run key, units' name and label;
    the experiments name their units by data set only, so the runs of two sources inside one
    notebook would otherwise find each other's stored units.
    """
    return parallel.unit_scope(f"{NOTEBOOK}:{tag}")


def _training(module, prm, tag: str):
    """A call that trains one experiment here: ``(results, wall seconds)``."""
    def call():
        t0 = time.perf_counter()
        with _unit_scope(tag):
            res = module.run(prm)
        return res, time.perf_counter() - t0
    return call


# ----------------------------------------------------------------------------- verdicts

def agreement(verdicts: Mapping[str, Mapping[str, str]]) -> list:
    """Pair the verdicts of the two sources, claim by claim.

    Args:
        verdicts: ``{source: {claim key: verdict}}`` with the sources of :data:`SOURCES`.

    Returns:
        One dict per claim key (sorted), with ``key``, ``paper``, ``simulated`` (verdict or
        None where that source has no such claim) and ``agrees``: True for the same verdict,
        False for different ones, None where a source lacks the claim.
    """
    unknown = set(verdicts) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown sources {sorted(unknown)}; use {SOURCES}")
    keys = sorted(set().union(*(v.keys() for v in verdicts.values())) if verdicts else ())
    rows = []
    for k in keys:
        a = verdicts.get("paper", {}).get(k)
        b = verdicts.get("simulated", {}).get(k)
        rows.append({"key": k, "paper": a, "simulated": b,
                     "agrees": None if a is None or b is None else a == b})
    return rows


def agreement_summary(rows: Sequence[Mapping]) -> dict:
    """Counts of ``agreement`` rows.

    Returns:
        ``compared`` (claims decided on both sources), ``agree``, ``differ``, ``missing``
        (decided on one source only), and ``decisive``/``decisive_agree``: the compared
        claims that at least one source decides (not inconclusive on both), and how many of
        those agree. Two inconclusive verdicts agree without saying anything about the
        stand-in, so trust is judged on the decisive ones.
    """
    compared = [r for r in rows if r["agrees"] is not None]
    decisive = [r for r in compared
                if not (r["paper"] == "inconclusive" and r["simulated"] == "inconclusive")]
    return {"compared": len(compared), "agree": sum(bool(r["agrees"]) for r in compared),
            "differ": sum(not r["agrees"] for r in compared),
            "missing": len(rows) - len(compared), "decisive": len(decisive),
            "decisive_agree": sum(bool(r["agrees"]) for r in decisive)}


def agreement_index(metrics_: Mapping) -> dict:
    """``{(dataset, claim key): row}`` of a stored comparison's ``metrics["agreement"]``."""
    return {(r["dataset"], r["key"]): r for r in metrics_.get("agreement", [])}


def _find_run(runs, stem: str, dataset: str, preset: str):
    for r in runs:
        if (r.notebook == stem and r.preset == preset and len(r.data) == 1
                and r.data[0].name == dataset and r.data[0].source in SOURCES):
            return r
    return None


def _params_for(module, stored: Mapping, overrides: Mapping, dataset: str, source: str,
                device: str):
    names = {f.name for f in dataclasses.fields(module.Params)}
    given = {k: v for k, v in stored.items() if k in names}
    given.update({k: v for k, v in overrides.items() if k in names})
    given.update(dataset=dataset, data_source=source, device=device)
    return module.Params(**given)


def _error_cells(stem: str, m: Mapping) -> dict:
    """``{cell label: mean test error}`` of one run's metrics."""
    out = {}
    if stem == "02_dto_surrogates":
        for c in m.get("cells", []):
            arch = dto.ARCHS[c["architecture"]][1]
            out[f"DTO {arch}, T={c['T']:g}, {c['basis']}"] = c["test_rel_err"]["mean"]
    elif stem == "03_degree_sweep":
        for c in m.get("models", []):
            arch = dto.ARCHS[c["architecture"]][1]
            out[f"sweep {arch}, {c['label']}"] = c["test_rel_err"]["mean"]
    else:
        for name, c in (m.get("models") or {}).items():
            out[f"neural ODE, {name}"] = c["summary"]["test_rel_err"]["mean"]
    return out


def error_ratio_rows(errors: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list:
    """Rows ``(dataset, cell, simulated, paper, ratio)`` for every cell on both sources.

    Args:
        errors: ``{dataset: {source: {cell: mean test error}}}``.
    """
    rows = []
    for name, by in errors.items():
        sim, pap = by.get("simulated", {}), by.get("paper", {})
        for cell in [c for c in pap if c in sim]:
            s, q = sim[cell], pap[cell]
            ratio = s / q if (q is not None and s is not None and q > 0
                              and math.isfinite(q) and math.isfinite(s)) else math.nan
            rows.append({"dataset": name, "cell": cell, "simulated": s, "paper": q,
                         "ratio": ratio})
    return rows


def trust_statement(name: str, summary: Mapping, ratios: Sequence[float]) -> str:
    """One paragraph: how far a simulated-data verdict on ``name`` can be trusted."""
    r = [x for x in ratios if math.isfinite(x) and x > 0]
    n, agree = summary["compared"], summary["agree"]
    if n == 0:
        return (f"{name}: no claim was decided on both sources, so the agreement of its "
                "simulated-data verdicts with the paper's data is not measured.")
    k, k_agree = summary["decisive"], summary["decisive_agree"]
    if k == 0:
        level = ("not established: every compared claim is inconclusive on both sources "
                 "at this budget")
    else:
        share = k_agree / k
        level = ("high" if share == 1 else "moderate" if share >= 0.75 else "low")
        level += f" ({k_agree} of the {k} claims that at least one source decides agree)"
    ease = ""
    if r:
        g = math.exp(np.mean(np.log(r)))
        ease = (f" The simulated data are easier to fit: the test errors on them are "
                f"{min(r):.2g} to {max(r):.2g} times those on the paper's data (geometric "
                f"mean {g:.2g})." if g < 1 else
                f" The test errors on the simulated data are {min(r):.2g} to {max(r):.2g} "
                f"times those on the paper's data (geometric mean {g:.2g}).")
    caveat = (" Error levels measured on the simulated data do not transfer to the paper's "
              "data." if r and not 0.8 <= math.exp(np.mean(np.log(r))) <= 1.25 else "")
    return (f"{name}: {agree} of {n} claims get the same verdict on the simulated and the "
            f"paper's data; trust in a simulated-data verdict on {name} is {level}."
            f"{ease}{caveat}")


def dcr_published(ds, constant_node_test_err: Sequence[float] | None = None) -> dict:
    """The DCR simulator beside what was published about the DCR data.

    Args:
        ds: the simulated DCR data set.
        constant_node_test_err: our time-invariant neural-ODE test errors on it (per seed),
            if the build ran them.

    Returns:
        Rows ``(quantity, published, simulator)`` and a list of what cannot be compared.
    """
    a = _arrays(ds)
    mean = np.broadcast_to(a["y_train"].mean(axis=0), a["y_test"].shape)
    linear = linear_least_squares_error(a["x_train"], a["y_train"], a["x_test"], a["y_test"])
    authors = authors_test_errors("DCR")
    rows = [("inputs x outputs", "3 x 882 (DCR_Data.mat: Y 3x10000, C 882x10000)",
             f"{ds.n_in} x {ds.n_out}"),
            ("samples, split", "10000; 400/200/9400 (setupDCR.m)",
             f"{sum(ds.sizes)}; " + "/".join(map(str, ds.sizes))),
            ("normalisation", "outputs minus the training mean; inputs unchanged (setupDCR.m)",
             ds.meta["normalization"]["y"]["description"]),
            ("test error of the training mean", "1 by construction on centred outputs",
             f"{relative_error(mean, a['y_test']):.3g}"),
            ("test error, linear least squares", "not published",
             f"{linear:.3g}"),
            ("neural ODE, time-invariant weights, test error",
             f"{pm(authors)} over {len(authors)} seeds (seeds: "
             + ", ".join(f"{v:.3g}" for v in authors)
             + "); above 1, worse than predicting the training mean",
             pm(constant_node_test_err) if constant_node_test_err else "not run in this build")]
    missing = ["the input distribution and the output distributions (no paper file here)",
               "correlations, exact zeros and the dynamic range of the outputs",
               "every claim's verdict on the paper's data (no run on it is possible)",
               "error levels of the DTO networks and of the Legendre and monomial neural ODEs "
               "(the authors' result files hold only the time-invariant network on DCR)"]
    return {"rows": rows, "cannot_compare": missing}


# ----------------------------------------------------------------------------- run

@dataclass
class Results:
    """What :func:`run` returns (``datasets`` maps name -> source -> loaded data set)."""

    params: Params
    datasets: dict
    notes: list
    stats: dict                   # name -> source -> distribution_stats
    ks: dict                      # name -> KS distance of the pooled normalised outputs
    references: dict              # name -> source -> reference errors
    verdicts: dict                # name -> source -> {claim key: verdict}
    claims: dict                  # name -> source -> [Claim]
    errors: dict                  # name -> source -> {cell: mean test error}
    origin: dict                  # name -> stem -> {source: "reused <run>" | "trained here"}
    seconds: dict                 # name -> stem -> source -> seconds (trained here)
    dcr: dict | None = None
    unavailable: dict = field(default_factory=dict)   # name -> why the paper's file is absent
    archived: dict = field(default_factory=dict)      # name -> {"paper", "simulated"} verdicts

    def agreement_rows(self) -> list:
        """One row per data set and claim; rows whose paper-data verdict comes from the
        archived comparison carry ``archived: True``."""
        rows = [{"dataset": n, **r} for n in self.verdicts for r in agreement(self.verdicts[n])]
        return rows + [{"dataset": n, **r, "archived": True} for n, v in self.archived.items()
                       for r in agreement(v)]


def write_archive(record, path=ARCHIVE) -> Path:
    """Keep a comparison's paper-data verdicts and trust statements for builds without the
    paper's files.

    Args:
        record: the :class:`~ctdnn.experiments.schema.RunResults` of a comparison run that had
            the paper's files.
        path: where to write (default :data:`ARCHIVE`).
    """
    from ..storage import write_text_atomic

    m = record.metrics
    names = sorted({r["dataset"] for r in m["agreement"] if not r.get("archived")})
    if not names:
        raise ValueError("the record compares no data set on the paper's files: nothing to "
                         "archive (run the comparison with CTDNN_DATA_DIR set)")
    data = {"preset": record.preset, "run": record.run,
            "versions": {k: record.environment.get("versions", {}).get(k)
                         for k in ("ctdnn", "torch", "numpy")},
            "paper_verdicts": {n: {r["key"]: r["paper"] for r in m["agreement"]
                                   if r["dataset"] == n and r["paper"] is not None}
                               for n in names},
            "trust": {n: m["trust"][n] for n in names},
            "agreement_summary": {n: m["agreement_summary"][n] for n in names}}
    return write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_archive(path=ARCHIVE) -> dict | None:
    """The archived comparison (see :func:`write_archive`), or None if there is none."""
    if path is None or not Path(path).is_file():
        return None
    data = json.loads(Path(path).read_text())
    if not isinstance(data.get("paper_verdicts"), dict) or not isinstance(data.get("trust"),
                                                                          dict):
        raise ValueError(f"{Path(path).name} is not an archived stand-ins comparison; rewrite "
                         "it with ctdnn.experiments.standins.write_archive")
    return data


def run(params: Params) -> Results:
    """Load both sources, measure them, and decide every claim on both (see the module)."""
    p = params
    dev = resolve_device(p.device)
    datasets, notes, stats, ks, unavailable = {}, [], {}, {}, {}
    for name in p.datasets:
        try:
            pair = {s: load_data(name, source=s, seed=p.split_seed, device=dev)
                    for s in SOURCES}
        except DataUnavailableError as err:
            # Without the paper's file there is nothing to compare: say so, go on.
            unavailable[name] = str(err).split(":")[0].strip()
            continue
        datasets[name] = {s: ds for s, (ds, _) in pair.items()}
        notes += [line for _, n in pair.values() for line in n]
    for name in datasets:
        stats[name] = {s: distribution_stats(ds) for s, ds in datasets[name].items()}
        ys = {s: _arrays(ds)["y_all"] for s, ds in datasets[name].items()}
        ks[name] = ks_distance(ys["paper"], ys["simulated"])
    stored = []
    if p.reuse_main_runs and Path(p.results_dir).is_dir():
        try:
            stored = read_runs(p.results_dir)
        except SchemaError as err:
            notes.append(f"results folder not reused: {without_paths(err)}")
    # Every (data set, experiment, source) either reuses this build's run of that page or is
    # trained here; the trainings (and the references) are independent, so on a cluster
    # they queue their units together (parallel.concurrently), in-process one after another.
    plan, calls = {}, []
    for name in datasets:
        for stem in p.experiments:
            module = EXPERIMENTS[stem]
            main = _find_run(stored, stem, name, p.preset) if p.reuse_main_runs else None
            base = main.parameters if main is not None else {}
            for source in SOURCES:
                if main is not None and main.data[0].source == source:
                    plan[(name, stem, source)] = main
                    continue
                prm = _params_for(module, base, {} if main is not None else
                                  p.overrides.get(stem, {}), name, source, p.device)
                plan[(name, stem, source)] = len(calls)
                calls.append(_training(module, prm, f"{stem}:{name}:{source}"))
    references, *trained = parallel.concurrently(lambda: reference_errors(datasets, p), *calls)
    verdicts = {n: {s: {} for s in SOURCES} for n in datasets}
    claims_ = {n: {s: [] for s in SOURCES} for n in datasets}
    errors = {n: {s: {} for s in SOURCES} for n in datasets}
    origin, seconds = {n: {} for n in datasets}, {n: {} for n in datasets}
    for name in datasets:
        for stem in p.experiments:
            module = EXPERIMENTS[stem]
            origin[name][stem], seconds[name][stem] = {}, {}
            for source in SOURCES:
                how = plan[(name, stem, source)]
                if isinstance(how, int):
                    res, seconds[name][stem][source] = trained[how]
                    cl, m = module.claims(res), module.metrics(res)
                    origin[name][stem][source] = "trained here"
                else:
                    cl, m = list(how.claims), how.metrics
                    origin[name][stem][source] = f"reused {how.run}"
                claims_[name][source] += cl
                verdicts[name][source].update({c.key: c.verdict for c in cl})
                errors[name][source].update(_error_cells(stem, m))
    archived = {}
    archive = read_archive(p.archive) if unavailable else None
    for name in unavailable:
        if archive is None or name not in archive["paper_verdicts"]:
            continue
        # This build's simulated-data verdicts (its own pages) beside the archived paper ones.
        sim = {}
        for stem in p.experiments:
            main = _find_run(stored, stem, name, p.preset)
            if main is not None and main.data[0].source == "simulated":
                sim.update({c.key: c.verdict for c in main.claims})
        archived[name] = {"paper": archive["paper_verdicts"][name], "simulated": sim}
    dcr = None
    if p.compare_dcr:
        ds, n = load_data("DCR", source="simulated", seed=p.split_seed,
                          n_samples=p.n_samples_dcr, device=dev)
        notes += n
        main = _find_run(stored, "04_neural_ode_surrogates", "DCR", p.preset)
        const = None
        if main is not None:
            c = (main.metrics.get("models") or {}).get("constant") or {}
            const = [r["test_rel_err"] for r in c.get("runs", [])
                     if r.get("history") is not None and math.isfinite(r["test_rel_err"])]
        dcr = {"ds": ds, **dcr_published(ds, const)}
    return Results(p, datasets, list(dict.fromkeys(notes)), stats, ks, references, verdicts,
                   claims_, errors, origin, seconds, dcr, unavailable, archived)


def metrics(res: Results) -> dict:
    """The JSON metrics: ``stats``, ``ks_outputs``, ``references``, ``agreement`` (one row per
    data set and claim key), ``agreement_summary``, ``error_ratios``, ``trust`` (one statement
    per data set, DCR included), ``origin``, ``train_time_s`` and ``dcr``."""
    rows = res.agreement_rows()
    summ = {n: agreement_summary([r for r in rows if r["dataset"] == n])
            for n in list(res.verdicts) + list(res.archived)}
    ratios = error_ratio_rows(res.errors)
    trust = {n: trust_statement(n, summ[n], [r["ratio"] for r in ratios if r["dataset"] == n])
             for n in res.verdicts}
    archive = read_archive(res.params.archive) if res.archived else None
    for n, why in res.unavailable.items():
        trust[n] = f"{n}: not measured in this build ({without_paths(why)})"
        if n in res.archived:
            s = summ[n]
            trust[n] += (f". Against the paper-data verdicts of the archived comparison (preset "
                         f"'{archive['preset']}'), {s['agree']} of {s['compared']} claims of "
                         "this build's simulated data get the same verdict" if s["compared"]
                         else ". This build decided none of the compared claims on the "
                         f"simulated data at preset '{res.params.preset}'")
            trust[n] += f". The archived measurement: {archive['trust'][n]}"
        else:
            trust[n] += (", so its simulated-data verdicts carry no measured agreement with "
                         "the paper's data.")
    out = {"stats": res.stats, "ks_outputs": res.ks, "references": res.references,
           "agreement": rows, "agreement_summary": summ, "error_ratios": ratios,
           "origin": res.origin, "train_time_s": res.seconds, "trust": trust,
           "unavailable": res.unavailable}
    if res.dcr is not None:
        out["dcr"] = {"rows": [list(r) for r in res.dcr["rows"]],
                      "cannot_compare": res.dcr["cannot_compare"]}
        const = res.dcr["rows"][-1][2]
        out["trust"]["DCR"] = dcr_trust(None if const.startswith("not run") else const)
    return out


def dcr_trust(constant_node: str | None = None) -> str:
    """How far a DCR verdict can be trusted: not measured (no paper file).

    Args:
        constant_node: our time-invariant neural-ODE test error on the simulator ("m ± s"),
            set beside the authors' on the paper's file when the build ran it.
    """
    authors = authors_test_errors("DCR")
    level = ""
    if constant_node:
        level = (f" The only published error level, the authors' time-invariant neural ODE "
                 f"({min(authors):.3g} to {max(authors):.3g} on the paper's file, worse than "
                 f"predicting the training mean), compares with {constant_node} for ours on "
                 "the simulator, after training at this preset.")
    return ("DCR: not measured. The paper's DCR file is not available here, so no claim could "
            "be decided on it; the simulator matches the published shapes, split and "
            f"normalisation only.{level} Treat DCR verdicts as statements about the simulator.")


def record(res: Results, *, run_name: str, preset: str, t_start: float):
    """The :class:`~ctdnn.experiments.schema.RunResults` of this comparison (no claims of its
    own: it judges the agreement of the other pages' claims)."""
    data = [data_source(ds) for by in res.datasets.values() for ds in by.values()]
    if res.dcr is not None:
        data.append(data_source(res.dcr["ds"]))
    return finish(run=run_name, notebook=NOTEBOOK, title="Simulated stand-ins vs the paper's data",
                  preset=preset, data=data, parameters=res.params.as_dict(),
                  metrics=metrics(res), claims=[], t_start=t_start, device=res.params.device)


# ----------------------------------------------------------------------------- display

def _f(v, fmt=".3g") -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def tag(res: Results, preset: str, name: str | None = None) -> str:
    """What every table names: the preset and, per data set, both sources."""
    names = [name] if name else list(res.datasets)
    return f"preset '{preset}'; " + ", ".join(f"{n}: paper's file and simulated"
                                                for n in names)


def distribution_table(res: Results, name: str, caption: str = "") -> Table:
    """Distribution statistics of one data set, paper beside simulated."""
    s = res.stats[name]
    rows = []
    for label, get, fmt in (
            ("inputs: mean |correlation|", lambda d: d["x"]["abs_correlation"], ".3f"),
            ("inputs: mean |skewness|", lambda d: d["x"]["abs_skewness"], ".3f"),
            ("inputs: range after normalisation", lambda d: f"[{d['x']['min']:.3g}, "
                                                            f"{d['x']['max']:.3g}]", ""),
            ("outputs: mean of feature means", lambda d: d["y"]["mean"], ".3f"),
            ("outputs: mean of feature stds", lambda d: d["y"]["std"], ".3f"),
            ("outputs: mean |skewness|", lambda d: d["y"]["abs_skewness"], ".3f"),
            ("outputs: mean |correlation|", lambda d: d["y"]["abs_correlation"], ".3f"),
            ("outputs: exact zeros (entries)", lambda d: d["y"]["zeros"]["entries"], ".4f"),
            ("outputs: samples with an exact zero", lambda d: d["y"]["zeros"]["samples"], ".4f"),
            ("outputs: ||y|| 99% / 1% quantile", lambda d: d["y"]["norms"]["ratio"], ".3g"),
            ("outputs: ||y|| below a tenth of the median", lambda d: d["y"]["norms"]["small"],
             ".4f"),
            ("outputs: components for 99% of the variance", lambda d: d["y"]["pca99"], "d")):
        rows.append([label] + [_f(get(s[src]), fmt) if fmt else get(s[src])
                               for src in SOURCES])
    rows.append(["outputs: KS distance paper vs simulated (pooled)", f"{res.ks[name]:.3f}", ""])
    return Table(["statistic (normalised as the experiments see them)", "paper", "simulated"],
                 rows, caption)


def reference_table(res: Results, caption: str = "") -> Table:
    """Test errors of the simple references on both sources, and their ratio."""
    rows = []
    for name, by in res.references.items():
        for key, label in (("mean", "training mean"), ("linear", "linear least squares"),
                           ("dto_small", f"ResNet Legendre T=1 ({res.params.reference_epochs} "
                                         "epochs)")):
            q, s = by["paper"][key], by["simulated"][key]
            rows.append([name, label, f"{q:.3g}", f"{s:.3g}", _f(s / q if q > 0 else math.nan,
                                                                 ".2g")])
    return Table(["data", "reference", "paper", "simulated", "simulated / paper"], rows, caption)


def verdict_table(res: Results, caption: str = "") -> Table:
    """Every claim on both sources, with whether the verdicts agree."""
    rows = []
    for r in res.agreement_rows():
        mark = {True: "same", False: "differs", None: "not compared"}[r["agrees"]]
        paper = (r["paper"] or "-") + (" (archived)" if r.get("archived") else "")
        rows.append([r["dataset"], r["key"], paper, r["simulated"] or "-", mark])
    return Table(["data", "claim", "paper's data", "simulated", "agreement"], rows, caption)


def ratio_table(res: Results, caption: str = "", limit: int | None = None) -> Table:
    """Mean test error per experiment cell on both sources and the ratio simulated/paper."""
    rows = [[r["dataset"], r["cell"], _f(r["simulated"]), _f(r["paper"]), _f(r["ratio"], ".2g")]
            for r in error_ratio_rows(res.errors)]
    return Table(["data", "cell", "simulated", "paper's data", "simulated / paper"],
                 rows[:limit] if limit else rows, caption)


def dcr_table(res: Results, caption: str = "") -> Table:
    """The DCR simulator beside the publications."""
    return Table(["quantity", "published", "simulator"], [list(r) for r in res.dcr["rows"]],
                 caption)


def trust_markdown(m: Mapping) -> str:
    """The trust statements of a comparison's metrics as Markdown, one bullet per data set."""
    return "\n".join(f"* {t}" for t in m["trust"].values())
