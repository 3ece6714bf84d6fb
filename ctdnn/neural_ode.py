"""Neural ODEs with time-varying weights (optimize-then-discretize), solved by torchdiffeq."""

from __future__ import annotations

import torch
from torch import nn

from .architectures import SurrogateNet, resolve_basis
from .bases import _check_horizon, _check_positive_int
from .solvers import Dynamics, SolverStats, solve
from .weights import TimeVaryingLinear

__all__ = ["TimeVaryingMLP", "NeuralODE", "TrajectoryODE", "TIME_SCALINGS"]

TIME_SCALINGS = ("rescaled", "unscaled")


class TimeVaryingMLP(Dynamics):
    """Right-hand side with time-varying weights.

    ``hidden=None``: ``f(t, u) = tanh(K(s) u + b(s))``, the model the ResNet discretises.
    ``hidden=m``: ``f(t, u) = K2(s) tanh(K1(s) v + b1(s)) + b2(s)`` (width -> m -> width, the
    authors' surrogate dynamics), with ``v = u`` or ``v = u**3`` (``transform="cube"``, the
    stationary-ODE task). Both layers are time-parameterised.

    The basis is evaluated at ``s = time_scale * (t + offset)``: ``offset`` (``(batch,)``,
    optional) lets every sample of a batch start at its own absolute time while sharing
    one adaptive solve.
    """

    def __init__(self, basis, width: int, hidden: int | None = None, *, time_scale: float = 1.0,
                 transform: str | None = None):
        super().__init__()
        if transform not in (None, "cube"):
            raise ValueError(f"transform must be None or 'cube', got {transform!r}")
        self.basis = basis
        self.time_scale = float(time_scale)
        self.transform = transform
        self.hidden = hidden
        if hidden is None:
            self.layers = nn.ModuleList([TimeVaryingLinear(basis, width, width)])
        else:
            self.layers = nn.ModuleList([TimeVaryingLinear(basis, width, hidden),
                                         TimeVaryingLinear(basis, hidden, width)])
        self.offset = None

    def rhs(self, t, u):
        v = u ** 3 if self.transform == "cube" else u
        s = self.time_scale * (t if self.offset is None else t + self.offset)
        B = self.basis(s)  # (n_functions,) or (batch, n_functions)
        per_sample = B.ndim == 2
        for i, layer in enumerate(self.layers):
            K, b = layer.weights(B)
            if per_sample:
                v = torch.baddbmm(b.unsqueeze(-1), K, v.unsqueeze(-1)).squeeze(-1)
            else:
                v = torch.addmm(b, v, K.mT)
            if i == 0:
                v = torch.tanh(v)
        return v

    def l2_norm_squared(self) -> torch.Tensor:
        return sum(layer.l2_norm_squared() for layer in self.layers)


class _SolverOptions:
    """Validation shared by the ODE models."""

    @staticmethod
    def check(method, rtol, atol, time_scaling):
        if time_scaling not in TIME_SCALINGS:
            raise ValueError(f"time_scaling must be one of {TIME_SCALINGS}, got {time_scaling!r}")
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(tol, (int, float)) and tol > 0):
                raise ValueError(f"{name} must be a positive number, got {tol!r}")


def _basis_interval(T: float, time_scaling: str):
    """Basis interval and the factor mapping solver time to basis time.

    ``"rescaled"``: the basis lives on [0, 1] and is evaluated at ``t / T``.
    ``"unscaled"``: the basis lives on [0, T] and is evaluated at the absolute time ``t``;
    for monomials this is ``t**j`` with ``t`` up to ``T`` (the setting of the authors'
    earlier code), for Legendre it coincides with the rescaled basis.
    """
    if time_scaling == "rescaled":
        return 1.0, 1.0 / T
    return T, 1.0


class NeuralODE(SurrogateNet):
    """Surrogate neural ODE: ``u(0) = tanh(K0 x + b0)``, ``du/dt = f(t, u)``, ``y = W [u(T); 1]``.

    Args:
        n_in, n_out: input and output sizes.
        width: state size (paper: 15).
        hidden: ``None`` for ``f = tanh(K(t) u + b(t))``; an integer for the authors'
            two-layer dynamics (paper: 50).
        T: final time.
        basis, degree: the weight basis (``degree=d`` means ``d + 1`` functions).
        method, rtol, atol: torchdiffeq solver and tolerances (paper: dopri5, 1e-7, 1e-9).
        adjoint: gradients by the adjoint method; otherwise backpropagation through the
            solver.
        time_scaling: ``"rescaled"`` (basis on [0, 1] at ``t / T``) or ``"unscaled"``.
        n_steps: intervals of the piecewise-constant ``"none"`` basis.
        step_size: step of fixed-step methods.
        max_num_steps: adaptive step budget.
        adjoint_norm: ``"default"`` or ``"seminorm"`` step control of the adjoint solve
            (see :func:`~ctdnn.solve`).

    After each forward pass, :attr:`stats` holds that solve's :class:`SolverStats` (its
    backward counters fill in during ``backward()``) and :attr:`total_stats` the cumulative
    counts since :meth:`reset_stats`.
    """

    def __init__(self, n_in, n_out, *, width=15, hidden=None, T=1.0, basis="legendre", degree=3,
                 method="dopri5", rtol=1e-7, atol=1e-9, adjoint=True, time_scaling="rescaled",
                 n_steps=None, step_size=None, max_num_steps=100_000, normalized=False,
                 adjoint_norm="default"):
        super().__init__(n_in, n_out, width, T)
        self.adjoint_norm = adjoint_norm
        _SolverOptions.check(method, rtol, atol, time_scaling)
        if hidden is not None:
            hidden = _check_positive_int("hidden", hidden, minimum=1)
        interval, scale = _basis_interval(self.T, time_scaling)
        self.basis = resolve_basis(basis, degree, interval, n_steps=n_steps, normalized=normalized)
        self.dynamics = TimeVaryingMLP(self.basis, self.width, hidden, time_scale=scale)
        self.time_varying.append(self.dynamics)
        self.method, self.rtol, self.atol, self.adjoint = method, float(rtol), float(atol), adjoint
        self.time_scaling, self.step_size, self.max_num_steps = time_scaling, step_size, max_num_steps

    def flow(self, u):
        t = torch.tensor([0.0, self.T], dtype=u.dtype, device=u.device)
        sol, _ = solve(self.dynamics, u, t, method=self.method, rtol=self.rtol, atol=self.atol,
                       adjoint=self.adjoint, step_size=self.step_size,
                       max_num_steps=self.max_num_steps, adjoint_norm=self.adjoint_norm,
                       adjoint_params=tuple(self.dynamics.parameters()))
        return sol[-1]

    @property
    def stats(self) -> SolverStats:
        return self.dynamics.current

    @property
    def total_stats(self) -> SolverStats:
        return self.dynamics.total

    def reset_stats(self) -> None:
        self.dynamics.reset_stats()

    def extra_repr(self) -> str:
        return (f"basis={self.basis!r}, T={self.T:g}, method={self.method!r}, rtol={self.rtol:g}, "
                f"atol={self.atol:g}, adjoint={self.adjoint}, time_scaling={self.time_scaling!r}")


class TrajectoryODE(nn.Module):
    """A neural ODE that models a trajectory directly (the stationary-ODE task).

    ``dy/dt = f(t, y)`` with :class:`TimeVaryingMLP` dynamics (``dim -> hidden -> dim``,
    applied to ``y**3`` when ``transform="cube"``, as in the torchdiffeq spiral example).

    Args:
        dim: state size.
        hidden: hidden units (paper: 50).
        T: length of the absolute time span the basis must cover (paper: 25).
        basis, degree, method, rtol, atol, adjoint, time_scaling, n_steps, step_size,
        max_num_steps, normalized: as for :class:`NeuralODE`.
    """

    def __init__(self, dim=2, *, hidden=50, T=25.0, basis="legendre", degree=3, transform="cube",
                 method="dopri5", rtol=1e-7, atol=1e-9, adjoint=False, time_scaling="rescaled",
                 n_steps=None, step_size=None, max_num_steps=100_000, normalized=False,
                 adjoint_norm="default"):
        super().__init__()
        self.adjoint_norm = adjoint_norm
        self.dim = _check_positive_int("dim", dim, minimum=1)
        self.T = _check_horizon(T)
        _SolverOptions.check(method, rtol, atol, time_scaling)
        interval, scale = _basis_interval(self.T, time_scaling)
        self.basis = resolve_basis(basis, degree, interval, n_steps=n_steps, normalized=normalized)
        self.dynamics = TimeVaryingMLP(self.basis, self.dim, hidden, time_scale=scale,
                                       transform=transform)
        self.time_varying = nn.ModuleList([self.dynamics])
        self.method, self.rtol, self.atol, self.adjoint = method, float(rtol), float(atol), adjoint
        self.time_scaling, self.step_size, self.max_num_steps = time_scaling, step_size, max_num_steps

    def forward(self, y0: torch.Tensor, t: torch.Tensor, offsets: torch.Tensor | None = None):
        """Trajectories from ``y0: (batch, dim)`` at times ``t: (n_times,)``.

        Args:
            offsets: ``(batch,)`` absolute start times; sample ``i`` is solved at
                ``offsets[i] + t`` (so ``t`` should start at 0). ``None``: ``t`` is absolute.
        Returns:
            ``(n_times, batch, dim)``.
        """
        if y0.ndim != 2 or y0.shape[1] != self.dim:
            raise ValueError(f"y0 must have shape (batch, dim={self.dim}), got {tuple(y0.shape)}")
        if offsets is not None and offsets.shape != (y0.shape[0],):
            raise ValueError(f"offsets must have shape (batch,) = ({y0.shape[0]},), "
                             f"got {tuple(offsets.shape)}")
        self.dynamics.offset = offsets
        try:
            sol, _ = solve(self.dynamics, y0, t, method=self.method, rtol=self.rtol, atol=self.atol,
                           adjoint=self.adjoint, step_size=self.step_size,
                           max_num_steps=self.max_num_steps, adjoint_norm=self.adjoint_norm,
                           adjoint_params=tuple(self.dynamics.parameters()))
        finally:
            if not self.adjoint:
                self.dynamics.offset = None
        return sol

    def time_parameters(self):
        return list(self.dynamics.parameters())

    def penalty(self, alpha_theta: float = 0.0, alpha_W: float = 0.0) -> torch.Tensor:
        if not alpha_theta:
            return self.dynamics.layers[0].theta.coefficients.new_zeros(())
        return 0.5 * alpha_theta * self.dynamics.l2_norm_squared()

    @property
    def n_time_parameters(self) -> int:
        return sum(p.numel() for p in self.time_parameters())

    @property
    def stats(self) -> SolverStats:
        return self.dynamics.current

    @property
    def total_stats(self) -> SolverStats:
        return self.dynamics.total

    def reset_stats(self) -> None:
        self.dynamics.reset_stats()
