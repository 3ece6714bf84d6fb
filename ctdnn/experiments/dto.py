"""DTO surrogates: monomial, Legendre and per-step weights (the paper's Table 2, Figures 2-3).

``run(Params(dataset="CDR", epochs=500, seeds=[0, 1]))`` trains, for each architecture and
each optimizer of ``params.optimizers``: with Adam, one batched ensemble over every final time
T, basis and seed; with GNvpro (:func:`ctdnn.train_gnvpro`, full batch), the same models one
after the other, each with a budget of ``gnvpro_work_units`` work units. Each is one unit of
:func:`ctdnn.parallel.map_units` per architecture. ``run`` returns a :class:`Results`;
``claims(results)`` applies the rules per optimizer (Adam's claim ids unchanged, GNvpro's with
the key suffixed ``-gnvpro``). ``metrics(results)`` is the JSON part of the record:

* ``optimizers``, ``protocol`` (the budget, and ``name`` and ``options``: the protocol
  and every option of :data:`PROTOCOLS` as resolved for the run), ``train_time_s``,
  ``n_time_parameters``, ``mean_predictor_test_rel_err``;
* ``cells`` (Adam): one per (architecture, T, basis) with ``n_diverged``, ``n_failed``,
  mean/std of the errors, spikes, tail jitter and best epoch, and ``runs`` (per seed, thinned
  history); empty when Adam did not run;
* ``gnvpro`` (when GNvpro ran): ``protocol``, ``train_time_s`` and ``cells`` of the same
  layout, the best epoch counting iterations and each history holding ``work_units``;
* ``equal_work`` (when both ran): the definition of a work unit and one row per
  (architecture, T, basis) comparing the validation errors at GNvpro's budget.

Work units (:mod:`ctdnn.gnvpro`'s accounting): one pass over the whole training set,
forward or backward, counts 1. An Adam epoch is one forward and one backward pass over the
training set in minibatches, 2 units (:data:`ADAM_WU_PER_EPOCH`); the ridge warm start of
the closing layer is one forward pass, 1 unit. Monitoring evaluations (the training and
validation errors recorded after each epoch or iteration) are counted for neither optimizer.

Protocols. ``Params(protocol="authors")`` takes every choice that differs between ctdnn and
the authors' MATLAB DTO code (``matlab/experiments/runExperiment_v2.m`` at commit 218b73f)
from :data:`PROTOCOLS`; each choice is also a ``Params`` field of its own (``init``,
``tikhonov``, ``warm_start_alpha``, ``degree_semantics``, ``weight_times``) that overrides
the protocol when set (``None``: take it from the protocol).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .. import parallel
from ..architectures import TIKHONOV, WEIGHT_TIMES, HamiltonianNet, ResNet
from ..initialization import check_init
from ..ensemble import train_ensemble
from ..training import resolve_device, seed_everything
from . import rules
from .common import (ParamsBase, Table, data_source, load_data, mean_predictor_error, pm,
                     split_errors, stability, thinned, without_paths)
from .node import n_functions
from .plots import seed_curves, tidy_log_axis
from .schema import make_claim

__all__ = ["Params", "Results", "run", "claims", "metrics", "from_metrics", "train_unit",
           "gnvpro_unit", "ARCHS", "OPTIMIZERS", "ADAM_WU_PER_EPOCH", "adam_work_units",
           "error_table", "stability_table", "curves_figure", "error_figure", "equal_work_rows",
           "equal_work_table", "equal_work_figure", "PROTOCOLS", "PROTOCOL_OPTIONS",
           "ProtocolParams", "resolve_options", "polynomial_degree"]

ARCHS = {"resnet": (ResNet, "ResNet"), "hamiltonian": (HamiltonianNet, "Hamiltonian")}
COLORS = {"monomial": "tab:blue", "legendre": "black", "none": "tab:orange"}
HISTORY_KEYS = ("epoch", "loss", "train_rel_err", "val_rel_err", "wall_time")
GN_HISTORY_KEYS = ("iteration", "loss", "train_rel_err", "val_rel_err", "work_units",
                   "trust_radius", "inner_iterations", "wall_time")
OPTIMIZERS = {"adam": "Adam", "gnvpro": "GNvpro"}
#: Work units of one Adam epoch: a forward and a backward pass over the training set.
ADAM_WU_PER_EPOCH = 2

#: The choices that differ between ctdnn and the authors' MATLAB DTO code
#: (``runExperiment_v2.m``, ``dense.m``, ``tikhonovReg.m``, ``getPolynomialBasis.m`` at
#: commit 218b73f), one ``Params`` field each; a field left at ``None`` takes the value
#: of the run's ``protocol``. Row letters refer to the method page's table of differences.
PROTOCOLS = {
    "ctdnn": {
        "init": "uniform",               # e: +-1/sqrt(n_in), non-zero biases (nn.Linear's)
        "tikhonov": "integral",          # f: alpha/2 int_0^T ||theta(t)||^2 dt, opening free
        "warm_start_alpha": 1e-6,        # g: ridge weight of the warm start of W
        "degree_semantics": "degree",    # h: degree d = d + 1 functions
        "weight_times": "consistent",    # weights of step k at t_k = k h
    },
    "authors": {
        "init": "he_normal",             # e: dense.m: N(0, 2/n_in), zero biases
        "tikhonov": "coefficients",      # f: tikhonovReg(opEye(numel(th0)), alpha1): 0.5 alpha
                                         #    ||coefficients||^2, opening layer included
        "warm_start_alpha": 1e-3,        # g: W0 = Ct Xt0' / (Xt0 Xt0' + alpha2 I), alpha2 = 1e-3
        "degree_semantics": "degree",    # h: getPolynomialBasis(d, ...) builds tt.^(0:d), d + 1
                                         #    functions (only the Python scripts count functions)
        "weight_times": "paper",         # getPolynomialBasis: tt = linspace(0, T, nt)
    },
}
#: The fields :data:`PROTOCOLS` resolves.
PROTOCOL_OPTIONS = tuple(PROTOCOLS["ctdnn"])


def _check_options(options: dict) -> None:
    check_init(options["init"])
    if options["tikhonov"] not in TIKHONOV:
        raise ValueError(f"tikhonov must be one of {TIKHONOV}, got {options['tikhonov']!r}")
    a = options["warm_start_alpha"]
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not a > 0 or not math.isfinite(a):
        raise ValueError(f"warm_start_alpha must be a positive number (the ridge weight of the "
                         f"warm start of W), got {a!r}")
    if options["degree_semantics"] not in ("degree", "functions"):
        raise ValueError("degree_semantics must be 'degree' (d + 1 functions) or 'functions' "
                         f"(the number of functions), got {options['degree_semantics']!r}")
    if options["weight_times"] not in WEIGHT_TIMES:
        raise ValueError(f"weight_times must be one of {WEIGHT_TIMES}, got "
                         f"{options['weight_times']!r}")


def resolve_options(p: dict) -> dict:
    """Every option of :data:`PROTOCOLS` for a parameter dict (``Params.as_dict()``).

    A key missing or ``None`` takes the value of ``p["protocol"]`` (``"ctdnn"`` when absent,
    so that parameter dicts written before the protocols existed keep their meaning).
    """
    name = p.get("protocol") or "ctdnn"
    if name not in PROTOCOLS:
        raise ValueError(f"protocol={name!r} is unknown; choose one of {sorted(PROTOCOLS)}")
    return {k: PROTOCOLS[name][k] if p.get(k) is None else p[k] for k in PROTOCOL_OPTIONS}


def polynomial_degree(degree: int, semantics: str) -> int:
    """The polynomial degree of a basis given ``degree`` read with ``semantics``
    (``"degree"``: itself; ``"functions"``: ``degree - 1``, see
    :func:`ctdnn.experiments.node.n_functions`)."""
    return n_functions(degree, semantics) - 1


@dataclass
class ProtocolParams(ParamsBase):
    """The protocol and its options, shared by the DTO experiments' parameters."""

    #: ``"ctdnn"`` or ``"authors"``: the defaults of the five fields below (see PROTOCOLS).
    protocol: str = "ctdnn"
    init: str | None = None
    tikhonov: str | None = None
    warm_start_alpha: float | None = None
    degree_semantics: str | None = None
    weight_times: str | None = None

    def resolved(self, option: str):
        """The value of a protocol option: the field if set, else the protocol's value."""
        if option not in PROTOCOL_OPTIONS:
            raise ValueError(f"unknown protocol option {option!r}; choose from "
                             f"{list(PROTOCOL_OPTIONS)}")
        return resolve_options(self.as_dict())[option]

    @property
    def options(self) -> dict:
        """Every protocol option with its resolved value."""
        return resolve_options(self.as_dict())

    def _check_protocol(self, degrees) -> None:
        options = self.options  # raises on an unknown protocol
        _check_options(options)
        for d in degrees:
            n_functions(int(d), options["degree_semantics"])


@dataclass
class Params(ProtocolParams):
    """Every setting of the experiment; defaults are the seconds-long smoke run."""

    dataset: str = "ELM"
    data_source: str = "auto"
    n_samples: int | None = None
    split_seed: int = 0
    optimizers: list = field(default_factory=lambda: ["adam", "gnvpro"])
    gnvpro_work_units: int = 10
    architectures: list = field(default_factory=lambda: ["resnet", "hamiltonian"])
    T_values: list = field(default_factory=lambda: [1.0, 5.0, 10.0])
    bases: list = field(default_factory=lambda: ["monomial", "legendre", "none"])
    degree: int = 3
    seeds: list = field(default_factory=lambda: [0])
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    alpha_theta: float = 1e-5
    alpha_W: float = 1e-3
    warm_start: bool = True
    width: int = 15
    n_steps: int = 12
    spike_rise: float = 0.05
    tail_fraction: float = 0.2
    fail_factor: float = 2.0
    torch_threads: int = 1
    device: str = "auto"

    def __post_init__(self):
        for label, given, known in (("optimizers", self.optimizers, OPTIMIZERS),
                                    ("architectures", self.architectures, ARCHS),
                                    ("bases", self.bases, ("monomial", "legendre", "none"))):
            unknown = [v for v in given if v not in known]
            if unknown:
                raise ValueError(f"unknown entries {unknown} in {label}; choose from {list(known)}")
        if not self.optimizers:
            raise ValueError(f"optimizers is empty; choose one or more of {list(OPTIMIZERS)}")
        if (isinstance(self.gnvpro_work_units, bool) or not isinstance(self.gnvpro_work_units, int)
                or self.gnvpro_work_units < 1):
            raise ValueError("gnvpro_work_units must be a positive integer (the GNvpro budget "
                             f"in passes over the training set), got {self.gnvpro_work_units!r}")
        self.T_values = [float(T) for T in self.T_values]
        self.seeds = [int(s) for s in self.seeds]
        self._check_protocol([self.degree] if set(self.bases) - {"none"} else [])

    def basis_label(self, b: str) -> str:
        if b == "none":
            return "none (per step)"
        name = {"monomial": "monomial", "legendre": "Legendre"}[b]
        if self.resolved("degree_semantics") == "functions":
            return f"{name} ({self.degree} functions)"
        return f"{name} (d={self.degree})"


def build(p: dict, ds, arch: str, T: float, basis: str, degree: int, seed: int):
    """A fresh network; the seed fixes its initial weights (the same for every basis and T).

    ``degree`` is read with the run's ``degree_semantics``; ``init`` and ``weight_times``
    come from the run's protocol options (:func:`resolve_options`).
    """
    o = resolve_options(p)
    seed_everything(seed)
    if basis != "none":
        degree = polynomial_degree(int(degree), o["degree_semantics"])
    return ARCHS[arch][0](ds.n_in, ds.n_out, width=p["width"], n_steps=p["n_steps"], T=T,
                          basis=basis, degree=degree, weight_times=o["weight_times"],
                          init=o["init"])


def train_unit(item: dict) -> dict:
    """One architecture's ensemble: every ``(T, basis, degree, seed)`` of ``item["specs"]``.

    Module-level and self-contained (it loads the data set itself, each model seeds itself),
    so it runs the same in-process or on a worker. Returns plain data: per spec a record with
    status, errors on the three splits, the validation-curve stability and the history.
    """
    p = item["params"]
    import torch

    torch.set_num_threads(p["torch_threads"])
    dev = resolve_device(p["device"])
    ds, _ = load_data(p["dataset"], source=p["data_source"], seed=p["split_seed"],
                      n_samples=p["n_samples"], device=dev)
    specs = [tuple(s) for s in item["specs"]]
    models = [build(p, ds, item["arch"], *s) for s in specs]
    o = resolve_options(p)
    t0 = time.perf_counter()
    results = train_ensemble(models, ds, epochs=p["epochs"], batch_size=p["batch_size"],
                             lr=p["lr"], optimizer="adam", device=dev,
                             seeds=[s[3] for s in specs], alpha_theta=p["alpha_theta"],
                             alpha_W=p["alpha_W"], tikhonov=o["tikhonov"],
                             warm_start=p["warm_start"], warm_start_alpha=o["warm_start_alpha"],
                             progress=False, name=ARCHS[item["arch"]][1])
    seconds = time.perf_counter() - t0
    records = []
    for spec, model, res in zip(specs, models, results):
        h = res.history
        records.append({
            "spec": list(spec), "seed": spec[3], "status": str(res.status),
            "message": without_paths(res.message), "best_epoch": int(res.best_epoch),
            "epochs_completed": int(res.epochs_completed),
            "best_val_rel_err": float(res.best_val_rel_err), **split_errors(model, ds),
            **stability(h["val_rel_err"], p["spike_rise"], p["tail_fraction"]),
            "history": {k: [float(v) for v in h[k]] for k in HISTORY_KEYS}})
    return {"records": records, "seconds": seconds,
            "n_time_parameters": {f"{s[1]}:{s[2]}": m.n_time_parameters
                                  for s, m in zip(specs, models)}}


def gnvpro_unit(item: dict) -> dict:
    """One architecture's models trained by GNvpro, one after the other, for every spec.

    Same contract as :func:`train_unit` (module-level, loads its own data, each model seeds
    itself); the models start from the same initial weights as Adam's. Each record also holds
    the work units spent and the model's own training seconds. ``tikhonov="coefficients"``
    selects GNvpro's ``theta_penalty="euclidean"`` (the same ``0.5 alpha ||theta||^2``); the
    warm start does not apply (variable projection solves for ``W`` at every iterate).
    """
    p = item["params"]
    import torch

    from ..gnvpro import train_gnvpro

    torch.set_num_threads(p["torch_threads"])
    dev = resolve_device(p["device"])
    ds, _ = load_data(p["dataset"], source=p["data_source"], seed=p["split_seed"],
                      n_samples=p["n_samples"], device=dev)
    specs = [tuple(s) for s in item["specs"]]
    records, n_theta = [], {}
    theta_penalty = "euclidean" if resolve_options(p)["tikhonov"] == "coefficients" else "model"
    t0 = time.perf_counter()
    for spec in specs:
        model = build(p, ds, item["arch"], *spec)
        n_theta[f"{spec[1]}:{spec[2]}"] = model.n_time_parameters
        res = train_gnvpro(model, ds, max_work_units=p["gnvpro_work_units"],
                           alpha_theta=p["alpha_theta"], alpha_W=p["alpha_W"],
                           theta_penalty=theta_penalty, device=dev,
                           seed=spec[3], progress=False, name=ARCHS[item["arch"]][1])
        h = res.history
        records.append({
            "spec": list(spec), "seed": spec[3], "status": str(res.status),
            "message": without_paths(res.message), "best_epoch": int(res.best_epoch),
            "epochs_completed": int(res.epochs_completed),
            "best_val_rel_err": float(res.best_val_rel_err), **split_errors(model, ds),
            **stability(h["val_rel_err"], p["spike_rise"], p["tail_fraction"]),
            "work_units": int(h["work_units"][-1]), "seconds": float(res.wall_time),
            "history": {k: [float(v) for v in h[k]] for k in GN_HISTORY_KEYS}})
    return {"records": records, "seconds": time.perf_counter() - t0,
            "n_time_parameters": n_theta}


def adam_work_units(epochs, warm_start: bool) -> np.ndarray:
    """Work units spent by Adam after each of ``epochs`` (see the module docstring)."""
    return ADAM_WU_PER_EPOCH * np.asarray(epochs, dtype=float) + (1.0 if warm_start else 0.0)


@dataclass
class Results:
    """What :func:`run` returns: the parameters, the data set and every run's record."""

    params: Params
    ds: object
    notes: list
    mean_pred_err: float
    n_theta: dict                 # basis -> weight coefficients of the flow
    runs: dict                    # Adam: arch -> (T, basis) -> [per-seed record]
    train_time: dict              # Adam: arch -> seconds of the ensemble
    summary: dict = field(default_factory=dict)
    gnvpro_runs: dict = field(default_factory=dict)     # as runs, trained by GNvpro
    gnvpro_time: dict = field(default_factory=dict)     # arch -> seconds of the unit
    gnvpro_summary: dict = field(default_factory=dict)

    def ran(self) -> list:
        """The optimizers whose runs this result holds, in :data:`OPTIMIZERS` order."""
        return [o for o in OPTIMIZERS if self.of(o)[0]]

    def of(self, optimizer: str) -> tuple:
        """``(runs, summary, train_time)`` of one optimizer."""
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose from {list(OPTIMIZERS)}")
        if optimizer == "adam":
            return self.runs, self.summary, self.train_time
        return self.gnvpro_runs, self.gnvpro_summary, self.gnvpro_time

    def tag(self, preset: str) -> str:
        """What every table and figure of the run names: preset and data source."""
        return f"preset '{preset}', {self.ds.name} data ({self.ds.source})"


def _mark_failures(runs: dict, p: Params) -> None:
    """A run failed if it diverged or its best validation error exceeds ``fail_factor`` times
    the median of the runs with the same architecture and T (every basis and seed)."""
    for arch, cells in runs.items():
        for T in p.T_values:
            recs = [r for b in p.bases for r in cells[(T, b)]]
            typical = float(np.nanmedian([r["best_val_rel_err"] for r in recs]))
            for r in recs:
                r["failed"] = bool(r["status"] == "diverged"
                                   or not r["best_val_rel_err"] <= p.fail_factor * typical)


def run(params: Params) -> Results:
    """Train every configuration; see the module docstring."""
    p = params
    dev = resolve_device(p.device)
    ds, notes = load_data(p.dataset, source=p.data_source, seed=p.split_seed,
                          n_samples=p.n_samples, device=dev)
    specs = [(T, b, p.degree, s) for T in p.T_values for b in p.bases for s in p.seeds]
    items = [{"params": p.as_dict(), "arch": a, "specs": specs} for a in p.architectures]
    jobs = [(o, a) for o in OPTIMIZERS if o in p.optimizers for a in p.architectures]
    # GNvpro units after Adam's: both kinds in one call, so they share the workers.
    out = parallel.map_units(_unit, [{**items[p.architectures.index(a)], "optimizer": o}
                                     for o, a in jobs], name=f"dto {ds.name}",
                             labels=[f"{a} {OPTIMIZERS[o]}" for o, a in jobs])
    by_opt = {o: ({}, {}) for o in OPTIMIZERS}
    n_theta = {}
    for (opt, arch), unit in zip(jobs, out):
        runs, train_time = by_opt[opt]
        train_time[arch] = unit["seconds"]
        runs[arch] = {}
        for rec in unit["records"]:
            T, b, _, _ = rec.pop("spec")
            runs[arch].setdefault((float(T), b), []).append(rec)
        n_theta = {b: unit["n_time_parameters"][f"{b}:{p.degree}"] for b in p.bases}
    summaries = {}
    for opt, (runs, _) in by_opt.items():
        _mark_failures(runs, p)
        summaries[opt] = {arch: {cell: _cell_summary(recs) for cell, recs in cells.items()}
                          for arch, cells in runs.items()}
    res = Results(p, ds, notes, mean_predictor_error(ds), n_theta, *by_opt["adam"],
                  summary=summaries["adam"], gnvpro_runs=by_opt["gnvpro"][0],
                  gnvpro_time=by_opt["gnvpro"][1], gnvpro_summary=summaries["gnvpro"])
    return res


def _unit(item: dict) -> dict:
    """One unit of :func:`run`: Adam's ensemble or GNvpro's models of one architecture."""
    return (train_unit if item["optimizer"] == "adam" else gnvpro_unit)(item)


def from_metrics(params: Params, ds, mean_pred_err: float, metrics: dict) -> Results:
    """A :class:`Results` rebuilt from a stored record's ``metrics`` (both optimizers), so
    that :func:`claims` decides stored numbers again without training.

    Args:
        params: the run's parameters.
        ds: an object with the data set's ``name`` and ``source``.
        mean_pred_err: test error of predicting the training mean (the no-learning reference).
        metrics: the record's metrics, non-finite numbers already converted back to floats.
    """
    by_opt = {}
    for opt, cells in (("adam", metrics.get("cells") or []),
                       ("gnvpro", (metrics.get("gnvpro") or {}).get("cells") or [])):
        runs = {}
        for c in cells:
            runs.setdefault(c["architecture"], {})[(float(c["T"]), c["basis"])] = c["runs"]
        by_opt[opt] = (runs, {a: {cell: _cell_summary(recs) for cell, recs in arch.items()}
                              for a, arch in runs.items()})
    return Results(params, ds, [], mean_pred_err, {}, by_opt["adam"][0], {},
                   summary=by_opt["adam"][1], gnvpro_runs=by_opt["gnvpro"][0],
                   gnvpro_summary=by_opt["gnvpro"][1])


_KEYS = ("train_rel_err", "val_rel_err", "test_rel_err", "best_val_rel_err", "spikes",
         "tail_jitter", "best_epoch")


def _cell_summary(recs):
    return {**{k: [r[k] for r in recs] for k in _KEYS},
            "n_diverged": sum(r["status"] == "diverged" for r in recs),
            "n_failed": sum(r["failed"] for r in recs)}


# ----------------------------------------------------------------------------- claims

PAPER = {
    "dto-legendre-vs-monomial": "Table 2: Legendre test errors comparable to or lower than "
                                "monomial ones",
    "dto-legendre-vs-none": "Table 2: Legendre accuracy comparable to or better than the "
                            "unconstrained weight model",
    "dto-failures-legendre-vs-monomial": "Figures 2-3: monomial training degrades as T grows",
    "dto-roughness-legendre-vs-monomial": "Figures 2-3: smoother training and validation "
                                          "curves with Legendre weights",
}


def _learned(res: Results, errs) -> bool:
    return rules.learned(errs, res.mean_pred_err)


def claims(res: Results) -> list:
    """The four claims of the page per optimizer that ran, each decided by its rule (see
    :mod:`.rules`). Adam's keys are those of :data:`PAPER`; GNvpro's add ``-gnvpro``."""
    return [c for opt in res.ran() for c in _claims_of(res, opt)]


def _claims_of(res: Results, opt: str) -> list:
    p, name = res.params, res.ds.name
    runs, S, _ = res.of(opt)
    suffix = "" if opt == "adam" else f"-{opt}"
    by = f" (trained by {OPTIMIZERS[opt]})"
    out = []
    cells = [(a, T) for a in p.architectures for T in p.T_values]
    label = lambda a, T: f"{ARCHS[a][1]} T={T:g}"
    n_seeds = len(p.seeds)
    for other, key, what in (("monomial", "dto-legendre-vs-monomial", "monomial weights"),
                             ("none", "dto-legendre-vs-none",
                              "the unconstrained per-step weights")):
        if not {"legendre", other} <= set(p.bases):
            continue
        comps = [rules.Comparison(label(a, T), S[a][(T, "legendre")]["test_rel_err"],
                                  S[a][(T, other)]["test_rel_err"],
                                  _learned(res, S[a][(T, "legendre")]["test_rel_err"]),
                                  _learned(res, S[a][(T, other)]["test_rel_err"]))
                 for a, T in cells]
        d = rules.no_worse_in_cells(comps, n_seeds)
        t_max = max(p.T_values)
        ours = "; ".join(f"{ARCHS[a][1]} T={t_max:g}: "
                         f"{pm(S[a][(t_max, 'legendre')]['test_rel_err'])} vs "
                         f"{pm(S[a][(t_max, other)]['test_rel_err'])}" for a in p.architectures)
        details = "; ".join(f"{c.label}: {pm(c.ours)} vs {pm(c.other)}" for c in comps)
        out.append(make_claim(key + suffix, name, f"DTO surrogates: Legendre weights are at "
                              f"least as accurate as {what}, for the ResNet and the Hamiltonian "
                              f"network at every T{by}", PAPER[key], "test error " + ours,
                              rules.no_worse_in_cells, d, details))
    if {"legendre", "monomial"} <= set(p.bases):
        failed = {(a, T): (S[a][(T, "legendre")]["n_failed"], S[a][(T, "monomial")]["n_failed"])
                  for a, T in cells}
        d = rules.fewer_failures(failed, n_seeds)
        ours = ", ".join(f"{label(a, T)}: {f[0]} vs {f[1]}" for (a, T), f in failed.items())
        out.append(make_claim("dto-failures-legendre-vs-monomial" + suffix, name,
                              "DTO surrogates: Legendre weights fail less often than monomial "
                              f"weights, especially at large T{by}", PAPER[
                                  "dto-failures-legendre-vs-monomial"],
                              f"failed runs, Legendre vs monomial: {ours}",
                              rules.fewer_failures, d))
        rough = {}
        for a, T in cells:
            ok = {b: [r for r in runs[a][(T, b)] if not r["failed"]]
                  for b in ("legendre", "monomial")}
            rough[(a, T)] = {k: tuple([r[m] for r in ok[b]] for b in ("legendre", "monomial"))
                             for k, m in (("spikes", "spikes"), ("jitter", "tail_jitter"))}
        d = rules.smoother_curves(rough, n_seeds)
        t_max = max(p.T_values)
        ours = "; ".join(
            f"{label(a, t_max)}: spikes {pm(rough[(a, t_max)]['spikes'][0])} vs "
            f"{pm(rough[(a, t_max)]['spikes'][1])}" for a in p.architectures)
        details = "; ".join(
            f"{label(a, T)}: spikes {pm(c['spikes'][0])} vs {pm(c['spikes'][1])}, jitter "
            f"{pm(c['jitter'][0])}% vs {pm(c['jitter'][1])}%" for (a, T), c in rough.items())
        out.append(make_claim("dto-roughness-legendre-vs-monomial" + suffix, name,
                              "DTO surrogates: Legendre weights give smoother training curves "
                              f"than monomial weights, especially at large T{by}",
                              PAPER["dto-roughness-legendre-vs-monomial"],
                              "Legendre vs monomial, runs that did not fail: " + ours,
                              rules.smoother_curves, d, details))
    return out


def _metric_cells(res: Results, opt: str) -> list:
    p = res.params
    runs, S, _ = res.of(opt)

    def ms(values):
        m, s = rules.seed_stats(values)
        return {"mean": m, "std": s}

    return [{"architecture": a, "T": T, "basis": b, "label": p.basis_label(b),
             "n_time_parameters": res.n_theta[b],
             "n_diverged": S[a][(T, b)]["n_diverged"], "n_failed": S[a][(T, b)]["n_failed"],
             **{k: ms(S[a][(T, b)][k]) for k in _KEYS},
             "runs": [{**r, "history": thinned(r["history"])} for r in runs[a][(T, b)]]}
            for a in (p.architectures if runs else []) for T in p.T_values for b in p.bases]


def metrics(res: Results) -> dict:
    """The JSON metrics of the run (see the module docstring)."""
    p = res.params
    n_train, n_val, n_test = res.ds.sizes
    sizes = {"n_train": n_train, "n_val": n_val, "n_test": n_test}
    out = {"optimizers": res.ran(),
           "protocol": {"epochs": p.epochs, "batch_size": p.batch_size, "lr": p.lr,
                        "optimizer": "adam", "name": p.protocol, "options": p.options,
                        **sizes},
           "train_time_s": res.train_time, "n_time_parameters": res.n_theta,
           "mean_predictor_test_rel_err": res.mean_pred_err,
           "cells": _metric_cells(res, "adam")}
    if res.gnvpro_runs:
        out["gnvpro"] = {"protocol": {"max_work_units": p.gnvpro_work_units,
                                      "optimizer": "gnvpro", "inner": "gmres",
                                      "alpha_theta": p.alpha_theta, "alpha_W": p.alpha_W,
                                      "name": p.protocol, "options": p.options, **sizes},
                         "train_time_s": res.gnvpro_time, "cells": _metric_cells(res, "gnvpro")}
    if res.runs and res.gnvpro_runs:
        out["equal_work"] = {"definition": WORK_UNIT_DEFINITION,
                             "adam_work_units_per_epoch": ADAM_WU_PER_EPOCH,
                             "adam_warm_start_work_units": int(p.warm_start),
                             "rows": equal_work_rows(res)}
    return out


# ----------------------------------------------------------------------------- display

def error_table(res: Results, optimizer: str = "adam") -> Table:
    """Table 2 for one optimizer: test error per (architecture, T) and basis; '*' marks the
    lowest mean of a row."""
    p, (_, S, _) = res.params, res.of(optimizer)
    rows = []
    for a in p.architectures:
        for T in p.T_values:
            means = {b: rules.seed_stats(S[a][(T, b)]["test_rel_err"])[0] for b in p.bases}
            best = min(means.values())
            rows.append([ARCHS[a][1], f"{T:g}"] + [
                pm(S[a][(T, b)]["test_rel_err"]) + (" (div)" if S[a][(T, b)]["n_diverged"] else "")
                + (" *" if means[b] == best else "") for b in p.bases])
    return Table(["architecture", "T"] + [p.basis_label(b) for b in p.bases], rows)


def stability_table(res: Results, optimizer: str = "adam") -> Table:
    """Spikes and tail jitter (means over seeds) and failed runs per cell and basis, for one
    optimizer (per epoch for Adam, per iteration for GNvpro)."""
    p, (_, S, _) = res.params, res.of(optimizer)
    rows = []
    for a in p.architectures:
        for T in p.T_values:
            row = [ARCHS[a][1], f"{T:g}"]
            for b in p.bases:
                c = S[a][(T, b)]
                jit = rules.seed_stats(c["tail_jitter"])[0]
                row.append(f"{rules.seed_stats(c['spikes'])[0]:.3g} / "
                           + (f"{jit:.3g}" if math.isfinite(jit) else "n/a")
                           + (f"; failed {c['n_failed']}" if c["n_failed"] else ""))
            rows.append(row)
    return Table(["architecture", "T"] + [f"{p.basis_label(b)}: spikes / jitter %"
                                          for b in p.bases], rows)


def _on_grid(x, y, grid) -> np.ndarray:
    """``y`` of the last point with ``x <= g`` for each ``g`` of ``grid`` (NaN before the first)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i = np.searchsorted(x, grid, side="right") - 1
    return np.where(i >= 0, y[np.clip(i, 0, None)], np.nan)


def _curves(recs: list, key: str, optimizer: str, *, x: str = "work", best: bool = False,
            per_model: float = 1.0, warm_start: bool = True):
    """Common abscissa and per-seed curves of ``history[key]`` of one cell.

    Adam: against epochs (``x="epoch"``), work units or seconds; GNvpro: against work units or
    seconds, put on a common grid as step functions (iterations differ between seeds).
    ``best``: the best value so far (what a best-on-validation checkpoint would return);
    ``per_model``: divides Adam's ensemble seconds by the number of its members.
    """
    recs = [r for r in recs if r["history"][key]]
    if not recs:
        return None, []
    ys = [np.asarray(r["history"][key], dtype=float) for r in recs]
    if best:
        ys = [np.fmin.accumulate(y) for y in ys]
    if optimizer == "adam":
        xs = [np.asarray(r["history"]["epoch"], dtype=float) for r in recs]
        if x == "work":
            xs = [adam_work_units(e, warm_start) for e in xs]
        elif x == "seconds":
            xs = [np.asarray(r["history"]["wall_time"], dtype=float) / per_model for r in recs]
        if x == "epoch":
            n = min(len(y) for y in ys)
            return xs[0][:n], [y[:n] for y in ys]
    else:
        xs = [np.asarray(r["history"]["work_units" if x == "work" else "wall_time"],
                         dtype=float) for r in recs]
    grid = np.unique(np.concatenate(xs))
    return grid, [_on_grid(xx, y, grid) for xx, y in zip(xs, ys)]


def curves_figure(res: Results, arch: str, tag: str, optimizer: str = "adam"):
    """Training (top) and validation (bottom) curves per T (columns) and basis (colours),
    against epochs (Adam) or work units (GNvpro)."""
    import matplotlib.pyplot as plt

    p = res.params
    runs = res.of(optimizer)[0]
    nT = len(p.T_values)
    fig, axes = plt.subplots(2, nT, figsize=(4.6 * nT, 7.2), sharex=True, sharey="row",
                             squeeze=False)
    for j, T in enumerate(p.T_values):
        for b in p.bases:
            for i, key in enumerate(("train_rel_err", "val_rel_err")):
                x, ys = _curves(runs[arch][(T, b)], key, optimizer,
                                x="epoch" if optimizer == "adam" else "work")
                if ys:
                    seed_curves(axes[i, j], x, ys, color=COLORS[b], label=p.basis_label(b),
                                ls="--" if b == "none" else "-", lw=1.3)
        axes[0, j].set_title(f"T = {T:g}")
        axes[1, j].set_xlabel("epoch" if optimizer == "adam" else
                              "work units (passes over the training set)")
    axes[0, 0].set_ylabel("training relative error")
    axes[1, 0].set_ylabel("validation relative error")
    for ax in axes.flat:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, which="both", alpha=0.3)
        tidy_log_axis(ax)
    axes[0, 0].legend(fontsize=9)
    budget = (f"Adam, {p.epochs} epochs" if optimizer == "adam" else
              f"GNvpro, budget {p.gnvpro_work_units} work units")
    fig.suptitle(f"{ARCHS[arch][1]} network, DTO training: monomial vs Legendre vs per-step "
                 f"weights\n({tag}; {len(p.seeds)} seed(s), {budget})", fontsize=11)
    fig.tight_layout()
    return fig


def error_figure(res: Results, tag: str, optimizer: str = "adam"):
    """Test error against T per architecture for one optimizer (mean over seeds, bars: one
    std)."""
    import matplotlib.pyplot as plt

    p, (_, S, _) = res.params, res.of(optimizer)
    fig, axes = plt.subplots(1, len(p.architectures), figsize=(5.2 * len(p.architectures), 4.2),
                             squeeze=False)
    for ax, a in zip(axes[0], p.architectures):
        for b in p.bases:
            st = [rules.seed_stats(S[a][(T, b)]["test_rel_err"]) for T in p.T_values]
            ax.errorbar(p.T_values, [m for m, _ in st], yerr=[s for _, s in st],
                        color=COLORS[b], marker="o", capsize=3, lw=1.5,
                        ls="--" if b == "none" else "-", label=p.basis_label(b))
        ax.set_yscale("log")
        ax.set_xticks(p.T_values)
        ax.set_xlabel("final time T")
        ax.set_ylabel("test relative error")
        ax.set_title(f"{ARCHS[a][1]} network")
        ax.grid(True, which="both", alpha=0.3)
        tidy_log_axis(ax)
    axes[0, 0].legend(fontsize=9)
    budget = (f"Adam, {p.epochs} epochs" if optimizer == "adam" else
              f"GNvpro, {p.gnvpro_work_units} work units")
    fig.suptitle(f"Test error against T ({tag}; {len(p.seeds)} seed(s), {budget})",
                 fontsize=11)
    fig.tight_layout()
    return fig


WORK_UNIT_DEFINITION = (
    "one pass over the whole training set, forward or backward, is 1 work unit (a Gauss-Newton "
    "product is 2); an Adam epoch is 2 (forward and backward over all minibatches), its ridge "
    "warm start 1; the monitoring evaluations of training and validation errors are counted "
    "for neither optimizer")


def _members(res: Results, arch: str) -> int:
    return sum(len(recs) for recs in res.runs[arch].values())


def equal_work_rows(res: Results) -> list:
    """Adam against GNvpro at GNvpro's budget, per (architecture, T, basis).

    For each seed: GNvpro's work units spent and best validation error; Adam's best
    validation error over the epochs whose work units do not exceed GNvpro's (NaN if not even
    one epoch fits), and the seconds each took to get there (Adam's: the ensemble's time
    divided by its number of members). ``adam_short`` marks cells where Adam's whole run
    spent fewer work units than GNvpro.
    """
    p = res.params
    rows = []
    for a in p.architectures:
        k = _members(res, a)
        for T in p.T_values:
            for b in p.bases:
                gn, ad = res.gnvpro_runs[a][(T, b)], res.runs[a][(T, b)]
                wu = [r["work_units"] for r in gn]
                adam_err, adam_s, adam_wu, short = [], [], [], False
                for r_adam, w in zip(ad, wu):
                    h = r_adam["history"]
                    units = adam_work_units(h["epoch"], p.warm_start)
                    fit = np.flatnonzero(units <= w)
                    short |= bool(units.size == 0 or units[-1] < w)
                    if fit.size:
                        e = int(fit[-1])
                        adam_err.append(float(np.nanmin(h["val_rel_err"][:e + 1])))
                        adam_s.append(float(h["wall_time"][e]) / k)
                        adam_wu.append(float(units[e]))
                    else:
                        adam_err.append(math.nan)
                        adam_s.append(math.nan)
                        adam_wu.append(math.nan)
                rows.append({"architecture": a, "T": T, "basis": b,
                             "gnvpro_work_units": [float(w) for w in wu],
                             "gnvpro_best_val_rel_err": [r["best_val_rel_err"] for r in gn],
                             "gnvpro_seconds": [r["seconds"] for r in gn],
                             "adam_work_units": adam_wu, "adam_best_val_rel_err": adam_err,
                             "adam_seconds": adam_s, "adam_short": short})
    return rows


def equal_work_table(res: Results) -> Table:
    """The rows of :func:`equal_work_rows` as a table (means over seeds; ± one std)."""
    rows = []
    for r in equal_work_rows(res):
        rows.append([ARCHS[r["architecture"]][1], f"{r['T']:g}",
                     res.params.basis_label(r["basis"]), pm(r["gnvpro_work_units"], ".0f"),
                     pm(r["gnvpro_best_val_rel_err"]), pm(r["gnvpro_seconds"], ".2g"),
                     pm(r["adam_work_units"], ".0f") + (" (all)" if r["adam_short"] else ""),
                     pm(r["adam_best_val_rel_err"]), pm(r["adam_seconds"], ".2g")])
    return Table(["architecture", "T", "basis", "GNvpro work units", "GNvpro val. error",
                  "GNvpro s", "Adam work units", "Adam val. error", "Adam s"], rows)


def equal_work_figure(res: Results, arch: str, tag: str):
    """Best validation error so far against work units (top) and seconds (bottom), per T
    (columns) and basis (colours): Adam solid, GNvpro dashed."""
    import matplotlib.pyplot as plt

    p = res.params
    k = _members(res, arch)
    nT = len(p.T_values)
    fig, axes = plt.subplots(2, nT, figsize=(4.6 * nT, 7.2), sharey=True, squeeze=False)
    for j, T in enumerate(p.T_values):
        for i, x in enumerate(("work", "seconds")):
            for opt, ls in (("adam", "-"), ("gnvpro", "--")):
                for b in p.bases:
                    xs, ys = _curves(res.of(opt)[0][arch][(T, b)], "val_rel_err", opt, x=x,
                                     best=True, per_model=k, warm_start=p.warm_start)
                    if ys:
                        seed_curves(axes[i, j], xs, ys, color=COLORS[b], ls=ls, lw=1.3,
                                    label=f"{p.basis_label(b)}, {OPTIMIZERS[opt]}")
            axes[i, j].set_xscale("log")
        axes[0, j].set_title(f"T = {T:g}")
        axes[0, j].set_xlabel("work units (passes over the training set)")
        axes[1, j].set_xlabel("seconds (Adam: ensemble time / members)")
    for i in range(2):
        axes[i, 0].set_ylabel("best validation relative error so far")
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
        tidy_log_axis(ax)
        tidy_log_axis(ax, "x")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{ARCHS[arch][1]} network: Adam ({p.epochs} epochs) vs GNvpro "
                 f"({p.gnvpro_work_units} work units) at equal work\n({tag}; "
                 f"{len(p.seeds)} seed(s))", fontsize=11)
    fig.tight_layout()
    return fig


def record(res: Results, *, run_name: str, preset: str, claims_list, t_start: float):
    """The :class:`~ctdnn.experiments.schema.RunResults` of this run."""
    from .common import finish

    return finish(run=run_name, notebook="02_dto_surrogates",
                  title=f"DTO surrogates: {res.ds.name}", preset=preset,
                  data=[data_source(res.ds)], parameters=res.params.as_dict(),
                  metrics=metrics(res), claims=claims_list, t_start=t_start,
                  device=res.params.device)
