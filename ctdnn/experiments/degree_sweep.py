"""Degree sweep of the Legendre weights (the paper's Table 3, Figures 4-5).

``run(Params(dataset="DCR", epochs=400, seeds=[0, 1]))`` trains, per architecture, one
batched ensemble of every Legendre degree, the per-step baseline and every seed (the unit is
:func:`ctdnn.experiments.dto.train_unit`); ``claims(results)`` applies the rules.
``metrics(results)``: ``protocol``, ``train_time_s``, ``n_time_parameters``,
``mean_predictor_test_rel_err`` and ``models`` (per architecture and model: mean/std of the
errors, the change of the training error against the baseline, per-seed runs). The
protocol and its options are those of :mod:`ctdnn.experiments.dto` (``protocol="authors"``,
``init``, ``tikhonov``, ``warm_start_alpha``, ``degree_semantics``, ``weight_times``); the
record's ``protocol`` holds their ``name`` and resolved ``options``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import parallel
from ..training import resolve_device
from . import rules
from .common import (Table, data_source, finish, load_data, mean_predictor_error,
                     pm, thinned)
from .dto import ARCHS, ProtocolParams, train_unit
from .plots import seed_curves, tidy_log_axis
from .schema import make_claim

__all__ = ["Params", "Results", "run", "claims", "metrics", "table", "curves_figure",
           "parameters_figure", "record"]

_KEYS = ("train_rel_err", "val_rel_err", "test_rel_err", "best_epoch")


@dataclass
class Params(ProtocolParams):
    """Every setting of the experiment; defaults are the seconds-long smoke run."""

    dataset: str = "ELM"
    data_source: str = "auto"
    n_samples: int | None = None
    split_seed: int = 0
    architectures: list = field(default_factory=lambda: ["resnet", "hamiltonian"])
    degrees: list = field(default_factory=lambda: [3, 4, 5, 6])
    T: float = 1.0
    seeds: list = field(default_factory=lambda: [0])
    epochs: int = 4
    batch_size: int = 32
    lr: float = 1e-3
    alpha_theta: float = 1e-5
    alpha_W: float = 1e-3
    warm_start: bool = True
    width: int = 15
    n_steps: int = 12
    torch_threads: int = 1
    device: str = "auto"

    def __post_init__(self):
        unknown = [a for a in self.architectures if a not in ARCHS]
        if unknown:
            raise ValueError(f"unknown entries {unknown} in architectures; choose from "
                             f"{list(ARCHS)}")
        self.degrees = sorted(int(d) for d in self.degrees)
        if not self.degrees:
            raise ValueError("degrees must name at least one Legendre degree, e.g. [3, 4, 5, 6]")
        self.seeds = [int(s) for s in self.seeds]
        self.T = float(self.T)
        self._check_protocol(self.degrees)

    @property
    def models(self) -> dict:
        """``{name: (basis, degree, label)}``: Legendre of each degree, then the baseline
        (``degree`` as given, read with the run's ``degree_semantics``)."""
        functions = self.resolved("degree_semantics") == "functions"
        out = {f"legendre{d}": ("legendre", d, f"Legendre, {d} functions" if functions
                                else f"Legendre d={d}") for d in self.degrees}
        out["none"] = ("none", 0, "none (per step)")
        return out


@dataclass
class Results:
    params: Params
    ds: object
    notes: list
    mean_pred_err: float
    n_theta: dict                 # model name -> weight coefficients of the flow
    runs: dict                    # arch -> model name -> [per-seed record]
    train_time: dict

    def tag(self, preset: str) -> str:
        return f"preset '{preset}', {self.ds.name} data ({self.ds.source})"

    def values(self, arch: str, name: str, key: str) -> list:
        return [r[key] for r in self.runs[arch][name]]

    def change(self, arch: str, name: str, key: str = "train_rel_err") -> float:
        """Percent change of the mean error relative to the baseline's."""
        base = rules.seed_stats(self.values(arch, "none", key))[0]
        return 100.0 * (rules.seed_stats(self.values(arch, name, key))[0] - base) / base


def run(params: Params) -> Results:
    p = params
    dev = resolve_device(p.device)
    ds, notes = load_data(p.dataset, source=p.data_source, seed=p.split_seed,
                          n_samples=p.n_samples, device=dev)
    models = p.models
    specs = [(p.T, b, d, s) for b, d, _ in models.values() for s in p.seeds]
    items = [{"params": {**p.as_dict(), "spike_rise": 0.05, "tail_fraction": 0.2},
              "arch": a, "specs": specs} for a in p.architectures]
    out = parallel.map_units(train_unit, items, name=f"degree sweep {ds.name}",
                             labels=list(p.architectures))
    by_spec = {(b, d): name for name, (b, d, _) in models.items()}
    runs, train_time, n_theta = {}, {}, {}
    for arch, unit in zip(p.architectures, out):
        train_time[arch] = unit["seconds"]
        runs[arch] = {name: [] for name in models}
        for rec in unit["records"]:
            _, b, d, _ = rec.pop("spec")
            for k in ("spikes", "tail_jitter"):
                rec.pop(k, None)
            runs[arch][by_spec[(b, int(d))]].append(rec)
        n_theta = {name: unit["n_time_parameters"][f"{b}:{d}"]
                   for name, (b, d, _) in models.items()}
    return Results(p, ds, notes, mean_predictor_error(ds), n_theta, runs, train_time)


PAPER = {
    "degree-sweep-vs-baseline": "Table 3 (DCR, Hamiltonian network, T = 1): the Legendre "
                                "parameterisations do not lose accuracy relative to the "
                                "unconstrained baseline while using fewer parameters",
    "degree-sweep-trend": "Table 3 and Figures 4-5: accuracy is maintained or improved as the "
                          "degree grows",
}


def claims(res: Results) -> list:
    p, name = res.params, res.ds.name
    legendre = [n for n in p.models if n != "none"]
    learned = lambda a, n: rules.learned(res.values(a, n, "test_rel_err"), res.mean_pred_err)
    comp = lambda a, n, ref, lab: rules.Comparison(
        lab, res.values(a, n, "train_rel_err"), res.values(a, ref, "train_rel_err"),
        learned(a, n), learned(a, ref))
    cells = [comp(a, n, "none", f"{ARCHS[a][1]} {p.models[n][2]}")
             for a in p.architectures for n in legendre]
    d = rules.no_worse_in_cells(cells, len(p.seeds))
    ours = "; ".join(f"{ARCHS[a][1]}: " + ", ".join(f"d={p.models[n][1]} {res.change(a, n):+.3g}%"
                                                   for n in legendre)
                     for a in p.architectures)
    out = [make_claim(
        "degree-sweep-vs-baseline", name,
        f"Degree sweep (T = {p.T:g}): Legendre weights of degree {p.degrees[0]} to "
        f"{p.degrees[-1]} are as accurate as the unconstrained per-step weights with far fewer "
        "weight coefficients", PAPER["degree-sweep-vs-baseline"],
        "training error vs baseline: " + ours, rules.no_worse_in_cells, d,
        "; ".join(f"{c.label}: {pm(c.ours)} vs {pm(c.other)}" for c in cells))]
    lo, hi = legendre[0], legendre[-1]
    if lo != hi:
        cells = [comp(a, hi, lo, ARCHS[a][1]) for a in p.architectures]
        d = rules.degree_trend(cells, len(p.seeds))
        ours = "; ".join(f"{c.label}: d={p.models[lo][1]} {pm(c.other)} -> d={p.models[hi][1]} "
                         f"{pm(c.ours)}" for c in cells)
        out.append(make_claim(
            "degree-sweep-trend", name,
            f"Degree sweep (T = {p.T:g}): raising the Legendre degree from {p.degrees[0]} to "
            f"{p.degrees[-1]} does not degrade accuracy", PAPER["degree-sweep-trend"],
            "training error " + ours, rules.degree_trend, d))
    return out


def metrics(res: Results) -> dict:
    p = res.params

    def ms(values):
        m, s = rules.seed_stats(values)
        return {"mean": m, "std": s}

    models = []
    for a in p.architectures:
        for n, (b, d, label) in p.models.items():
            recs = res.runs[a][n]
            models.append({"architecture": a, "basis": b, "degree": None if b == "none" else d,
                           "label": label, "n_time_parameters": res.n_theta[n],
                           "n_diverged": sum(r["status"] == "diverged" for r in recs),
                           "train_change_vs_baseline_pct": (None if n == "none"
                                                            else res.change(a, n)),
                           **{k: ms(res.values(a, n, k)) for k in _KEYS},
                           "runs": [{**r, "history": thinned(r["history"])} for r in recs]})
    n_train, n_val, n_test = res.ds.sizes
    return {"protocol": {"epochs": p.epochs, "batch_size": p.batch_size, "lr": p.lr,
                         "optimizer": "adam", "T": p.T, "n_train": n_train, "n_val": n_val,
                         "n_test": n_test, "name": p.protocol, "options": p.options},
            "train_time_s": res.train_time,
            "n_time_parameters": {p.models[n][2]: v for n, v in res.n_theta.items()},
            "mean_predictor_test_rel_err": res.mean_pred_err, "models": models}


def table(res: Results, arch: str) -> Table:
    """Table 3 for one architecture: errors, change against the baseline, coefficients."""
    p = res.params
    rows = []
    for n in ["none", *[n for n in p.models if n != "none"]]:
        div = any(r["status"] == "diverged" for r in res.runs[arch][n])
        rows.append([p.models[n][2] + (" (div)" if div else ""), res.n_theta[n],
                     pm(res.values(arch, n, "train_rel_err")),
                     "-" if n == "none" else f"{res.change(arch, n):+.3g}%",
                     pm(res.values(arch, n, "val_rel_err")),
                     pm(res.values(arch, n, "test_rel_err"))])
    return Table(["weights", "theta coefficients", "training error", "vs none",
                  "validation error", "test error"], rows,
                 caption=f"{ARCHS[arch][1]} network, T = {p.T:g}")


def curves_figure(res: Results, tag: str):
    """Training and validation curves per architecture, one colour per degree."""
    import matplotlib.pyplot as plt

    p = res.params
    cmap = plt.get_cmap("viridis")
    colors = {f"legendre{d}": cmap(0.9 * i / max(1, len(p.degrees) - 1))
              for i, d in enumerate(p.degrees)}
    colors["none"] = "tab:red"
    fig, axes = plt.subplots(2, len(p.architectures), figsize=(6.0 * len(p.architectures), 7.2),
                             sharex=True, squeeze=False)
    for j, a in enumerate(p.architectures):
        for n in p.models:
            recs = [r for r in res.runs[a][n] if r["history"]["epoch"]]
            if not recs:
                continue
            m = min(len(r["history"]["epoch"]) for r in recs)
            for i, key in enumerate(("train_rel_err", "val_rel_err")):
                seed_curves(axes[i, j], recs[0]["history"]["epoch"][:m],
                            [r["history"][key][:m] for r in recs], color=colors[n],
                            label=p.models[n][2], ls="--" if n == "none" else "-", lw=1.6)
        axes[0, j].set_title(f"{ARCHS[a][1]} network, T = {p.T:g}")
        axes[1, j].set_xlabel("epoch")
    axes[0, 0].set_ylabel("training relative error")
    axes[1, 0].set_ylabel("validation relative error")
    for ax in axes.flat:
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, which="both", alpha=0.3)
        tidy_log_axis(ax)
    axes[0, 0].legend(fontsize=9)
    fig.suptitle(f"Legendre degree sweep: training and validation curves\n({tag}; "
                 f"{len(p.seeds)} seed(s), {p.epochs} epochs)", fontsize=11)
    fig.tight_layout()
    return fig


def parameters_figure(res: Results, tag: str):
    """Errors against the number of weight coefficients (the baseline rightmost)."""
    import matplotlib.pyplot as plt

    p = res.params
    order = [n for n in p.models if n != "none"] + ["none"]
    xs = [res.n_theta[n] for n in order]
    fig, axes = plt.subplots(1, len(p.architectures), figsize=(5.4 * len(p.architectures), 4.2),
                             squeeze=False)
    for ax, a in zip(axes[0], p.architectures):
        for key, label, color in (("train_rel_err", "training", "tab:blue"),
                                  ("test_rel_err", "test", "tab:green")):
            st = [rules.seed_stats(res.values(a, n, key)) for n in order]
            m, s = [v[0] for v in st], [v[1] for v in st]
            ax.errorbar(xs[:-1], m[:-1], yerr=s[:-1], color=color, marker="o", capsize=3,
                        lw=1.5, label=f"{label}, Legendre d={p.degrees[0]}..{p.degrees[-1]}")
            ax.errorbar(xs[-1:], m[-1:], yerr=s[-1:], color=color, marker="s", ms=8, capsize=3,
                        ls="none", mfc="white", label=f"{label}, none (per step)")
        ax.set_yscale("log")
        ax.set_xlabel("weight coefficients of the flow")
        ax.set_ylabel("relative error")
        ax.set_title(f"{ARCHS[a][1]} network, T = {p.T:g}")
        ax.grid(True, which="both", alpha=0.3)
        tidy_log_axis(ax)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(f"Error against the number of weight coefficients ({tag}; {len(p.seeds)} "
                 f"seed(s), {p.epochs} epochs)", fontsize=11)
    fig.tight_layout()
    return fig


def record(res: Results, *, run_name: str, preset: str, claims_list, t_start: float):
    return finish(run=run_name, notebook="03_degree_sweep", title=f"Degree sweep: {res.ds.name}",
                  preset=preset, data=[data_source(res.ds)], parameters=res.params.as_dict(),
                  metrics=metrics(res), claims=claims_list, t_start=t_start,
                  device=res.params.device)
