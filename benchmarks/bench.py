#!/usr/bin/env python
"""Speed of ``ctdnn`` against straightforward implementations, measured in one run.

Usage::

    python benchmarks/bench.py [--quick] [--json PATH] [--device cpu|cuda|auto] [--threads N]

Rows (see ``benchmarks/README.md`` for what each compares):

(a) one DTO training step (forward, backward, Adam step) of ``ctdnn.ResNet`` and
    ``ctdnn.HamiltonianNet`` against a per-layer loop that builds every layer's weights
    from the basis at that layer's time (QUiNN ``RNet`` style). Goal: ctdnn >= 2x faster.
(b) one neural-ODE training iteration in the authors' surrogate configuration against a
    right-hand side that loops over the samples of the batch (the authors' wrapper style),
    with identical parameters so that dopri5 takes identical steps; the NFE of both are
    printed. Adjoint (ctdnn's default) and backpropagation. Goal: >= 50x at equal NFE.
    Per NFE (``b-node-nfe``): the backpropagation iteration in float32 with time-varying
    weights, divided by its forward NFE, for ctdnn and the per-sample loop in the
    authors' own layout (goal: ctdnn <= 0.35 ms per NFE and >= 35x cheaper per NFE), and
    ``b-node-nfe-static`` for a time-invariant MLP on plain torchdiffeq (no goal).
(c) Legendre vs monomial ResNet step time. Goal: within 5 %.
(d) ``StackedNet`` training steps for K = 1, 2, 4, 8, 16 configurations against one plain
    ResNet step (goal for K = 8: at most 2.5x) and against the K steps one after another.
(e) the same rows on CUDA when a GPU is present (otherwise skipped with a message).

Timing: every group of compared variants is measured interleaved (A B, B A, A B, ...) so
that load on a shared machine affects all alike; each row gives medians and interquartile
ranges over the repeats, and the ratio is the median over repeats of the *paired* ratio
(the two variants measured next to each other in the same repeat). CUDA timers are read
after ``torch.cuda.synchronize()``. By default the CPU runs with one intra-op thread for
every variant (``--threads``): these models are far too small to gain from threads, and on
a shared machine a second OpenMP thread that waits for a busy core makes a 20 x 15 x 50
matmul take milliseconds instead of microseconds (see the README).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import ctdnn
from ctdnn.reporting import environment_info, write_results

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_impls import (LoopHamiltonianNet, LoopResNet, PerSampleNODE,  # noqa: E402
                             StaticNODE)

__all__ = ["run", "format_table", "results_document", "main", "PAPER", "TINY"]

# The paper's sizes (DTO: Table 2 set-up; NODE: the authors' surrogate script).
PAPER = dict(n_in=15, n_out=10, width=15, n_steps=12, T=1.0, batch=32, degree=3,
             node_hidden=50, node_batch=20, node_degree=3, rtol=1e-7, atol=1e-9,
             ensemble_K=(1, 2, 4, 8, 16), dto_dtype="float32", node_dtype="float64",
             nfe_dtype="float32", nfe_perturb=0.1)
# A few-second configuration for the tests.
TINY = dict(PAPER, n_in=3, n_out=2, width=4, n_steps=3, batch=4, degree=2, node_hidden=5,
            node_batch=3, node_degree=2, rtol=1e-5, atol=1e-7, ensemble_K=(1, 2))

# (repeats, inner calls per timed block, time budget in s) per group (ensembles: per K).
# A group stops after its budget once it has MIN_REPEATS repeats, so that a heavily loaded
# machine still finishes --quick in under a minute (the rows give the repeats taken).
SCHEDULE = {
    "quick": {"dto": (21, 10, 6.0), "basis": (41, 5, 4.0), "ensemble": (11, 3, 2.0),
              "node_adjoint": (3, 1, 12.0), "node_backprop": (5, 1, 5.0),
              "node_nfe": (3, 1, 5.0)},
    "full": {"dto": (61, 20, 40.0), "basis": (101, 10, 30.0), "ensemble": (41, 5, 15.0),
             "node_adjoint": (9, 1, 60.0), "node_backprop": (11, 1, 30.0),
             "node_nfe": (9, 1, 40.0)},
}
MIN_REPEATS = 3

GOALS = {
    "a": (">=", 2.0, "ctdnn >= 2x faster"),
    "b": (">=", 50.0, ">= 50x faster, equal NFE"),
    "c": ("within", 0.05, "ratio within 1 +- 0.05"),
    "d": ("<=", 2.5, "K=8 step <= 2.5x one step"),
    # ms per NFE: ctdnn at most 0.35 ms and at least 35x cheaper than the per-sample loop
    "b-nfe": ("nfe", (0.35e-3, 35.0), "<= 0.35 ms/NFE, >= 35x"),
}


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------

def _sync_for(device: torch.device):
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def measure(variants: dict, *, repeats: int, inner: int = 1, warmup=1, sync=None,
            setup: dict | None = None, cpu_times: dict | None = None,
            max_seconds: float | None = None) -> dict:
    """Interleaved timings: ``{name: [seconds per call, one per repeat]}``.

    Args:
        variants: ``{name: callable}``; one call is the timed unit.
        repeats: timed blocks per variant; the order of the variants alternates between
            repeats (A B, B A, ...).
        inner: calls per timed block (the block's time is divided by it).
        warmup: untimed calls of every variant first (an int, or ``{name: int}``).
        sync: called before starting and before reading the timer (CUDA synchronisation).
        setup: ``{name: callable}`` run, untimed, before each of that variant's blocks.
        cpu_times: if given, filled like the result with this thread's CPU time per call
            (``time.thread_time``): the work done, without the waits for a busy core.
        max_seconds: stop after the repeat that exceeds this many seconds, once
            ``MIN_REPEATS`` repeats are done.
    """
    sync = sync or (lambda: None)
    setup = setup or {}
    names = list(variants)
    start = time.perf_counter()
    for name in names:
        for _ in range(warmup.get(name, 1) if isinstance(warmup, dict) else warmup):
            if name in setup:
                setup[name]()
            variants[name]()
    sync()
    times = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            if name in setup:
                setup[name]()
            fn = variants[name]
            sync()
            c0, t0 = time.thread_time(), time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            t1, c1 = time.perf_counter(), time.thread_time()
            times[name].append((t1 - t0) / inner)
            cpu[name].append((c1 - c0) / inner)
        if (max_seconds is not None and r + 1 >= MIN_REPEATS
                and time.perf_counter() - start > max_seconds):
            break
    if cpu_times is not None:
        cpu_times.update(cpu)
    return times


def _quartiles(values):
    values = sorted(values)
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, statistics.median(values), q3


def _verdict(section: str, ratio: float, ok: bool = True, subject_s: float | None = None) -> str:
    op, value, _ = GOALS[section]
    if not ok or not math.isfinite(ratio):
        return "MISS"
    if op == "nfe":  # value = (largest seconds per NFE of the subject, smallest ratio)
        return "PASS" if subject_s is not None and subject_s <= value[0] and ratio >= value[1] \
            else "MISS"
    if op == ">=":
        return "PASS" if ratio >= value else "MISS"
    if op == "<=":
        return "PASS" if ratio <= value else "MISS"
    return "PASS" if abs(ratio - 1.0) <= value else "MISS"


def _row(row_id, section, timed, device, dtype, subject, baseline, t_subject, t_baseline,
         ratio_of, *, goal=True, ok=True, repeats, inner, cpu=None, goal_key=None, **extra):
    """One table row. ``ratio_of(s, b)`` maps a repeat's pair of times to its ratio.

    ``cpu``: ``(cpu times of the subject, of the baseline)`` for the CPU-time cross-check.
    ``goal_key``: the entry of :data:`GOALS` judging the row (default: its section).
    """
    goal_key = goal_key or section
    sq1, smed, sq3 = _quartiles(t_subject)
    bq1, bmed, bq3 = _quartiles(t_baseline)
    rq1, rmed, rq3 = _quartiles([ratio_of(s, b) for s, b in zip(t_subject, t_baseline)])
    # Most telling fields first: the book's reproducibility page shows them as columns.
    row = {"id": row_id, "timed": timed,
           "subject": subject, "subject_median_s": smed, "subject_q1_s": sq1,
           "subject_q3_s": sq3,
           "baseline": baseline, "baseline_median_s": bmed, "baseline_q1_s": bq1,
           "baseline_q3_s": bq3,
           "ratio": rmed, "ratio_q1": rq1, "ratio_q3": rq3,
           "goal": GOALS[goal_key][2] if goal else "",
           "verdict": _verdict(goal_key, rmed, ok, smed) if goal else "INFO",
           "ratio_meaning": extra.pop("ratio_meaning", ""),
           "ratio_cpu_time": None,
           "section": section, "device": str(device), "dtype": dtype,
           "repeats": repeats, "inner": inner}
    if cpu is not None and device.type == "cpu":
        pairs = [ratio_of(s, b) for s, b in zip(*cpu) if s > 0 and b > 0]
        row["ratio_cpu_time"] = statistics.median(pairs) if pairs else math.nan
    row.update(extra)
    return row


# --------------------------------------------------------------------------------------
# the compared computations
# --------------------------------------------------------------------------------------

def _train_step(model, opt, xb, yb):
    """One step as ``ctdnn.train`` takes it: forward, 0.5/n ||.||^2 loss, backward, Adam."""
    pred = model(xb)
    loss = 0.5 * (pred - yb).square().sum() / xb.shape[0]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _stacked_step(net, opt, xb, yb):
    """One ``train_ensemble`` step: K members, K minibatches, summed per-member losses."""
    pred = net(xb)
    losses = 0.5 * (pred - yb).square().sum((1, 2)) / xb.shape[1]
    opt.zero_grad(set_to_none=True)
    losses.sum().backward()
    opt.step()


def _data(n, sizes, device, dtype, seed, leading=()):
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.rand(*leading, n, sizes["n_in"], generator=g, dtype=torch.float64) - 1
    y = torch.rand(*leading, n, sizes["n_out"], generator=g, dtype=torch.float64)
    return x.to(device, dtype), y.to(device, dtype)


def _dto_model(cls, sizes, device, dtype, seed, basis="legendre", T=None):
    torch.manual_seed(seed)
    m = cls(sizes["n_in"], sizes["n_out"], width=sizes["width"], n_steps=sizes["n_steps"],
            T=sizes["T"] if T is None else T, basis=basis, degree=sizes["degree"])
    return m.to(device=device, dtype=dtype)


def _dto_what(sizes, dtype):
    return (f"width {sizes['width']}, {sizes['n_steps']} steps, batch {sizes['batch']}, "
            f"Legendre degree {sizes['degree']}, {sizes['n_in']} in / {sizes['n_out']} out, "
            f"{dtype}")


def bench_dto(sizes, device, repeats, inner, budget, sync, log):
    """(a): ctdnn vs the per-layer loop, ResNet and Hamiltonian."""
    dtype = getattr(torch, sizes["dto_dtype"])
    xb, yb = _data(sizes["batch"], sizes, device, dtype, seed=1)
    rows = []
    for cls, ref_cls, label in ((ctdnn.ResNet, LoopResNet, "ResNet"),
                                (ctdnn.HamiltonianNet, LoopHamiltonianNet, "Hamiltonian")):
        log(f"  (a) {label} training step on {device}")
        model = _dto_model(cls, sizes, device, dtype, seed=0)
        ref = ref_cls.from_ctdnn(model)
        opt_m = torch.optim.Adam(model.parameters(), lr=1e-3)
        opt_r = torch.optim.Adam(ref.parameters(), lr=1e-3)
        c = {}
        t = measure({"ctdnn": lambda: _train_step(model, opt_m, xb, yb),
                     "loop": lambda: _train_step(ref, opt_r, xb, yb)},
                    repeats=repeats, inner=inner, warmup=max(3, inner), sync=sync, cpu_times=c,
                    max_seconds=budget)
        rows.append(_row(f"a-{label.lower()}", "a",
                         f"DTO training step (forward, backward, Adam), {label}: ctdnn vs "
                         f"per-layer weight loop (QUiNN RNet style); {_dto_what(sizes, sizes['dto_dtype'])}",
                         device, sizes["dto_dtype"], f"ctdnn.{cls.__name__}",
                         f"reference {ref_cls.__name__}", t["ctdnn"], t["loop"],
                         lambda s, b: b / s, repeats=len(t["ctdnn"]), inner=inner,
                         cpu=(c["ctdnn"], c["loop"]),
                         ratio_meaning="reference time / ctdnn time (speed-up of ctdnn)"))
    return rows


def bench_basis(sizes, device, repeats, inner, budget, sync, log):
    """(c): Legendre vs monomial ResNet step."""
    log(f"  (c) Legendre vs monomial ResNet step on {device}")
    dtype = getattr(torch, sizes["dto_dtype"])
    xb, yb = _data(sizes["batch"], sizes, device, dtype, seed=1)
    leg = _dto_model(ctdnn.ResNet, sizes, device, dtype, seed=0, basis="legendre")
    mon = _dto_model(ctdnn.ResNet, sizes, device, dtype, seed=0, basis="monomial")
    opt_l = torch.optim.Adam(leg.parameters(), lr=1e-3)
    opt_m = torch.optim.Adam(mon.parameters(), lr=1e-3)
    c = {}
    t = measure({"legendre": lambda: _train_step(leg, opt_l, xb, yb),
                 "monomial": lambda: _train_step(mon, opt_m, xb, yb)},
                repeats=repeats, inner=inner, warmup=max(3, inner), sync=sync, cpu_times=c,
                max_seconds=budget)
    return [_row("c-basis", "c",
                 f"ctdnn.ResNet training step, Legendre vs monomial basis; "
                 f"{_dto_what(sizes, sizes['dto_dtype'])}",
                 device, sizes["dto_dtype"], "Legendre", "monomial", t["legendre"],
                 t["monomial"], lambda s, b: s / b, repeats=len(t["legendre"]), inner=inner,
                 cpu=(c["legendre"], c["monomial"]),
                 ratio_meaning="Legendre time / monomial time")]


def _ensemble_configs(K):
    """K configurations of the paper's grid: seeds x {Legendre, monomial} x T in {1, 5, 10}."""
    grid = [(basis, T) for T in (1.0, 5.0, 10.0) for basis in ("legendre", "monomial")]
    return [(grid[k % len(grid)][0], grid[k % len(grid)][1], 100 + k) for k in range(K)]


def bench_ensemble(sizes, device, repeats, inner, budget, sync, log):
    """(d): StackedNet with K members vs one plain step and vs K steps one after another.

    One interleaved group per K (single step, stacked step, the K steps in sequence), so
    that every ratio pairs blocks measured next to each other.
    """
    dtype = getattr(torch, sizes["dto_dtype"])
    Ks = tuple(sizes["ensemble_K"])
    what = _dto_what(sizes, sizes["dto_dtype"]).replace(", Legendre degree", ", degree")
    x1, y1 = _data(sizes["batch"], sizes, device, dtype, seed=1)
    single = _dto_model(ctdnn.ResNet, sizes, device, dtype, seed=0)
    opt1 = torch.optim.Adam(single.parameters(), lr=1e-3)
    rows = []
    for K in Ks:
        log(f"  (d) ensemble K = {K} on {device}")
        configs = _ensemble_configs(K)
        xs, ys = _data(sizes["batch"], sizes, device, dtype, seed=2, leading=(K,))
        members = [_dto_model(ctdnn.ResNet, sizes, device, dtype, seed=s, basis=b, T=T)
                   for b, T, s in configs]
        net = ctdnn.StackedNet(members).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        variants = {"single": lambda: _train_step(single, opt1, x1, y1),
                    "stacked": lambda: _stacked_step(net, opt, xs, ys)}
        if K > 1:
            seq = [_dto_model(ctdnn.ResNet, sizes, device, dtype, seed=s, basis=b, T=T)
                   for b, T, s in configs]
            opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in seq]

            def sequential(seq=seq, opts=opts):
                for k, (m, o) in enumerate(zip(seq, opts)):
                    _train_step(m, o, xs[k], ys[k])

            variants["seq"] = sequential
        c = {}
        t = measure(variants, repeats=repeats, inner=inner, warmup=max(2, inner), sync=sync,
                    cpu_times=c, max_seconds=budget)
        n_rep = len(t["stacked"])
        rows.append(_row(f"d-K{K}", "d",
                         f"StackedNet training step with K={K} configurations (K minibatches) "
                         f"vs one plain ctdnn.ResNet step; members: seeds x {{Legendre, monomial}}"
                         f" x T in {{1, 5, 10}}; {what}",
                         device, sizes["dto_dtype"], f"StackedNet K={K}", "one ResNet step",
                         t["stacked"], t["single"], lambda s, b: s / b, goal=(K == 8),
                         repeats=n_rep, inner=inner, cpu=(c["stacked"], c["single"]), K=K,
                         ratio_meaning="stacked step time / single step time"))
        seq_key = "seq" if K > 1 else "single"
        rows.append(_row(f"d-K{K}-seq", "d",
                         f"per-configuration speed-up of StackedNet K={K} vs the {K} "
                         f"configurations' steps one after another (each its own model and Adam)",
                         device, sizes["dto_dtype"], f"StackedNet K={K}",
                         f"{K} ResNet step(s) in sequence", t["stacked"], t[seq_key],
                         lambda s, b: b / s, goal=False, repeats=n_rep, inner=inner,
                         cpu=(c["stacked"], c[seq_key]), K=K,
                         ratio_meaning="sequential time / stacked time"))
    return rows


def bench_node(sizes, device, adjoint, repeats, budget, sync, log, warm_reference=True):
    """(b): ctdnn.NeuralODE vs the per-sample right-hand side, one training iteration."""
    mode = "adjoint" if adjoint else "backprop"
    log(f"  (b) neural ODE training iteration ({mode}) on {device}")
    dtype = getattr(torch, sizes["node_dtype"])
    xb, yb = _data(sizes["node_batch"], sizes, device, dtype, seed=3)
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(sizes["n_in"], sizes["n_out"], width=sizes["width"],
                            hidden=sizes["node_hidden"], T=1.0, basis="legendre",
                            degree=sizes["node_degree"], rtol=sizes["rtol"], atol=sizes["atol"],
                            adjoint=adjoint).to(device=device, dtype=dtype)
    ref = PerSampleNODE.from_ctdnn(model)
    opt_m = torch.optim.Adam(model.parameters(), lr=1e-2)
    opt_r = torch.optim.Adam(ref.parameters(), lr=1e-2)
    start_m = [p.detach().clone() for p in model.parameters()]
    start_r = [p.detach().clone() for p in ref.parameters()]
    nfe = {"ctdnn": [], "per_sample": []}

    def restore(module, start):
        with torch.no_grad():
            for p, s in zip(module.parameters(), start):
                p.copy_(s)

    def run_ctdnn():
        _train_step(model, opt_m, xb, yb)
        nfe["ctdnn"].append((model.stats.nfe_forward, model.stats.nfe_backward))

    def run_ref():
        before = ref.func.nfe
        pred = ref(xb)
        mid = ref.func.nfe
        loss = 0.5 * (pred - yb).square().sum() / xb.shape[0]
        opt_r.zero_grad(set_to_none=True)
        loss.backward()
        opt_r.step()
        nfe["per_sample"].append((mid - before, ref.func.nfe - mid))

    # Every timed iteration starts from the same parameters, so every one takes the same
    # solver steps; the restore is not timed.
    c = {}
    t = measure({"ctdnn": run_ctdnn, "per_sample": run_ref}, repeats=repeats, inner=1,
                warmup={"ctdnn": 1, "per_sample": int(warm_reference)}, sync=sync,
                cpu_times=c, max_seconds=budget,
                setup={"ctdnn": lambda: restore(model, start_m),
                       "per_sample": lambda: restore(ref, start_r)})
    n = len(t["ctdnn"])  # the timed iterations (warm-ups differ between the variants)
    same = nfe["ctdnn"][-n:] == nfe["per_sample"][-n:]
    fwd, bwd = nfe["ctdnn"][-1]
    rfwd, rbwd = nfe["per_sample"][-1]
    grad = ("adjoint backward (ctdnn's default: odeint_adjoint, same tolerances)" if adjoint
            else "backpropagation through the solver")
    timed = (f"neural-ODE training iteration (forward solve, {grad}, Adam), ctdnn vs per-sample "
             f"RHS loop (authors' wrapper style); width {sizes['width']}, hidden "
             f"{sizes['node_hidden']}, batch {sizes['node_batch']}, dopri5 rtol "
             f"{sizes['rtol']:g} atol {sizes['atol']:g}, Legendre {sizes['node_degree'] + 1} "
             f"functions, {sizes['node_dtype']}; NFE forward+backward: ctdnn {fwd}+{bwd}, "
             f"per-sample {rfwd}+{rbwd}" + ("" if same else " (NFE DIFFER)"))
    return [_row(f"b-node-{mode}", "b", timed, device, sizes["node_dtype"], "ctdnn.NeuralODE",
                 "reference PerSampleNODE", t["ctdnn"], t["per_sample"], lambda s, b: b / s,
                 ok=same, repeats=len(t["ctdnn"]), inner=1, cpu=(c["ctdnn"], c["per_sample"]),
                 nfe_forward=fwd, nfe_backward=bwd,
                 reference_nfe_forward=rfwd, reference_nfe_backward=rbwd, nfe_equal=same,
                 ratio_meaning="reference time / ctdnn time (speed-up of ctdnn)")]


def bench_node_nfe(sizes, device, repeats, budget, sync, log):
    """(b) per NFE: one training iteration with backpropagation through dopri5, divided by
    its forward NFE, for ctdnn, the per-sample loop in the authors' own layout, and a
    time-invariant MLP on plain torchdiffeq.

    The dynamics' coefficients are perturbed (seeded) so that the weights vary in time and
    a solve takes about as many evaluations as in training (the initial, constant-in-time
    weights give only a few dozen). The three variants take different NFE in float32, so
    they are compared per evaluation.
    """
    log(f"  (b) ms per NFE, neural ODE training iteration (backprop) on {device}")
    dtype = getattr(torch, sizes["nfe_dtype"])
    xb, yb = _data(sizes["node_batch"], sizes, device, dtype, seed=3)
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(sizes["n_in"], sizes["n_out"], width=sizes["width"],
                            hidden=sizes["node_hidden"], T=1.0, basis="legendre",
                            degree=sizes["node_degree"], rtol=sizes["rtol"], atol=sizes["atol"],
                            adjoint=False).to(device=device, dtype=dtype)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.dynamics.parameters():
            p.add_(sizes["nfe_perturb"] * torch.randn(p.shape, generator=g).to(p))
    ref = PerSampleNODE.from_ctdnn(model, per_parameter=True)
    static = StaticNODE(sizes["n_in"], sizes["n_out"], width=sizes["width"],
                        hidden=sizes["node_hidden"], rtol=sizes["rtol"], atol=sizes["atol"])
    static.to(device=device, dtype=dtype)
    with torch.no_grad():  # the static MLP keeps the time-varying weights of t = 0
        for name in ("opening", "closing"):
            getattr(static, name).load_state_dict(getattr(model, name).state_dict())
        B0 = model.basis(torch.zeros(1, dtype=dtype, device=device))
        for lin, layer in zip((static.net[0], static.net[2]), model.dynamics.layers):
            K, b = layer.weights(B0)
            lin.weight.copy_(K[0])
            lin.bias.copy_(b[0])
    # the same model, its right-hand side built op by op (TimeVaryingMLP.fused = False)
    graph = copy.deepcopy(model)
    modules = {"ctdnn": model, "per_sample": ref, "static": static, "graph": graph}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-2) for k, m in modules.items()}
    starts = {k: [p.detach().clone() for p in m.parameters()] for k, m in modules.items()}
    nfe = {k: [] for k in modules}

    def restore(name):
        with torch.no_grad():
            for p, s in zip(modules[name].parameters(), starts[name]):
                p.copy_(s)

    def counter(name):
        m = modules[name]
        return m.stats.nfe_forward if name in ("ctdnn", "graph") else (
            m.func.nfe if name == "per_sample" else m.nfe)

    def variant(name):
        m, opt = modules[name], opts[name]

        def run():
            before = 0 if name in ("ctdnn", "graph") else counter(name)
            pred = m(xb)
            nfe[name].append(counter(name) - before)
            loss = 0.5 * (pred - yb).square().sum() / xb.shape[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def op_by_op():
            ctdnn.TimeVaryingMLP.fused = False
            try:
                run()
            finally:
                ctdnn.TimeVaryingMLP.fused = True
        return op_by_op if name == "graph" else run

    c = {}
    t = measure({k: variant(k) for k in modules}, repeats=repeats, inner=1,
                warmup={"ctdnn": 1, "per_sample": 0, "static": 1, "graph": 1}, sync=sync,
                cpu_times=c,
                max_seconds=budget, setup={k: (lambda k=k: restore(k)) for k in modules})
    n = len(t["ctdnn"])
    per = {k: [s / f for s, f in zip(t[k], nfe[k][-n:])] for k in modules}
    per_cpu = {k: [s / f for s, f in zip(c[k], nfe[k][-n:])] for k in modules}
    f_m, f_r, f_s = nfe["ctdnn"][-1], nfe["per_sample"][-1], nfe["static"][-1]
    same_steps = nfe["graph"][-n:] == nfe["ctdnn"][-n:]
    what = (f"width {sizes['width']}, hidden {sizes['node_hidden']}, batch "
            f"{sizes['node_batch']}, dopri5 rtol {sizes['rtol']:g} atol {sizes['atol']:g}, "
            f"Legendre {sizes['node_degree'] + 1} functions, backpropagation through the "
            f"solver, {sizes['nfe_dtype']}")
    rows = [_row("b-node-nfe", "b",
                 f"time per forward NFE of a neural-ODE training iteration (forward, backward, "
                 f"Adam) / its forward NFE: ctdnn vs per-sample RHS loop in the authors' layout "
                 f"(one einsum per parameter and sample); {what}; forward NFE ctdnn {f_m}, "
                 f"per-sample {f_r}", device, sizes["nfe_dtype"], "ctdnn.NeuralODE per NFE",
                 "reference PerSampleNODE per NFE", per["ctdnn"], per["per_sample"],
                 lambda s, b: b / s, goal_key="b-nfe", repeats=n, inner=1,
                 cpu=(per_cpu["ctdnn"], per_cpu["per_sample"]), nfe_forward=f_m,
                 reference_nfe_forward=f_r, unit="seconds per forward NFE",
                 ratio_meaning="reference time per NFE / ctdnn time per NFE")]
    rows.append(_row("b-node-nfe-static", "b",
                     f"time per forward NFE, ctdnn (time-varying weights) vs a time-invariant "
                     f"MLP on plain torchdiffeq.odeint (same sizes and solver); {what}; forward "
                     f"NFE ctdnn {f_m}, static {f_s}", device, sizes["nfe_dtype"],
                     "ctdnn.NeuralODE per NFE", "static MLP per NFE", per["ctdnn"],
                     per["static"], lambda s, b: s / b, goal=False, repeats=n, inner=1,
                     cpu=(per_cpu["ctdnn"], per_cpu["static"]), nfe_forward=f_m,
                     reference_nfe_forward=f_s, unit="seconds per forward NFE",
                     ratio_meaning="ctdnn time per NFE / static MLP time per NFE"))
    rows.append(_row("b-node-nfe-fused", "b",
                     f"time per forward NFE, ctdnn's right-hand side as one autograd node "
                     f"(TimeVaryingMLP.fused, the default on CPU) vs the same model's graph "
                     f"built op by op (fused=False); {what}; forward NFE {f_m} both"
                     + ("" if same_steps else " (NFE differed: the ratio is per NFE)"),
                     device, sizes["nfe_dtype"], "fused right-hand side per NFE",
                     "op-by-op graph per NFE", per["ctdnn"], per["graph"],
                     lambda s, b: b / s, goal=False, repeats=n, inner=1,
                     cpu=(per_cpu["ctdnn"], per_cpu["graph"]), nfe_forward=f_m,
                     reference_nfe_forward=nfe["graph"][-1], unit="seconds per forward NFE",
                     ratio_meaning="op-by-op time per NFE / fused time per NFE"))
    return rows


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------

def _devices(device: str, log) -> list[torch.device]:
    cuda = torch.cuda.is_available()
    if device == "cpu":
        log("(e) CUDA rows skipped: --device cpu")
        return [torch.device("cpu")]
    if device in ("cuda", "auto"):
        if cuda:
            return [torch.device("cpu"), torch.device("cuda")]
        log("(e) CUDA rows skipped: no CUDA device present")
        return [torch.device("cpu")]
    raise ValueError(f"device must be 'cpu', 'cuda' or 'auto', got {device!r}")


def run(quick: bool = True, repeats: int | None = None, device: str = "auto",
        sections: str = "abcd", sizes: dict | None = None, threads: int | None = 1,
        inner: int | None = None, log=None) -> list[dict]:
    """Run the benchmark and return its rows (one dict per table row).

    Args:
        quick: fewer repeats (the ``--quick`` schedule).
        repeats: override the number of repeats of every group (``inner`` likewise).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"``; with a GPU present, ``"cuda"`` and
            ``"auto"`` add the CUDA rows (section e) after the CPU rows.
        sections: which of ``"abcd"`` to run.
        sizes: problem sizes (default :data:`PAPER`; :data:`TINY` for tests).
        threads: CPU intra-op threads for every variant (``None``: leave as is).
        log: progress messages (default: stderr).
    """
    sizes = dict(PAPER if sizes is None else sizes)
    schedule = SCHEDULE["quick" if quick else "full"]
    if log is None:
        def log(msg):
            print(msg, file=sys.stderr, flush=True)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        for dev in _devices(device, log):
            sync = _sync_for(dev)

            def sched(group, dev=dev):
                r, k, budget = schedule[group]
                return (repeats or r), (inner or k), budget

            section_rows = []
            if "a" in sections:
                section_rows += bench_dto(sizes, dev, *sched("dto"), sync, log)
            if "b" in sections:
                for adjoint, group in ((True, "node_adjoint"), (False, "node_backprop")):
                    r, _, budget = sched(group)
                    # A warm-up of the slow variant buys nothing at a second per call.
                    section_rows += bench_node(sizes, dev, adjoint, r, budget, sync, log,
                                               warm_reference=not quick)
                r, _, budget = sched("node_nfe")
                section_rows += bench_node_nfe(sizes, dev, r, budget, sync, log)
            if "c" in sections:
                section_rows += bench_basis(sizes, dev, *sched("basis"), sync, log)
            if "d" in sections:
                section_rows += bench_ensemble(sizes, dev, *sched("ensemble"), sync, log)
            if dev.type == "cuda":
                # Section (e): the same rows on the GPU, judged by the same goals.
                for row in section_rows:
                    row["group"] = row["section"]
                    row["section"] = "e"
                    row["id"] = "e-" + row["id"]
            rows += section_rows
    finally:
        torch.set_num_threads(old_threads)
    for row in rows:
        row["threads"] = threads if threads is not None else old_threads
    return rows


def _fmt_time(s: float) -> str:
    if s >= 1.0:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"


def _fmt_ratio(x: float) -> str:
    return f"{x:.3g}" if x < 100 else f"{x:.0f}"


def format_table(rows: list[dict]) -> str:
    """The table printed by the script: one block of lines per row, then a summary."""
    header = (f"{'row':<18} {'subject: median [IQR]':<30} {'baseline: median [IQR]':<30} "
              f"{'ratio [IQR]':<20} {'goal':<26} verdict")
    lines = [header, "-" * len(header)]
    for r in rows:
        subj = (f"{_fmt_time(r['subject_median_s'])} "
                f"[{_fmt_time(r['subject_q1_s'])}-{_fmt_time(r['subject_q3_s'])}]")
        base = (f"{_fmt_time(r['baseline_median_s'])} "
                f"[{_fmt_time(r['baseline_q1_s'])}-{_fmt_time(r['baseline_q3_s'])}]")
        ratio = f"{_fmt_ratio(r['ratio'])} [{_fmt_ratio(r['ratio_q1'])}-{_fmt_ratio(r['ratio_q3'])}]"
        lines.append(f"{r['id']:<18} {subj:<30} {base:<30} {ratio:<20} "
                     f"{r['goal'] or '-':<26} {r['verdict']}")
        lines.append(f"{'':<18} timed: {r['timed']} [{r['device']}]")
        cpu = (f"; CPU-time ratio {_fmt_ratio(r['ratio_cpu_time'])}"
               if r.get("ratio_cpu_time") is not None else "")
        lines.append(f"{'':<18} subject = {r['subject']}; baseline = {r['baseline']}; "
                     f"ratio = {r['ratio_meaning']}; {r['repeats']} repeats x {r['inner']} "
                     f"calls{cpu}")
    verdicts = [r["verdict"] for r in rows if r["verdict"] != "INFO"]
    lines.append("-" * len(header))
    lines.append(f"goals: {verdicts.count('PASS')} PASS, {verdicts.count('MISS')} MISS "
                 f"(of {len(verdicts)}); ratios are medians of per-repeat paired ratios")
    return "\n".join(lines)


def results_document(rows: list[dict], argv: list[str], device: str, seconds: float,
                     table: str) -> dict:
    """The JSON document written by ``--json``."""
    threads = rows[0]["threads"] if rows else torch.get_num_threads()
    cuda_rows = any(r["device"].startswith("cuda") for r in rows)
    env = environment_info("cuda" if cuda_rows else "cpu")
    env["torch_threads"] = threads  # in effect while measuring
    return {"run": "benchmarks", "command": " ".join(["python", "benchmarks/bench.py", *argv]),
            "environment": env,
            "settings": {"device": device, "threads": threads,
                         "sizes": {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in PAPER.items()}},
            "wall_time_s": seconds, "rows": rows, "table": table, "claims": []}


def _load_average():
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def _fmt_load(value):
    return "n/a" if value is None else f"{value:.1f}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under a minute)")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON (atomically)")
    parser.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"),
                        help="'cuda'/'auto' add the CUDA rows when a GPU is present")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU intra-op threads for every variant (default 1; 0: torch's default)")
    parser.add_argument("--sections", default="abcd", help="subset of 'abcd' to run")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    threads = None if args.threads == 0 else args.threads
    load_before = _load_average()
    t0 = time.perf_counter()
    rows = run(quick=args.quick, device=args.device, sections=args.sections, threads=threads)
    seconds = time.perf_counter() - t0
    load = {"before": load_before, "after": _load_average()}
    env = environment_info("cpu")
    table = format_table(rows)
    print(f"ctdnn benchmarks ({'quick' if args.quick else 'full'} schedule), "
          f"torch {torch.__version__}, {env['cpu_count']} CPU cores, "
          f"{rows[0]['threads'] if rows else threads} intra-op thread(s), {env['platform']}; "
          f"1-min load average {_fmt_load(load['before'])} before, "
          f"{_fmt_load(load['after'])} after")
    print(table)
    print(f"wall time {seconds:.1f} s")
    if args.json:
        doc = results_document(rows, argv, args.device, seconds, table)
        doc["settings"]["load_average_1min"] = load
        write_results(args.json, doc)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
