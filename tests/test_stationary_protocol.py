"""The stationary-ODE protocol options, each against an independent reference."""

import math

import numpy as np
import pytest
import torch

from ctdnn.neural_ode import TrajectoryODE
from ctdnn.stationary import (PROTOCOLS, TrainingError, basis_degree, lr_at,
                              make_trajectory_data, protocol_options, region_error,
                              sample_windows, spiral_init_, time_split, train_trajectory,
                              true_trajectory)


def _model(**kw):
    kw = {"hidden": 8, "T": 25.0, "basis": "legendre", "degree": 1, "rtol": 1e-4,
          "atol": 1e-6, **kw}
    m = TrajectoryODE(**kw).double()
    spiral_init_(m, generator=torch.Generator().manual_seed(0))
    return m


def test_protocol_table_fills_none_and_explicit_values_override():
    opts = protocol_options("authors", batch_size=None, grad_clip=None, n_points=800)
    assert opts["batch_size"] == 1 and opts["grad_clip"] == 1.0 and opts["n_points"] == 800
    assert opts["lr_decay_every"] == 500 and opts["early_stop_patience"] == 5
    assert opts["eval_every"] == 100 and opts["error_metric"] == "frobenius"
    assert set(PROTOCOLS["authors"]) == set(PROTOCOLS["ctdnn"])
    assert protocol_options("ctdnn")["batch_size"] == 20
    with pytest.raises(ValueError, match="protocol must be one of"):
        protocol_options("matlab")


def test_rk4_grid_reference_matches_torchdiffeq_rk4():
    from torchdiffeq import odeint

    A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=torch.float64)
    t, y = true_trajectory(500, 25.0, reference="rk4_grid")
    ref = odeint(lambda _t, u: torch.mm(u ** 3, A), torch.tensor([[2.0, 0.0]], dtype=torch.float64),
                 t, method="rk4")[:, 0]
    assert torch.allclose(y, ref, rtol=0, atol=1e-13)
    # and it differs from the accurate DOP853 solution by the RK4 error only
    _, y_exact = true_trajectory(500, 25.0)
    assert 1e-4 < float((y - y_exact).abs().max()) < 2e-2
    with pytest.raises(TrainingError, match="reference must be one of"):
        true_trajectory(100, reference="euler")


def test_region_error_metrics_by_hand():
    rng = np.random.default_rng(0)
    P, C = rng.normal(size=(7, 2)), rng.normal(size=(7, 2))
    frob = np.sqrt(((P - C) ** 2).sum()) / np.sqrt((C ** 2).sum())
    per = np.mean(np.sqrt(((P - C) ** 2).sum(1)) / np.sqrt((C ** 2).sum(1)))
    tP, tC = torch.tensor(P), torch.tensor(C)
    assert float(region_error(tP, tC, "frobenius")) == pytest.approx(frob, rel=1e-14)
    assert float(region_error(tP, tC, "per_sample")) == pytest.approx(per, rel=1e-14)
    with pytest.raises(TrainingError, match="error_metric"):
        region_error(tP, tC, "max")


def test_lr_schedule_equals_torch_steplr():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.RMSprop([p], lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
    for it in range(1, 40):
        assert lr_at(1e-3, it, 7, 0.5) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-15)
        opt.step()
        sched.step()
    assert lr_at(1e-3, 1000, None, 0.5) == 1e-3


def test_training_applies_the_step_decay():
    """The learning rates used in training: RMSprop's first step moves each coefficient by
    lr * g / sqrt((1 - alpha) g^2) = lr / sqrt(0.01) = 10 lr, whatever the gradient."""
    d = make_trajectory_data(200, 25.0)
    seen = []
    orig = torch.optim.RMSprop.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.RMSprop.step = spy
    try:
        train_trajectory(_model(), data=d, iterations=9, batch_size=2, eval_every=9,
                         lr=0.01, lr_decay_every=4, lr_decay_gamma=0.1, progress=False)
    finally:
        torch.optim.RMSprop.step = orig
    assert seen == pytest.approx([0.01] * 4 + [0.001] * 4 + [1e-4], rel=1e-12)


def test_window_sampling_excludes_the_last_start_like_randint():
    split = time_split(torch.linspace(0, 25, 100))     # val_start = 64
    gen = torch.Generator().manual_seed(0)
    s_all = sample_windows(split, 10, 20000, gen, include_last=True)
    s_auth = sample_windows(split, 10, 20000, gen, include_last=False)
    assert int(s_all.max()) == split.val_start - 10 and int(s_all.min()) == 0
    # np.random.randint(0, train_end_idx - bt): starts 0 .. val_start - bt - 1
    assert int(s_auth.max()) == split.val_start - 10 - 1


def test_closed_regions_add_the_next_first_sample():
    split = time_split(torch.linspace(0, 25, 500))
    assert split.region("train", True) == slice(0, split.val_start + 1)
    assert split.region("val", True) == slice(split.val_start, split.test_start + 1)
    assert split.region("test", True) == split.test


def test_early_stopping_on_a_scripted_validation_sequence(monkeypatch):
    """Validation errors 5, 4, 4.5, 3.9, 6, 3, 7, 3, ...: a check improves only if strictly
    below the best (the authors' ``val < best``), so with patience 2 the run stops at check 8
    (7 and the tie 3 after the best 3 at check 6)."""
    import ctdnn.stationary as st

    seq = iter([5, 4, 4.5, 3.9, 6, 3, 7, 3, 9, 10, 11, 12, 13, 14, 15, 16, 17])
    real = st._region_error

    def scripted(model, data, region, *a, **k):
        err, nfe, status = real(model, data, region, *a, **k)
        return (float(next(seq)), nfe, status) if region == "val" else (err, nfe, status)

    monkeypatch.setattr(st, "_region_error", scripted)
    d = make_trajectory_data(200, 25.0)
    r = train_trajectory(_model(), data=d, iterations=60, batch_size=1, eval_every=3,
                         early_stop_patience=2, progress=False)
    # checks at 3, 6, ..., the 8th at iteration 24; best at the 6th (iteration 18)
    assert r.early_stopped_at == 24 and r.iterations_completed == 24
    assert r.best_iteration == 18 and r.status == "completed"
    assert "early stop" in r.message


def test_gradient_clipping_norm(monkeypatch):
    """The gradient the optimiser sees with ``grad_clip=c`` is the raw gradient scaled by
    ``c / (||g|| + 1e-6)`` (total norm over all coefficients), by hand."""
    d = make_trajectory_data(200, 25.0)
    state = {k: v.clone() for k, v in _model().state_dict().items()}
    orig = torch.optim.SGD.step
    seen = []

    def capture(self, *a, **k):
        seen.append([p.grad.clone() for p in self.param_groups[0]["params"]])
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.SGD, "step", capture)
    for clip in (None, 1e-3):
        m = _model()
        m.load_state_dict(state)
        train_trajectory(m, data=d, iterations=1, batch_size=3, optimizer="sgd", lr=0.1,
                         grad_clip=clip, eval_every=1, progress=False)
    raw, clipped = seen
    norm = math.sqrt(sum(float((g ** 2).sum()) for g in raw))
    assert norm > 1e-3
    for g, c in zip(raw, clipped):
        # clip_grad_norm_ scales by c / (||g|| + 1e-6), as torch documents
        assert torch.allclose(c, g * (1e-3 / (norm + 1e-6)), rtol=1e-9, atol=0)


def test_loss_is_the_mean_absolute_error_of_the_windows(monkeypatch):
    """The recorded loss of the first iteration equals the L1 mean of a hand-written solve of
    the same windows with torchdiffeq."""
    from torchdiffeq import odeint

    d = make_trajectory_data(200, 25.0)
    m = _model(rtol=1e-9, atol=1e-11)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    r = train_trajectory(m, data=d, iterations=1, batch_size=3, batch_time=6, eval_every=1,
                         seed=4, progress=False)
    gen = torch.Generator(device="cpu").manual_seed(4)
    s = sample_windows(d.split, 6, 3, gen)
    ref = _model(rtol=1e-9, atol=1e-11)
    ref.load_state_dict(state)
    losses = []
    for start in s.tolist():
        f = lambda t, y: ref.dynamics.rhs(t, y)  # noqa: E731 - absolute time, one window
        pred = odeint(f, d.y[start:start + 1], d.t[start:start + 6], rtol=1e-11, atol=1e-13)
        losses.append((pred[:, 0] - d.y[start:start + 6]).abs())
    assert r.history["loss"][0] == pytest.approx(float(torch.stack(losses).mean().detach()), rel=1e-6)


def test_budget_stops_training_with_a_lower_bound():
    d = make_trajectory_data(200, 25.0)
    r = train_trajectory(_model(), data=d, iterations=50, batch_size=1, eval_every=5,
                         max_train_nfe=300, progress=False)
    assert r.budget_spent and r.status == "solver_failed" and r.solver_status == "too_many_steps"
    assert r.train_nfe == 300 and r.iterations_completed < 50


@pytest.mark.parametrize("semantics,k,n_functions", [("degree", 3, 4), ("functions", 3, 3),
                                                      ("degree", 0, 1), ("functions", 1, 1)])
def test_degree_semantics_parameter_counts(semantics, k, n_functions):
    # 2 -> 50 -> 2 with biases: 50 * 3 + 2 * 51 = 252 coefficients per basis function
    m = TrajectoryODE(hidden=50, T=25.0, basis="monomial", degree=basis_degree(k, semantics))
    assert m.n_time_parameters == 252 * n_functions
    with pytest.raises(ValueError, match="degree_semantics"):
        basis_degree(3, "order")
    with pytest.raises(ValueError, match="needs degree >= 1"):
        basis_degree(0, "functions")


def test_experiment_params_take_the_protocol():
    from ctdnn.experiments import stationary as S

    p = S.Params(protocol="authors", iterations=None, rtol=None, atol=None, eval_every=None)
    assert (p.batch_size, p.n_points, p.grad_clip, p.lr_decay_every, p.early_stop_patience,
            p.eval_every, p.rtol, p.atol, p.dtype, p.reference) == (
        1, 500, 1.0, 500, 5, 100, 1e-7, 1e-9, "float32", "rk4_grid")
    q = S.Params(protocol="authors", batch_size=4)
    assert q.batch_size == 4
    with pytest.raises(ValueError, match="protocol"):
        S.Params(protocol="paper")
    with pytest.raises(ValueError, match="time_scalings"):
        S.Params(time_scalings=["relative"])


def test_bootstrap_ratio_against_enumeration():
    """With 3 seeds the bootstrap distribution has 27 equally likely resamples; the percentile
    interval of many draws lies within the range of the enumerated ratios."""
    import itertools

    from ctdnn.experiments.stationary import bootstrap_ratio

    num, den = np.array([800.0, 900.0, 1000.0]), np.array([100.0, 120.0, 90.0])
    ratios = [num[list(i)].sum() / den[list(i)].sum()
              for i in itertools.product(range(3), repeat=3)]
    lo, hi = bootstrap_ratio(num, den, n_boot=20000)
    assert min(ratios) <= lo < hi <= max(ratios)
    # the resamples are equally likely: the exact quantiles of their discrete distribution
    assert lo == pytest.approx(np.quantile(ratios, 0.025, method="inverted_cdf"), rel=1e-3)
    assert hi == pytest.approx(np.quantile(ratios, 0.975, method="inverted_cdf"), rel=1e-3)
    assert all(math.isnan(v) for v in bootstrap_ratio(num[:1], den[:1]))


def _setting(ratio, interval, mono_bound=False, leg_bound=False, learned=True, per_run=None):
    return {"ratio": ratio, "interval": interval, "per_seed": [ratio],
            "lower_bound": {"monomial": mono_bound, "legendre": leg_bound},
            "learned": {"monomial": learned, "legendre": learned},
            "per_run": per_run or {"legendre": 6.1e6, "monomial": 5.2e7}}


def test_headline_rule_reaches_each_verdict():
    from ctdnn.experiments.stationary import _setting_outcome, nfe_headline

    match = _setting_outcome(_setting(8.0, (6.0, 10.0)), 3, True)
    ratio_only = _setting_outcome(_setting(8.0, (6.0, 10.0)), 3, False)
    miss = _setting_outcome(_setting(1.0, (0.9, 1.1)), 3, True)
    undecided = _setting_outcome(_setting(8.0, (6.0, 10.0), learned=False), 3, True)
    assert [o[0] for o in (match, ratio_only, miss, undecided)] == [
        "matches", "ratio only", "misses", "undecided"]
    # totals far from the paper's per-run figures: the ratio alone matches
    far = _setting_outcome(_setting(8.0, (6.0, 10.0), per_run={"legendre": 50.0,
                                                              "monomial": 400.0}), 3, True)
    assert far[0] == "ratio only"
    # bounds: a monomial lower bound above the band misses, inside it cannot decide
    assert _setting_outcome(_setting(40.0, (30.0, 50.0), mono_bound=True), 3, True)[0] == "misses"
    assert _setting_outcome(_setting(5.0, (4.0, 6.0), mono_bound=True), 3, True)[0] == "undecided"
    assert _setting_outcome(_setting(5.0, (4.0, 6.0), leg_bound=True), 3, True)[0] == "undecided"
    assert _setting_outcome(_setting(8.0, (6.0, 10.0)), 1, True)[0] == "undecided"
    # outside the band but the interval reaches it: undecided
    assert _setting_outcome(_setting(3.0, (1.0, 6.0)), 3, True)[0] == "undecided"
    assert nfe_headline({"a": match, "b": miss}).verdict == "reproduced"
    assert nfe_headline({"a": ratio_only, "b": miss}).verdict == "partly"
    assert nfe_headline({"a": miss, "b": undecided}).verdict == "not reproduced"
    assert nfe_headline({"a": undecided}).verdict == "inconclusive"
    assert nfe_headline({}).verdict == "inconclusive"
    assert "nfe-headline-factorial" in __import__("ctdnn.experiments.rules",
                                                  fromlist=["RULES"]).RULES


def test_loss_drop_by_hand():
    from ctdnn.experiments.stationary import loss_drop

    losses = [1.0] * 10 + [0.5] * 80 + [0.2] * 10
    assert loss_drop(losses) == pytest.approx(0.2)
    assert math.isnan(loss_drop([1.0]))
    assert loss_drop([1.0, float("nan")]) == math.inf
