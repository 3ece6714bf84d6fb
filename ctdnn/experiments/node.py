"""Neural-ODE surrogates: weight bases and solver work (the paper's Table 5, Figure 6).

``run(Params(dataset="CDR", iterations=100, seeds=[0, 1]))`` trains every basis once per seed
(one unit of :func:`ctdnn.parallel.map_units` per (basis, seed)); ``claims(results)`` applies
the rules. ``metrics(results)``: ``protocol``, ``init_prediction_gap``,
``mean_predictor_test_rel_err`` and ``models`` (per basis: label, parameters, mean/std
``summary`` of errors, NFE, time variation and Lipschitz bound, and per-seed ``runs``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import parallel
from ..neural_ode import NeuralODE
from ..solvers import SolverError
from ..training import (metric_function, relative_error, resolve_device, seed_everything,
                        train, train_iterations)
from . import rules
from .common import (ParamsBase, Table, data_source, finish, load_data, mean_predictor_error,
                     pm, without_paths)
from .schema import make_claim

__all__ = ["Params", "Results", "run", "claims", "metrics", "train_unit", "weight_diagnostics",
           "table", "work_table", "dynamics_table", "loss_figure", "record", "PROTOCOLS",
           "PROTOCOL_OPTIONS", "n_functions", "option_effect"]

#: The choices that differ between ctdnn and the authors' Python neural-ODE code
#: (``python/surrogate/train_surrogate_node.py`` and ``python/timeparam_NEW.py`` at commit
#: 218b73f), one ``Params`` field each; a field left at ``None`` takes the value of the
#: run's ``protocol``. Row letters refer to the method page's table of differences.
PROTOCOLS = {
    "ctdnn": {
        "opening": "tanh",                 # a: u(0) = tanh(K0 x + b0), as the DTO networks
        "sampling": "epochs",              # b: epochs of shuffled minibatches ...
        "loss": "squared",                 # b: ... of 0.5/n_b sum ||f(x) - c||^2
        "clip_grad_norm": None,            # b
        "lr_step_every": None,             # b: constant learning rate
        "patience": None,                  # b: no early stopping, validation every epoch
        "eval_every": 20,                  # b: (used by sampling="with_replacement" only)
        "metric": "mean_ratio",            # c: mean of per-sample ratios (MATLAB metric)
        "time_past_T": "extrapolate",      # d
        "init": "uniform",                 # e: torch's nn.Linear default
        "degree_semantics": "degree",      # h: degree d = d + 1 functions
        "time_scaling": "rescaled",        # j: basis on [0, 1] at t / T
        "split": "default",                # data: default_rng split
        "normalize": None,                 # data: the data set's default normalisation
    },
    "authors": {
        "opening": "linear",               # a: nn.Linear embed, no tanh
        "sampling": "with_replacement",    # b: np.random.randint batches, iterations
        "loss": "l1",                      # b: mean |f(x) - c|
        "clip_grad_norm": 1.0,             # b: clip_grad_norm_(..., 1.0)
        "lr_step_every": 500,              # b: StepLR(500, 0.5), stepped every iteration
        "patience": 5,                     # b: early stop after 5 checks without a new best
        "eval_every": 20,                  # b: --test_freq 20
        "metric": "frobenius",             # c: ||P - C||_F / ||C||_F over the split
        "time_past_T": "clamp",            # d: normalised time clamped to [0, 1]
        "init": "small_normal",            # e: dynamics N(0, 0.1^2), zero biases
        "degree_semantics": "functions",   # h: --degree 3 fits 3 functions
        "time_scaling": "absolute",        # j: bases on [0, 1] at absolute t (= rescaled at T=1)
        "split": "authors",                # data: RandomState(seed) split, seed = run seed
        "normalize": "authors",            # data: DCR inputs z-scored too (load_DCR)
    },
}
#: The fields :data:`PROTOCOLS` resolves.
PROTOCOL_OPTIONS = tuple(PROTOCOLS["ctdnn"])
_LR_STEP_GAMMA = 0.5


def n_functions(degree: int, semantics: str) -> int:
    """Number of basis functions for a ``degree`` read with ``semantics``.

    ``"degree"``: a polynomial of degree ``d`` has ``d + 1`` coefficients (ctdnn, the
    paper's notation). ``"functions"``: the authors' Python scripts pass the number of
    functions as ``--degree`` (``--degree 3`` fits ``1, t, t^2``).
    """
    if semantics == "degree":
        return degree + 1
    if semantics == "functions":
        if degree < 1:
            raise ValueError(f"degree={degree} with degree_semantics='functions' means no basis "
                             "function at all; give at least 1")
        return degree
    raise ValueError(f"degree_semantics must be 'degree' or 'functions', got {semantics!r}")

COLORS = {"legendre": "black", "monomial": "tab:blue", "constant": "tab:orange"}
_NAN_KEYS = ("train_rel_err", "val_rel_err", "test_rel_err", "train_eval_nfe", "test_nfe",
             "training_nfe",
             "training_nfe_forward", "training_nfe_backward", "wall_time_s",
             "time_variation", "lipschitz")


@dataclass
class Params(ParamsBase):
    """Every setting of the experiment; defaults are the seconds-long smoke run."""

    dataset: str = "ELM"
    data_source: str = "auto"
    n_samples: int | None = None
    split_seed: int = 0
    bases: list = field(default_factory=lambda: ["legendre", "monomial", "constant"])
    degree: int = 3
    seeds: list = field(default_factory=lambda: [0])
    iterations: int = 20
    batch_size: int = 20
    lr: float = 0.01
    rtol: float = 1e-4
    atol: float = 1e-6
    adjoint: bool = False
    adjoint_norm: str = "default"
    width: int = 15
    hidden: int = 50
    T: float = 1.0
    torch_threads: int = 1
    device: str = "auto"
    #: ``"ctdnn"`` or ``"authors"``: the defaults of every field below (see PROTOCOLS).
    protocol: str = "ctdnn"
    opening: str | None = None
    sampling: str | None = None
    loss: str | None = None
    clip_grad_norm: float | None = None
    lr_step_every: int | None = None
    patience: int | None = None
    eval_every: int | None = None
    metric: str | None = None
    time_past_T: str | None = None
    init: str | None = None
    degree_semantics: str | None = None
    time_scaling: str | None = None
    split: str | None = None
    normalize: str | None = None

    def __post_init__(self):
        unknown = [b for b in self.bases if b not in ("legendre", "monomial", "constant")]
        if unknown:
            raise ValueError(f"unknown entries {unknown} in bases; choose from "
                             "['legendre', 'monomial', 'constant']")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} is unknown; choose one of "
                             f"{sorted(PROTOCOLS)}")
        self.seeds = [int(s) for s in self.seeds]
        if self.resolved("sampling") not in ("epochs", "with_replacement"):
            raise ValueError(f"sampling must be 'epochs' or 'with_replacement', got "
                             f"{self.resolved('sampling')!r}")
        if self.resolved("sampling") == "epochs":
            extra = [k for k, plain in (("loss", "squared"), ("clip_grad_norm", None),
                                        ("lr_step_every", None), ("patience", None))
                     if self.resolved(k) != plain]
            if extra:
                raise ValueError(f"{', '.join(extra)} need(s) sampling='with_replacement' (the "
                                 "iteration loop of the authors' protocol); the epoch loop "
                                 "trains the squared error without clipping, schedule or "
                                 "early stopping")
        metric_function(self.resolved("metric"))
        n_functions(self.degree, self.resolved("degree_semantics"))

    def resolved(self, option: str):
        """The value of a protocol option: the field if set, else the protocol's value."""
        value = getattr(self, option)
        return PROTOCOLS[self.protocol][option] if value is None else value

    @property
    def options(self) -> dict:
        """Every protocol option with its resolved value."""
        return {k: self.resolved(k) for k in PROTOCOL_OPTIONS}

    def normalization(self, dataset: str | None = None) -> str | None:
        """The ``normalize`` mode passed to the loader (``"authors"`` resolved per data set:
        DCR inputs z-scored as well, the other sets' defaults already match)."""
        mode = self.resolved("normalize")
        if mode == "authors":
            return "center_zscore" if (dataset or self.dataset).upper() == "DCR" else None
        return mode

    @property
    def models(self) -> dict:
        """``{name: (basis, degree, label)}``; "constant" is Legendre of degree 0.

        ``degree`` is the polynomial degree actually fitted: with
        ``degree_semantics="functions"`` a ``degree`` of 3 means 3 functions, degree 2.
        """
        k = n_functions(self.degree, self.resolved("degree_semantics"))
        d = k - 1
        note = "" if self.resolved("degree_semantics") == "degree" else f", {k} functions"
        return {"legendre": ("legendre", d, f"Legendre (d={d}{note})"),
                "monomial": ("monomial", d, f"monomial (d={d}{note})"),
                "constant": ("legendre", 0, "constant (d=0)")}


def build(p: dict, ds, name: str) -> NeuralODE:
    params = Params(**p)
    basis, deg, _ = params.models[name]
    o = params.options
    return NeuralODE(ds.n_in, ds.n_out, width=p["width"], hidden=p["hidden"], T=p["T"],
                     basis=basis, degree=deg, method="dopri5", rtol=p["rtol"], atol=p["atol"],
                     adjoint=p["adjoint"], adjoint_norm=p["adjoint_norm"],
                     time_scaling=o["time_scaling"], time_past_T=o["time_past_T"],
                     opening=o["opening"], init=o["init"])


def weight_diagnostics(model, n_times: int = 101) -> dict:
    """Time variation and Lipschitz bound of the dynamics' weights on ``[0, T]``.

    ``time_variation``: RMS deviation of all dynamics weights from their time mean, relative
    to their RMS (exactly 0 for constant weights: computed in float64). ``lipschitz``:
    ``max_t ||K2(t)||_2 ||K1(t)||_2``, a bound on the Lipschitz constant of ``f(t, .)``.
    """
    t = torch.linspace(0.0, float(model.T), n_times, dtype=torch.float64)
    with torch.no_grad():
        pairs = [(K.double().cpu(), b.double().cpu()) for K, b in model.weights_at(t)]
    num = den = 0.0
    for K, b in pairs:
        W = torch.cat([K, b.unsqueeze(-1)], dim=-1)          # (n_times, out, in + 1)
        num += float((W - W.mean(dim=0)).square().sum()) / n_times
        den += float(W.square().sum()) / n_times
    norms = [torch.linalg.matrix_norm(K, ord=2) for K, _ in pairs]
    return {"time_variation": math.sqrt(num / den) if den else 0.0,
            "lipschitz": float((norms[0] * norms[-1]).max())}


@torch.no_grad()
def _evaluate(model, x, y, metric="mean_ratio"):
    model.eval()
    pred = model(x)
    return float(metric_function(metric)(pred, y)), model.stats


def _load(p: dict, seed: int, dev):
    """The data of a run: the authors' split takes the run's seed as its split seed."""
    params = Params(**p)
    split = params.resolved("split")
    return load_data(p["dataset"], source=p["data_source"],
                     seed=seed if split == "authors" else p["split_seed"],
                     n_samples=p["n_samples"], device=dev, split=split,
                     normalize=params.normalization())


def train_unit(item: dict) -> dict:
    """Train one basis with one seed; returns plain data (see :func:`run`)."""
    p, name, seed = item["params"], item["name"], item["seed"]
    o = Params(**p).options
    torch.set_num_threads(p["torch_threads"])
    dev = resolve_device(p["device"])
    ds, _ = _load(p, seed, dev)
    n_train = ds.x_train.shape[0]
    epochs = max(1, math.ceil(p["iterations"] * p["batch_size"] / n_train))
    seed_everything(seed)
    model = build(p, ds, name).to(dev)
    with torch.no_grad():
        model.eval()
        pred = model(ds.x_train)
        loss0 = float((pred - ds.y_train).abs().mean() if o["loss"] == "l1"
                      else 0.5 * (pred - ds.y_train).square().sum() / n_train)
        val0 = float(metric_function(o["metric"])(model(ds.x_val), ds.y_val))
    model.reset_stats()
    per_iter = []   # the SolverStats of every training solve, for the per-iteration curve
    hook = model.register_forward_hook(
        lambda m, args, output: per_iter.append(m.stats) if m.training else None)
    try:
        if o["sampling"] == "epochs":
            result = train(model, ds, epochs=epochs, batch_size=p["batch_size"], lr=p["lr"],
                           optimizer="adam", device=dev, seed=seed, progress=False,
                           name=f"{name} seed {seed}")
        else:
            result = train_iterations(
                model, ds, iterations=p["iterations"], batch_size=p["batch_size"], lr=p["lr"],
                optimizer="adam", device=dev, seed=seed, loss=o["loss"],
                clip_grad_norm=o["clip_grad_norm"], lr_step_every=o["lr_step_every"],
                lr_step_gamma=_LR_STEP_GAMMA, eval_every=o["eval_every"],
                patience=o["patience"], metric=o["metric"], progress=False,
                name=f"{name} seed {seed}")
        status, message = str(result.status), without_paths(result.message)
    except SolverError as err:   # a failed solve ends this run, not the page
        result, status, message = None, "solver_failed", without_paths(err)
    finally:
        hook.remove()
    rec = {"seed": seed, "status": status, "message": message, "initial_loss": loss0,
           "initial_val_rel_err": val0,
           "iteration_nfe": [int(s.nfe) for s in per_iter],
           "n_parameters": sum(q.numel() for q in model.parameters())}
    unit = "epoch" if o["sampling"] == "epochs" else "iteration"
    if result is None or not result.history[unit]:
        rec.update(history=None, best_epoch=0, epochs_completed=0, unit=unit,
                   stopped_early=False, best_index=0, **{k: math.nan for k in _NAN_KEYS})
        return rec
    h = result.history
    train_err, train_stats = _evaluate(model, ds.x_train, ds.y_train, o["metric"])
    val_err, _ = _evaluate(model, ds.x_val, ds.y_val, o["metric"])
    test_err, test_stats = _evaluate(model, ds.x_test, ds.y_test, o["metric"])
    steps = [int(v) for v in h[unit]]
    best = int(result.best_epoch)
    rec.update(history={"step": [float(v) for v in steps],
                        **{k: [float(v) for v in h[k]] for k in
                           ("loss", "train_rel_err", "val_rel_err", "nfe")}},
               unit=unit, best_epoch=best, epochs_completed=int(result.epochs_completed),
               best_index=steps.index(best) if best in steps else len(steps) - 1,
               stopped_early=bool(result.stopped_early),
               stop_iteration=int(result.epochs_completed) if result.stopped_early else None,
               train_rel_err=train_err, val_rel_err=val_err, test_rel_err=test_err,
               train_eval_nfe=int(train_stats.nfe_forward),
               test_nfe=int(test_stats.nfe_forward),
               **({f"test_rel_err_{m}": _evaluate(model, ds.x_test, ds.y_test, m)[0]
                   for m in ("mean_ratio", "frobenius")} if item.get("both_metrics") else {}),
               test_steps_accepted=int(test_stats.n_accepted),
               test_steps_rejected=int(test_stats.n_rejected),
               training_nfe=int(h["nfe"][-1]), training_nfe_forward=int(h["nfe_forward"][-1]),
               training_nfe_backward=int(h["nfe_backward"][-1]),
               wall_time_s=float(result.wall_time), **weight_diagnostics(model))
    return rec


@dataclass
class Results:
    params: Params
    ds: object
    notes: list
    mean_pred_err: float
    epochs: int
    iters_per_epoch: int
    init_gap: float
    runs: dict          # basis name -> [per-seed record]

    def tag(self, preset: str) -> str:
        return f"preset '{preset}', {self.ds.name} data ({self.ds.source})"

    def ok(self, name: str) -> list:
        return [r for r in self.runs.get(name, []) if r["history"] is not None]

    def values(self, name: str, key: str) -> list:
        return [r[key] for r in self.ok(name)]


def run(params: Params) -> Results:
    p = params
    dev = resolve_device(p.device)
    ds, notes = _load(p.as_dict(), p.seeds[0], dev)
    n_train = ds.x_train.shape[0]
    epochs = max(1, math.ceil(p.iterations * p.batch_size / n_train))
    # The models share their initial network for a given seed.
    probe, preds = ds.x_train[:50], []
    for name in p.bases:
        seed_everything(p.seeds[0])
        with torch.no_grad():
            preds.append(build(p.as_dict(), ds, name).to(dev).eval()(probe))
    init_gap = max(float((q - preds[0]).abs().max()) for q in preds)
    units = [(name, s) for name in p.bases for s in p.seeds]
    out = parallel.map_units(train_unit, [{"params": p.as_dict(), "name": n, "seed": s}
                                          for n, s in units],
                             name=f"neural ODE {ds.name}",
                             labels=[f"{n} seed {s}" for n, s in units])
    runs = {name: [] for name in p.bases}
    for (name, _), rec in zip(units, out):
        runs[name].append(rec)
    return Results(p, ds, notes, mean_predictor_error(ds, p.resolved("metric")), epochs,
                   math.ceil(n_train / p.batch_size), init_gap, runs)


PAPER = {
    "node-nfe-legendre-vs-monomial": "Table 5 and Figure 6: the Legendre parameterisation "
                                     "needs fewer NFE than the monomial one (dopri5, rtol 1e-7, "
                                     "atol 1e-9)",
    "node-accuracy-legendre": "Table 5: Legendre test error equal to or lower than the monomial "
                              "and the time-invariant network's",
}


def claims(res: Results) -> list:
    p, name = res.params, res.ds.name
    have = lambda n: n in res.runs and bool(res.ok(n))
    learned = lambda n: rules.learned(res.values(n, "test_rel_err"), res.mean_pred_err)
    n_seeds = min([len(res.ok(n)) for n in p.bases] or [0])
    out = []
    if have("legendre") and have("monomial"):
        L = lambda k: res.values("legendre", k)
        M = lambda k: res.values("monomial", k)
        d = rules.fewer_nfe((L("training_nfe"), M("training_nfe")),
                            (L("test_nfe"), M("test_nfe")), n_seeds,
                            learned("legendre") and learned("monomial"))
        ours = (f"training NFE {pm(L('training_nfe'))} vs {pm(M('training_nfe'))}; test NFE "
                f"{pm(L('test_nfe'))} vs {pm(M('test_nfe'))} (Legendre vs monomial)")
        out.append(make_claim("node-nfe-legendre-vs-monomial", name,
                              "Neural-ODE surrogates: Legendre weights need fewer function "
                              "evaluations than monomial weights",
                              PAPER["node-nfe-legendre-vs-monomial"], ours, rules.fewer_nfe, d))
    others = [o for o in ("monomial", "constant") if have(o)]
    if have("legendre") and others:
        cells = [rules.Comparison(f"vs {p.models[o][2]}", res.values("legendre", "test_rel_err"),
                                  res.values(o, "test_rel_err"), learned("legendre"), learned(o))
                 for o in others]
        d = rules.no_worse_in_cells(cells, n_seeds)
        ours = (f"test error Legendre {pm(cells[0].ours)} vs "
                + ", ".join(f"{p.models[o][2]} {pm(c.other)}" for o, c in zip(others, cells)))
        out.append(make_claim("node-accuracy-legendre", name,
                              "Neural-ODE surrogates: Legendre accuracy is equal to or better "
                              "than that of monomial and time-invariant weights",
                              PAPER["node-accuracy-legendre"], ours, rules.no_worse_in_cells, d))
    return out


_SUMMARY_KEYS = _NAN_KEYS


def metrics(res: Results) -> dict:
    p = res.params
    models = {}
    for name in p.bases:
        b, deg, label = p.models[name]
        summ = {}
        for k in _SUMMARY_KEYS:
            m, s = rules.seed_stats(res.values(name, k))
            summ[k] = {"mean": m, "std": s}
        models[name] = {"label": label, "basis": b, "degree": deg,
                        "n_parameters": res.runs[name][0]["n_parameters"],
                        "n_runs_ok": len(res.ok(name)), "summary": summ,
                        "runs": res.runs[name]}
    iterations = (res.epochs * res.iters_per_epoch if p.resolved("sampling") == "epochs"
                  else p.iterations)
    return {"protocol": {"name": p.protocol, "options": p.options,
                         "epochs": res.epochs, "iterations_per_epoch": res.iters_per_epoch,
                         "iterations": iterations,
                         "n_train": res.ds.x_train.shape[0],
                         "gradients": "adjoint" if p.adjoint else "backpropagation through dopri5"},
            "init_prediction_gap": res.init_gap,
            "mean_predictor_test_rel_err": res.mean_pred_err, "models": models}


def table(res: Results) -> Table:
    """Table 5: parameters, errors on the three splits, test and training NFE."""
    p = res.params
    rows = [[p.models[n][2], res.runs[n][0]["n_parameters"]]
            + [pm(res.values(n, k)) for k in ("train_rel_err", "val_rel_err", "test_rel_err",
                                              "test_nfe", "training_nfe")]
            for n in p.bases]
    failed = [f"{p.models[n][2]}: {len(res.runs[n]) - len(res.ok(n))}" for n in p.bases
              if len(res.ok(n)) < len(res.runs[n])]
    cap = "runs without a result (excluded): " + ", ".join(failed) if failed else ""
    return Table(["model", "parameters", "training error", "validation error", "test error",
                  "test NFE", "training NFE"], rows, caption=cap)


def work_table(res: Results) -> Table:
    """Training NFE split into forward and backward solves, and wall time per run."""
    rows = []
    for n in res.params.bases:
        nfe = rules.seed_stats(res.values(n, "training_nfe"))[0]
        wall = rules.seed_stats(res.values(n, "wall_time_s"))[0]
        rows.append([res.params.models[n][2], pm(res.values(n, "training_nfe_forward")),
                     pm(res.values(n, "training_nfe_backward")), f"{wall:.1f}",
                     f"{1e3 * wall / nfe:.2f}" if nfe else "n/a"])
    return Table(["model", "forward NFE", "backward NFE", "wall time per run (s)",
                  "ms per training NFE"], rows)


def dynamics_table(res: Results) -> Table:
    """Time variation and Lipschitz bound of the learned dynamics, with the test NFE."""
    rows = [[res.params.models[n][2]] + [pm(res.values(n, k)) for k in
                                          ("time_variation", "lipschitz", "test_nfe")]
            for n in res.params.bases]
    return Table(["model", "time variation", "Lipschitz bound", "test NFE"], rows)


def loss_figure(res: Results, tag: str):
    """Figure 6: loss and validation error against cumulative NFE; NFE per iteration."""
    import matplotlib.pyplot as plt

    p = res.params
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for name in p.bases:
        color = COLORS[name]
        for k, r in enumerate(res.ok(name)):
            h, label = r["history"], p.models[name][2] if k == 0 else None
            nfe = np.concatenate([[0], h["nfe"]])
            kw = dict(color=color, marker="o", ms=3, lw=1.5, alpha=0.85, label=label)
            axes[0].semilogy(nfe, np.concatenate([[r["initial_loss"]], h["loss"]]), **kw)
            axes[1].semilogy(nfe, np.concatenate([[r["initial_val_rel_err"]], h["val_rel_err"]]),
                             **kw)
            axes[1].semilogy(h["nfe"][r["best_index"]], h["val_rel_err"][r["best_index"]],
                             color=color, marker="*", ms=12, ls="none")
            per_iter = np.asarray(r["iteration_nfe"], dtype=float)
            window = max(1, min(len(per_iter) // 20, res.iters_per_epoch))
            if len(per_iter) >= window:
                smooth = np.convolve(per_iter, np.ones(window) / window, mode="valid")
                axes[2].plot(np.arange(window, len(per_iter) + 1), smooth, color=color, lw=1.5,
                             alpha=0.85, label=label)
    for ax, (xl, yl) in zip(axes, (("cumulative training NFE", "training loss (mean between checks)"),
                                   ("cumulative training NFE", "validation relative error"),
                                   ("training iteration", "NFE per iteration (running mean)"))):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[:2]:
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0), useMathText=True)
        from .plots import tidy_log_axis
        tidy_log_axis(ax)
    axes[0].legend(fontsize=9)
    fig.suptitle(f"Neural-ODE surrogates: loss against function evaluations ({tag}; dopri5 rtol "
                 f"{p.rtol:g}, atol {p.atol:g}; {len(p.seeds)} seed(s))", fontsize=11)
    fig.tight_layout()
    return fig


def record(res: Results, *, run_name: str, preset: str, claims_list, t_start: float):
    return finish(run=run_name, notebook="04_neural_ode_surrogates",
                  title=f"Neural-ODE surrogates: {res.ds.name}", preset=preset,
                  data=[data_source(res.ds)], parameters=res.params.as_dict(),
                  metrics=metrics(res), claims=claims_list, t_start=t_start,
                  device=res.params.device)


def option_effect(base: Params, variants: dict, *, name: str = "legendre",
                  metrics_of: tuple = ("test_rel_err", "training_nfe", "test_nfe")) -> dict:
    """The effect of protocol options: the same runs with each set of options.

    Args:
        base: the parameters shared by every variant (data, budget, seeds, tolerances).
        variants: ``{label: {option: value, ...}}``; each label is one way of running.
        name: the model trained (a key of ``Params.models``).
        metrics_of: record keys summarised.

    Returns:
        ``{label: {key: {"mean", "std", "values"}, "options": resolved options}}``, each
        variant trained once per seed of ``base`` (units through
        :func:`ctdnn.parallel.map_units`). With ``"test_rel_err_frobenius"`` and
        ``"test_rel_err_mean_ratio"`` among ``metrics_of`` the trained models' test errors
        are also given under both metrics.
    """
    items, labels = [], []
    for label, overrides in variants.items():
        p = Params(**{**base.as_dict(), **overrides, "bases": [name]})
        for seed in p.seeds:
            items.append({"params": p.as_dict(), "name": name, "seed": seed,
                          "both_metrics": True})
            labels.append((label, seed))
    out = parallel.map_units(train_unit, items, name="protocol options",
                             labels=[f"{lab} seed {s}" for lab, s in labels])
    result = {}
    for label, overrides in variants.items():
        recs = [r for (lab, _), r in zip(labels, out) if lab == label]
        entry = {"options": Params(**{**base.as_dict(), **overrides}).options}
        for key in metrics_of:
            vals = [float(r.get(key, math.nan)) for r in recs]
            m, s = rules.seed_stats(vals)
            entry[key] = {"mean": m, "std": s, "values": vals}
        result[label] = entry
    return result
