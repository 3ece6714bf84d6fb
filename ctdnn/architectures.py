"""Continuous-time surrogate networks with time-varying weights.

All three models share the opening layer ``u(0) = tanh(K0 x + b0)`` and the linear closing
layer ``y = W [u(T); 1]``; they differ in how ``u`` evolves on ``[0, T]``:

* :class:`ResNet`: forward Euler, ``u_{k+1} = u_k + h tanh(K(t_k) u_k + b(t_k))``.
* :class:`HamiltonianNet`: the Verlet scheme of Haber and Ruthotto (2017),
  ``z_{k+1} = z_k - h tanh(K_k^T u_k + b_k)``, ``u_{k+1} = u_k + h tanh(K_k z_{k+1} + b_k)``,
  ``z_0 = 0``; each step is exactly invertible.
* :class:`~ctdnn.neural_ode.NeuralODE`: the continuous model solved adaptively.
"""

from __future__ import annotations


import torch
from torch import nn

from .bases import Basis, _check_horizon, _check_positive_int, make_basis
from .weights import TimeVaryingLinear

__all__ = ["SurrogateNet", "ResNet", "HamiltonianNet", "resolve_basis"]

WEIGHT_TIMES = ("consistent", "paper")


def resolve_basis(basis, degree, T, n_steps=None, normalized=False) -> Basis:
    """A :class:`Basis` from a name (``"monomial"``, ``"legendre"``, ``"none"``) or as is."""
    if isinstance(basis, Basis):
        if abs(basis.T - T) > 1e-12 * max(1.0, T):
            raise ValueError(f"basis is defined on [0, {basis.T:g}] but the model needs [0, {T:g}]")
        return basis
    return make_basis(basis, degree, T=T, n_steps=n_steps, normalized=normalized)


class SurrogateNet(nn.Module):
    """Opening layer, a continuous-time flow (subclasses), closing layer.

    Subclasses implement :meth:`flow` mapping ``u(0): (batch, width)`` to
    ``u(T): (batch, width)`` and keep their time-varying layers in
    ``self.time_varying`` (an ``nn.ModuleList``).
    """

    def __init__(self, n_in: int, n_out: int, width: int, T: float):
        super().__init__()
        self.n_in = _check_positive_int("n_in", n_in, minimum=1)
        self.n_out = _check_positive_int("n_out", n_out, minimum=1)
        self.width = _check_positive_int("width", width, minimum=1)
        self.T = _check_horizon(T)
        self.opening = nn.Linear(self.n_in, self.width)
        self.closing = nn.Linear(self.width, self.n_out)
        self.time_varying = nn.ModuleList()

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (batch, {self.n_in}), "
                            f"got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"x must have shape (batch, n_in={self.n_in}), got {tuple(x.shape)}")

    def flow(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``u(T)``, ``(batch, width)``, for inputs ``x: (batch, n_in)``."""
        self._check_input(x)
        return self.flow(torch.tanh(self.opening(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``(batch, n_out)`` for ``x: (batch, n_in)``."""
        return self.closing(self.features(x))

    def time_parameters(self):
        """The coefficients of the time-varying weights."""
        return [p for m in self.time_varying for p in m.parameters()]

    def penalty(self, alpha_theta: float = 0.0, alpha_W: float = 0.0) -> torch.Tensor:
        """Tikhonov penalty ``alpha_theta/2 int_0^T ||theta(t)||^2 dt + alpha_W/2 ||W||_F^2``.

        The first term is exact through each basis' Gram matrix; ``W`` includes the
        closing layer's bias.
        """
        total = self.closing.weight.new_zeros(())
        if alpha_theta:
            total = total + 0.5 * alpha_theta * sum(m.l2_norm_squared() for m in self.time_varying)
        if alpha_W:
            total = total + 0.5 * alpha_W * (self.closing.weight.square().sum()
                                             + self.closing.bias.square().sum())
        return total

    @property
    def n_time_parameters(self) -> int:
        """Number of trainable coefficients of the time-varying weights."""
        return sum(p.numel() for p in self.time_parameters())


class _SteppedNet(SurrogateNet):
    """Shared set-up of the discretize-then-optimize networks."""

    def __init__(self, n_in, n_out, *, width=15, n_steps=12, T=1.0, basis="legendre", degree=3,
                 weight_times="consistent", normalized=False):
        super().__init__(n_in, n_out, width, T)
        self.n_steps = _check_positive_int("n_steps", n_steps, minimum=1)
        if weight_times not in WEIGHT_TIMES:
            raise ValueError(f"weight_times must be one of {WEIGHT_TIMES}, got {weight_times!r}")
        self.weight_times = weight_times
        self.h = self.T / self.n_steps
        self.basis = resolve_basis(basis, degree, self.T, n_steps=self.n_steps,
                                   normalized=normalized)
        if weight_times == "consistent":
            # t_k = k h: the weights act at the left end of the Euler step they drive.
            self.step_times = [k * self.h for k in range(self.n_steps)]
        else:
            # The authors' MATLAB grid: linspace(0, T, n_steps), T/(n_steps-1) apart.
            n = self.n_steps
            self.step_times = [self.T * k / (n - 1) if n > 1 else 0.0 for k in range(n)]
        self.layer = TimeVaryingLinear(self.basis, self.width, self.width)
        self.time_varying.append(self.layer)
        self.register_buffer("basis_matrix", self._basis_matrix(torch.get_default_dtype()),
                             persistent=False)

    def _basis_matrix(self, dtype, device=None) -> torch.Tensor:
        times = torch.tensor(self.step_times, dtype=torch.float64)
        return self.basis(times).to(dtype=dtype, device=device)

    def _apply(self, fn, recurse=True):
        # Re-evaluate the basis after a dtype change so float64 models get float64 values.
        super()._apply(fn, recurse)
        self.basis_matrix = self._basis_matrix(self.basis_matrix.dtype, self.basis_matrix.device)
        return self

    def step_weights(self):
        """``K: (n_steps, width, width)`` and ``b: (n_steps, width)`` at the step times."""
        return self.layer.weights(self.basis_matrix)

    def extra_repr(self) -> str:
        return (f"basis={self.basis!r}, n_steps={self.n_steps}, T={self.T:g}, "
                f"weight_times={self.weight_times!r}")


class ResNet(_SteppedNet):
    """Residual network as the forward-Euler discretisation of a continuous model.

    Args:
        n_in, n_out: input and output sizes.
        width: hidden state size ``w`` (paper: 15).
        n_steps: Euler steps ``n_t`` (paper: 12), ``h = T / n_steps``.
        T: final time.
        basis: ``"legendre"``, ``"monomial"``, ``"none"`` or a :class:`~ctdnn.bases.Basis`.
        degree: polynomial degree ``d`` (``d + 1`` functions); ignored for ``"none"``.
        weight_times: ``"consistent"`` (weights at ``t_k = k h``, default) or ``"paper"``
            (weights at ``linspace(0, T, n_steps)``, the authors' grid).
        normalized: orthonormal Legendre scaling.

    Shapes: ``x: (batch, n_in)`` -> ``(batch, n_out)``.
    """

    def flow(self, u):
        K, b = self.step_weights()
        # unbind once: indexing inside the loop would add a full-size backward node per step
        Kt, bs = K.mT.unbind(0), b.unbind(0)
        for k in range(self.n_steps):  # sequential in time by construction
            u = u + self.h * torch.tanh(torch.addmm(bs[k], u, Kt[k]))
        return u


class HamiltonianNet(_SteppedNet):
    """Hamiltonian network (Verlet scheme), same signature as :class:`ResNet`.

    ``z_{k+1} = z_k - h tanh(K_k^T u_k + b_k)``, ``u_{k+1} = u_k + h tanh(K_k z_{k+1} + b_k)``
    with ``z_0 = 0`` and one ``K_k``, ``b_k`` shared by both half-steps; the output is
    ``u_{n_steps}``.
    """

    def flow(self, u, z=None):
        return self.flow_with_momentum(u, z)[0]

    def flow_with_momentum(self, u, z=None):
        """``(u_n, z_n)`` from ``(u_0, z_0)``; ``z_0 = 0`` when omitted. Shapes ``(batch, width)``."""
        K, b = self.step_weights()
        Ks, Kt, bs = K.unbind(0), K.mT.unbind(0), b.unbind(0)
        z = torch.zeros_like(u) if z is None else z
        for k in range(self.n_steps):
            z = z - self.h * torch.tanh(torch.addmm(bs[k], u, Ks[k]))
            u = u + self.h * torch.tanh(torch.addmm(bs[k], z, Kt[k]))
        return u, z

    def inverse_flow(self, u, z):
        """Exact inverse of :meth:`flow_with_momentum`: ``(u_0, z_0)`` from ``(u_n, z_n)``."""
        K, b = self.step_weights()
        for k in reversed(range(self.n_steps)):
            u = u - self.h * torch.tanh(torch.addmm(b[k], z, K[k].mT))
            z = z + self.h * torch.tanh(torch.addmm(b[k], u, K[k]))
        return u, z
