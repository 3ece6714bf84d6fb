"""Polynomial (and piecewise-constant) bases for time-varying weights.

A time-varying weight is written ``theta(t) = sum_{j=0..d} c_j p_j(t)`` on ``[0, T]``.
Throughout ``ctdnn``, ``degree=d`` means ``d + 1`` basis functions ``p_0 .. p_d`` (the
authors' Python passes "degree 3" but fits three functions; we do not).

Three kinds are provided:

* ``"monomial"``: ``p_j(t) = t**j`` on ``[0, T]``, *not* rescaled (as in the paper).
* ``"legendre"``: shifted Legendre polynomials ``p_j(t) = P_j(2 t / T - 1)`` from the
  three-term recurrence ``(j + 1) P_{j+1}(s) = (2 j + 1) s P_j(s) - j P_{j-1}(s)``;
  with ``normalized=True`` they are scaled by ``sqrt((2 j + 1) / T)`` so that they are
  orthonormal in ``L2(0, T)`` (Gram matrix = identity).
* ``"none"``: the unconstrained baseline, one coefficient set per time step: ``p_j`` is the
  indicator of the interval ``[j h, (j + 1) h)`` with ``h = T / n_steps`` (the last
  interval is closed at ``T``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .checks import check_horizon, check_int

__all__ = [
    "Basis",
    "MonomialBasis",
    "LegendreBasis",
    "PiecewiseConstantBasis",
    "make_basis",
    "condition_numbers",
    "BASIS_KINDS",
]

BASIS_KINDS = ("monomial", "legendre", "none")


class Basis:
    """A set of ``n_functions`` scalar functions of time on ``[0, T]``.

    Calling the basis on times ``t`` of any shape returns ``(*t.shape, n_functions)``
    values, differentiable in ``t``, on the device and dtype of ``t``.
    """

    kind: str = ""

    def __init__(self, n_functions: int, T: float):
        self.n_functions = n_functions
        self.T = T

    # -- evaluation --------------------------------------------------------------------
    def __call__(self, t) -> torch.Tensor:
        t = torch.as_tensor(t)
        if not torch.is_floating_point(t):
            t = t.to(torch.get_default_dtype())
        return self._evaluate(t)

    def _evaluate(self, t: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def row(self, t: float) -> list[float]:
        """The ``n_functions`` values at one time given as a Python float.

        The same operations in the same order as the tensor evaluation, in double
        precision, so the result equals ``self(torch.tensor(t, dtype=torch.float64))``
        bit for bit.
        """
        raise NotImplementedError

    def row_derivative(self, t: float) -> list[float]:
        """The ``n_functions`` derivatives ``p_j'(t)`` at one time given as a Python float."""
        raise NotImplementedError

    def scalar_row(self, t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The basis at ``scale * t`` for a 0-d CPU tensor ``t``: ``(1, n_functions)``.

        Equal to ``self(scale * t).reshape(1, -1)`` (bit for bit in float64) and
        differentiable in ``t``, but computed from Python floats (:meth:`row`, and
        :meth:`row_derivative` for the gradient): a neural ODE's right-hand side calls it
        on every evaluation, where the tensor recurrence would cost a dozen small tensor
        operations and as many autograd nodes. Reading ``t`` synchronises with its device,
        so callers use it for CPU tensors only.
        """
        return _ScalarRow.apply(t, self, float(scale))

    # -- linear algebra used by the conditioning study ----------------------------------
    def collocation_matrix(self, times, dtype=torch.float64) -> torch.Tensor:
        """Collocation matrix ``A[i, j] = p_j(t_i)``.

        Args:
            times: ``(n_times,)`` evaluation times.
        Returns:
            ``(n_times, n_functions)`` tensor.
        """
        times = torch.as_tensor(times, dtype=dtype)
        if times.ndim != 1:
            raise ValueError(f"times must be one-dimensional, got shape {tuple(times.shape)}")
        return self(times)

    def gram_matrix(self, dtype=torch.float64) -> torch.Tensor:
        """Exact Gram matrix ``G[i, j] = int_0^T p_i(t) p_j(t) dt``, ``(n, n)``."""
        raise NotImplementedError

    def constant_coefficients(self, dtype=torch.float64) -> torch.Tensor:
        """Coefficients ``a`` with ``sum_j a_j p_j(t) = 1`` for all ``t`` in ``[0, T]``."""
        raise NotImplementedError

    def collocation_condition_number(self, times) -> float:
        """2-norm condition number of the collocation matrix at ``times`` (float64)."""
        return float(torch.linalg.cond(self.collocation_matrix(times)))

    def gram_condition_number(self) -> float:
        """2-norm condition number of the exact Gram matrix, computed in float64.

        Reliable while the condition number is well below ``1 / eps = 4.5e15``; beyond that
        (monomials of high degree on long intervals) float64 underestimates it.
        """
        return float(torch.linalg.cond(self.gram_matrix()))

    @property
    def degree(self) -> int:
        return self.n_functions - 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_functions={self.n_functions}, T={self.T:g})"


class MonomialBasis(Basis):
    """Monomials ``t**j``, ``j = 0..degree``, on ``[0, T]`` (not rescaled)."""

    kind = "monomial"

    def __init__(self, degree: int, T: float = 1.0):
        super().__init__(degree + 1, T)

    def _evaluate(self, t):
        # Products rather than pow: pow's gradient at t = 0 for j = 0 is 0 * inf = nan.
        cols = [torch.ones_like(t)]
        for _ in range(1, self.n_functions):
            cols.append(cols[-1] * t)
        return torch.stack(cols, dim=-1)

    def row(self, t: float) -> list[float]:
        values = [1.0]
        for _ in range(1, self.n_functions):
            values.append(values[-1] * t)
        return values

    def row_derivative(self, t: float) -> list[float]:
        values = self.row(t)
        return [0.0] + [j * values[j - 1] for j in range(1, self.n_functions)]

    def gram_matrix(self, dtype=torch.float64):
        j = torch.arange(self.n_functions, dtype=dtype)
        power = j[:, None] + j[None, :] + 1
        # T**(i+j+1) / (i+j+1): for T = 1 the Hilbert matrix.
        return torch.as_tensor(self.T, dtype=dtype) ** power / power

    def constant_coefficients(self, dtype=torch.float64):
        a = torch.zeros(self.n_functions, dtype=dtype)
        a[0] = 1.0
        return a


class LegendreBasis(Basis):
    """Shifted Legendre polynomials ``P_j(2 t / T - 1)``, ``j = 0..degree``.

    Args:
        degree: highest degree ``d`` (``d + 1`` functions).
        T: right end of the interval.
        normalized: scale ``P_j`` by ``sqrt((2 j + 1) / T)`` (orthonormal in ``L2(0, T)``).
    """

    kind = "legendre"

    def __init__(self, degree: int, T: float = 1.0, normalized: bool = False):
        super().__init__(degree + 1, T)
        self.normalized = bool(normalized)

    def _scales(self, dtype, device):
        j = torch.arange(self.n_functions, dtype=dtype, device=device)
        return torch.sqrt((2 * j + 1) / self.T)

    def _evaluate(self, t):
        s = 2.0 * t / self.T - 1.0
        cols = [torch.ones_like(s)]
        if self.n_functions > 1:
            cols.append(s)
        for j in range(1, self.n_functions - 1):
            cols.append(((2 * j + 1) * s * cols[j] - j * cols[j - 1]) / (j + 1))
        values = torch.stack(cols, dim=-1)
        if self.normalized:
            values = values * self._scales(values.dtype, values.device)
        return values

    def row(self, t: float) -> list[float]:
        s = 2.0 * t / self.T - 1.0
        values = [1.0, s][: self.n_functions]
        for j in range(1, self.n_functions - 1):
            values.append(((2 * j + 1) * s * values[j] - j * values[j - 1]) / (j + 1))
        if self.normalized:
            values = [v * math.sqrt((2 * j + 1) / self.T) for j, v in enumerate(values)]
        return values

    def row_derivative(self, t: float) -> list[float]:
        # P'_{j+1} = ((2j+1)(P_j + s P'_j) - j P'_{j-1}) / (j+1), times ds/dt = 2/T.
        s = 2.0 * t / self.T - 1.0
        values = [1.0, s][: self.n_functions]
        slopes = [0.0, 1.0][: self.n_functions]
        for j in range(1, self.n_functions - 1):
            values.append(((2 * j + 1) * s * values[j] - j * values[j - 1]) / (j + 1))
            slopes.append(((2 * j + 1) * (values[j] + s * slopes[j]) - j * slopes[j - 1]) / (j + 1))
        factor = 2.0 / self.T
        return [factor * d * (math.sqrt((2 * j + 1) / self.T) if self.normalized else 1.0)
                for j, d in enumerate(slopes)]

    def gram_matrix(self, dtype=torch.float64):
        if self.normalized:
            return torch.eye(self.n_functions, dtype=dtype)
        j = torch.arange(self.n_functions, dtype=dtype)
        return torch.diag(self.T / (2 * j + 1))

    def constant_coefficients(self, dtype=torch.float64):
        a = torch.zeros(self.n_functions, dtype=dtype)
        a[0] = math.sqrt(self.T) if self.normalized else 1.0
        return a

    def __repr__(self) -> str:
        return (f"LegendreBasis(n_functions={self.n_functions}, T={self.T:g}, "
                f"normalized={self.normalized})")


class PiecewiseConstantBasis(Basis):
    """The unconstrained baseline: one weight set per time step.

    ``p_j(t) = 1`` on ``[j h, (j + 1) h)`` and 0 elsewhere, ``h = T / n_steps``; the last
    interval includes ``T``. Times outside ``[0, T]`` take the nearest interval.
    """

    kind = "none"

    def __init__(self, n_steps: int, T: float = 1.0):
        super().__init__(n_steps, T)
        self.n_steps = n_steps

    def _evaluate(self, t):
        h = self.T / self.n_steps
        index = torch.clamp(torch.floor(t.detach() / h), 0, self.n_steps - 1).long()
        onehot = torch.nn.functional.one_hot(index, self.n_steps).to(t.dtype)
        # Zero derivative in t, but keep t in the graph so callers may differentiate.
        return onehot + 0.0 * t.unsqueeze(-1)

    def row(self, t: float) -> list[float]:
        x = t / (self.T / self.n_steps)
        # clamp(floor(x), 0, n - 1) as the tensor path; a NaN time takes the first interval
        index = 0 if not x >= 0 else (self.n_steps - 1 if x >= self.n_steps else int(x))
        values = [0.0] * self.n_steps
        values[index] = 1.0
        return values

    def row_derivative(self, t: float) -> list[float]:
        return [0.0] * self.n_steps

    def gram_matrix(self, dtype=torch.float64):
        return torch.eye(self.n_steps, dtype=dtype) * (self.T / self.n_steps)

    def constant_coefficients(self, dtype=torch.float64):
        return torch.ones(self.n_steps, dtype=dtype)


class _ScalarRow(torch.autograd.Function):
    """``basis(scale * t)`` for a 0-d tensor ``t`` from Python floats, with its derivative."""

    @staticmethod
    def forward(ctx, t, basis, scale):
        x = scale * t.item()
        if ctx.needs_input_grad[0]:
            ctx.slopes = [scale * d for d in basis.row_derivative(x)]
        return torch.tensor([basis.row(x)], dtype=t.dtype, device=t.device)

    @staticmethod
    def backward(ctx, grad):
        slopes = torch.tensor(ctx.slopes, dtype=grad.dtype, device=grad.device)
        return torch.dot(grad.reshape(-1), slopes), None, None


def make_basis(kind: str, degree: int | None = None, T: float = 1.0, n_steps: int | None = None,
               *, normalized: bool = False) -> Basis:
    """Build a basis of time functions on ``[0, T]``.

    Args:
        kind: ``"monomial"``, ``"legendre"`` or ``"none"`` (one weight set per time step).
        degree: polynomial degree ``d >= 0``; the basis has ``d + 1`` functions. Required for
            ``"monomial"`` and ``"legendre"``; ignored for ``"none"``.
        T: right end of the time interval (``T > 0``).
        n_steps: number of time steps; required for ``"none"``.
        normalized: Legendre only: orthonormal scaling in ``L2(0, T)``.

    Returns:
        A :class:`Basis`; ``basis(t)`` maps times of shape ``(...)`` to ``(..., n_functions)``.

    Raises:
        ValueError: a bad value (unknown basis, degree, time span...), naming the argument.
        TypeError: an argument of the wrong type, naming it.
    """
    if not isinstance(kind, str) or kind.lower() not in BASIS_KINDS:
        raise ValueError(f"unknown basis {kind!r}; choose one of {', '.join(map(repr, BASIS_KINDS))}")
    kind = kind.lower()
    T = check_horizon(T)
    if kind == "none":
        if n_steps is None:
            raise ValueError("basis 'none' needs n_steps (one weight set per time step)")
        n_steps = check_int("n_steps", n_steps, minimum=1)
        return PiecewiseConstantBasis(n_steps, T)
    if degree is None:
        raise ValueError(f"basis {kind!r} needs a degree (degree=d gives d+1 functions)")
    degree = check_int("degree", degree, minimum=0)
    if kind == "monomial":
        if normalized:
            raise ValueError("normalized=True applies to the 'legendre' basis only")
        return MonomialBasis(degree, T)
    return LegendreBasis(degree, T, normalized=normalized)


def condition_numbers(kind: str, degrees, T: float = 1.0, n_times: int = 12) -> np.ndarray:
    """Collocation condition numbers at ``n_times`` equispaced times on ``[0, T]``.

    Args:
        kind: basis kind (``"monomial"`` or ``"legendre"``).
        degrees: iterable of degrees.
        T: interval length.
        n_times: number of collocation times ``linspace(0, T, n_times)``.
    Returns:
        ``(len(degrees),)`` float64 array.
    """
    times = torch.linspace(0.0, T, n_times, dtype=torch.float64)
    return np.array([make_basis(kind, d, T).collocation_condition_number(times) for d in degrees])
