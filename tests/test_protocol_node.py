"""The neural-ODE options that reproduce the authors' Python code, each against a reference
written from its formula: time past T (clamp), absolute time, the linear opening layer, the
Frobenius metric, the step schedule, the iteration loop (L1 loss, clipping, early stopping,
sampling with replacement), the authors' split and normalisation, degree semantics and
parameter counts, and the protocol table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg
from torchdiffeq import odeint

from ctdnn import NeuralODE, TrajectoryODE
from ctdnn.experiments import node
from ctdnn.training import (TrainingError, frobenius_relative_error, relative_error, step_lr,
                            train_iterations)


def _coefficients(layer):
    return layer.theta.coefficients.detach().double().numpy()


def _shifted_legendre(n_functions, s):
    """``P_j(2 s - 1)`` for j < n_functions, from numpy's Legendre module."""
    return np.array([npleg.legval(2 * s - 1, np.eye(n_functions)[j]) for j in range(n_functions)])


def _reference_rhs(model, basis_time):
    """``f(t, u) = K2 tanh(K1 u + b1) + b2`` with weights from numpy's Legendre values."""
    L1, L2 = model.dynamics.layers
    C1, C2 = _coefficients(L1), _coefficients(L2)
    n = C1.shape[0]
    calls = {"n": 0}

    def f(t, u):
        calls["n"] += 1
        p = torch.tensor(_shifted_legendre(n, basis_time(float(t))), dtype=torch.float64)
        W1 = torch.einsum("j,jab->ab", p, torch.from_numpy(C1))
        W2 = torch.einsum("j,jab->ab", p, torch.from_numpy(C2))
        v = torch.tanh(u @ W1[:, :-1].T + W1[:, -1])
        return v @ W2[:, :-1].T + W2[:, -1]

    return f, calls


@pytest.mark.parametrize("time_past_T", ["clamp", "extrapolate"])
def test_clamped_time_matches_a_hand_written_rhs_in_output_and_nfe(time_past_T):
    torch.manual_seed(3)
    model = NeuralODE(4, 3, width=5, hidden=7, T=1.0, basis="legendre", degree=3, rtol=1e-8,
                      atol=1e-10, adjoint=False, time_past_T=time_past_T,
                      opening="linear").double()
    with torch.no_grad():   # strongly time-varying weights, so the end value matters
        for layer in model.dynamics.layers:
            layer.theta.coefficients.add_(torch.randn_like(layer.theta.coefficients))
    x = torch.randn(6, 4, dtype=torch.float64)
    model.eval()
    with torch.no_grad():
        y = model(x)
    nfe = model.stats.nfe_forward
    clamp = (lambda t: min(max(t, 0.0), 1.0)) if time_past_T == "clamp" else (lambda t: t)
    f, calls = _reference_rhs(model, clamp)
    with torch.no_grad():
        u0 = model.opening(x)          # linear opening: no tanh
        uT = odeint(f, u0, torch.tensor([0.0, 1.0], dtype=torch.float64), method="dopri5",
                    rtol=1e-8, atol=1e-10)[-1]
        ref = model.closing(uT)
    assert torch.allclose(y, ref, rtol=0, atol=1e-12)
    assert nfe == calls["n"]


def test_clamp_changes_the_solve_when_stages_overshoot():
    """dopri5's stages overshoot T: clamped and extrapolated bases give different solves."""
    torch.manual_seed(0)
    kw = dict(width=5, hidden=7, T=1.0, basis="monomial", degree=3, rtol=1e-6, atol=1e-8,
              adjoint=False)
    a = NeuralODE(4, 3, time_past_T="clamp", **kw).double()
    b = NeuralODE(4, 3, time_past_T="extrapolate", **kw).double()
    with torch.no_grad():
        for layer in a.dynamics.layers:
            layer.theta.coefficients.mul_(0).add_(
                5 * torch.randn_like(layer.theta.coefficients))
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4, dtype=torch.float64)
    a.eval(), b.eval()
    with torch.no_grad():
        ya, yb = a(x), b(x)
    assert not torch.equal(ya, yb)


def test_absolute_time_evaluates_both_bases_at_absolute_t():
    """Row j: a [0, 1] basis at absolute t in [0, 25], as the old code did."""
    torch.manual_seed(1)
    m = TrajectoryODE(2, hidden=4, T=25.0, basis="legendre", degree=3,
                      time_scaling="absolute").double()
    K, _ = m.weights_at(torch.tensor([20.0], dtype=torch.float64))[0]
    C = torch.from_numpy(_coefficients(m.dynamics.layers[0]))
    p = torch.from_numpy(_shifted_legendre(4, 20.0))
    assert np.allclose(_shifted_legendre(4, 20.0), [1, 39, 2281, 148239])
    assert torch.allclose(K[0], torch.einsum("j,jab->ab", p, C)[:, :-1], rtol=1e-13)
    mono = TrajectoryODE(2, hidden=4, T=25.0, basis="monomial", degree=3,
                         time_scaling="absolute")
    assert mono.basis.T == 1.0 and mono.dynamics.time_scale == 1.0
    assert mono.basis.row(20.0) == [1.0, 20.0, 400.0, 8000.0]
    # at T = 1 absolute and rescaled time are the same
    r = NeuralODE(3, 2, T=1.0, time_scaling="rescaled")
    a = NeuralODE(3, 2, T=1.0, time_scaling="absolute")
    assert (r.basis.T, r.dynamics.time_scale) == (a.basis.T, a.dynamics.time_scale)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="time_past_T"):
        NeuralODE(3, 2, time_past_T="wrap")
    with pytest.raises(ValueError, match="opening"):
        NeuralODE(3, 2, opening="relu")
    with pytest.raises(ValueError, match="time_scaling"):
        TrajectoryODE(2, time_scaling="relative")
    with pytest.raises(ValueError, match="init"):
        NeuralODE(3, 2, init="xavier")


def test_frobenius_and_mean_ratio_metrics_by_hand():
    rng = np.random.default_rng(0)
    P, C = rng.normal(size=(7, 5)), rng.normal(size=(7, 5)) + 3
    frob = np.linalg.norm(P - C) / np.linalg.norm(C)
    mean = np.mean(np.linalg.norm(P - C, axis=1) / np.linalg.norm(C, axis=1))
    tp, tc = torch.from_numpy(P), torch.from_numpy(C)
    assert float(frobenius_relative_error(tp, tc)) == pytest.approx(frob, rel=1e-14)
    assert float(relative_error(tp, tc)) == pytest.approx(mean, rel=1e-14)


def test_step_lr_equals_torch_step_lr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=500, gamma=0.5)
    for it in range(1, 1601):
        assert step_lr(it, 0.01, 500, 0.5) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-15)
        opt.step()
        sched.step()
    assert step_lr(7, 0.01, None, 0.5) == 0.01


def _toy_data(n=60, n_in=3, n_out=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, n_in, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(n_in, n_out, generator=g, dtype=torch.float64)) + 2
    return {"x_train": x[:40], "y_train": y[:40], "x_val": x[40:], "y_val": y[40:]}


def _toy_model(seed=0):
    torch.manual_seed(seed)
    return NeuralODE(3, 2, width=4, hidden=5, rtol=1e-5, atol=1e-7, adjoint=False).double()


def test_early_stopping_stops_after_patience_checks_without_improvement(monkeypatch):
    """A scripted validation sequence: best at the second check, then three without a new
    best (an equal value does not count as better) -> stop at the fifth check."""
    import ctdnn.training as training
    scripted = iter([1.0, 0.9, 0.95, 0.9, 0.91, 0.5, 0.4])
    monkeypatch.setattr(training, "_evaluate",
                        lambda *a, **k: torch.tensor(next(scripted), dtype=torch.float64))
    res = train_iterations(_toy_model(), _toy_data(), iterations=500, batch_size=8, lr=1e-3,
                           eval_every=10, patience=3, progress=False)
    assert res.stopped_early and str(res.status) == "completed"
    assert res.epochs_completed == 50
    assert res.best_epoch == 20 and res.best_val_rel_err == 0.9
    assert res.history["iteration"] == [10, 20, 30, 40, 50]
    assert "stopped early after iteration 50" in res.message


def test_l1_loss_and_clipping_by_hand(monkeypatch):
    """One iteration: the update equals SGD on mean|f(x) - c| with the clipped gradient."""
    data = _toy_data()
    model, ref = _toy_model(), _toy_model()
    gen = torch.Generator().manual_seed(5)
    idx = torch.randint(40, (8,), generator=gen)          # the draw train_iterations makes
    xb, yb = data["x_train"][idx], data["y_train"][idx]
    loss = (ref(xb) - yb).abs().mean()
    loss.backward()
    grads = [q.grad.clone() for q in ref.parameters()]
    norm = torch.sqrt(sum(g.square().sum() for g in grads))
    scale = min(1.0, 0.05 / float(norm))
    assert scale < 1.0   # the clipping is active in this test
    expected = [q.detach() - 0.1 * scale * g for q, g in zip(ref.parameters(), grads)]
    train_iterations(model, data, iterations=1, batch_size=8, lr=0.1, optimizer="sgd",
                     seed=5, loss="l1", clip_grad_norm=0.05, eval_every=1, progress=False)
    for q, e in zip(model.parameters(), expected):
        assert torch.allclose(q.detach(), e, rtol=0, atol=1e-6 * scale)


def test_iteration_loop_resumes_bit_identically(tmp_path):
    data = _toy_data()
    kw = dict(iterations=30, batch_size=8, lr=1e-2, eval_every=10, loss="l1",
              clip_grad_norm=1.0, lr_step_every=15, metric="frobenius", progress=False)
    whole = train_iterations(_toy_model(), data, **kw)
    ck = tmp_path / "run.ckpt"
    m = _toy_model()
    part = train_iterations(m, data, checkpoint=ck, max_iterations=20, **kw)
    assert str(part.status) == "partial"
    m2 = _toy_model()
    done = train_iterations(m2, data, checkpoint=ck, resume=True, **kw)
    assert done.history["val_rel_err"] == whole.history["val_rel_err"]
    for a, b in zip(whole.best_state.values(), done.best_state.values()):
        assert torch.equal(a, b)


def test_iteration_loop_refuses_bad_settings():
    data = _toy_data()
    with pytest.raises(TrainingError, match="loss"):
        train_iterations(_toy_model(), data, iterations=2, loss="huber", progress=False)
    with pytest.raises(TrainingError, match="metric"):
        train_iterations(_toy_model(), data, iterations=2, metric="rmse", progress=False)
    with pytest.raises(TrainingError, match="clip_grad_norm"):
        train_iterations(_toy_model(), data, iterations=2, clip_grad_norm=-1, progress=False)
    with pytest.raises(TrainingError, match="validation split"):
        train_iterations(_toy_model(), {"x_train": data["x_train"], "y_train": data["y_train"]},
                         iterations=2, progress=False)


def test_authors_split_is_the_legacy_permutation():
    from ctdnn.data.dataset import random_split
    tr, va, te = random_split(800, (400, 200, 200), 3, rule="authors")
    perm = np.random.RandomState(3).permutation(800)
    assert (tr == perm[:400]).all() and (va == perm[400:600]).all() and (te == perm[600:]).all()
    with pytest.raises(ValueError, match="split rule"):
        random_split(10, (4, 3, 3), 0, rule="matlab")


def test_dcr_center_zscore_normalisation():
    import ctdnn.data as data
    ds = data.load("DCR", source="simulated", n_samples=700, normalize="center_zscore",
                   progress=False, dtype=torch.float64)
    x_raw = ds.denormalize_x(ds.x_train)
    assert torch.allclose(ds.x_train, (x_raw - x_raw.mean(0)) / x_raw.std(0, unbiased=False),
                          atol=1e-10)
    assert torch.allclose(ds.y_train.mean(0), torch.zeros(ds.n_out, dtype=torch.float64),
                          atol=1e-10)


class _Shape:
    def __init__(self, n_in, n_out):
        self.n_in, self.n_out = n_in, n_out


@pytest.mark.parametrize("dataset,n_in,n_out,counts", [
    ("ELM", 15, 10, {"legendre": 5095, "monomial": 5095, "constant": 1965}),
    ("CDR", 55, 72, {"legendre": 6687, "monomial": 6687, "constant": 3557}),
    ("DCR", 3, 882, {"constant": 15737}),
])
def test_authors_parameter_counts(dataset, n_in, n_out, counts):
    """The trainable parameters of the authors' result files (commit 218b73f)."""
    p = node.Params(dataset=dataset, protocol="authors")
    for name, count in counts.items():
        model = node.build(p.as_dict(), _Shape(n_in, n_out), name)
        assert sum(q.numel() for q in model.parameters()) == count


def test_ctdnn_degree_semantics_count():
    p = node.Params(dataset="ELM")
    model = node.build(p.as_dict(), _Shape(15, 10), "legendre")
    # d = 3: four functions of 1565 dynamics weights, plus 240 + 160 opening/closing
    assert sum(q.numel() for q in model.parameters()) == 6660 == 4 * 1565 + 400


def test_n_functions_semantics():
    assert node.n_functions(3, "degree") == 4
    assert node.n_functions(3, "functions") == 3
    with pytest.raises(ValueError, match="degree_semantics"):
        node.n_functions(3, "terms")
    with pytest.raises(ValueError, match="no basis"):
        node.n_functions(0, "functions")


def test_protocol_table_resolution():
    a = node.Params(protocol="authors")
    assert a.options == node.PROTOCOLS["authors"]
    assert node.Params().options == node.PROTOCOLS["ctdnn"]
    assert set(node.PROTOCOLS["ctdnn"]) == set(node.PROTOCOLS["authors"])
    mixed = node.Params(protocol="authors", metric="mean_ratio", init="uniform")
    assert mixed.options["metric"] == "mean_ratio" and mixed.options["loss"] == "l1"
    single = node.Params(metric="frobenius")
    assert single.options["metric"] == "frobenius" and single.options["loss"] == "squared"
    assert a.normalization("DCR") == "center_zscore" and a.normalization("CDR") is None
    with pytest.raises(ValueError, match="protocol"):
        node.Params(protocol="matlab")
    with pytest.raises(ValueError, match="sampling='with_replacement'"):
        node.Params(loss="l1")
    with pytest.raises(ValueError, match="metric"):
        node.Params(metric="rmse")


def test_authors_protocol_unit_runs_and_reports(monkeypatch):
    """A short run under the authors' protocol on simulated ELM: record keys and semantics."""
    p = node.Params(dataset="ELM", data_source="simulated", n_samples=300, protocol="authors",
                    iterations=40, seeds=[0], rtol=1e-4, atol=1e-6, bases=["constant"])
    rec = node.train_unit({"params": p.as_dict(), "name": "constant", "seed": 0})
    assert rec["status"] == "completed" and rec["unit"] == "iteration"
    assert rec["history"]["step"] == [20.0, 40.0]
    assert rec["n_parameters"] == 1965
    assert rec["train_eval_nfe"] > 0 and rec["test_nfe"] > 0
    assert math.isfinite(rec["test_rel_err"])
    assert rec["stop_iteration"] is None and rec["epochs_completed"] == 40
