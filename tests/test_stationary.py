"""The stationary-ODE task: reference trajectory, split, window sampling, training loop."""

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

import ctdnn
from ctdnn.stationary import (SPIRAL_A, TimeSplit, make_trajectory_data, rollout,
                              sample_windows, spiral_init_, time_split, train_trajectory,
                              true_trajectory)
from ctdnn.training import TrainingError, load_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny tensors: thread hand-offs cost more than the arithmetic.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data():
    return make_trajectory_data(400, 25.0)


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"hidden": 12, "degree": 2, "rtol": 1e-3, "atol": 1e-5, **kw}
    model = ctdnn.TrajectoryODE(**kw).double()
    return spiral_init_(model, generator=torch.Generator().manual_seed(seed))


def _train(model, data, **kw):
    kw = {"iterations": 12, "batch_time": 6, "batch_size": 8, "lr": 3e-3, "eval_every": 6,
          "progress": False, "device": "cpu", **kw}
    return train_trajectory(model, data=data, **kw)


# -- the reference trajectory ----------------------------------------------------------

def test_true_trajectory_matches_an_independent_solver():
    t, y = true_trajectory(200, 25.0)
    assert t.dtype == y.dtype == torch.float64 and y.shape == (200, 2)
    assert float(t[0]) == 0.0 and float(t[-1]) == 25.0
    torch.testing.assert_close(y[0], torch.tensor([2.0, 0.0], dtype=torch.float64))
    A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
    # LSODA (Adams/BDF, Fortran ODEPACK): a different method and code from DOP853.
    ref = solve_ivp(lambda _t, u: u ** 3 @ A, (0, 25), [2.0, 0.0], method="LSODA",
                    t_eval=t.numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(y.numpy(), ref.y.T, atol=1e-9)
    np.testing.assert_array_equal(np.array(SPIRAL_A), A)


def test_true_trajectory_satisfies_the_energy_identity():
    # H = y1^4 + y2^4 obeys dH/dt = -0.4 (y1^6 + y2^6) for dy/dt = (y^3) A.
    from scipy.integrate import cumulative_simpson

    t, y = true_trajectory(16001, 25.0)
    t, y = t.numpy(), y.numpy()
    H = (y ** 4).sum(1)
    rhs = -0.4 * (y ** 6).sum(1)
    integral = cumulative_simpson(rhs, x=t, initial=0.0)
    # Simpson's rule is exact to O(h^4) at the even nodes (H(0) = 16).
    np.testing.assert_allclose((H - H[0])[::2], integral[::2], atol=1e-7)
    assert H[-1] < 0.1 * H[0]  # the spiral decays


@pytest.mark.parametrize("kw, name", [({"n_points": 3}, "n_points"), ({"n_points": 10.5}, "n_points"),
                                      ({"T": -1.0}, "T"), ({"T": float("nan")}, "T")])
def test_true_trajectory_bad_arguments(kw, name):
    with pytest.raises(TrainingError, match=name):
        true_trajectory(**kw)


# -- the split -------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1000, 1001, 257])
def test_split_boundaries(n):
    t, _ = true_trajectory(n, 25.0)
    sp = time_split(t)
    assert isinstance(sp, TimeSplit) and sp.n_points == n
    assert float(t[sp.val_start - 1]) < 16.0 - 1e-9 and float(t[sp.val_start]) >= 16.0 - 1e-9
    assert float(t[sp.test_start - 1]) < 20.0 - 1e-9 and float(t[sp.test_start]) >= 20.0 - 1e-9
    idx = torch.arange(n)
    assert torch.equal(torch.cat([idx[sp.train], idx[sp.val], idx[sp.test]]), idx)
    if n == 1000:
        assert (sp.val_start, sp.test_start) == (640, 800)
    if n == 1001:  # t = 16 and t = 20 are samples; each starts its region
        assert float(t[sp.val_start]) == pytest.approx(16.0) and sp.val_start == 640


def test_split_bad_fractions():
    t, _ = true_trajectory(100)
    with pytest.raises(TrainingError, match="train_frac"):
        time_split(t, 0.9, 0.8)


def test_windows_stay_in_the_training_region(data):
    sp = data.split
    g = torch.Generator().manual_seed(0)
    starts = torch.cat([sample_windows(sp, 10, 20, g) for _ in range(300)])
    assert int(starts.min()) == 0 and int(starts.max()) == sp.val_start - 10
    with pytest.raises(TrainingError, match="batch_time"):
        sample_windows(sp, sp.val_start + 1, 4, g)


# -- training --------------------------------------------------------------------------

def test_training_reduces_the_loss_and_solves_windows_in_one_call(data):
    model = _model()
    calls = []
    forward = model.forward

    def spy(y0, t, offsets=None):
        calls.append((y0.shape[0], float(t[0]), None if offsets is None else offsets.clone(),
                      float(t[-1])))
        return forward(y0, t, offsets)

    model.forward = spy
    res = _train(model, data, iterations=40, eval_every=10)
    assert res.status == "completed" and res.iterations_completed == 40
    losses = res.history["loss"]
    assert np.mean(losses[-8:]) < 0.6 * losses[0]
    train_calls = [c for c in calls if c[2] is not None]
    assert len(train_calls) == 40  # one solve per iteration for all windows
    t_end = float(data.t[data.split.val_start])
    for batch, t0, offsets, t_last in train_calls:
        assert batch == 8 and t0 == 0.0
        assert float(offsets.min()) >= 0.0 and float(offsets.max()) + t_last < t_end - 1e-12
    # The model holds the best-on-validation state.
    assert res.best_val_rel_err == min(res.evaluations["val_rel_err"])
    pred, _ = rollout(model, data.to(dtype=torch.float64), "val")
    err = float(ctdnn.relative_error(pred, data.y[data.split.val]))
    assert err == pytest.approx(res.val_rel_err) == pytest.approx(res.best_val_rel_err)


def test_nfe_history_and_results(data):
    res = _train(_model(), data)
    nfe = res.history["nfe"]
    assert len(nfe) == 12 and all(b > a for a, b in zip(nfe, nfe[1:]))
    assert res.train_nfe == nfe[-1] == res.history["nfe_forward"][-1]
    assert res.history["nfe_backward"][-1] == 0  # backpropagation through the solver
    ev = res.evaluations
    assert ev["iteration"] == [6, 12] and ev["nfe"] == [nfe[5], nfe[11]]
    assert ev["eval_nfe"][0] > 0 and ev["eval_nfe"][1] > ev["eval_nfe"][0]
    assert res.eval_nfe > ev["eval_nfe"][-1] and res.test_nfe > 0
    assert res.n_time_parameters == 3 * (12 * 3 + 2 * 13)
    for region, n in (("train", data.split.val_start),
                      ("test", data.split.n_points - data.split.test_start)):
        p = res.predictions[region]
        assert p.shape == (n, 2)
        torch.testing.assert_close(p[0], data.y[data.split.region(region)][0])
    assert math.isfinite(res.test_rel_err) and res.test_rel_err > 0
    assert res.rollout_status == {"train": "ok", "val": "ok", "test": "ok"}
    summary = res.summary()
    assert "history" not in summary and summary["train_nfe"] == res.train_nfe


def test_adjoint_counts_backward_nfe(data):
    res = _train(_model(adjoint=True), data, iterations=3, eval_every=3)
    assert res.history["nfe_backward"][-1] > 0
    assert res.train_nfe == res.history["nfe_forward"][-1] + res.history["nfe_backward"][-1]


def test_training_is_deterministic_for_a_seed(data):
    a = _train(_model(), data, seed=3)
    b = _train(_model(), data, seed=3)
    c = _train(_model(), data, seed=4)
    assert a.history["loss"] == b.history["loss"] and a.history["nfe"] == b.history["nfe"]
    assert a.test_rel_err == b.test_rel_err
    for k in a.best_state:
        assert torch.equal(a.best_state[k], b.best_state[k])
    assert a.history["loss"] != c.history["loss"]


def test_resume_is_bit_identical(data, tmp_path):
    full = _train(_model(), data)
    ckpt = tmp_path / "run.pt"
    model = _model()
    part = _train(model, data, checkpoint=ckpt, max_iterations=5, checkpoint_every=5)
    assert part.status == "partial" and part.iterations_completed == 5 and ckpt.exists()
    rest = _train(_model(seed=9), data, checkpoint=ckpt, resume=True)
    assert rest.status == "completed" and rest.iterations_completed == 12
    assert rest.history["loss"] == full.history["loss"]
    assert rest.history["nfe"] == full.history["nfe"]
    assert rest.evaluations["val_rel_err"] == full.evaluations["val_rel_err"]
    assert rest.test_rel_err == full.test_rel_err
    with pytest.raises(TrainingError, match="other settings"):
        _train(_model(), data, checkpoint=ckpt, resume=True, lr=1e-2)


def test_a_failed_solve_stops_the_run_cleanly(data):
    # Two adaptive steps suffice for the first windows only: a later solve fails.
    ok = _train(_model(), data)
    res = _train(_model(max_num_steps=2), data)
    assert res.status == "solver_failed" and res.solver_status == "too_many_steps"
    n = res.iterations_completed
    assert 0 < n < 12 and f"iteration {n + 1} failed" in res.message
    assert res.history["loss"] == ok.history["loss"][:n]
    # The last good state was evaluated and is a candidate for the best state.
    assert res.evaluations["iteration"][-1] == n
    assert res.train_nfe > res.history["nfe"][-1]  # the failed solve's work is counted


def test_a_failed_run_is_not_retried_on_resume(data, tmp_path):
    ckpt = tmp_path / "failed.pt"
    res = _train(_model(max_num_steps=2), data, checkpoint=ckpt)
    assert res.status == "solver_failed"
    again = _train(_model(max_num_steps=2), data, checkpoint=ckpt, resume=True)
    assert (again.status, again.message, again.solver_status) == (res.status, res.message,
                                                                   res.solver_status)
    assert again.history["loss"] == res.history["loss"] and again.train_nfe == res.train_nfe
    assert again.test_rel_err == res.test_rel_err


def test_a_failure_before_any_update_keeps_the_initial_state(data):
    model = _model()
    forward = model.forward

    def failing(y0, t, offsets=None):
        if offsets is not None:  # training solves fail, rollouts work
            raise ctdnn.SolverError("step_size_underflow", "underflow in dt 1e-300")
        return forward(y0, t, offsets)

    model.forward = failing
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = _train(model, data)
    assert res.status == "solver_failed" and res.solver_status == "step_size_underflow"
    assert res.iterations_completed == 0 and "iteration 1 failed" in res.message
    assert res.evaluations["iteration"] == [0] and math.isfinite(res.test_rel_err)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_rollout_budget(data):
    model = _model()
    with pytest.raises(ctdnn.SolverError) as info:
        rollout(model, data, "train", max_nfe=10)
    assert info.value.status == "too_many_steps" and info.value.stats.nfe_forward == 10
    pred, stats = rollout(model, data, "train")  # the hook is gone
    assert stats.nfe > 10 and torch.isfinite(pred).all()
    res = _train(model, data, iterations=4, eval_every=2, eval_max_nfe=10)
    assert res.status == "completed"  # failed evaluations do not stop training
    assert res.evaluations["val_rel_err"] == [math.inf, math.inf]
    assert res.evaluations["eval_nfe"] == [20, 40]
    assert res.rollout_status == {"train": "too_many_steps", "val": "too_many_steps",
                                  "test": "too_many_steps"}
    assert res.test_rel_err == math.inf and res.test_nfe == 10


@pytest.mark.parametrize("kw, name", [
    ({"iterations": 0}, "iterations"), ({"iterations": 2.5}, "iterations"),
    ({"batch_time": 1}, "batch_time"), ({"batch_time": 10_000}, "batch_time"),
    ({"batch_size": 0}, "batch_size"), ({"eval_every": 0}, "eval_every"),
    ({"lr": -1.0}, "lr"), ({"optimizer": "lbfgs"}, "optimizer"),
    ({"grad_clip": -1.0}, "grad_clip"), ({"eval_max_nfe": 0}, "eval_max_nfe"), ({"data": "spiral"}, "data"),
])
def test_bad_arguments_name_the_argument(data, kw, name):
    kw = {"data": data, **kw}
    with pytest.raises(TrainingError, match=name):
        train_trajectory(_model(), progress=False, device="cpu", **kw)


def test_data_must_cover_the_model_horizon(data):
    with pytest.raises(TrainingError, match="T=25"):
        train_trajectory(_model(T=20.0), data=data, progress=False)


def test_legendre_time_scalings_coincide(data):
    y0 = data.y[:3]
    tau = data.t[:5]
    off = data.t[[0, 100, 300]]
    a = _model(basis="legendre", degree=3, time_scaling="rescaled")
    b = _model(basis="legendre", degree=3, time_scaling="unscaled")
    with torch.no_grad():
        for p in a.parameters():  # non-constant weights, so time matters
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1),
                                     dtype=p.dtype))
        b.load_state_dict(a.state_dict())
        torch.testing.assert_close(a(y0, tau, offsets=off), b(y0, tau, offsets=off),
                                   rtol=1e-12, atol=1e-12)


def test_spiral_init_is_constant_in_time():
    model = _model(basis="monomial", degree=3, hidden=50)
    for layer in model.dynamics.layers:
        c = layer.theta.coefficients
        assert torch.all(c[1:] == 0) and torch.all(c[0, :, -1] == 0)
        assert 0.05 < float(c[0, :, :-1].detach().std()) < 0.2


def test_interrupt_saves_and_resume_is_bit_identical(data, tmp_path, monkeypatch):
    full = _train(_model(), data)
    ckpt = tmp_path / "run.pt"
    model = _model()
    calls = {"n": 0}
    forward = model.forward

    def interrupting_forward(y0, t, offsets=None):
        if offsets is not None:  # a training solve, not an evaluation rollout
            calls["n"] += 1
            if calls["n"] == 8:  # iteration 8, after the evaluation at iteration 6
                raise KeyboardInterrupt
        return forward(y0, t, offsets=offsets)

    monkeypatch.setattr(model, "forward", interrupting_forward)
    with pytest.raises(KeyboardInterrupt):
        _train(model, data, checkpoint=ckpt, checkpoint_every=100)
    saved = load_checkpoint(ckpt, "trajectory")
    assert saved["iteration"] == 7 and saved["history"]["iteration"] == list(range(1, 8))
    assert saved["ended"] is None  # an interruption is resumed, not reported as a failure
    rest = _train(_model(seed=9), data, checkpoint=ckpt, resume=True)
    assert rest.status == "completed" and rest.iterations_completed == 12
    for key in ("loss", "nfe", "nfe_forward", "nfe_backward"):
        assert rest.history[key] == full.history[key], key
    assert rest.evaluations["val_rel_err"] == full.evaluations["val_rel_err"]
    assert rest.train_nfe == full.train_nfe and rest.test_rel_err == full.test_rel_err
    for k, v in full.best_state.items():
        assert torch.equal(v, rest.best_state[k]), k
