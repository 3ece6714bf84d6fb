"""Solver statistics against torchdiffeq's own callbacks, adjoint vs direct gradients."""

import math

import numpy as np
import pytest
import torch
from torch import nn
from torchdiffeq import odeint

import ctdnn
from ctdnn.solvers import Dynamics, SolverError, solve


class Decay(Dynamics):
    """du/dt = -lam u, exact solution u0 exp(-lam t)."""

    def __init__(self, lam):
        super().__init__()
        self.lam = nn.Parameter(torch.tensor(lam, dtype=torch.float64))

    def rhs(self, t, u):
        return -self.lam * u


class IndependentCounter(nn.Module):
    """Plain torchdiffeq right-hand side with its own counters and callbacks."""

    def __init__(self, lam):
        super().__init__()
        self.lam = lam
        self.nfe = self.accepted = self.rejected = 0

    def forward(self, t, u):
        self.nfe += 1
        return -self.lam * u

    def callback_accept_step(self, t0, y0, dt):
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.rejected += 1


@pytest.mark.parametrize("lam,rtol", [(1.0, 1e-7), (30.0, 1e-9)])
def test_nfe_counts_agree_with_torchdiffeq_callbacks(lam, rtol):
    u0 = torch.ones(3, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    ref = IndependentCounter(lam)
    sol_ref = odeint(ref, u0, t, method="dopri5", rtol=rtol, atol=1e-12)
    func = Decay(lam)
    sol, stats = solve(func, u0, t, method="dopri5", rtol=rtol, atol=1e-12)
    torch.testing.assert_close(sol, sol_ref)
    assert (stats.nfe_forward, stats.n_accepted, stats.n_rejected) == (ref.nfe, ref.accepted, ref.rejected)
    # dopri5 (FSAL): 2 evaluations to start and choose h0, then 6 per attempted step
    assert stats.nfe_forward == 2 + 6 * (stats.n_accepted + stats.n_rejected)
    np.testing.assert_allclose(sol[-1].detach().numpy(), math.exp(-2 * lam), rtol=1e-5, atol=1e-10)
    assert func.total.nfe_forward == stats.nfe_forward and func.total.n_solves == 1


def test_adjoint_counts_backward_evaluations():
    func = Decay(1.0)
    u0 = torch.ones(2, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sol, stats = solve(func, u0, t, rtol=1e-8, atol=1e-10, adjoint=True)
    assert stats.nfe_backward == 0
    sol[-1].sum().backward()
    assert stats.nfe_backward > 0 and stats.n_accepted_backward > 0
    assert stats.nfe_backward == 2 + 6 * (stats.n_accepted_backward + stats.n_rejected_backward)
    # d/dlam of sum(exp(-lam)) over 4 entries = -4 exp(-1)
    np.testing.assert_allclose(func.lam.grad.item(), -4 * math.exp(-1.0), rtol=1e-6)
    func.reset_stats()
    assert func.total.nfe == 0


def test_adjoint_and_direct_gradients_agree():
    torch.manual_seed(0)
    grads = []
    x = torch.randn(6, 3, dtype=torch.float64)
    for adjoint in (False, True):
        torch.manual_seed(1)
        model = ctdnn.NeuralODE(3, 2, width=4, hidden=5, basis="legendre", degree=2,
                                rtol=1e-10, atol=1e-12, adjoint=adjoint).double()
        with torch.no_grad():
            for p in model.dynamics.parameters():
                p.add_(0.3 * torch.randn_like(p))
        model(x).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        if adjoint:
            assert model.stats.nfe_backward > 0
        else:
            assert model.stats.nfe_backward == 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-6, atol=1e-8)


def test_cumulative_stats_and_reset():
    model = ctdnn.NeuralODE(3, 2, width=4, adjoint=False)
    x = torch.randn(5, 3)
    model(x)
    first = model.stats.nfe_forward
    model(x)
    assert model.total_stats.nfe_forward == 2 * first and model.total_stats.n_solves == 2
    model.reset_stats()
    assert model.total_stats.nfe == 0


class Blowup(Dynamics):
    def rhs(self, t, u):
        return u ** 2


def test_failed_solves_report_a_status():
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    u0 = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(SolverError) as info:  # u = 1/(1-t) blows up at t = 1
        solve(Blowup(), u0, t, rtol=1e-7, atol=1e-9)
    assert info.value.status in ("step_size_underflow", "non_finite", "too_many_steps")
    with pytest.raises(SolverError) as info:
        solve(Decay(1.0), u0, t, rtol=1e-12, atol=1e-14, max_num_steps=3)
    assert info.value.status == "too_many_steps"
    assert info.value.stats.nfe_forward > 0
    assert "too_many_steps" in str(info.value)


def test_method_and_tolerance_validation():
    u0 = torch.ones(1, 1)
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="needs an explicit step_size"):
        solve(Decay(1.0), u0, t, method="rk4")
    with pytest.raises(ValueError, match="unknown ODE method"):
        solve(Decay(1.0), u0, t, method="magic")
    with pytest.raises(ValueError, match="rtol must be a positive"):
        ctdnn.NeuralODE(3, 2, rtol=-1.0)
    with pytest.raises(ValueError, match="time_scaling"):
        ctdnn.NeuralODE(3, 2, time_scaling="relative")


def test_fixed_step_solve_counts():
    func = Decay(1.0)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sol, stats = solve(func, torch.ones(1, 1, dtype=torch.float64), t, method="rk4", step_size=0.1)
    assert stats.nfe_forward == 40  # 10 steps x 4 stages
    np.testing.assert_allclose(sol[-1].item(), math.exp(-1), rtol=1e-6)


def test_trajectory_ode_offsets_equal_separate_solves():
    torch.manual_seed(0)
    model = ctdnn.TrajectoryODE(2, hidden=8, T=25.0, basis="legendre", degree=3,
                                rtol=1e-10, atol=1e-12).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    y0 = torch.randn(3, 2, dtype=torch.float64) * 0.5
    offsets = torch.tensor([0.0, 7.0, 19.0], dtype=torch.float64)
    tau = torch.linspace(0, 0.5, 5, dtype=torch.float64)
    batched = model(y0, tau, offsets)
    for i in range(3):
        single = model(y0[i:i + 1], tau + offsets[i])
        torch.testing.assert_close(batched[:, i], single[:, 0], rtol=1e-7, atol=1e-9)


def test_unscaled_monomials_blow_up_but_legendre_does_not_change():
    leg_r = ctdnn.TrajectoryODE(2, T=25.0, basis="legendre", degree=3, time_scaling="rescaled")
    leg_u = ctdnn.TrajectoryODE(2, T=25.0, basis="legendre", degree=3, time_scaling="unscaled")
    t = torch.tensor([0.0, 12.5, 25.0])
    s_r = leg_r.dynamics.time_scale * t
    s_u = leg_u.dynamics.time_scale * t
    torch.testing.assert_close(leg_r.basis(s_r), leg_u.basis(s_u))
    mono_u = ctdnn.TrajectoryODE(2, T=25.0, basis="monomial", degree=3, time_scaling="unscaled")
    assert mono_u.basis(mono_u.dynamics.time_scale * t).max() == pytest.approx(25.0 ** 3)


def test_seminorm_adjoint_needs_fewer_backward_evaluations_same_gradient():
    x = torch.randn(6, 3, dtype=torch.float64)
    grads, nfe = [], []
    for norm in ("default", "seminorm"):
        torch.manual_seed(1)
        model = ctdnn.NeuralODE(3, 2, width=4, hidden=5, rtol=1e-9, atol=1e-11,
                                adjoint=True, adjoint_norm=norm).double()
        model(x).square().sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        nfe.append(model.stats.nfe_backward)
    assert nfe[1] < nfe[0]
    assert torch.linalg.vector_norm(grads[0] - grads[1]) < 1e-5 * torch.linalg.vector_norm(grads[0])
    with pytest.raises(ValueError, match="adjoint_norm"):
        solve(Decay(1.0), torch.ones(1, 1), torch.tensor([0.0, 1.0]), adjoint_norm="l1")
