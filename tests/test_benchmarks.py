"""The benchmark is a fair comparison, and its rows and JSON can be produced (no timing asserts).

The reference implementations in ``benchmarks/reference_impls.py`` must compute what
``ctdnn`` computes (float64, same parameters), or a speed ratio would compare different
work; the per-sample neural ODE must make the adaptive solver take the same steps.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import ctdnn

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name, filename):
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    spec = importlib.util.spec_from_file_location(name, BENCH_DIR / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = _load("reference_impls", "reference_impls.py")
bench = _load("ctdnn_bench", "bench.py")


def _randomise(model, scale, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _grads_equal(model, reference, rel):
    """Equal gradients up to ``rel`` times the largest entry (monomials at T = 5 reach
    weights of order 10 and gradients of order 1e3, where round-off grows accordingly)."""
    theirs = reference.grads_like(model)
    for name, p in model.named_parameters():
        scale = float(p.grad.abs().max())
        err = float((theirs[name] - p.grad).abs().max())
        assert err <= rel * scale, f"{name}: max error {err:.3g}, scale {scale:.3g}"


@pytest.mark.parametrize("cls,ref_cls", [(ctdnn.ResNet, ref.LoopResNet),
                                         (ctdnn.HamiltonianNet, ref.LoopHamiltonianNet)])
@pytest.mark.parametrize("basis,T", [("legendre", 1.0), ("monomial", 1.0), ("legendre", 5.0),
                                     ("monomial", 5.0)])
def test_loop_reference_equals_ctdnn(cls, ref_cls, basis, T):
    torch.manual_seed(0)
    model = cls(5, 3, width=6, n_steps=7, T=T, basis=basis, degree=3).double()
    _randomise(model, 0.3, seed=1)  # make the weights really vary in time
    reference = ref_cls.from_ctdnn(model)
    x = torch.randn(9, 5, dtype=torch.float64)
    y = torch.randn(9, 3, dtype=torch.float64)
    out, out_ref = model(x), reference(x)
    torch.testing.assert_close(out_ref, out, rtol=1e-12, atol=1e-12)
    (0.5 * (out - y).square().sum()).backward()
    (0.5 * (out_ref - y).square().sum()).backward()
    _grads_equal(model, reference, rel=1e-10)


def test_loop_reference_builds_weights_per_layer_from_the_basis():
    # Independent of ctdnn: the reference's layer weights are sum_j c_j P_j(2 t_k / T - 1).
    from numpy.polynomial import legendre as npleg

    torch.manual_seed(0)
    net = ref.LoopResNet(2, 1, width=3, n_steps=4, T=2.0, basis="legendre", degree=3).double()
    for k in range(4):
        V = npleg.legvander([2 * (k * 0.5) / 2.0 - 1], 3)[0]
        W, b = net.layer_weights(k)
        expected = sum(float(V[j]) * net.paramsw[j] for j in range(4))
        torch.testing.assert_close(W, expected, rtol=1e-13, atol=1e-13)
        expected_b = sum(float(V[j]) * net.paramsb[j] for j in range(4))
        torch.testing.assert_close(b, expected_b, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("adjoint,per_parameter", [(False, False), (True, False),
                                                   (False, True)])
@pytest.mark.parametrize("basis", ["legendre", "monomial"])
def test_per_sample_node_matches_ctdnn_outputs_gradients_and_nfe(adjoint, per_parameter, basis):
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(4, 3, width=5, hidden=7, T=1.0, basis=basis, degree=3, rtol=1e-5,
                            atol=1e-7, adjoint=adjoint).double()
    _randomise(model, 0.2, seed=2)  # time-varying dynamics: 50 to 70 evaluations
    reference = ref.PerSampleNODE.from_ctdnn(model, per_parameter=per_parameter)
    assert len(reference.func.time_params) == (4 if per_parameter else 2)
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randn(6, 3, dtype=torch.float64)
    out = model(x)
    out_ref = reference(x)
    nfe_fwd = reference.func.nfe
    assert model.stats.nfe_forward == nfe_fwd > 30  # the same adaptive steps, and many
    torch.testing.assert_close(out_ref, out, rtol=1e-10, atol=1e-12)
    (0.5 * (out - y).square().sum()).backward()
    (0.5 * (out_ref - y).square().sum()).backward()
    assert model.stats.nfe_backward == reference.func.nfe - nfe_fwd
    if adjoint:
        assert model.stats.nfe_backward > 0
    _grads_equal(model, reference, rel=1e-8)


def test_static_node_is_a_plain_mlp_ode():
    # With zero dynamics the state does not move, so the output is the closing layer of
    # tanh(opening(x)); the right-hand side is the plain MLP; nfe counts calls.
    torch.manual_seed(0)
    net = ref.StaticNODE(3, 2, width=4, hidden=5, rtol=1e-6, atol=1e-8).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    with torch.no_grad():
        for p in net.net.parameters():
            p.zero_()
    expected = net.closing(torch.tanh(net.opening(x)))
    torch.testing.assert_close(net(x), expected, rtol=1e-14, atol=1e-14)
    assert net.nfe > 0
    u = torch.randn(6, 4, dtype=torch.float64)
    torch.manual_seed(1)
    for p in net.net.parameters():
        torch.nn.init.normal_(p)
    W1, b1, W2, b2 = (p.detach() for p in net.net.parameters())
    torch.testing.assert_close(net.rhs(0.0, u), torch.tanh(u @ W1.T + b1) @ W2.T + b2)


def test_per_sample_dynamics_loops_over_samples():
    # The reference right-hand side really evaluates sample by sample: one call of the
    # template network per sample.
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(4, 3, width=5, hidden=7, degree=2).double()
    reference = ref.PerSampleNODE.from_ctdnn(model)
    calls = []
    reference.func.net.register_forward_hook(lambda *a: calls.append(a[1][0].shape))
    u = torch.randn(6, 5, dtype=torch.float64)
    out = reference.func(torch.tensor(0.3, dtype=torch.float64), u)
    assert calls == [torch.Size([1, 5])] * 6
    torch.testing.assert_close(out, model.dynamics(torch.tensor(0.3, dtype=torch.float64), u))


REQUIRED = {"id", "section", "device", "dtype", "timed", "subject", "baseline",
            "subject_median_s", "subject_q1_s", "subject_q3_s", "baseline_median_s",
            "baseline_q1_s", "baseline_q3_s", "ratio", "ratio_q1", "ratio_q3", "goal",
            "verdict", "repeats", "inner", "threads"}


def test_run_produces_rows_and_valid_json(tmp_path):
    messages = []
    rows = bench.run(quick=True, repeats=2, inner=1, device="cpu", sizes=bench.TINY,
                     log=messages.append)
    ids = [r["id"] for r in rows]
    assert ids == ["a-resnet", "a-hamiltonian", "b-node-adjoint", "b-node-backprop",
                   "b-node-nfe", "b-node-nfe-static", "b-node-nfe-fused", "c-basis", "d-K1",
                   "d-K1-seq", "d-K2", "d-K2-seq"]
    assert any("CUDA rows skipped" in m for m in messages)
    for r in rows:
        assert REQUIRED <= set(r), r["id"]
        assert r["verdict"] in ("PASS", "MISS", "INFO")
        assert r["subject_q1_s"] <= r["subject_median_s"] <= r["subject_q3_s"]
        assert r["ratio"] > 0 and r["repeats"] == 2
    for r in rows[2:4]:
        assert r["nfe_equal"] and r["nfe_forward"] == r["reference_nfe_forward"] > 0
    assert rows[2]["nfe_backward"] == rows[2]["reference_nfe_backward"] > 0
    assert rows[3]["nfe_backward"] == 0
    nfe_row, static_row = rows[4], rows[5]
    assert nfe_row["nfe_forward"] > 0 and nfe_row["reference_nfe_forward"] > 0
    assert nfe_row["verdict"] in ("PASS", "MISS") and static_row["verdict"] == "INFO"
    fused_row = rows[6]   # the fused right-hand side and the op-by-op graph take equal steps
    assert fused_row["verdict"] == "INFO" and "NFE differed" not in fused_row["timed"]
    assert fused_row["nfe_forward"] == fused_row["reference_nfe_forward"] > 0
    assert nfe_row["unit"] == "seconds per forward NFE"
    # per NFE: well below the time of one iteration
    assert nfe_row["subject_median_s"] < rows[3]["subject_median_s"]
    assert [r["verdict"] for r in rows if r["id"].startswith("d-")] == ["INFO"] * 4
    table = bench.format_table(rows)
    assert all(r["id"] in table for r in rows) and "goals:" in table
    path = tmp_path / "out" / "benchmarks.json"
    ctdnn.reporting.write_results(path, bench.results_document(rows, ["--quick"], "cpu", 1.0,
                                                               table))
    doc = json.loads(path.read_text())
    assert doc["run"] == "benchmarks" and doc["claims"] == []
    assert doc["environment"]["device"] == "cpu" and "torch" in doc["environment"]["versions"]
    assert [r["id"] for r in doc["rows"]] == ids
    assert not list(path.parent.glob("*.tmp"))


def test_verdicts_follow_the_goals():
    assert bench._verdict("a", 2.0) == "PASS" and bench._verdict("a", 1.99) == "MISS"
    assert bench._verdict("b", 60.0, ok=False) == "MISS"  # NFE differ: never a pass
    assert bench._verdict("c", 1.049) == "PASS" and bench._verdict("c", 0.94) == "MISS"
    assert bench._verdict("d", 2.5) == "PASS" and bench._verdict("d", 2.6) == "MISS"
    assert bench._verdict("a", float("nan")) == "MISS"
    # per NFE: both the absolute time and the ratio must meet their goals
    assert bench._verdict("b-nfe", 40.0, subject_s=0.3e-3) == "PASS"
    assert bench._verdict("b-nfe", 40.0, subject_s=0.4e-3) == "MISS"
    assert bench._verdict("b-nfe", 30.0, subject_s=0.3e-3) == "MISS"


def test_measure_interleaves_variants():
    order = []
    times = bench.measure({"A": lambda: order.append("A"), "B": lambda: order.append("B")},
                          repeats=4, inner=1, warmup={"A": 1, "B": 0})
    assert order == ["A", "A", "B", "B", "A", "A", "B", "B", "A"]
    assert all(len(v) == 4 for v in times.values())


def test_measure_stops_at_its_time_budget_after_the_minimum_repeats():
    import time

    cpu = {}
    times = bench.measure({"A": lambda: time.sleep(0.01)}, repeats=50, warmup=0,
                          max_seconds=0.0, cpu_times=cpu)
    assert len(times["A"]) == bench.MIN_REPEATS == len(cpu["A"])
    assert min(times["A"]) >= 0.01 > max(cpu["A"])  # sleeping is wall time, not CPU time


def test_cli_quick_json(tmp_path, monkeypatch, capsys):
    # The script's entry point, with the tiny sizes and a tiny schedule patched in.
    monkeypatch.setattr(bench, "PAPER", bench.TINY)
    monkeypatch.setitem(bench.SCHEDULE, "quick", {k: (2, 1, None) for k in bench.SCHEDULE["quick"]})
    path = tmp_path / "benchmarks.json"
    assert bench.main(["--quick", "--device", "cpu", "--sections", "ac", "--json",
                       str(path)]) == 0
    out = capsys.readouterr().out
    assert "a-resnet" in out and "c-basis" in out and f"wrote {path}" in out
    doc = json.loads(path.read_text())
    assert doc["command"].endswith("--json " + str(path))
    assert {r["section"] for r in doc["rows"]} == {"a", "c"}
    assert "table" in doc and doc["settings"]["threads"] == 1


def test_cuda_section_is_skipped_with_a_message_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    messages = []
    assert bench._devices("cuda", messages.append) == [torch.device("cpu")]
    assert messages == ["(e) CUDA rows skipped: no CUDA device present"]
