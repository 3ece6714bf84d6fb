"""The data page: the three data sets as every experiment loads them, their provenance,
splits and normalisation, and a few samples of each.

``run(Params())`` loads ELM, CDR and DCR and computes the checks the page reports; the prose
that depends on the data (exact-zero outputs of ELM, how the CDR weights are distributed) is
generated from the loaded data by :func:`elm_outputs_note` and :func:`cdr_inputs_note`, so it
always describes the data actually shown. ``metrics(results)``: per data set its source,
sizes, normalisation and load time; ``CDR.input_ks_distance``; ``ELM.zero_outputs``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import scipy.stats
import torch

from .common import ParamsBase, Table, data_source, finish, load_data

__all__ = ["Params", "Results", "run", "metrics", "record", "NAMES", "provenance_markdown",
           "size_table", "ranges_table", "elm_outputs_note", "cdr_inputs_note",
           "elm_inputs_figure", "elm_outputs_figure", "cdr_figure", "dcr_samples_figure",
           "dcr_settings_table", "dcr_anomaly_figure"]

NAMES = ("ELM", "CDR", "DCR")
SPLITS = ("train", "val", "test")


@dataclass
class Params(ParamsBase):
    data_source: str = "auto"
    seed: int = 0
    n_samples_elm: int | None = None
    n_samples_cdr: int | None = None
    n_samples_dcr: int | None = 700
    n_show: int = 3
    device: str = "auto"


@dataclass
class Results:
    params: Params
    datasets: dict
    notes: dict
    load_times: dict
    parts: dict = field(default_factory=dict)      # name -> split -> (x raw, y raw)
    ks: dict = field(default_factory=dict)
    elm_zero: dict = field(default_factory=dict)

    def tag(self, name: str, preset: str) -> str:
        return f"{self.datasets[name].source} data, preset '{preset}'"


def _raw_parts(d) -> dict:
    return {s: (d.denormalize_x(getattr(d, f"x_{s}")).numpy(),
                d.denormalize_y(getattr(d, f"y_{s}")).numpy()) for s in SPLITS}


def run(params: Params) -> Results:
    p = params
    n = {"ELM": p.n_samples_elm, "CDR": p.n_samples_cdr, "DCR": p.n_samples_dcr}
    datasets, notes, times = {}, {}, {}
    for name in NAMES:
        t0 = time.perf_counter()
        datasets[name], notes[name] = load_data(name, source=p.data_source, seed=p.seed,
                                                n_samples=n[name], dtype=torch.float64)
        times[name] = time.perf_counter() - t0
    res = Results(p, datasets, notes, times, {k: _raw_parts(d) for k, d in datasets.items()})
    # ELM: outputs exactly zero, per output and per sample.
    y = np.concatenate([res.parts["ELM"][s][1] for s in SPLITS])
    zeros = y == 0.0
    res.elm_zero = {"fraction_per_output": zeros.mean(axis=0).tolist(),
                    "samples_by_count": np.bincount(zeros.sum(axis=1),
                                                    minlength=y.shape[1] + 1).tolist()}
    # CDR: distances of the pooled weights to two candidate input distributions.
    w = res.parts["CDR"]["train"][0]
    u = np.random.default_rng(p.seed).random((20000, w.shape[1]))
    res.normalised_uniform = (u / u.sum(axis=1, keepdims=True)).ravel()
    K = w.shape[1]
    res.ks = {"flat Dirichlet, Beta(1, 54) marginal":
              float(scipy.stats.kstest(w.ravel(), scipy.stats.beta(1.0, K - 1.0).cdf).statistic),
              "normalised uniforms u / sum(u)":
              float(scipy.stats.ks_2samp(w.ravel(), res.normalised_uniform).statistic)}
    return res


def provenance_markdown(res: Results) -> str:
    """One bullet per data set: the paper's file and its digest, or the simulator."""
    lines = []
    for name, d in res.datasets.items():
        src = data_source(d)
        if src.source == "paper":
            published = src.extra.get("found_in", "")
            lines.append(f"* **{name}**: paper file `{src.filename}` (found in {published}), "
                         f"sha256 `{src.sha256}`.")
        else:
            how = ("read from the cache" if d.meta["simulator"]["cache_hit"]
                   else f"simulated now in {res.load_times[name]:.1f} s")
            lines.append(f"* **{name}**: {src.description}, {how}; reason: {src.extra['reason']}.")
    return "\n".join(lines)


def size_table(res: Results) -> Table:
    rows = []
    for name, d in res.datasets.items():
        tr, va, te = d.sizes
        rows.append([name, d.n_in, d.n_out, tr + va + te, tr, va, te,
                     d.meta["normalization"]["mode"]])
    return Table(["set", "inputs", "outputs", "samples", "train", "val", "test",
                  "normalisation"], rows)


def ranges_table(res: Results) -> Table:
    rows = []
    for name, d in res.datasets.items():
        for s in SPLITS:
            x, y = getattr(d, f"x_{s}"), getattr(d, f"y_{s}")
            rows.append([name, s, f"[{x.min():.3g}, {x.max():.3g}]",
                         f"[{y.min():.3g}, {y.max():.3g}]"])
    return Table(["set", "split", "normalised x", "normalised y"], rows)


def elm_outputs_note(res: Results) -> str:
    """What the ELM outputs show about exact zeros, written from the counts of this data."""
    counts = res.elm_zero["samples_by_count"]
    n_any = sum(counts[1:])
    if n_any == 0:
        return ("None of these ELM outputs is exactly zero (every count above is 0): the "
                "outputs are smooth functions of the parameters and min-max scaling maps them "
                "into $[0, 1]$ without a pile-up at the boundary.")
    frac = res.elm_zero["fraction_per_output"]
    top = int(np.argmax(frac))
    most = max(k for k, c in enumerate(counts) if c)
    return (f"{n_any} of {sum(counts)} samples have at least one output exactly zero; output "
            f"#{top + 1} is zero in {100 * frac[top]:.0f}% of all samples, and {counts[most]} "
            f"sample(s) have {most} of the {len(frac)} outputs at zero. After min-max scaling "
            "these values all sit at 0, and a smooth surrogate has to fit the kink between them "
            "and the rest of the distribution.")


def cdr_inputs_note(res: Results) -> str:
    """How the CDR weights of this run are distributed, from the KS distances and the source."""
    d = res.datasets["CDR"]
    closer = min(res.ks, key=res.ks.get)
    what = ("the simulator's draws" if d.source == "simulated"
            else "the weights of the paper's file")
    distances = ", ".join(f"{k} {v:.3f}" for k, v in res.ks.items())
    text = f"Kolmogorov-Smirnov distances: {distances}; {what} are closer to **{closer}**."
    if d.source == "simulated":
        dist = d.meta["simulator"]["settings"].get("input_distribution", "not recorded")
        text += (f" The simulator's setting `input_distribution` is `{dist}`, chosen to match "
                 "the paper's file, whose weights are nearly flat up to about 0.03.")
    return text


def _split_histogram(ax, parts, column, which):
    values = np.concatenate([parts[s][which][:, column] for s in parts])
    bins = np.linspace(values.min(), values.max(), 26)
    ax.hist(parts["train"][which][:, column], bins=bins, density=True, color="tab:blue",
            alpha=0.45, label="train")
    for s, color in (("val", "tab:orange"), ("test", "tab:green")):
        ax.hist(parts[s][which][:, column], bins=bins, density=True, histtype="step", lw=1.8,
                color=color, label=s)


def _elm_labels(d):
    if d.source == "simulated":
        from ..data.dalec import DALEC_OUTPUTS, DALEC_PARAMETERS
        return ([f"#{k + 1} {q[0]} ({q[2]})" for k, q in enumerate(DALEC_PARAMETERS)],
                [f"{q[0]} ({q[1]})" for q in DALEC_OUTPUTS])
    xs = [f"parameter #{k + 1}" for k in range(d.n_in)]
    xs[11] = "#12 maint. resp. base rate br_mr"
    xs[14] = "#15 Vcmax activation energy (J/mol)"
    return xs, [f"output #{k + 1} (units not given)" for k in range(d.n_out)]


def _histogram_style(ax, title):
    from matplotlib.ticker import FormatStrFormatter

    ax.set_title(title, fontsize=9)
    ax.set_xlabel("raw value")
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))


def elm_inputs_figure(res: Results, preset: str, shown=(0, 6, 9, 11, 14)):
    import matplotlib.pyplot as plt

    d = res.datasets["ELM"]
    names, _ = _elm_labels(d)
    lo, hi = d.x_map.shift - d.x_map.scale, d.x_map.shift + d.x_map.scale
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.3))
    for ax, k in zip(axes, shown):
        _split_histogram(ax, res.parts["ELM"], k, 0)
        ax.axvline(lo[k], color="0.3", ls="--", lw=1)
        ax.axvline(hi[k], color="0.3", ls="--", lw=1)
        _histogram_style(ax, names[k])
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7, loc="lower center")
    fig.suptitle(f"ELM inputs: raw values and parameter ranges (dashed), {len(shown)} of "
                 f"{d.n_in} ({res.tag('ELM', preset)})", fontsize=10)
    fig.tight_layout()
    return fig


def elm_outputs_figure(res: Results, preset: str):
    import matplotlib.pyplot as plt

    d = res.datasets["ELM"]
    _, names = _elm_labels(d)
    fig, axes = plt.subplots(2, 5, figsize=(16, 6))
    for k, ax in enumerate(axes.ravel()):
        _split_histogram(ax, res.parts["ELM"], k, 1)
        _histogram_style(ax, names[k])
    for ax in axes[:, 0]:
        ax.set_ylabel("density")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"ELM outputs: raw values of all ten outputs by split "
                 f"({res.tag('ELM', preset)})", fontsize=10)
    fig.tight_layout()
    return fig


def elm_range_check(res: Results) -> bool:
    """Every ELM input inside its parameter range (to 1e-12 relative)."""
    d = res.datasets["ELM"]
    shift, scale = np.asarray(d.x_map.shift), np.asarray(d.x_map.scale)
    lo, hi = shift - scale, shift + scale
    x = np.concatenate([res.parts["ELM"][s][0] for s in SPLITS])
    return bool(np.all((x >= lo - 1e-12 * np.abs(lo)) & (x <= hi + 1e-12 * np.abs(hi))))


def cdr_figure(res: Results, preset: str):
    import matplotlib.pyplot as plt

    d, n_show = res.datasets["CDR"], res.params.n_show
    w, y = res.parts["CDR"]["train"]
    K = w.shape[1]
    if d.source == "simulated":
        s = d.meta["simulator"]["settings"]
        obs_t, t_label = s["final_time"] * np.arange(1, s["n_obs"] + 1) / s["n_obs"], "time $t$"
    else:
        obs_t, t_label = np.arange(1, 13), "observation index (times not documented)"
    n_sensors, n_times = 6, d.n_out // 6
    fig = plt.figure(figsize=(15, 7.5))
    grid = fig.add_gridspec(2, n_show)
    ax_w, ax_h = fig.add_subplot(grid[0, : n_show - 1]), fig.add_subplot(grid[0, n_show - 1])
    width = 0.8 / n_show
    for i in range(n_show):
        ax_w.bar(np.arange(1, K + 1) + (i - (n_show - 1) / 2) * width, w[i], width=width,
                 label=f"training sample {i + 1}")
    ax_w.axhline(1.0 / K, color="0.3", ls="--", lw=1, label=f"1/{K} (the mean)")
    ax_w.set(xlabel="reaction index k", ylabel="weight $y_k$", xlim=(0, K + 1))
    ax_w.legend(fontsize=8, ncol=n_show + 1, loc="upper right")
    ax_w.set_title("inputs: reaction weights of a few samples (each vector sums to 1)", fontsize=10)
    bins = np.linspace(0.0, max(w.max(), 0.08), 40)
    ax_h.hist(w.ravel(), bins=bins, density=True, color="tab:blue", alpha=0.5, label="data (train)")
    grid_y = np.linspace(1e-4, bins[-1], 300)
    ax_h.plot(grid_y, scipy.stats.beta(1.0, K - 1.0).pdf(grid_y), color="tab:red", lw=2,
              label=f"flat Dirichlet: Beta(1, {K - 1})")
    ax_h.hist(res.normalised_uniform, bins=bins, density=True, histtype="step", color="black",
              lw=1.8, label="normalised uniforms")
    ax_h.set(xlabel="weight $y_k$ (all k pooled)", ylabel="density")
    ax_h.legend(fontsize=8)
    ax_h.set_title("distribution of the weights", fontsize=10)
    colors = plt.cm.tab10(np.arange(n_sensors))
    for i in range(n_show):
        ax = fig.add_subplot(grid[1, i])
        curves = y[i].reshape(n_times, n_sensors)
        for j in range(n_sensors):
            ax.plot(obs_t, curves[:, j], marker="o", ms=3, color=colors[j], label=f"sensor {j + 1}")
        ax.set(xlabel=t_label, ylabel="observed state $u$")
        ax.set_title(f"outputs of training sample {i + 1}", fontsize=10)
        if i == 0:
            ax.legend(fontsize=7, ncol=2)
    fig.suptitle(f"CDR: inputs on the simplex and outputs as 6 sensors x 12 times "
                 f"({res.tag('CDR', preset)})", fontsize=11)
    fig.tight_layout()
    return fig


_SYMBOLS = {"log_sigma_background": "$m_0$", "log_contrast": r"$\Delta$", "anomaly_depth": "$z_a$"}


def _dcr_context(res: Results):
    d = res.datasets["DCR"]
    x, y = res.parts["DCR"]["train"]
    c = x[:, 1]
    picked = [int(np.argmin(c)), int(np.argmin(np.abs(c))), int(np.argmax(c))][:res.params.n_show]
    ctx = {"x": x, "y": y, "picked": picked, "n_src": 2,
           "n_grid": int(round(np.sqrt(d.n_out // 2))), "simulated": d.source == "simulated"}
    if ctx["simulated"]:
        from ..data import dcr as sim
        s = d.meta["simulator"]["settings"]
        ctx.update(sim=sim, s=s, mesh=sim.dcr_mesh(s["n_cells"], s["domain_length"]),
                   names=sim.PARAMETER_NAMES, extent=s["receiver_extent"])
        ctx["models"] = sim.log_conductivity(x[picked], ctx["mesh"].cell_centers,
                                             anomaly_x=s["anomaly_x"],
                                             anomaly_radius=s["anomaly_radius"])
    else:
        ctx.update(names=("parameter 1", "parameter 2", "parameter 3"), extent=(0.0, 1.0))
    return ctx


def _params_text(ctx, i):
    return ", ".join(f"{_SYMBOLS.get(n, n)} = {v:.2f}" for n, v in zip(ctx["names"], ctx["x"][i]))


def dcr_samples_figure(res: Results, preset: str):
    """Conductivity models (simulated data) and receiver potentials of three samples."""
    import matplotlib.pyplot as plt

    c = _dcr_context(res)
    lo, hi = c["extent"]
    rows = c["n_src"] + (1 if c["simulated"] else 0)
    fig, axes = plt.subplots(rows, len(c["picked"]), figsize=(4.6 * len(c["picked"]), 3.9 * rows),
                             squeeze=False)
    for col, i in enumerate(c["picked"]):
        params = _params_text(c, i)
        if c["simulated"]:
            s, L, ax = c["s"], c["s"]["domain_length"], axes[0, col]
            m = c["models"][col].reshape(s["n_cells"], s["n_cells"])   # rows: z, columns: x
            im = ax.imshow(m, origin="upper", extent=[0, L, L, 0], cmap="viridis",
                           vmin=c["models"].min(), vmax=c["models"].max())
            fig.colorbar(im, ax=ax, label=r"log-conductivity $m = \log\sigma$")
            ax.add_patch(plt.Rectangle((lo, lo), hi - lo, hi - lo, fill=False, ec="white",
                                       ls="--", lw=1.2))
            for k, (a, b) in enumerate(np.asarray(s["electrodes"])):
                ax.plot(*a, marker="+", color="red", ms=11, mew=2.5)
                ax.plot(*b, marker="_", color="red", ms=11, mew=2.5)
                ax.annotate(f"{k + 1}", a, textcoords="offset points", xytext=(5, 5),
                            color="red", fontsize=9)
            ax.set(title=params, xlabel="x (dimensionless)", ylabel="depth z (dimensionless)")
        for src in range(c["n_src"]):
            ax = axes[rows - c["n_src"] + src, col]
            n2 = c["n_grid"] ** 2
            image = c["y"][i, src * n2:(src + 1) * n2].reshape(c["n_grid"], c["n_grid"])
            vmax = np.abs(image).max()
            im = ax.imshow(image, origin="upper", extent=[lo, hi, hi, lo], cmap="RdBu_r",
                           vmin=-vmax, vmax=vmax)
            fig.colorbar(im, ax=ax, label="potential u (zero mean)")
            ax.set_title(f"source {src + 1}" + ("" if c["simulated"] else f"; {params}"),
                         fontsize=10)
            ax.set(xlabel="receiver x" + ("" if c["simulated"] else " (layout assumed)"),
                   ylabel="receiver depth z")
    what = ("conductivity models (top; + and - mark the current electrodes, dashed: receiver "
            "area)\nand receiver potentials per source" if c["simulated"] else
            f"outputs reshaped as 2 x {c['n_grid']} x {c['n_grid']} receiver images "
            "(layout assumed)")
    fig.suptitle(f"DCR: {what} ({res.tag('DCR', preset)})", fontsize=11)
    fig.tight_layout()
    return fig


def dcr_settings_table(res: Results) -> Table | None:
    """The simulator's settings and the fitted slope of log max|u| against m0 (None for the
    paper's file, whose parameterisation is not documented)."""
    d = res.datasets["DCR"]
    if d.source != "simulated":
        return None
    s = d.meta["simulator"]["settings"]
    keys = ("n_cells", "domain_length", "receiver_grid", "receiver_extent", "electrodes",
            "current", "anomaly_x", "anomaly_radius", "log_sigma_background_range",
            "log_contrast_range", "anomaly_depth_range")
    x, y = res.parts["DCR"]["train"]
    slope = np.polyfit(x[:, 0], np.log(np.abs(y).max(axis=1)), 1)[0]
    rows = [[k, s.get(k)] for k in keys] + [
        ["slope of log(max |u|) against m0", f"{slope:.2f} (the background acts as exp(-m0))"]]
    return Table(["setting", "value"], rows)


def dcr_anomaly_figure(res: Results, preset: str):
    """The potential of the anomaly alone, ``u - u0``, recomputed with the simulator's solver.

    Returns ``(figure, largest relative difference between recomputed and stored
    potentials)``, or ``(None, None)`` for the paper's file.
    """
    import matplotlib.pyplot as plt

    c = _dcr_context(res)
    if not c["simulated"]:
        return None, None
    sim, s, picked = c["sim"], c["s"], c["picked"]
    solver = sim.DipoleSolver(c["mesh"], s["electrodes"],
                              sim.receiver_locations(s["receiver_grid"], s["receiver_extent"]),
                              s["current"])
    background = c["x"][picked].copy()
    background[:, 1] = 0.0
    m0 = sim.log_conductivity(background, c["mesh"].cell_centers, anomaly_x=s["anomaly_x"],
                              anomaly_radius=s["anomaly_radius"])
    stored = c["y"][picked]
    recomputed = np.stack([solver.solve(np.exp(m)).ravel() for m in c["models"]])
    mismatch = float(np.abs(recomputed - stored).max() / np.abs(stored).max())
    anomalous = stored - np.stack([solver.solve(np.exp(m)).ravel() for m in m0])
    lo, hi = c["extent"]
    n2 = c["n_grid"] ** 2
    fig, axes = plt.subplots(c["n_src"], len(picked), figsize=(4.6 * len(picked), 3.9 * c["n_src"]),
                             squeeze=False)
    for col, i in enumerate(picked):
        for src in range(c["n_src"]):
            ax, block = axes[src, col], slice(src * n2, (src + 1) * n2)
            image = anomalous[col, block].reshape(c["n_grid"], c["n_grid"])
            vmax = max(np.abs(image).max(), 1e-12)
            im = ax.imshow(image, origin="upper", extent=[lo, hi, hi, lo], cmap="PuOr_r",
                           vmin=-vmax, vmax=vmax)
            ax.add_patch(plt.Circle((s["anomaly_x"], c["x"][i, 2]), s["anomaly_radius"],
                                    fill=False, ec="black", ls=":", lw=1.2))
            rel = np.abs(image).max() / np.abs(c["y"][i, block]).max()
            fig.colorbar(im, ax=ax, label="anomalous potential $u - u_0$", format="%.2g")
            ax.set_title(f"source {src + 1}: {_params_text(c, i)}\nmax |u - u0| / max |u| = "
                         f"{rel:.2g}", fontsize=9)
            ax.set(xlabel="receiver x", ylabel="receiver depth z")
    fig.suptitle(f"DCR: potential of the anomaly alone (dotted circle: anomaly centre and radius; "
                 f"{res.tag('DCR', preset)})", fontsize=11)
    fig.tight_layout()
    return fig, mismatch


def metrics(res: Results) -> dict:
    out = {}
    for name, d in res.datasets.items():
        tr, va, te = d.sizes
        out[name] = {"source": d.source, "n_samples": tr + va + te, "n_train": tr, "n_val": va,
                     "n_test": te, "n_in": d.n_in, "n_out": d.n_out,
                     "normalization": d.meta["normalization"]["mode"],
                     "load_time_s": res.load_times[name]}
    out["CDR"]["input_ks_distance"] = res.ks
    out["ELM"]["zero_outputs"] = res.elm_zero
    out["ELM"]["inputs_inside_ranges"] = elm_range_check(res)
    return out


def record(res: Results, *, run_name: str, preset: str, t_start: float):
    return finish(run=run_name, notebook="00_data", title="The data", preset=preset,
                  data=[data_source(d) for d in res.datasets.values()],
                  parameters=res.params.as_dict(), metrics=metrics(res), claims=[],
                  t_start=t_start, device=res.params.device)
