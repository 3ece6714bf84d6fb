"""Time-varying weights ``theta(t) = sum_j c_j p_j(t)`` stored as one coefficient tensor."""

from __future__ import annotations

import math

import torch
from torch import nn

from .bases import Basis

__all__ = ["TimeVaryingParameter", "TimeVaryingLinear", "stack_coefficients", "stacked_sizes"]


class TimeVaryingParameter(nn.Module):
    """A tensor-valued function of time in the span of a basis.

    The coefficients are one parameter ``coefficients`` of shape ``(n_functions, *shape)``;
    the values at many times come from a single matmul of the basis matrix with the
    flattened coefficients.

    Args:
        basis: the :class:`~ctdnn.bases.Basis`.
        shape: shape of the weight at one time.
        init: ``(*shape)`` tensor: the initial weight, made constant in time (all
            coefficients but the constant direction zero, as in the paper). Zeros if None.
    """

    def __init__(self, basis: Basis, shape, init: torch.Tensor | None = None):
        super().__init__()
        self.basis = basis
        self.shape = tuple(int(s) for s in shape)
        init = torch.zeros(self.shape) if init is None else torch.as_tensor(init)
        if tuple(init.shape) != self.shape:
            raise ValueError(f"init has shape {tuple(init.shape)}, expected {self.shape}")
        const = basis.constant_coefficients(dtype=init.dtype)
        coeffs = const.reshape(-1, *([1] * len(self.shape))) * init.unsqueeze(0)
        self.coefficients = nn.Parameter(coeffs.to(torch.get_default_dtype()))

    @property
    def n_functions(self) -> int:
        return self.basis.n_functions

    @torch.no_grad()
    def set_constant(self, value: torch.Tensor) -> None:
        """Make the weight the constant function ``theta(t) = value`` on ``[0, T]``.

        Args:
            value: ``(*shape)`` tensor; the coefficients become the basis' constant
                direction times ``value`` (all others zero), in place.
        """
        value = torch.as_tensor(value)
        if tuple(value.shape) != self.shape:
            raise ValueError(f"value has shape {tuple(value.shape)}, expected {self.shape}")
        const = self.basis.constant_coefficients(dtype=torch.float64)
        coeffs = const.reshape(-1, *([1] * len(self.shape))) * value.to(torch.float64).unsqueeze(0)
        self.coefficients.copy_(coeffs.to(self.coefficients.dtype))

    def values(self, basis_matrix: torch.Tensor) -> torch.Tensor:
        """Weights at the times whose basis values are given.

        Args:
            basis_matrix: ``(..., n_functions)`` basis values.
        Returns:
            ``(..., *shape)`` weights.
        """
        flat = basis_matrix @ self.coefficients.reshape(self.n_functions, -1)
        return flat.reshape(*basis_matrix.shape[:-1], *self.shape)

    def forward(self, t) -> torch.Tensor:
        """Weights at times ``t`` of shape ``(...)``; returns ``(..., *shape)``."""
        t = torch.as_tensor(t, dtype=self.coefficients.dtype, device=self.coefficients.device)
        return self.values(self.basis(t))

    def l2_norm_squared(self) -> torch.Tensor:
        """``int_0^T ||theta(t)||^2 dt``, exact through the basis' Gram matrix."""
        G = self.basis.gram_matrix(dtype=self.coefficients.dtype).to(self.coefficients.device)
        C = self.coefficients.reshape(self.n_functions, -1)
        return torch.sum(C * (G @ C))

    def extra_repr(self) -> str:
        return f"basis={self.basis!r}, shape={self.shape}"


class TimeVaryingLinear(nn.Module):
    """``x -> x K(t)^T + b(t)`` with time-varying ``K(t)`` (out x in) and ``b(t)`` (out).

    ``K`` and ``b`` share one coefficient tensor ``theta.coefficients`` of shape
    ``(n_functions, out, in + 1)`` (last column: the bias), so one matmul gives both at
    every needed time. Initialisation, constant in time: ``K`` and ``b`` uniform in
    ``+-1/sqrt(in)``, as ``torch.nn.Linear`` does.
    """

    def __init__(self, basis: Basis, n_in: int, n_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(n_in)
        init = torch.empty(n_out, n_in + 1).uniform_(-bound, bound)
        self.n_in, self.n_out = n_in, n_out
        self.theta = TimeVaryingParameter(basis, (n_out, n_in + 1), init)

    def set_constant(self, K: torch.Tensor, b: torch.Tensor) -> None:
        """Make ``K(t) = K`` (``(out, in)``) and ``b(t) = b`` (``(out,)``) for all ``t``."""
        self.theta.set_constant(torch.cat([torch.as_tensor(K), torch.as_tensor(b)[:, None]], 1))

    def weights(self, basis_matrix: torch.Tensor):
        """``K: (..., out, in)`` and ``b: (..., out)`` at the given basis values."""
        W = self.theta.values(basis_matrix)
        return W[..., : self.n_in], W[..., self.n_in]

    def l2_norm_squared(self) -> torch.Tensor:
        """``int_0^T (||K(t)||_F^2 + ||b(t)||^2) dt``."""
        return self.theta.l2_norm_squared()


def stack_coefficients(layers) -> torch.Tensor:
    """All layers' coefficients side by side, so one matmul gives every weight at a time.

    Args:
        layers: :class:`TimeVaryingLinear` layers on one basis.

    Returns:
        ``(n_functions, sum_l out_l (in_l + 1))``: each layer's ``theta.coefficients``
        flattened, in order. ``basis_row @ stacked`` split at :func:`stacked_sizes` gives
        every layer's ``[K(t) | b(t)]`` in the layout of :meth:`ctdnn.TimeVaryingLinear.weights`;
        the stacking is differentiable, so gradients reach each layer's coefficients.
    """
    return torch.cat([layer.theta.coefficients.reshape(layer.theta.n_functions, -1)
                      for layer in layers], dim=1)


def stacked_sizes(layers) -> list[int]:
    """Column counts of the blocks of :func:`stack_coefficients`: ``out_l (in_l + 1)``."""
    return [layer.n_out * (layer.n_in + 1) for layer in layers]
