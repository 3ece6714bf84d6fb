"""The neural-ODE right-hand side computes what its formulas say, to round-off, in float64.

The reference below is written out from the model's definition, with plain tensor
operations and torchdiffeq called directly; it imports nothing from ``ctdnn``:

    u(0) = tanh(K0 x + b0),   du/dt = f(t, u),   y = W u(T) + c
    theta(t) = sum_j C_j p_j(s),   s = time_scale * t   (K(t), b(t) the columns of theta)
    hidden=None:  f = tanh(K(s) u + b(s))
    hidden=m:     f = K2(s) tanh(K1(s) u + b1(s)) + b2(s)

with the basis p_j evaluated by its own recurrence at the solver's times, differentiable
in t (torchdiffeq's times carry gradients through its choice of the first step, so the
gradients of the opening layer depend on it). Outputs, every parameter gradient and the
solver's evaluation counts must agree: forward NFE equal, values to 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch
from torchdiffeq import odeint, odeint_adjoint

import ctdnn


def _basis(kind: str, s: torch.Tensor, n: int, T: float) -> torch.Tensor:
    """``(n,)`` basis values at the 0-d time ``s`` on ``[0, T]``, differentiable in ``s``."""
    if kind == "monomial":  # t**j by repeated products
        vals = [torch.ones_like(s)]
        for _ in range(1, n):
            vals.append(vals[-1] * s)
        return torch.stack(vals)
    if kind == "legendre":  # shifted Legendre P_j(2 s / T - 1), three-term recurrence
        x = 2.0 * s / T - 1.0
        vals = [torch.ones_like(x), x][:n]
        for j in range(1, n - 1):
            vals.append(((2 * j + 1) * x * vals[j] - j * vals[j - 1]) / (j + 1))
        return torch.stack(vals)
    # piecewise constant: the indicator of [j h, (j + 1) h), the last interval closed at T
    h = T / n
    j = min(max(math.floor(float(s.detach()) / h), 0), n - 1)
    onehot = torch.zeros(n, dtype=s.dtype)
    onehot[j] = 1.0
    return onehot + 0.0 * s  # zero derivative, t kept in the graph


class _ReferenceDynamics(torch.nn.Module):
    def __init__(self, kind, n, T_basis, time_scale, coefficients):
        super().__init__()
        self.kind, self.n, self.T_basis, self.time_scale = kind, n, T_basis, time_scale
        self.coefficients = torch.nn.ParameterList(
            [torch.nn.Parameter(c.detach().clone()) for c in coefficients])
        self.nfe = 0

    def forward(self, t, u):
        self.nfe += 1
        p = _basis(self.kind, self.time_scale * t, self.n, self.T_basis)
        v = u
        for i, C in enumerate(self.coefficients):  # C: (n, out, in + 1)
            theta = (p[:, None, None] * C).sum(0)  # theta(t) = sum_j p_j C_j
            n_in = C.shape[2] - 1
            v = torch.addmm(theta[:, n_in], v, theta[:, :n_in].T)  # v K^T + b
            if i == 0:
                v = torch.tanh(v)
        return v


def _reference_forward(model, x, kind, n, T_basis, time_scale, adjoint):
    """Predictions of a reference holding copies of ``model``'s parameters."""
    K0 = model.opening.weight.detach().clone().requires_grad_()
    b0 = model.opening.bias.detach().clone().requires_grad_()
    W = model.closing.weight.detach().clone().requires_grad_()
    c = model.closing.bias.detach().clone().requires_grad_()
    func = _ReferenceDynamics(kind, n, T_basis, time_scale,
                              [layer.theta.coefficients for layer in model.dynamics.layers])
    u0 = torch.tanh(x @ K0.T + b0)
    t = torch.tensor([0.0, model.T], dtype=x.dtype)
    options = {"max_num_steps": model.max_num_steps}
    if adjoint:
        uT = odeint_adjoint(func, u0, t, rtol=model.rtol, atol=model.atol, method="dopri5",
                            options=options, adjoint_rtol=model.rtol, adjoint_atol=model.atol,
                            adjoint_options=dict(options),
                            adjoint_params=tuple(func.coefficients))[-1]
    else:
        uT = odeint(func, u0, t, rtol=model.rtol, atol=model.atol, method="dopri5",
                    options=options)[-1]
    params = {"opening.weight": K0, "opening.bias": b0, "closing.weight": W,
              "closing.bias": c}
    for i, C in enumerate(func.coefficients):
        params[f"time_varying.0.layers.{i}.theta.coefficients"] = C
    return uT @ W.T + c, func, params


CASES = [(kind, hidden, scaling) for kind in ("legendre", "monomial", "none")
         for hidden in (None, 50) for scaling in ("rescaled", "unscaled")]


@pytest.mark.parametrize("adjoint", [False, True], ids=["backprop", "adjoint"])
@pytest.mark.parametrize("kind,hidden,scaling", CASES)
def test_neural_ode_matches_reference(kind, hidden, scaling, adjoint):
    if adjoint and hidden is None and kind != "legendre":
        pytest.skip("the adjoint is covered by Legendre for hidden=None")
    T = 2.0
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(6, 3, width=5, hidden=hidden, T=T, basis=kind, degree=3,
                            n_steps=5 if kind == "none" else None, rtol=1e-6, atol=1e-8,
                            adjoint=adjoint, time_scaling=scaling).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # weights that really vary in time
        for p in model.dynamics.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.randn(7, 6, generator=g, dtype=torch.float64)
    y = torch.randn(7, 3, generator=g, dtype=torch.float64)

    n = model.basis.n_functions
    T_basis, scale = (1.0, 1.0 / T) if scaling == "rescaled" else (T, 1.0)
    ref_out, ref_func, ref_params = _reference_forward(model, x, kind, n, T_basis, scale,
                                                       adjoint)
    out = model(x)
    nfe_forward = ref_func.nfe
    assert model.stats.nfe_forward == nfe_forward > 20
    torch.testing.assert_close(out, ref_out, rtol=1e-12, atol=1e-12)

    (0.5 * (out - y).square().sum()).backward()
    (0.5 * (ref_out - y).square().sum()).backward()
    assert model.stats.nfe_backward == ref_func.nfe - nfe_forward
    assert (model.stats.nfe_backward > 0) == adjoint
    for name, p in model.named_parameters():
        expected = ref_params[name].grad
        scale_g = float(expected.abs().max())
        err = float((p.grad - expected).abs().max())
        assert scale_g > 0 and err <= 1e-12 * max(scale_g, 1.0), (name, err, scale_g)


@pytest.mark.parametrize("kind", ["legendre", "monomial", "none"])
def test_trajectory_ode_with_offsets_matches_reference(kind):
    # Per-sample start times (the stationary-ODE windows): f(t, y) at t + offset_i for
    # sample i, with the cube transform.
    torch.manual_seed(0)
    model = ctdnn.TrajectoryODE(2, hidden=8, T=4.0, basis=kind, degree=3,
                                n_steps=6 if kind == "none" else None, rtol=1e-7, atol=1e-9,
                                time_scaling="rescaled").double()
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5).add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    y0 = 0.5 * torch.randn(5, 2, generator=g, dtype=torch.float64)
    offsets = torch.tensor([0.0, 0.7, 1.5, 2.2, 3.0], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, 4, dtype=torch.float64)
    coeffs = [layer.theta.coefficients.detach().clone().requires_grad_()
              for layer in model.dynamics.layers]
    n = model.basis.n_functions
    nfe = [0]

    def f(tt, yy):
        nfe[0] += 1
        v = yy ** 3
        rows = []
        for i in range(yy.shape[0]):  # per sample, the straightforward way
            p = _basis(kind, (tt + offsets[i]) / 4.0, n, 1.0)  # rescaled: s = t / T
            w = v[i]
            for k, C in enumerate(coeffs):
                theta = (p[:, None, None] * C).sum(0)
                n_in = C.shape[2] - 1
                w = theta[:, :n_in] @ w + theta[:, n_in]
                if k == 0:
                    w = torch.tanh(w)
            rows.append(w)
        return torch.stack(rows)

    ref = odeint(f, y0, t, rtol=1e-7, atol=1e-9, method="dopri5",
                 options={"max_num_steps": model.max_num_steps})
    out = model(y0, t, offsets=offsets)
    assert model.stats.nfe_forward == nfe[0] > 10
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    out.square().sum().backward()
    ref.square().sum().backward()
    for layer, C in zip(model.dynamics.layers, coeffs):
        torch.testing.assert_close(layer.theta.coefficients.grad, C.grad, rtol=1e-12,
                                   atol=1e-12 * float(C.grad.abs().max()))


def test_direct_call_outside_a_solve_and_after_a_parameter_update():
    # The stacked coefficients live only inside a solve: a direct call after an in-place
    # update sees the new parameters.
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(3, 2, width=4, hidden=6, degree=2, adjoint=False).double()
    dyn = model.dynamics
    u = torch.randn(5, 4, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    model(torch.randn(5, 3, dtype=torch.float64))
    with torch.no_grad():
        dyn.layers[1].theta.coefficients.add_(1.0)
    p = torch.tensor([1.0, 2 * 0.4 - 1, 0.5 * (3 * (2 * 0.4 - 1) ** 2 - 1)], dtype=torch.float64)
    v = u
    for i, layer in enumerate(dyn.layers):
        theta = (p[:, None, None] * layer.theta.coefficients.detach()).sum(0)
        v = v @ theta[:, :-1].T + theta[:, -1]
        if i == 0:
            v = torch.tanh(v)
    torch.testing.assert_close(dyn(t, u), v, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(dyn(0.4, u), v, rtol=1e-13, atol=1e-13)  # a float time
    assert dyn._stacked is None


def test_counters_and_evaluation_without_gradients():
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(3, 2, width=4, hidden=6, degree=2, adjoint=False).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    with torch.no_grad():
        a = model(x)
    first = model.stats.nfe_forward
    b = model(x)
    assert torch.equal(a, b) and model.stats.nfe_forward == first > 0
    assert model.total_stats.nfe_forward == 2 * first and model.total_stats.n_solves == 2
    assert model.stats.n_accepted + model.stats.n_rejected > 0


def _solve_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x)
    (0.5 * (out - y).square().sum()).backward()
    stats = model.stats
    return (out.detach(), {n: p.grad.clone() for n, p in model.named_parameters()},
            (stats.nfe_forward, stats.nfe_backward, stats.n_accepted, stats.n_rejected))


FUSED_CASES = [("legendre", 50, "rescaled", "extrapolate", False),
               ("legendre", 50, "rescaled", "extrapolate", True),
               ("monomial", 50, "unscaled", "clamp", False),
               ("monomial", None, "absolute", "clamp", True),
               ("none", 50, "rescaled", "extrapolate", False),
               ("chebyshev", 50, "rescaled", "clamp", False),
               ("fourier", None, "rescaled", "extrapolate", True),
               ("hat", 50, "rescaled", "extrapolate", False)]


@pytest.mark.parametrize("kind,hidden,scaling,past_T,adjoint", FUSED_CASES)
def test_one_node_evaluation_equals_the_op_by_op_graph_bit_for_bit(kind, hidden, scaling,
                                                                   past_T, adjoint):
    """The CPU right-hand side as one autograd node (``TimeVaryingMLP.fused``) gives the
    numbers of the op-by-op graph exactly: outputs, every gradient and the solver's counts,
    through backpropagation and through the adjoint method, in float64."""
    from ctdnn.neural_ode import TimeVaryingMLP

    T = 2.0
    torch.manual_seed(3)
    model = ctdnn.NeuralODE(6, 3, width=5, hidden=hidden, T=T, basis=kind, degree=3,
                            n_steps=5 if kind == "none" else None, rtol=1e-7, atol=1e-9,
                            adjoint=adjoint, time_scaling=scaling,
                            time_past_T=past_T).double()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in model.dynamics.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    x = torch.randn(9, 6, generator=g, dtype=torch.float64)
    y = torch.randn(9, 3, generator=g, dtype=torch.float64)
    assert TimeVaryingMLP.fused
    fused = _solve_and_grads(model, x, y)
    try:
        TimeVaryingMLP.fused = False
        graph = _solve_and_grads(model, x, y)
    finally:
        TimeVaryingMLP.fused = True
    assert fused[2] == graph[2] and fused[2][0] > 20
    assert torch.equal(fused[0], graph[0])
    for name, grad in graph[1].items():
        assert torch.equal(fused[1][name], grad), name


def test_one_node_evaluation_in_float32_and_under_double_backward():
    from ctdnn.neural_ode import TimeVaryingMLP

    torch.manual_seed(0)
    dyn = ctdnn.NeuralODE(4, 2, width=5, hidden=7, adjoint=False).dynamics
    u = torch.randn(3, 5, requires_grad=True)
    t = torch.tensor(0.3, requires_grad=True)
    out = dyn(t, u)
    gu, gt = torch.autograd.grad(out.square().sum(), (u, t))
    TimeVaryingMLP.fused = False
    try:
        ref = dyn(t, u)
        ru, rt = torch.autograd.grad(ref.square().sum(), (u, t))
    finally:
        TimeVaryingMLP.fused = True
    assert torch.equal(out, ref) and torch.equal(gu, ru) and torch.equal(gt, rt)
    # the backward is not differentiable itself: asking for it says so instead of
    # returning a wrong second derivative
    gu, = torch.autograd.grad(dyn(t, u).square().sum(), u, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward"):
        gu.sum().backward()
