"""Straightforward implementations that the benchmark compares ``ctdnn`` against.

These are *our own* re-implementations, written for this benchmark, of how the published
codes compute; no code was copied from those projects. They are deliberately plain, not
deliberately slow: the same arithmetic and dtype as ``ctdnn`` (the tests in
``tests/test_benchmarks.py`` check equal outputs and gradients in float64 from the same
parameters), standard PyTorch building blocks, no artificial work.

* :class:`LoopResNet` / :class:`LoopHamiltonianNet`: the per-layer style of QUiNN's ``RNet``
  (K. Sargsyan et al., ``quinn/nns/rnet.py``): every polynomial coefficient is its own
  ``nn.Parameter`` (one list for the weight matrices, one for the biases) and, inside the
  forward pass, every layer evaluates the basis at its time ``t_k`` and sums
  ``K_k = sum_j c_j p_j(t_k)`` (and likewise ``b_k``) before applying the layer.
* :class:`PerSampleNODE`: the surrogate neural ODE in the style of the authors' released
  wrapper (``TimeParameterizedNet`` in ``timeparam_NEW.py`` of
  hrosso710/Continuous_DNN_Surrogates_Revised): the right-hand side is a plain
  ``Linear -> tanh -> Linear`` module whose weights get a leading axis of basis
  coefficients (grouped per layer, see :class:`PerSampleDynamics` for why); on each
  right-hand-side call the basis is evaluated for every sample, and a Python loop over the
  batch builds that sample's weights (one contraction per layer) and calls the network on
  that one sample through ``torch.func.functional_call``. With ``per_parameter=True`` it
  keeps the wrapper's own layout: one coefficient tensor per named parameter (weight and
  bias apart) and one ``einsum`` per parameter and sample.
* :class:`StaticNODE`: the same surrogate with a time-invariant dynamics MLP, solved by
  plain ``torchdiffeq.odeint``: what a neural-ODE evaluation costs without any time
  parameterisation, for comparison.

All classes load their parameters from a ``ctdnn`` model (``from_ctdnn``) so that a
comparison runs both codes on identical numbers; ``grads_like`` maps gradients back to
``ctdnn``'s parameter layout for the equality tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

__all__ = ["basis_values", "LoopResNet", "LoopHamiltonianNet", "PerSampleDynamics",
           "PerSampleNODE", "StaticNODE"]


def basis_values(kind: str, t: float, n_functions: int, T: float) -> list[float]:
    """The basis at one time ``t``, as Python floats (as QUiNN's ``Poly`` uses ``t**i``).

    ``"legendre"``: ``P_j(2 t / T - 1)`` by the three-term recurrence; ``"monomial"``:
    ``t**j`` (not rescaled, as in ``ctdnn``).
    """
    if kind == "monomial":
        return [t ** j for j in range(n_functions)]
    if kind == "legendre":
        s = 2.0 * t / T - 1.0
        vals = [1.0, s][:n_functions]
        for j in range(1, n_functions - 1):
            vals.append(((2 * j + 1) * s * vals[j] - j * vals[j - 1]) / (j + 1))
        return vals
    raise ValueError(f"basis {kind!r} not supported by the reference (monomial, legendre)")


class _LoopNet(nn.Module):
    """Opening layer, per-layer weight construction, closing layer (QUiNN ``RNet`` style)."""

    def __init__(self, n_in, n_out, *, width=15, n_steps=12, T=1.0, basis="legendre", degree=3):
        super().__init__()
        self.width, self.n_steps, self.T = width, n_steps, float(T)
        self.h = self.T / n_steps
        self.kind, self.n_functions = basis, degree + 1
        self.opening = nn.Linear(n_in, width)
        self.closing = nn.Linear(width, n_out)
        bound = 1.0 / math.sqrt(width)
        # One Parameter per coefficient, as RNet registers ww_0, ww_1, ... and bb_0, ...
        self.paramsw = nn.ParameterList(
            [nn.Parameter(torch.empty(width, width).uniform_(-bound, bound))
             for _ in range(self.n_functions)])
        self.paramsb = nn.ParameterList(
            [nn.Parameter(torch.empty(width).uniform_(-bound, bound))
             for _ in range(self.n_functions)])

    def layer_weights(self, k: int):
        """``K_k, b_k`` built for layer ``k`` alone: the basis at ``t_k``, then the sums."""
        p = basis_values(self.kind, k * self.h, self.n_functions, self.T)
        weight, bias = self.paramsw[0] * p[0], self.paramsb[0] * p[0]
        for j in range(1, self.n_functions):
            weight = weight + self.paramsw[j] * p[j]
            bias = bias + self.paramsb[j] * p[j]
        return weight, bias

    def forward(self, x):
        """``x: (batch, n_in)`` -> ``(batch, n_out)``."""
        return self.closing(self.flow(torch.tanh(self.opening(x))))

    @classmethod
    def from_ctdnn(cls, model):
        """A reference network holding exactly the parameters of a ``ctdnn`` model."""
        ref = cls(model.n_in, model.n_out, width=model.width, n_steps=model.n_steps, T=model.T,
                  basis=model.basis.kind, degree=model.basis.degree)
        if getattr(model, "weight_times", "consistent") != "consistent":
            raise ValueError("the reference uses the consistent weight times t_k = k h")
        ref.to(dtype=model.opening.weight.dtype, device=model.opening.weight.device)
        C = model.layer.theta.coefficients.detach()  # (n_functions, w, w + 1)
        with torch.no_grad():
            for j in range(ref.n_functions):
                ref.paramsw[j].copy_(C[j, :, : ref.width])
                ref.paramsb[j].copy_(C[j, :, ref.width])
            for name in ("opening", "closing"):
                getattr(ref, name).load_state_dict(getattr(model, name).state_dict())
        return ref

    def grads_like(self, model) -> dict:
        """Gradients in ``ctdnn``'s layout: ``{name: grad}`` for ``model.named_parameters()``."""
        C = torch.stack([torch.cat([w.grad, b.grad[:, None]], dim=1)
                         for w, b in zip(self.paramsw, self.paramsb)])
        by_param = {model.opening.weight: self.opening.weight.grad,
                    model.opening.bias: self.opening.bias.grad,
                    model.closing.weight: self.closing.weight.grad,
                    model.closing.bias: self.closing.bias.grad,
                    model.layer.theta.coefficients: C}
        return {name: by_param[p] for name, p in model.named_parameters()}


class LoopResNet(_LoopNet):
    """Forward-Euler ResNet, ``u_{k+1} = u_k + h tanh(K_k u_k + b_k)``, weights per layer."""

    def flow(self, u):
        for k in range(self.n_steps):
            weight, bias = self.layer_weights(k)
            u = u + self.h * torch.tanh(F.linear(u, weight, bias))
        return u


class LoopHamiltonianNet(_LoopNet):
    """Verlet (Hamiltonian) network with ``z_0 = 0``, weights per layer."""

    def flow(self, u):
        z = torch.zeros_like(u)
        for k in range(self.n_steps):
            weight, bias = self.layer_weights(k)
            z = z - self.h * torch.tanh(F.linear(u, weight.T, bias))
            u = u + self.h * torch.tanh(F.linear(z, weight, bias))
        return u


class PerSampleDynamics(nn.Module):
    """``f(t, u) = K2(s) tanh(K1(s) u + b1(s)) + b2(s)``, evaluated sample by sample.

    ``self.net`` (``Linear(width, hidden) -> Tanh -> Linear(hidden, width)``) is only the
    template whose forward is called; its own parameters are frozen and unused. Each of its
    two linear layers has one coefficient tensor ``(n_functions, out, in + 1)`` (last
    column: the bias) in ``self.time_params``. The authors' wrapper keeps one coefficient
    tensor per named parameter (weight and bias apart); we group them per layer, as
    ``ctdnn`` does, because torchdiffeq's default adjoint error norm takes the largest RMS
    over the parameter tensors, so only equal grouping gives the adjoint solve the same
    steps (and it halves the contractions per sample, which favours the reference). The
    basis is evaluated at ``s = t / T`` (rescaled time).

    ``per_parameter=True`` keeps the wrapper's own layout instead: ``self.time_params``
    holds ``[K1, b1, K2, b2]`` coefficients, ``(n_functions, out, in)`` and
    ``(n_functions, out)``, and every sample contracts each of them with its basis row by
    ``torch.einsum("d,d...->...")``, as the wrapper does. Use it with backpropagation
    through the solver (the adjoint's error norm would see four tensors instead of two).

    ``nfe`` counts calls (forward and adjoint alike).
    """

    def __init__(self, width, hidden, *, n_functions=4, basis="legendre", T=1.0,
                 per_parameter=False):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, width))
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.kind, self.n_functions, self.T = basis, n_functions, float(T)
        self.layer_names = ["0", "2"]
        self.n_in = [width, hidden]
        self.per_parameter = bool(per_parameter)
        if self.per_parameter:
            shapes = [(hidden, width), (hidden,), (width, hidden), (width,)]
            self.param_names = ["0.weight", "0.bias", "2.weight", "2.bias"]
        else:
            shapes = [(hidden, width + 1), (width, hidden + 1)]
        self.time_params = nn.ParameterList(
            [nn.Parameter(torch.zeros(n_functions, *shape)) for shape in shapes])
        self.nfe = 0

    def basis_rows(self, t, batch: int) -> torch.Tensor:
        """``(batch, n_functions)``: the basis at ``t / T`` for every sample."""
        s = (t * (1.0 / self.T)).reshape(1, 1).expand(batch, 1)
        if self.kind == "monomial":
            cols = [torch.ones_like(s)]
            for _ in range(1, self.n_functions):
                cols.append(cols[-1] * s)
        elif self.kind == "legendre":
            x = 2.0 * s - 1.0
            cols = [torch.ones_like(x), x][: self.n_functions]
            for j in range(1, self.n_functions - 1):
                cols.append(((2 * j + 1) * x * cols[j] - j * cols[j - 1]) / (j + 1))
        else:
            raise ValueError(f"basis {self.kind!r} not supported (monomial, legendre)")
        return torch.cat(cols, dim=1)

    def forward(self, t, u):
        self.nfe += 1
        a = self.basis_rows(t, u.shape[0])
        outputs = []
        for i in range(u.shape[0]):
            params = {}
            if self.per_parameter:
                for name, c in zip(self.param_names, self.time_params):
                    params[name] = torch.einsum("d,d...->...", a[i], c)
            else:
                for name, n_in, c in zip(self.layer_names, self.n_in, self.time_params):
                    W = torch.tensordot(a[i], c, dims=1)  # this sample's weights at its time
                    params[f"{name}.weight"], params[f"{name}.bias"] = W[:, :n_in], W[:, n_in]
            outputs.append(torch.func.functional_call(self.net, params, (u[i:i + 1],)))
        return torch.cat(outputs, dim=0)

    def load_layer_coefficients(self, coefficients) -> None:
        """Copy ``ctdnn``'s per-layer ``(n_functions, out, in + 1)`` coefficients in."""
        with torch.no_grad():
            if not self.per_parameter:
                for c, src in zip(self.time_params, coefficients):
                    c.copy_(src)
                return
            for k, (src, n_in) in enumerate(zip(coefficients, self.n_in)):
                self.time_params[2 * k].copy_(src[..., :n_in])
                self.time_params[2 * k + 1].copy_(src[..., n_in])

    def layer_grads(self) -> list[torch.Tensor]:
        """The coefficient gradients in ``ctdnn``'s per-layer layout."""
        if not self.per_parameter:
            return [c.grad for c in self.time_params]
        g = [c.grad for c in self.time_params]
        return [torch.cat([g[2 * k], g[2 * k + 1].unsqueeze(-1)], dim=-1) for k in range(2)]


class PerSampleNODE(nn.Module):
    """Surrogate neural ODE ``y = W [u(T); 1]``, ``u(0) = tanh(K0 x + b0)``, per-sample RHS.

    Same solver call as ``ctdnn.NeuralODE``: ``dopri5`` (or ``method``) with explicit
    ``rtol``/``atol`` and ``max_num_steps``; with ``adjoint=True`` the adjoint solve uses
    the same tolerances.
    """

    def __init__(self, n_in, n_out, *, width=15, hidden=50, n_functions=4, basis="legendre",
                 T=1.0, method="dopri5", rtol=1e-7, atol=1e-9, adjoint=True,
                 max_num_steps=100_000, per_parameter=False):
        super().__init__()
        self.opening = nn.Linear(n_in, width)
        self.closing = nn.Linear(width, n_out)
        self.func = PerSampleDynamics(width, hidden, n_functions=n_functions, basis=basis, T=T,
                                      per_parameter=per_parameter)
        self.T, self.method, self.rtol, self.atol = float(T), method, rtol, atol
        self.adjoint, self.max_num_steps = adjoint, max_num_steps

    def forward(self, x):
        u0 = torch.tanh(self.opening(x))
        t = torch.tensor([0.0, self.T], dtype=u0.dtype, device=u0.device)
        options = {"max_num_steps": self.max_num_steps}
        if self.adjoint:
            sol = odeint_adjoint(self.func, u0, t, rtol=self.rtol, atol=self.atol,
                                 method=self.method, options=options, adjoint_rtol=self.rtol,
                                 adjoint_atol=self.atol, adjoint_options=dict(options),
                                 adjoint_params=tuple(self.func.time_params))
        else:
            sol = odeint(self.func, u0, t, rtol=self.rtol, atol=self.atol, method=self.method,
                         options=options)
        return self.closing(sol[-1])

    @classmethod
    def from_ctdnn(cls, model, per_parameter=False):
        """A reference holding exactly the parameters of a ``ctdnn.NeuralODE`` (two layers)."""
        dyn = model.dynamics
        if dyn.hidden is None or dyn.transform is not None:
            raise ValueError("the reference models the two-layer dynamics (hidden=int)")
        if model.time_scaling != "rescaled":
            raise ValueError("the reference evaluates the basis at t / T (time_scaling='rescaled')")
        if getattr(model.basis, "normalized", False):
            raise ValueError("the reference uses the plain (not normalised) Legendre basis")
        ref = cls(model.n_in, model.n_out, width=model.width, hidden=dyn.hidden,
                  n_functions=model.basis.n_functions, basis=model.basis.kind, T=model.T,
                  method=model.method, rtol=model.rtol, atol=model.atol, adjoint=model.adjoint,
                  max_num_steps=model.max_num_steps, per_parameter=per_parameter)
        ref.to(dtype=model.opening.weight.dtype, device=model.opening.weight.device)
        with torch.no_grad():
            for name in ("opening", "closing"):
                getattr(ref, name).load_state_dict(getattr(model, name).state_dict())
        ref.func.load_layer_coefficients([layer.theta.coefficients for layer in dyn.layers])
        return ref

    def grads_like(self, model) -> dict:
        """Gradients in ``ctdnn.NeuralODE``'s layout: ``{name: grad}`` for its parameters."""
        by_param = {model.opening.weight: self.opening.weight.grad,
                    model.opening.bias: self.opening.bias.grad,
                    model.closing.weight: self.closing.weight.grad,
                    model.closing.bias: self.closing.bias.grad}
        for layer, g in zip(model.dynamics.layers, self.func.layer_grads()):
            by_param[layer.theta.coefficients] = g
        return {name: by_param[p] for name, p in model.named_parameters()}


class StaticNODE(nn.Module):
    """The surrogate neural ODE with time-invariant dynamics, on plain ``torchdiffeq``.

    ``u(0) = tanh(K0 x + b0)``, ``du/dt = K2 tanh(K1 u + b1) + b2`` (an ``nn.Sequential``
    MLP, weights constant in time), ``y = W [u(T); 1]``; ``odeint`` with ``dopri5`` and
    explicit tolerances. ``nfe`` counts right-hand-side calls.
    """

    def __init__(self, n_in, n_out, *, width=15, hidden=50, T=1.0, rtol=1e-7, atol=1e-9,
                 max_num_steps=100_000):
        super().__init__()
        self.opening = nn.Linear(n_in, width)
        self.closing = nn.Linear(width, n_out)
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.Tanh(), nn.Linear(hidden, width))
        self.T, self.rtol, self.atol, self.max_num_steps = float(T), rtol, atol, max_num_steps
        self.nfe = 0

    def rhs(self, t, u):
        self.nfe += 1
        return self.net(u)

    def forward(self, x):
        u0 = torch.tanh(self.opening(x))
        t = torch.tensor([0.0, self.T], dtype=u0.dtype, device=u0.device)
        sol = odeint(self.rhs, u0, t, rtol=self.rtol, atol=self.atol, method="dopri5",
                     options={"max_num_steps": self.max_num_steps})
        return self.closing(sol[-1])
