"""Beyond the paper: which time basis, and is the NFE advantage the basis' or the solver's?

The paper compares monomial and Legendre weights with one solver (dopri5). This experiment adds
three bases (:class:`~ctdnn.bases.ChebyshevBasis`, :class:`~ctdnn.bases.FourierBasis`,
:class:`~ctdnn.bases.HatBasis`) and four adaptive solvers, in four parts:

1. **Conditioning** (exact linear algebra): collocation and Gram condition numbers of every
   basis over degrees.
2. **DTO accuracy**: Table 2's design at one final time ``dto_T``: ResNet and Hamiltonian
   networks, every basis at degree ``d`` (``d + 1`` functions; ``"none"`` is the paper's
   per-step baseline), each data set of ``datasets``; one batched ensemble per
   (data set, architecture), trained by Adam (:func:`ctdnn.experiments.dto.train_unit`).
3. **Neural-ODE NFE** on ``node_dataset``: the surrogate neural ODE (width 15, dynamics MLP
   ``hidden``) with every basis at equal numbers of coefficients (``"none"``: ``d + 1``
   constant pieces), trained by Adam through dopri5, per seed.
4. **Work precision** of the trained models (those of the first ``wp_seeds`` seeds): forward
   solves of a test batch
   (surrogate) and of the spiral trajectory (stationary ODE, briefly trained per basis), in
   float64, with each solver of ``solvers`` at each tolerance of ``tolerances``
   (``atol = atol_factor * rtol``); the error is measured against a dopri8 solve at
   ``rtol = 1e-12``, ``atol = 1e-14``, and the NFE to reach ``target_error`` is read off
   each work-precision curve (:func:`nfe_at_target`). A control re-expresses the trained
   Legendre weights exactly in Chebyshev and monomial coefficients (:func:`reexpress`) and
   repeats the dopri5 sweep: the same weight function in another polynomial basis.

``run(Params(...)) -> Results``; ``claims(results)`` applies the rules defined here (their text
in one place, registered in :data:`ctdnn.experiments.rules.RULES`); ``metrics(results)`` is
the JSON part of the record: ``conditioning``, ``dto`` (per data set), ``node``, ``spiral``
and ``answers``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .. import parallel
from ..bases import make_basis
from ..neural_ode import NeuralODE, TrajectoryODE
from ..solvers import ADAPTIVE_METHODS, SolverError
from ..stationary import make_trajectory_data, spiral_init_, train_trajectory
from ..training import resolve_device, seed_everything, train
from . import dto, rules
from .node import weight_diagnostics
from .common import (ParamsBase, Table, data_source, finish, load_data, mean_predictor_error,
                     pm, split_errors, without_paths)
from .plots import tidy_log_axis
from .rules import Comparison, Decision, rule
from .schema import DataSource, make_claim

__all__ = ["Params", "Results", "run", "claims", "metrics", "record", "BASES", "SOLVERS",
           "label", "conditioning", "nfe_at_target", "reexpress", "work_precision",
           "node_unit", "spiral_unit", "conditioning_table", "dto_table", "node_table",
           "target_table", "control_table", "from_record", "conditioning_figure", "dto_figure",
           "work_precision_figure", "closing_note", "beaten", "confidence", "well_conditioned",
           "no_basis_fewer_nfe", "ranking_across_solvers", "same_function_same_nfe",
           "REFERENCE_SOLVE"]

BASES = ("monomial", "legendre", "chebyshev", "fourier", "hat", "none")
SOLVERS = ("dopri5", "dopri8", "bosh3", "adaptive_heun")
POLYNOMIAL = ("monomial", "legendre", "chebyshev")
COLORS = {"monomial": "tab:blue", "legendre": "black", "chebyshev": "tab:green",
          "fourier": "tab:purple", "hat": "tab:red", "none": "tab:orange"}
#: The reference solve of the work-precision study: dopri8 at these tolerances, float64.
REFERENCE_SOLVE = {"method": "dopri8", "rtol": 1e-12, "atol": 1e-14}
#: Relative margin of the ranking rule: NFE differing by less are a tie.
RANK_MARGIN = 0.10
#: A basis is conditioned like Legendre if its condition numbers are within this factor.
COND_FACTOR = 10.0
SPIRAL_T, SPIRAL_HIDDEN = 25.0, 50


def label(basis: str, degree: int, where: str = "node") -> str:
    """The basis as the tables name it; ``where="dto"`` makes ``"none"`` the per-step baseline."""
    if basis == "none":
        return "none (per step)" if where == "dto" else f"piecewise constant ({degree + 1} pieces)"
    name = {"monomial": "monomial", "legendre": "Legendre", "chebyshev": "Chebyshev",
            "fourier": "Fourier", "hat": "hat"}[basis]
    return f"{name} (d={degree})"


@dataclass
class Params(ParamsBase):
    """Every setting of the experiment; defaults are the seconds-long smoke run."""

    datasets: list = field(default_factory=lambda: ["ELM", "CDR", "DCR"])
    data_source: str = "auto"
    n_samples_dcr: int | None = 700
    split_seed: int = 0
    bases: list = field(default_factory=lambda: list(BASES))
    degree: int = 3
    seeds: list = field(default_factory=lambda: [0])
    # conditioning
    cond_degrees: list = field(default_factory=lambda: list(range(1, 11)))
    cond_T: float = 1.0
    cond_check_degree: int = 6
    n_times: int = 12
    # DTO
    dto_T: float = 5.0
    architectures: list = field(default_factory=lambda: ["resnet", "hamiltonian"])
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    alpha_theta: float = 1e-5
    alpha_W: float = 1e-3
    warm_start: bool = True
    width: int = 15
    n_steps: int = 12
    # neural ODE surrogate
    node_dataset: str = "CDR"
    node_iterations: int = 2
    node_batch_size: int = 20
    node_lr: float = 0.01
    node_rtol: float = 1e-4
    node_atol: float = 1e-6
    hidden: int = 50
    # stationary ODE (spiral)
    spiral_iterations: int = 2
    spiral_lr: float = 1e-3
    spiral_batch_time: int = 10
    spiral_batch_size: int = 20
    spiral_rtol: float = 1e-4
    spiral_atol: float = 1e-6
    n_points: int = 1000
    spiral_times: int = 26
    # work precision
    solvers: list = field(default_factory=lambda: list(SOLVERS))
    tolerances: list = field(default_factory=lambda: [1e-4, 1e-6])
    atol_factor: float = 0.01
    target_error: float = 1e-5
    spiral_target_error: float = 1e-4
    wp_samples: int = 32
    wp_max_nfe: int = 1000
    wp_seeds: int = 1
    torch_threads: int = 1
    device: str = "auto"

    def __post_init__(self):
        for name, given, known in (("bases", self.bases, BASES),
                                   ("solvers", self.solvers, ADAPTIVE_METHODS),
                                   ("architectures", self.architectures, dto.ARCHS),
                                   ("datasets", self.datasets, ("ELM", "CDR", "DCR"))):
            unknown = [v for v in given if v not in known]
            if unknown:
                raise ValueError(f"unknown entries {unknown} in {name}; choose from {list(known)}")
        if "legendre" not in self.bases:
            raise ValueError("bases must include 'legendre': every comparison is made against it")
        if self.node_dataset not in ("ELM", "CDR", "DCR"):
            raise ValueError(f"node_dataset must be 'ELM', 'CDR' or 'DCR', got {self.node_dataset!r}")
        self.degree = int(self.degree)
        if self.degree < 1:
            raise ValueError(f"degree must be >= 1 (the hat basis needs two nodes), got {self.degree}")
        self.seeds = [int(s) for s in self.seeds]
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one seed")
        self.tolerances = sorted((float(t) for t in self.tolerances), reverse=True)
        if not self.tolerances or not all(0 < t < 1 for t in self.tolerances):
            raise ValueError(f"tolerances must be numbers in (0, 1), got {self.tolerances}")
        if self.wp_max_nfe < 100:
            raise ValueError(f"wp_max_nfe must be at least 100, got {self.wp_max_nfe}")
        if not 1 <= int(self.wp_seeds) <= len(self.seeds):
            raise ValueError(f"wp_seeds must be between 1 and the number of seeds "
                             f"({len(self.seeds)}), got {self.wp_seeds}")
        self.wp_seeds = int(self.wp_seeds)

    @property
    def wp_seed_list(self) -> list:
        """The seeds whose trained models get the work-precision sweeps."""
        return self.seeds[: self.wp_seeds]

    def n_samples(self, dataset: str):
        return self.n_samples_dcr if dataset == "DCR" else None


# ----------------------------------------------------------------------------- conditioning

def conditioning(p: Params) -> dict:
    """Collocation (at ``linspace(0, T, n_times)``) and Gram condition numbers per basis and
    degree, in float64: ``{basis: {"collocation": [...], "gram": [...]}}``. The per-step
    basis is left out (its collocation matrix is a selection, its Gram matrix ``h I``)."""
    times = torch.linspace(0.0, p.cond_T, p.n_times, dtype=torch.float64)
    out = {}
    for b in p.bases:
        if b == "none":
            continue
        bases = [make_basis(b, d, T=p.cond_T) for d in p.cond_degrees]
        out[b] = {"collocation": [x.collocation_condition_number(times) for x in bases],
                  "gram": [x.gram_condition_number() for x in bases]}
    return out


# ----------------------------------------------------------------------------- models

def _basis_args(basis: str, degree: int) -> dict:
    """``"none"`` at equal numbers of coefficients: ``degree + 1`` constant pieces."""
    if basis == "none":
        return {"basis": "none", "degree": None, "n_steps": degree + 1}
    return {"basis": basis, "degree": degree}


def build_node(p: dict, n_in: int, n_out: int, basis: str) -> NeuralODE:
    return NeuralODE(n_in, n_out, width=p["width"], hidden=p["hidden"], T=1.0,
                     method="dopri5", rtol=p["node_rtol"], atol=p["node_atol"], adjoint=False,
                     **_basis_args(basis, p["degree"]))


def build_spiral(p: dict, basis: str) -> TrajectoryODE:
    return TrajectoryODE(dim=2, hidden=SPIRAL_HIDDEN, T=SPIRAL_T, transform="cube",
                         method="dopri5", rtol=p["spiral_rtol"], atol=p["spiral_atol"],
                         adjoint=False, time_scaling="rescaled",
                         **_basis_args(basis, p["degree"])).double()


@torch.no_grad()
def reexpress(source, target) -> None:
    """Give ``target`` the weights of ``source`` with its time-varying weights re-expressed.

    Both models must have the same architecture and polynomial bases of the same degree on
    the same interval (one space of functions): the target's coefficients solve
    ``B_target(s) C_target = B_source(s) C_source`` at ``n_functions`` Chebyshev points
    ``s`` (an exact interpolation, in float64), so that ``theta(t)`` is the same function up
    to rounding. Every other parameter is copied.

    Raises:
        ValueError: the bases differ in interval or number of functions.
    """
    bs, bt = source.basis, target.basis
    if bs.n_functions != bt.n_functions or abs(bs.T - bt.T) > 1e-12 * bs.T:
        raise ValueError(f"cannot re-express {bs!r} in {bt!r}: the bases must have the same "
                         "number of functions on the same interval")
    n = bs.n_functions
    s = torch.tensor([0.5 * bs.T * (1 - math.cos(math.pi * (k + 0.5) / n)) for k in range(n)],
                     dtype=torch.float64)
    M = torch.linalg.solve(bt(s), bs(s))        # C_target = M C_source
    state = {k: v for k, v in source.state_dict().items()}
    for name, value in state.items():
        if name.endswith("theta.coefficients"):
            C = value.double().reshape(n, -1)
            state[name] = (M @ C).reshape(value.shape).to(value.dtype)
    target.load_state_dict(state)


def _solve_features(model, x):
    """``u(T)`` of a surrogate neural ODE (forward solve only) and its forward NFE."""
    u = model.features(x)
    return u, int(model.stats.nfe_forward)


def _solve_spiral(model, y0, t):
    return model(y0, t), int(model.stats.nfe_forward)


def work_precision(model, solve, solvers: Sequence[str], tolerances: Sequence[float], *,
                   atol_factor: float, max_nfe: int) -> dict:
    """Error and NFE of one model's forward solve for every solver and tolerance.

    Args:
        model: a :class:`~ctdnn.NeuralODE` or :class:`~ctdnn.TrajectoryODE` in float64.
        solve: ``solve(model) -> (solution tensor, forward NFE)`` at the model's current
            ``method``, ``rtol``, ``atol``.
        solvers, tolerances: the grid (tolerances from loose to tight).
        atol_factor: ``atol = atol_factor * rtol``.
        max_nfe: evaluation budget of one solve, whatever its number of output times (a
            forward pre-hook on the dynamics counts the evaluations; torchdiffeq's
            ``max_num_steps`` applies to each output interval separately). A solve that
            spends it is recorded with status ``"too_many_steps"``, the NFE spent and error
            NaN, and the tighter tolerances of that solver are skipped (status
            ``"skipped"``): they would cost more.

    Returns:
        ``{"reference_nfe": int, solver: {"rtol": [...], "nfe": [...], "error": [...],
        "status": [...]}}``; ``error`` is ``||sol - ref|| / ||ref||`` (Frobenius norms) against
        :data:`REFERENCE_SOLVE`.
    """
    saved = (model.method, model.rtol, model.atol, model.max_num_steps)
    dyn, out, budget = model.dynamics, {}, [None]

    def guard(module, args):
        if budget[0] is not None and dyn.current.nfe_forward >= budget[0]:
            # solve() passes this on with the counts so far; its status is too_many_steps
            raise SolverError("too_many_steps", f"the work-precision solve spent its budget "
                                                f"of {budget[0]} evaluations")

    handle = dyn.register_forward_pre_hook(guard)
    try:
        model.method, model.rtol, model.atol = (REFERENCE_SOLVE["method"], REFERENCE_SOLVE["rtol"],
                                                REFERENCE_SOLVE["atol"])
        model.max_num_steps = 10**7
        with torch.no_grad():
            ref, out["reference_nfe"] = solve(model)
        budget[0] = int(max_nfe)
        norm = float(torch.linalg.vector_norm(ref))
        for method in solvers:
            rec = {"rtol": [], "nfe": [], "error": [], "status": []}
            failed = False
            for tol in tolerances:
                rec["rtol"].append(float(tol))
                if failed:
                    rec["nfe"].append(None)
                    rec["error"].append(math.nan)
                    rec["status"].append("skipped")
                    continue
                model.method, model.rtol, model.atol = method, float(tol), float(atol_factor * tol)
                try:
                    with torch.no_grad():
                        sol, nfe = solve(model)
                except SolverError as err:
                    failed = True
                    rec["nfe"].append(int(err.stats.nfe_forward))
                    rec["error"].append(math.nan)
                    rec["status"].append(str(err.status))
                    continue
                rec["nfe"].append(nfe)
                rec["error"].append(float(torch.linalg.vector_norm(sol - ref)) / norm)
                rec["status"].append("ok")
            out[method] = rec
    finally:
        handle.remove()
        model.method, model.rtol, model.atol, model.max_num_steps = saved
    return out


def nfe_at_target(nfe: Sequence, error: Sequence[float], target: float) -> float:
    """NFE to reach a relative error of ``target`` on one work-precision curve.

    The points are taken from loose to tight tolerance. The first point whose error is at
    most ``target`` decides: if it is the first point, its NFE (the curve starts below the
    target: a bound from above); otherwise the NFE is interpolated linearly in
    ``(log error, log NFE)`` between it and the point before. ``nan`` if no point reaches the
    target (or a needed value is missing).
    """
    pts = [(math.nan if n is None else float(n), math.nan if e is None else float(e))
           for n, e in zip(nfe, error)]
    for i, (n, e) in enumerate(pts):
        if not (math.isfinite(e) and n > 0):
            continue
        if e <= target:
            if i == 0:
                return n
            n0, e0 = pts[i - 1]
            if not (math.isfinite(e0) and n0 > 0 and e0 > target and e > 0):
                return n
            w = (math.log(target) - math.log(e0)) / (math.log(e) - math.log(e0))
            return math.exp(math.log(n0) + w * (math.log(n) - math.log(n0)))
    return math.nan


def _wp_with_targets(wp: dict, target: float) -> dict:
    wp["nfe_at_target"] = {m: nfe_at_target(r["nfe"], r["error"], target)
                           for m, r in wp.items() if isinstance(r, dict)}
    return wp


# ----------------------------------------------------------------------------- units

def node_unit(item: dict) -> dict:
    """Train one surrogate neural ODE (one basis, one seed); with ``item["wp"]`` also its
    work-precision sweep and, for Legendre, the re-expression control. Plain data out."""
    p, basis, seed = item["params"], item["basis"], item["seed"]
    torch.set_num_threads(p["torch_threads"])
    dev = resolve_device(p["device"])
    ds, _ = load_data(p["node_dataset"], source=p["data_source"], seed=p["split_seed"],
                      n_samples=p["n_samples"], device=dev)
    n_train = ds.x_train.shape[0]
    epochs = max(1, math.ceil(p["node_iterations"] * p["node_batch_size"] / n_train))
    seed_everything(seed)
    model = build_node(p, ds.n_in, ds.n_out, basis).to(dev)
    rec = {"seed": seed, "basis": basis, "n_time_parameters": model.n_time_parameters}
    try:
        res = train(model, ds, epochs=epochs, batch_size=p["node_batch_size"], lr=p["node_lr"],
                    optimizer="adam", device=dev, seed=seed, progress=False,
                    name=f"{basis} seed {seed}")
        status, message = str(res.status), without_paths(res.message)
    except SolverError as err:
        res, status, message = None, "solver_failed", without_paths(err)
    rec.update(status=status, message=message)
    if res is None or not res.history["epoch"]:
        rec.update(ok=False, test_rel_err=math.nan, training_nfe=math.nan, test_nfe=math.nan)
        return rec
    errs = split_errors(model, ds)
    model.eval()
    with torch.no_grad():
        model(ds.x_test)
    rec.update(ok=True, **errs, training_nfe=int(res.history["nfe"][-1]),
               test_nfe=int(model.stats.nfe_forward), epochs=epochs,
               **weight_diagnostics(model))
    if item.get("wp"):
        model = model.cpu().double()
        x = ds.x_test[: p["wp_samples"]].cpu().double()
        solve = lambda m: _solve_features(m, x)
        kw = dict(atol_factor=p["atol_factor"], max_nfe=p["wp_max_nfe"])
        rec["wp"] = _wp_with_targets(work_precision(model, solve, p["solvers"], p["tolerances"],
                                                    **kw), p["target_error"])
        if basis == "legendre" and item.get("control"):
            rec["control"] = _control(model, lambda b: build_node(p, ds.n_in, ds.n_out, b).double(),
                                      solve, p, kw)
    return rec


def _control(model, make, solve, p: dict, kw: dict) -> dict:
    """dopri5 sweeps of the Legendre model and its exact re-expressions."""
    out = {"legendre": work_precision(model, solve, ["dopri5"], p["tolerances"], **kw)["dopri5"]}
    for other in ("chebyshev", "monomial"):
        twin = make(other)
        reexpress(model, twin)
        out[other] = work_precision(twin, solve, ["dopri5"], p["tolerances"], **kw)["dopri5"]
    return out


def spiral_unit(item: dict) -> dict:
    """Train the spiral model of one basis briefly, then its work-precision sweep (and the
    re-expression control for Legendre). Plain data out."""
    p, basis, seed = item["params"], item["basis"], item["seed"]
    torch.set_num_threads(p["torch_threads"])
    data = make_trajectory_data(p["n_points"], SPIRAL_T)
    seed_everything(seed)
    model = build_spiral(p, basis)
    spiral_init_(model, std=0.1, generator=torch.Generator().manual_seed(seed))
    res = train_trajectory(model, data=data, iterations=p["spiral_iterations"],
                           batch_time=p["spiral_batch_time"], batch_size=p["spiral_batch_size"],
                           lr=p["spiral_lr"], optimizer="rmsprop", seed=seed,
                           eval_every=p["spiral_iterations"], progress=False, device="cpu",
                           eval_max_nfe=20 * p["wp_max_nfe"], name=f"spiral {basis} seed {seed}")
    rec = {"seed": seed, "basis": basis, "status": str(res.status),
           "message": without_paths(res.message), "test_rel_err": float(res.test_rel_err),
           "training_nfe": int(res.train_nfe), "test_nfe": int(res.test_nfe),
           "n_time_parameters": int(res.n_time_parameters)}
    y0 = data.y[:1]
    t = torch.linspace(0.0, SPIRAL_T, p["spiral_times"], dtype=torch.float64)
    solve = lambda m: _solve_spiral(m, y0, t)
    kw = dict(atol_factor=p["atol_factor"], max_nfe=p["wp_max_nfe"])
    rec["wp"] = _wp_with_targets(work_precision(model, solve, p["solvers"], p["tolerances"], **kw),
                                 p["spiral_target_error"])
    if basis == "legendre" and item.get("control"):
        rec["control"] = _control(model, lambda b: build_spiral(p, b), solve, p, kw)
    return rec


# ----------------------------------------------------------------------------- run

@dataclass
class Results:
    params: Params
    cond: dict
    dto: dict           # data set -> {"records": [...], "mean_pred_err", "source", "notes"}
    node: dict          # basis -> [per-seed record]
    node_mean_pred_err: float
    spiral: dict        # basis -> [per-seed record] (the seeds of params.wp_seed_list)
    sources: list
    notes: list

    def node_ok(self, basis: str) -> list:
        return [r for r in self.node.get(basis, []) if r.get("ok")]

    def node_values(self, basis: str, key: str) -> list:
        return [r[key] for r in self.node_ok(basis)]

    def wp(self, problem: str) -> dict:
        """``{basis: [work-precision record per seed]}`` of ``"node"`` or ``"spiral"`` (the
        seeds of ``params.wp_seed_list`` whose runs finished)."""
        runs = self.spiral if problem == "spiral" else self.node
        out = {b: [r["wp"] for r in recs if r.get("wp")] for b, recs in runs.items()}
        return {b: v for b, v in out.items() if v}

    def control(self, problem: str) -> dict | None:
        """The re-expression control of the first seed's Legendre model (``None``: absent)."""
        runs = self.spiral if problem == "spiral" else self.node
        recs = runs.get("legendre") or [{}]
        return recs[0].get("control")

    def dto_values(self, dataset: str, arch: str, basis: str, key: str = "test_rel_err"):
        return [r[key] for r in self.dto[dataset]["records"]
                if r["arch"] == arch and r["spec"][1] == basis]


def run(params: Params) -> Results:
    p = params
    pd = {**p.as_dict(), "n_samples": p.n_samples(p.node_dataset)}
    dev = resolve_device(p.device)
    cond = conditioning(p)
    # DTO: one ensemble per (data set, architecture)
    dto_units = [(name, arch) for name in p.datasets for arch in p.architectures]
    dto_items = []
    for name, arch in dto_units:
        dp = {k: pd[k] for k in ("torch_threads", "device", "data_source", "split_seed",
                                 "width", "n_steps", "epochs", "batch_size", "lr",
                                 "alpha_theta", "alpha_W", "warm_start")}
        dp.update(dataset=name, n_samples=p.n_samples(name), weight_times="consistent",
                  spike_rise=0.05, tail_fraction=0.2)
        specs = [(p.dto_T, b, p.degree, s) for b in p.bases for s in p.seeds]
        dto_items.append({"params": dp, "arch": arch, "specs": specs})
    # neural ODE surrogate: (basis, seed); the first wp_seeds seeds with work-precision sweeps
    node_units = [(b, s) for b in p.bases for s in p.seeds]
    # stationary ODE: briefly trained models per basis (the first wp_seeds seeds)
    spiral_units = [(b, s) for b in p.bases for s in p.wp_seed_list]
    # three independent sets of units: queued together on a cluster
    dto_out, node_out, spiral_out = parallel.concurrently(
        lambda: parallel.map_units(dto.train_unit, dto_items, name="beyond bases DTO",
                                   labels=[f"{n} {a}" for n, a in dto_units]),
        lambda: parallel.map_units(
            node_unit, [{"params": pd, "basis": b, "seed": s, "wp": s in p.wp_seed_list,
                         "control": s == p.seeds[0]} for b, s in node_units],
            name="beyond bases neural ODE", labels=[f"{b} seed {s}" for b, s in node_units]),
        lambda: parallel.map_units(
            spiral_unit, [{"params": pd, "basis": b, "seed": s, "control": s == p.seeds[0]}
                          for b, s in spiral_units],
            name="beyond bases spiral", labels=[f"spiral {b} seed {s}" for b, s in spiral_units]))
    dto_res, sources, notes = {}, [], []
    for name in p.datasets:
        ds, n = load_data(name, source=p.data_source, seed=p.split_seed,
                          n_samples=p.n_samples(name), device=dev)
        sources.append(data_source(ds))
        notes += [f"{name}: {x}" for x in n]
        recs = []
        for (dname, arch), out in zip(dto_units, dto_out):
            if dname == name:
                recs += [{**r, "arch": arch} for r in out["records"]]
        dto_res[name] = {"records": recs, "mean_pred_err": mean_predictor_error(ds)}
    node_runs = {b: [] for b in p.bases}
    for (b, _), rec in zip(node_units, node_out):
        node_runs[b].append(rec)
    ds, _ = load_data(p.node_dataset, source=p.data_source, seed=p.split_seed,
                      n_samples=p.n_samples(p.node_dataset), device=dev)
    spiral = {b: [] for b in p.bases}
    for (b, _), rec in zip(spiral_units, spiral_out):
        spiral[b].append(rec)
    sources.append(DataSource("spiral", "simulated",
                              f"simulated spiral dy/dt = y^3 A, {p.n_points} samples on [0, 25]",
                              p.n_points, simulator="ctdnn.stationary.make_trajectory_data"))
    return Results(p, cond, dto_res, node_runs, mean_predictor_error(ds), spiral, sources, notes)


# ----------------------------------------------------------------------------- rules

@rule("beyond-well-conditioned", f"""
    At the check degree and T of the conditioning study, a basis is conditioned like Legendre
    if both its collocation and its Gram condition numbers are at most {COND_FACTOR:g} times
    Legendre's. Reproduced if every basis other than monomials is conditioned like Legendre and
    monomials are not; partly if some of the other bases are; not reproduced if none is;
    inconclusive if a condition number is missing or not finite (exact linear algebra, no
    seeds involved).""")
def well_conditioned(kappa: dict[str, tuple[float, float]]) -> Decision:
    """Args: kappa: ``{basis: (collocation, Gram)}`` at the check degree; needs "legendre"."""
    if "legendre" not in kappa or not all(rules._finite(*v) for v in kappa.values()):
        return Decision("inconclusive", f"condition numbers missing or not finite: {kappa}")
    lc, lg = kappa["legendre"]
    like = {b: c <= COND_FACTOR * lc and g <= COND_FACTOR * lg for b, (c, g) in kappa.items()}
    others = [b for b in kappa if b not in ("legendre", "monomial")]
    good = [b for b in others if like[b]]
    mono = like.get("monomial")
    reason = (f"{len(good)} of {len(others)} other bases within a factor {COND_FACTOR:g} of "
              f"Legendre ({', '.join(good) or 'none'})"
              + ("" if mono is None else f"; monomials {'within' if mono else 'outside'} it"))
    if not others:
        return Decision("inconclusive", reason + ": no other basis to compare")
    if len(good) == len(others) and not mono:
        return Decision("reproduced", reason)
    return Decision("partly" if good else "not reproduced", reason)


@rule("beyond-no-basis-fewer-nfe", f"""
    Compare the mean training NFE over seeds of Legendre with each other basis at equal
    numbers of coefficients; a difference counts only if it exceeds the margin max(seed
    spread, {100 * rules.NFE_FLOOR:g}% of the larger mean). Inconclusive if fewer than
    {rules.MIN_SEEDS} seeds ran or the Legendre model did not learn (mean test error not
    below {rules.LEARN_FRACTION:g} of the error of predicting the training mean); reproduced
    if no basis that learned needs fewer NFE than Legendre; partly if fewer than half of them
    do; not reproduced otherwise. A basis that did not learn is left out.""")
def no_basis_fewer_nfe(cells: Sequence[Comparison], n_seeds: int) -> Decision:
    """Args: cells: one per other basis, ``ours`` Legendre's per-seed training NFE and
    ``other`` that basis'; ``ours_learned`` whether Legendre learned."""
    rules._labels(cells)
    few = rules._too_few(n_seeds)
    if few:
        return few
    if cells and not cells[0].ours_learned:
        return Decision("inconclusive", "the Legendre model did not learn")
    compared = [c for c in cells if c.other_learned]
    if not compared:
        return Decision("inconclusive", "no other basis learned")
    d = {c.label: rules._direction(c.ours, c.other, rules.NFE_FLOOR) for c in compared}
    cheaper = [lab for lab, v in d.items() if v == "higher"]   # Legendre higher: they are cheaper
    reason = (f"{len(cheaper)} of {len(compared)} bases need fewer NFE than Legendre"
              + (f" ({', '.join(cheaper)})" if cheaper else "") + "; "
              + ", ".join(f"{lab}: Legendre {v}" for lab, v in d.items()))
    if not cheaper:
        return Decision("reproduced", reason)
    return Decision("partly" if 2 * len(cheaper) < len(compared) else "not reproduced", reason)


@rule("beyond-ranking-across-solvers", f"""
    From the work-precision curves of the trained models, the NFE to reach the target error
    (the mean over the seeds with work-precision sweeps; not reached if a seed does not
    reach it). A pair of bases is ordered under dopri5 if their NFE differ by more than
    {100 * RANK_MARGIN:g}%; under each other solver the pair (where both reach the target)
    keeps the order if the same basis is cheaper, reverses it if the other basis is cheaper by
    more than {100 * RANK_MARGIN:g}%, and is tied otherwise. Inconclusive if no pair is
    ordered under dopri5 or no ordered pair can be compared under another solver; reproduced
    (the ranking holds) if no comparison reverses; partly if at least half of the
    non-tied comparisons keep the order; not reproduced otherwise.""")
def ranking_across_solvers(nfe: dict[str, dict[str, float]], reference: str = "dopri5") -> Decision:
    """Args: nfe: ``{solver: {basis: NFE to reach the target (nan: not reached)}}``."""
    if reference not in nfe:
        return Decision("inconclusive", f"no {reference} results")
    ref = {b: v for b, v in nfe[reference].items() if rules._finite(v) and v > 0}
    names = sorted(ref)
    ordered = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
               if abs(math.log(ref[a] / ref[b])) > math.log1p(RANK_MARGIN)]
    if not ordered:
        return Decision("inconclusive", f"{len(names)} bases reach the target under "
                                        f"{reference}; no pair differs by more than "
                                        f"{100 * RANK_MARGIN:g}%")
    keep = rev = tie = 0
    reversed_pairs, by_solver = [], {}
    for solver, values in nfe.items():
        if solver == reference:
            continue
        for a, b in ordered:
            va, vb = values.get(a, math.nan), values.get(b, math.nan)
            if not (rules._finite(va, vb) and va > 0 and vb > 0):
                continue
            same = (va < vb) == (ref[a] < ref[b])
            if same:
                keep += 1
            elif abs(math.log(va / vb)) > math.log1p(RANK_MARGIN):
                rev += 1
                reversed_pairs.append(f"{a}/{b} under {solver}")
                by_solver[solver] = by_solver.get(solver, 0) + 1
            else:
                tie += 1
    reason = (f"{len(ordered)} pairs ordered under {reference}; under the other solvers "
              f"{keep} keep the order, {tie} tie, {rev} reverse"
              + (" (" + ", ".join(f"{n} under {s}" for s, n in by_solver.items()) + "; e.g. "
                 + "; ".join(reversed_pairs[:3]) + ")" if rev else ""))
    if keep + rev + tie == 0:
        return Decision("inconclusive", reason + ": no ordered pair reaches the target under "
                                                 "another solver")
    if rev == 0:
        return Decision("reproduced", reason)
    return Decision("partly" if keep >= rev else "not reproduced", reason)


@rule("beyond-same-function-same-nfe", f"""
    The trained Legendre weights re-expressed exactly in Chebyshev and monomial coefficients
    (the same weight function) are solved by dopri5 at every tolerance of the study. A solve
    matches if its NFE is within {100 * rules.NFE_FLOOR:g}% of the Legendre solve's.
    Reproduced (the solver's work does not depend on the basis that represents the function)
    if every solve matches; partly if at least half do; not reproduced otherwise;
    inconclusive if no solve finished (deterministic solves, no seeds involved).""")
def same_function_same_nfe(pairs: Sequence[tuple[float, float]]) -> Decision:
    """Args: pairs: ``(Legendre NFE, re-expressed NFE)`` per (problem, basis, tolerance)."""
    done = [(a, b) for a, b in pairs if rules._finite(a, b) and a > 0 and b > 0]
    if not done:
        return Decision("inconclusive", "no solve finished")
    same = sum(abs(a - b) <= rules.NFE_FLOOR * max(a, b) for a, b in done)
    exact = sum(a == b for a, b in done)
    reason = f"{same} of {len(done)} solves match ({exact} with identical NFE)"
    if same == len(done):
        return Decision("reproduced", reason)
    return Decision("partly" if 2 * same >= len(done) else "not reproduced", reason)


# ----------------------------------------------------------------------------- claims

STATEMENTS = {
    "beyond-conditioning": "Every well-behaved basis (Chebyshev, Fourier, hat) is conditioned "
                           "like Legendre; monomials are the outlier",
    "beyond-dto-accuracy": "DTO surrogates: Legendre weights are no less accurate than any "
                           "other basis (Chebyshev, Fourier, hat, monomial, per step)",
    "beyond-node-nfe": "Neural-ODE surrogates at equal numbers of coefficients: no basis "
                       "needs fewer NFE than Legendre",
    "beyond-nfe-ranking-node": "Neural-ODE surrogate: the NFE ranking of the bases at a given "
                               "accuracy is the same for every adaptive solver",
    "beyond-nfe-ranking-spiral": "Stationary ODE: the NFE ranking of the bases at a given "
                                 "accuracy is the same for every adaptive solver",
    "beyond-same-function": "The solver's work depends on the weight function, not on the "
                            "polynomial basis that represents it",
}
PAPER = {
    "beyond-conditioning": "Figure 1: Legendre is far better conditioned than monomials "
                           "(other bases not studied)",
    "beyond-dto-accuracy": "Table 2: Legendre no worse than monomials and per-step weights "
                           "(other bases not studied)",
    "beyond-node-nfe": "Tables 5-6: Legendre needs fewer NFE than monomials (other bases not "
                       "studied)",
    "beyond-nfe-ranking-node": "not given (dopri5 only)",
    "beyond-nfe-ranking-spiral": "not given (dopri5 only)",
    "beyond-same-function": "not given",
}


def _cond_check(res: Results) -> dict:
    p = res.params
    k = p.cond_degrees.index(p.cond_check_degree) if p.cond_check_degree in p.cond_degrees else -1
    return {b: (v["collocation"][k], v["gram"][k]) for b, v in res.cond.items()}


def _control_pairs(res: Results) -> list:
    pairs = []
    for problem in ("node", "spiral"):
        c = res.control(problem)
        if not c:
            continue
        for other in ("chebyshev", "monomial"):
            for a, b, sa, sb in zip(c["legendre"]["nfe"], c[other]["nfe"],
                                    c["legendre"]["status"], c[other]["status"]):
                if sa == "ok" and sb == "ok":
                    pairs.append((float(a), float(b)))
    return pairs


def claims(res: Results) -> list:
    p = res.params
    out = []
    kappa = _cond_check(res)
    d = well_conditioned(kappa)
    ours = "; ".join(f"{b} {c:.3g} / {g:.3g}" for b, (c, g) in kappa.items())
    out.append(make_claim("beyond-conditioning", "", STATEMENTS["beyond-conditioning"],
                          PAPER["beyond-conditioning"],
                          f"collocation / Gram condition numbers at d = {p.cond_check_degree}, "
                          f"T = {p.cond_T:g}: {ours}", well_conditioned, d))
    for name in p.datasets:
        mpe = res.dto[name]["mean_pred_err"]
        cells = []
        for arch in p.architectures:
            leg = res.dto_values(name, arch, "legendre")
            for b in p.bases:
                if b == "legendre":
                    continue
                other = res.dto_values(name, arch, b)
                cells.append(Comparison(f"{dto.ARCHS[arch][1]} vs {b}", leg, other,
                                        rules.learned(leg, mpe), rules.learned(other, mpe)))
        d = rules.no_worse_in_cells(cells, len(p.seeds))
        best = {dto.ARCHS[a][1]: min(p.bases, key=lambda b: _mean(res.dto_values(name, a, b)))
                for a in p.architectures}
        ours = (f"T = {p.dto_T:g}; lowest mean test error: "
                + ", ".join(f"{a} {label(b, p.degree, 'dto')}" for a, b in best.items())
                + "; Legendre " + ", ".join(f"{dto.ARCHS[a][1]} {pm(res.dto_values(name, a, 'legendre'))}"
                                            for a in p.architectures))
        out.append(make_claim("beyond-dto-accuracy", name, STATEMENTS["beyond-dto-accuracy"],
                              PAPER["beyond-dto-accuracy"], ours, rules.no_worse_in_cells, d))
    learned = lambda b: rules.learned(res.node_values(b, "test_rel_err"), res.node_mean_pred_err)
    cells = [Comparison(b, res.node_values("legendre", "training_nfe"),
                        res.node_values(b, "training_nfe"), learned("legendre"), learned(b))
             for b in p.bases if b != "legendre"]
    n_seeds = min([len(res.node_ok(b)) for b in p.bases] or [0])
    d = no_basis_fewer_nfe(cells, n_seeds)
    ours = "training NFE " + ", ".join(f"{b} {pm(res.node_values(b, 'training_nfe'))}"
                                      for b in p.bases)
    out.append(make_claim("beyond-node-nfe", p.node_dataset, STATEMENTS["beyond-node-nfe"],
                          PAPER["beyond-node-nfe"], ours, no_basis_fewer_nfe, d))
    for problem, dataset in (("node", p.node_dataset), ("spiral", "spiral")):
        table = _targets(res, problem)
        d = ranking_across_solvers(table)
        ours = (f"NFE to reach error {_target(p, problem):g}: "
                + "; ".join(f"{s} " + ", ".join(f"{b} {_fmt_nfe(v)}" for b, v in vals.items())
                            for s, vals in table.items()))
        key = f"beyond-nfe-ranking-{problem}"
        out.append(make_claim(key, dataset, STATEMENTS[key], PAPER[key], ours,
                              ranking_across_solvers, d))
    pairs = _control_pairs(res)
    d = same_function_same_nfe(pairs)
    ours = (f"dopri5 NFE of the trained Legendre weights vs their re-expression in Chebyshev "
            f"and monomial coefficients at {len(p.tolerances)} tolerances, surrogate and spiral")
    out.append(make_claim("beyond-same-function", "", STATEMENTS["beyond-same-function"],
                          PAPER["beyond-same-function"], ours, same_function_same_nfe, d))
    return out


def _mean(values) -> float:
    m = rules.seed_stats(values)[0]
    return m if math.isfinite(m) else math.inf


def _fmt_nfe(v) -> str:
    return f"{v:.0f}" if rules._finite(v) else "not reached"


def _targets(res: Results, problem: str) -> dict:
    """``{solver: {basis: NFE to reach the target}}`` of one problem."""
    wp, target = res.wp(problem), _target(res.params, problem)

    def mean(recs, s):   # over seeds; not reached by one seed: not reached
        v = [nfe_at_target(r[s]["nfe"], r[s]["error"], target) for r in recs if s in r]
        return sum(v) / len(v) if v and all(math.isfinite(x) for x in v) else math.nan

    return {s: {b: mean(wp[b], s) for b in res.params.bases if b in wp}
            for s in res.params.solvers}


def _target(p: Params, problem: str) -> float:
    return p.spiral_target_error if problem == "spiral" else p.target_error


def _ranking(values: dict) -> list:
    finite = {b: v for b, v in values.items() if rules._finite(v)}
    return sorted(finite, key=finite.get)


def answers(res: Results) -> dict:
    """The two questions of the page, answered from the numbers (see :func:`closing_note`)."""
    p = res.params
    best_dto = {f"{name} {dto.ARCHS[a][1]}": min(p.bases, key=lambda b: _mean(
        res.dto_values(name, a, b))) for name in p.datasets for a in p.architectures}
    nfe = {b: _mean(res.node_values(b, "training_nfe")) for b in p.bases}
    rank = {problem: {s: _ranking(v) for s, v in _targets(res, problem).items()}
            for problem in ("node", "spiral")}
    return {"best_dto": best_dto, "node_training_nfe": nfe,
            "node_nfe_ranking": sorted((b for b in nfe if math.isfinite(nfe[b])), key=nfe.get),
            "ranking_at_target": rank}


def metrics(res: Results) -> dict:
    p = res.params
    dto_m = {}
    for name in p.datasets:
        cells = []
        for a in p.architectures:
            for b in p.bases:
                cells.append({"architecture": a, "basis": b, **{
                    k: dict(zip(("mean", "std"), rules.seed_stats(res.dto_values(name, a, b, k))))
                    for k in ("train_rel_err", "val_rel_err", "test_rel_err")},
                    "runs": [{k: r[k] for k in ("seed", "status", "train_rel_err",
                                                "val_rel_err", "test_rel_err", "best_epoch")}
                             for r in res.dto[name]["records"]
                             if r["arch"] == a and r["spec"][1] == b]})
        dto_m[name] = {"mean_predictor_test_rel_err": res.dto[name]["mean_pred_err"],
                       "cells": cells}
    strip = lambda r: {k: v for k, v in r.items()}
    return {"conditioning": {"degrees": p.cond_degrees, "T": p.cond_T, "n_times": p.n_times,
                             "bases": res.cond},
            "dto": dto_m,
            "node": {"dataset": p.node_dataset,
                     "mean_predictor_test_rel_err": res.node_mean_pred_err,
                     "runs": {b: [strip(r) for r in recs] for b, recs in res.node.items()}},
            "spiral": {b: [strip(r) for r in recs] for b, recs in res.spiral.items()},
            "reference_solve": REFERENCE_SOLVE, "answers": answers(res)}


# ----------------------------------------------------------------------------- tables

def _tagged(tag: str) -> str:
    return f"; {tag}" if tag else ""


def conditioning_table(res: Results, tag: str = "") -> Table:
    p = res.params
    rows = [[f"{b} ({kind})"] + [f"{v:.3g}" for v in res.cond[b][kind]]
            for kind in ("collocation", "gram") for b in res.cond]
    return Table(["basis (matrix)"] + [f"d={d}" for d in p.cond_degrees], rows,
                 caption=f"condition numbers on [0, {p.cond_T:g}]; collocation at "
                         f"{p.n_times} equispaced times" + _tagged(tag))


def dto_table(res: Results, dataset: str, tag: str = "") -> Table:
    p = res.params
    rows = []
    for b in p.bases:
        rows.append([label(b, p.degree, "dto")] + [pm(res.dto_values(dataset, a, b))
                                                   for a in p.architectures])
    return Table(["basis"] + [f"{dto.ARCHS[a][1]} test error" for a in p.architectures], rows,
                 caption=f"{dataset}: T = {p.dto_T:g}, {p.epochs} epochs, {len(p.seeds)} seed(s); "
                         f"mean predictor {res.dto[dataset]['mean_pred_err']:.3g}" + _tagged(tag))


def node_table(res: Results, tag: str = "") -> Table:
    p = res.params
    rows = [[label(b, p.degree), res.node[b][0]["n_time_parameters"],
             pm(res.node_values(b, "test_rel_err")), pm(res.node_values(b, "test_nfe"), ".4g"),
             pm(res.node_values(b, "training_nfe"), ".4g"),
             pm(res.node_values(b, "time_variation"), ".2g"),
             pm([r["test_rel_err"] for r in res.spiral.get(b, [])]),
             pm([r["training_nfe"] for r in res.spiral.get(b, [])], ".4g")]
            for b in p.bases]
    return Table(["basis", "time coefficients", f"{p.node_dataset} test error", "test NFE",
                  "training NFE", "time variation", "spiral test error",
                  "spiral training NFE"], rows,
                 caption=f"neural ODEs, {len(p.seeds)} seed(s) (spiral: {p.wp_seeds})"
                         + _tagged(tag))


def target_table(res: Results, problem: str, tag: str = "") -> Table:
    p = res.params
    t = _targets(res, problem)
    rows = [[label(b, p.degree)] + [_fmt_nfe(t[s].get(b, math.nan)) for s in p.solvers]
            for b in p.bases]
    return Table(["basis"] + list(p.solvers), rows,
                 caption=f"NFE to reach a relative error of {_target(p, problem):g} "
                         f"({'surrogate, ' + p.node_dataset if problem == 'node' else 'spiral'})"
                         + _tagged(tag))


def control_table(res: Results, tag: str = "") -> Table:
    p = res.params
    rows = []
    for problem in ("node", "spiral"):
        c = res.control(problem)
        if not c:
            continue
        for b in ("legendre", "chebyshev", "monomial"):
            rows.append([problem if problem == "spiral" else f"surrogate ({p.node_dataset})", b]
                        + [str(n) if s == "ok" else s for n, s in zip(c[b]["nfe"], c[b]["status"])])
    return Table(["problem", "coefficients in"] + [f"rtol {t:g}" for t in p.tolerances], rows,
                 caption="dopri5 NFE of one weight function (the trained Legendre one) in three "
                         "bases" + _tagged(tag))


# ----------------------------------------------------------------------------- figures

def conditioning_figure(res: Results, tag: str):
    import matplotlib.pyplot as plt

    p = res.params
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, ("collocation", "gram")):
        for b, v in res.cond.items():
            ax.semilogy(p.cond_degrees, v[kind], marker="o", color=COLORS[b], label=b)
        ax.set_xlabel("degree d (d + 1 functions)")
        ax.set_ylabel(f"{kind} condition number")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=9)
    fig.suptitle(f"Conditioning of the bases on [0, {p.cond_T:g}] ({tag})", fontsize=11)
    fig.tight_layout()
    return fig


def dto_figure(res: Results, tag: str):
    import matplotlib.pyplot as plt

    p = res.params
    fig, axes = plt.subplots(1, len(p.datasets), figsize=(4.6 * len(p.datasets), 4),
                             squeeze=False)
    width = 0.8 / max(1, len(p.architectures))
    for ax, name in zip(axes[0], p.datasets):
        x = np.arange(len(p.bases))
        for i, a in enumerate(p.architectures):
            stats = [rules.seed_stats(res.dto_values(name, a, b)) for b in p.bases]
            ax.bar(x + i * width, [m for m, _ in stats], width,
                   yerr=[s if math.isfinite(s) else 0 for _, s in stats],
                   label=dto.ARCHS[a][1], alpha=0.85)
        ax.axhline(res.dto[name]["mean_pred_err"], color="gray", ls="--", lw=1,
                   label="mean predictor")
        ax.set_xticks(x + width * (len(p.architectures) - 1) / 2)
        ax.set_xticklabels(p.bases, rotation=30)
        ax.set_yscale("log")
        tidy_log_axis(ax)
        ax.set_title(name)
        ax.set_ylabel("test relative error")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"DTO surrogates at T = {p.dto_T:g} ({tag})", fontsize=11)
    fig.tight_layout()
    return fig


def work_precision_figure(res: Results, tag: str):
    import matplotlib.pyplot as plt

    p = res.params
    fig, axes = plt.subplots(2, len(p.solvers), figsize=(3.8 * len(p.solvers), 7.2),
                             squeeze=False)
    for row, problem in enumerate(("node", "spiral")):
        wp = res.wp(problem)
        for col, s in enumerate(p.solvers):
            ax = axes[row][col]
            for b, recs in wp.items():
                for k, rec in enumerate(recs):   # one line per seed, labelled once
                    r = rec[s]
                    pts = [(n, e) for n, e in zip(r["nfe"], r["error"])
                           if n and rules._finite(e) and e > 0]
                    if pts:
                        ax.loglog(*zip(*pts), marker="o", ms=4, color=COLORS[b], alpha=0.85,
                                  label=b if k == 0 else None)
            ax.axhline(_target(p, problem), color="gray", ls=":", lw=1)
            ax.set_title(f"{'surrogate ' + p.node_dataset if problem == 'node' else 'spiral'}: {s}",
                         fontsize=10)
            ax.set_xlabel("NFE")
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines[:-1]:   # the target line alone has no log data to label
                tidy_log_axis(ax, "x")
                tidy_log_axis(ax, "y")
            if col == 0:
                ax.set_ylabel("relative error vs reference")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Work precision per basis and solver, tolerances "
                 f"{max(p.tolerances):g} to {min(p.tolerances):g}, {p.wp_seeds} trained "
                 f"model(s) per basis ({tag})", fontsize=11)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- closing note

def beaten(res: Results) -> dict:
    """DTO cells in which a basis is more accurate than Legendre beyond the seed spread:
    ``{basis: ["ELM ResNet", ...]}`` (the converse of the *no-worse* rule's cells)."""
    p, out = res.params, {}
    if len(p.seeds) < rules.MIN_SEEDS:
        return out   # one seed: no spread to judge a difference against
    for name in p.datasets:
        for a in p.architectures:
            leg = res.dto_values(name, a, "legendre")
            for b in p.bases:
                other = res.dto_values(name, a, b)
                if b != "legendre" and _mean(other) < _mean(leg) - rules.spread(leg, other):
                    out.setdefault(b, []).append(f"{name} {dto.ARCHS[a][1]}")
    return out


def confidence(n_seeds: int, verdicts: Sequence[str]) -> str:
    """``"low"``, ``"moderate"`` or ``"high"``: low with fewer than two seeds or when a verdict
    is inconclusive; high with five seeds or more and every verdict decided; else moderate."""
    if n_seeds < rules.MIN_SEEDS or not verdicts or "inconclusive" in verdicts:
        return "low"
    return "high" if n_seeds >= 5 else "moderate"


def _variation_sentence(res: Results) -> str:
    """Whether the smooth bases' training-NFE order is their order by time variation."""
    smooth = [b for b in res.params.bases if b in POLYNOMIAL + ("fourier",)]
    nfe = {b: _mean(res.node_values(b, "training_nfe")) for b in smooth}
    var = {b: _mean(res.node_values(b, "time_variation")) for b in smooth}
    if len(smooth) < 2 or not all(math.isfinite(x) for x in [*nfe.values(), *var.values()]):
        return ""
    by_nfe, by_var = sorted(smooth, key=nfe.get), sorted(smooth, key=var.get)
    return ("Among the smooth bases the training-NFE order "
            + ("is" if by_nfe == by_var else "is not") + " the order by how much the learned "
            f"weights vary in time ({', '.join(by_var)}, least first). ")


def closing_note(res: Results, claims_list, preset: str) -> str:
    """The answers to the page's two questions, from this run's numbers and verdicts
    (Markdown), each with its confidence by :func:`confidence`."""
    p = res.params
    a = answers(res)
    v = {c.key: c for c in claims_list if c.key != "beyond-dto-accuracy"}
    dto_v = {c.dataset: c.verdict for c in claims_list if c.key == "beyond-dto-accuracy"}
    wins = beaten(res)
    best = ", ".join(f"{k}: {b}" for k, b in a["best_dto"].items())
    nfe_c, same = v.get("beyond-node-nfe"), v.get("beyond-same-function")
    rank = {k: v.get(f"beyond-nfe-ranking-{k}") for k in ("node", "spiral")}
    q1 = [dto_v.get(n, "inconclusive") for n in p.datasets] + ([nfe_c.verdict] if nfe_c else [])
    q2 = [c.verdict for c in rank.values() if c]
    n_wp = p.wp_seeds
    lines = [
        f"*Preset `{preset}`.*",
        "",
        "**Which basis?** "
        + ("With one seed no difference in accuracy can be judged against a spread. "
           if len(p.seeds) < rules.MIN_SEEDS else
           "No basis beats Legendre's DTO accuracy beyond the seed spread in any cell. "
           if not wins else "Bases more accurate than Legendre beyond the seed spread: "
           + "; ".join(f"{b} in {', '.join(c)}" for b, c in wins.items()) + ". ")
        + f"Lowest mean test error per data set and architecture: {best}. Verdicts of "
          f"*Legendre no worse than any other basis*: "
        + ", ".join(f"{n} {dto_v.get(n, 'n/a')}" for n in p.datasets) + ". "
        + "Neural-ODE training NFE, lowest first: " + ", ".join(a["node_nfe_ranking"])
        + (f" (*no basis needs fewer NFE than Legendre*: {nfe_c.verdict}, {nfe_c.reason})"
           if nfe_c else "") + ". "
        + _variation_sentence(res)
        + f"Confidence: **{confidence(len(p.seeds), q1)}** ({len(p.seeds)} seed(s); "
          "low with fewer than two seeds or an inconclusive verdict, high from five seeds "
          "with every verdict decided).",
        "",
        "**Is the NFE advantage the basis' or the solver's?** "
        + (f"Neither as such: one weight function costs the solver the same whichever "
           f"polynomial basis represents it ({same.reason}; verdict {same.verdict}), so the "
           "differences between Legendre, Chebyshev and monomials are made by training. "
           if same and same.verdict == "reproduced" else
           (f"The re-expression control: {same.verdict} ({same.reason}). " if same else ""))
        + "Whether the ranking of the trained models holds across solvers: "
        + "; ".join(f"{'surrogate' if k == 'node' else 'spiral'} {c.verdict} ({c.reason})"
                    for k, c in rank.items() if c) + ". "
        + "Rankings by the NFE to reach the target error: "
        + "; ".join(f"{'surrogate' if k == 'node' else 'spiral'} "
                    + ", ".join(f"{s}: {' < '.join(r) or 'none reached'}" for s, r in rk.items())
                    for k, rk in a["ranking_at_target"].items()) + ". "
        + f"Confidence: **{confidence(n_wp, q2)}** for the ranking ({n_wp} trained model(s) "
          "per basis, the NFE averaged over them; the re-expression control is exact and "
          "deterministic).",
        "",
        f"Training was brief ({p.epochs} DTO epoch(s), {p.node_iterations} neural-ODE and "
        f"{p.spiral_iterations} spiral iterations); the paper preset trains as the paper does "
        "and sweeps a finer grid of tolerances.",
    ]
    return "\n".join(lines)


def _from_json(obj):
    """A stored record's values as :func:`run` made them: ``null`` back to NaN."""
    if isinstance(obj, dict):
        return {k: _from_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    if isinstance(obj, str) and obj in ("inf", "-inf"):
        return float(obj)
    return math.nan if obj is None else obj


def from_record(r) -> Results:
    """The :class:`Results` of a stored run (a :class:`~ctdnn.experiments.RunResults`), enough
    for :func:`claims`, the tables and :func:`closing_note` to be computed again without
    training (the DTO histories are not stored)."""
    names = set(Params.__dataclass_fields__)
    p = Params(**{k: v for k, v in r.parameters.items() if k in names})
    m = _from_json(r.metrics)
    dto_res = {name: {"mean_pred_err": d["mean_predictor_test_rel_err"],
                      "records": [{**run, "arch": c["architecture"],
                                   "spec": [p.dto_T, c["basis"], p.degree, run["seed"]]}
                                  for c in d["cells"] for run in c["runs"]]}
               for name, d in m["dto"].items()}
    return Results(p, m["conditioning"]["bases"], dto_res, m["node"]["runs"],
                   m["node"]["mean_predictor_test_rel_err"], m["spiral"], list(r.data), [])


def record(res: Results, *, run_name: str, preset: str, claims_list, t_start: float):
    params = {**res.params.as_dict(), "reference_solve": REFERENCE_SOLVE,
              "node_optimizer": "adam", "spiral_optimizer": "rmsprop",
              "gradients": "backpropagation through dopri5"}
    return finish(run=run_name, notebook="10_beyond_bases",
                  title="Beyond the paper: more time bases and other solvers", preset=preset,
                  data=res.sources, parameters=params, metrics=metrics(res),
                  claims=claims_list, t_start=t_start, device=res.params.device)
