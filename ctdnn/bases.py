"""Bases of time functions for time-varying weights: polynomial, trigonometric, piecewise.

A time-varying weight is written ``theta(t) = sum_{j=0..d} c_j p_j(t)`` on ``[0, T]``.
Throughout ``ctdnn``, ``degree=d`` means ``d + 1`` basis functions ``p_0 .. p_d`` (the
authors' Python passes "degree 3" but fits three functions; we do not).

Six kinds are provided:

* ``"monomial"``: ``p_j(t) = t**j`` on ``[0, T]``, *not* rescaled (as in the paper).
* ``"legendre"``: shifted Legendre polynomials ``p_j(t) = P_j(2 t / T - 1)`` from the
  three-term recurrence ``(j + 1) P_{j+1}(s) = (2 j + 1) s P_j(s) - j P_{j-1}(s)``;
  with ``normalized=True`` they are scaled by ``sqrt((2 j + 1) / T)`` so that they are
  orthonormal in ``L2(0, T)`` (Gram matrix = identity).
* ``"none"``: the unconstrained baseline, one coefficient set per time step: ``p_j`` is the
  indicator of the interval ``[t_j, t_{j+1})`` with ``t_j = j T / n_steps`` (the last
  interval is closed at ``T``; :meth:`PiecewiseConstantBasis.interval_index` states the
  rule exactly). The stepped networks do not evaluate it at times: step ``k`` takes weight
  set ``k`` by its integer index.

Beyond the paper (same interface, ``degree=d`` again meaning ``d + 1`` functions):

* ``"chebyshev"``: Chebyshev polynomials of the first kind ``T_j(2 t / T - 1)``.
* ``"fourier"``: ``1, cos(2 pi t / T), sin(2 pi t / T), cos(4 pi t / T), ...``, the first
  ``d + 1`` of them (:class:`FourierBasis` states how ``d`` maps to frequencies).
* ``"hat"``: piecewise-linear hats on ``d`` uniform intervals, the continuous analogue of
  ``"none"``.
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
    "ChebyshevBasis",
    "FourierBasis",
    "HatBasis",
    "make_basis",
    "condition_numbers",
    "BASIS_KINDS",
]

BASIS_KINDS = ("monomial", "legendre", "none", "chebyshev", "fourier", "hat")


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

    ``p_j(t) = 1`` on interval ``j`` and 0 elsewhere; :meth:`interval_index` gives the exact
    rule (intervals ``[t_j, t_{j+1})`` with ``t_j = j T / n_steps``, the last closed at ``T``,
    times outside ``[0, T]`` in the nearest interval, every breakpoint ``t_j`` in interval
    ``j``). The stepped networks (:class:`~ctdnn.ResNet`, :class:`~ctdnn.HamiltonianNet`)
    never evaluate this basis at their step times: step ``k`` uses set ``k`` by index.
    """

    kind = "none"

    def __init__(self, n_steps: int, T: float = 1.0):
        super().__init__(n_steps, T)
        self.n_steps = n_steps

    def breakpoint(self, j: int) -> float:
        """The left end ``t_j`` of interval ``j``, as the float ``j * T / n_steps``."""
        return j * self.T / self.n_steps

    def interval_index(self, t):
        """Index of the weight set that acts at time ``t``.

        The rule: interval ``j`` is ``[t_j, t_{j+1})`` with ``t_j = j * T / n_steps`` computed
        in double precision exactly as written (``(j * T) / n_steps``); the last interval is
        closed at ``T``; times below 0 take interval 0, times above ``T`` interval
        ``n_steps - 1``, and a NaN time interval 0. In particular each breakpoint ``t_j`` lies
        in interval ``j``, whatever rounding ``t_j / h`` would suffer: a candidate
        ``floor(t n / T)`` is corrected by comparing ``t`` with the breakpoints on either side.

        Args:
            t: a Python number, or a tensor of times of any shape ``(...)``. A tensor is
                compared with the breakpoints rounded to its dtype, so that a float32 time
                equal to ``float32(t_j)`` also lies in interval ``j``.

        Returns:
            An ``int`` for a Python number, else a ``(...)`` ``torch.long`` tensor on the
            device of ``t``, with values in ``0 .. n_steps - 1``.
        """
        n, T = self.n_steps, self.T
        if not isinstance(t, torch.Tensor):
            x = float(t)
            if not x > 0:  # negative, zero or NaN
                return 0
            if x >= T:
                return n - 1
            # floor(x n / T) is at most one off the true interval; the comparisons decide.
            c = min(int(x * n / T), n - 1)
            if x < c * T / n:
                c -= 1
            elif c < n - 1 and x >= (c + 1) * T / n:
                c += 1
            return c
        dtype = t.dtype if torch.is_floating_point(t) else torch.float64
        x = torch.nan_to_num(t.detach().to(torch.float64), nan=0.0)
        c = torch.clamp(torch.floor(x * n / T), 0, n - 1)

        def edge(j):
            # j is an integer-valued float64, so j * T / n rounds as the Python float does;
            # then rounded to the dtype of t, so that a float32 breakpoint stays in its set.
            return (j * T / n).to(dtype).to(torch.float64)

        below = (x < edge(c)) & (c > 0)
        above = (x >= edge(c + 1)) & (c < n - 1)
        return (c - below.to(c.dtype) + above.to(c.dtype)).long()

    def _evaluate(self, t):
        onehot = torch.nn.functional.one_hot(self.interval_index(t), self.n_steps).to(t.dtype)
        # Zero derivative in t, but keep t in the graph so callers may differentiate.
        return onehot + 0.0 * t.unsqueeze(-1)

    def row(self, t: float) -> list[float]:
        values = [0.0] * self.n_steps
        values[self.interval_index(float(t))] = 1.0
        return values

    def row_derivative(self, t: float) -> list[float]:
        return [0.0] * self.n_steps

    def gram_matrix(self, dtype=torch.float64):
        return torch.eye(self.n_steps, dtype=dtype) * (self.T / self.n_steps)

    def constant_coefficients(self, dtype=torch.float64):
        return torch.ones(self.n_steps, dtype=dtype)


class ChebyshevBasis(Basis):
    """Shifted Chebyshev polynomials of the first kind ``T_j(2 t / T - 1)``, ``j = 0..degree``.

    From the recurrence ``T_{j+1}(s) = 2 s T_j(s) - T_{j-1}(s)``, ``T_0 = 1``, ``T_1 = s``.
    Not orthogonal in ``L2(0, T)`` (their weight is ``1 / sqrt(1 - s^2)``), but nearly so:
    the Gram matrix is exact in closed form (:meth:`gram_matrix`) and well conditioned.
    Outside ``[0, T]`` the polynomials are continued as polynomials.

    Args:
        degree: highest degree ``d`` (``d + 1`` functions).
        T: right end of the interval.
    """

    kind = "chebyshev"

    def __init__(self, degree: int, T: float = 1.0):
        super().__init__(degree + 1, T)

    def _evaluate(self, t):
        s = 2.0 * t / self.T - 1.0
        cols = [torch.ones_like(s)]
        if self.n_functions > 1:
            cols.append(s)
        for j in range(1, self.n_functions - 1):
            cols.append(2.0 * s * cols[j] - cols[j - 1])
        return torch.stack(cols, dim=-1)

    def row(self, t: float) -> list[float]:
        s = 2.0 * t / self.T - 1.0
        values = [1.0, s][: self.n_functions]
        for j in range(1, self.n_functions - 1):
            values.append(2.0 * s * values[j] - values[j - 1])
        return values

    def row_derivative(self, t: float) -> list[float]:
        # T'_{j+1} = 2 T_j + 2 s T'_j - T'_{j-1}, times ds/dt = 2/T.
        s = 2.0 * t / self.T - 1.0
        values = [1.0, s][: self.n_functions]
        slopes = [0.0, 1.0][: self.n_functions]
        for j in range(1, self.n_functions - 1):
            values.append(2.0 * s * values[j] - values[j - 1])
            slopes.append(2.0 * values[j] + 2.0 * s * slopes[j] - slopes[j - 1])
        return [2.0 / self.T * d for d in slopes]

    def gram_matrix(self, dtype=torch.float64):
        # int_{-1}^{1} T_m T_n ds = 1/(1 - (m+n)^2) + 1/(1 - (m-n)^2) if m + n is even, else 0
        # (T_m T_n = (T_{m+n} + T_{|m-n|}) / 2 and int T_k = 2 / (1 - k^2) for even k);
        # dt = T/2 ds. In float64 from integers, then cast: every entry is a small rational.
        j = torch.arange(self.n_functions, dtype=torch.float64)
        plus, minus = j[:, None] + j[None, :], j[:, None] - j[None, :]
        G = 1.0 / (1.0 - plus ** 2) + 1.0 / (1.0 - minus ** 2)
        G = torch.where(torch.remainder(plus, 2) == 0, G, torch.zeros_like(G))
        return (0.5 * self.T * G).to(dtype)

    def constant_coefficients(self, dtype=torch.float64):
        a = torch.zeros(self.n_functions, dtype=dtype)
        a[0] = 1.0
        return a


class FourierBasis(Basis):
    """Real trigonometric functions with period ``T``.

    With ``omega = 2 pi / T`` the functions are, in this order,
    ``1, cos(omega t), sin(omega t), cos(2 omega t), sin(2 omega t), ...``, and
    ``degree=d`` keeps the first ``d + 1`` of them, as for every basis of ``ctdnn``: the
    highest frequency is ``ceil(d / 2)``, and for odd ``d`` it enters with its cosine only.
    (An even ``d = 2 K`` is the full trigonometric polynomial of order ``K``.) This keeps
    comparisons with the polynomial bases at equal numbers of coefficients, whatever ``d``.

    The harmonics come from the angle-addition recurrence ``cos((k+1) x) = cos(k x) cos x -
    sin(k x) sin x``, ``sin((k+1) x) = sin(k x) cos x + cos(k x) sin x`` from one cosine and
    one sine per time: only exactly rounded products and sums follow, so the float path
    (:meth:`row`) reproduces the tensor path bit for bit, and the rounding error grows like
    ``k`` times the unit round-off, negligible for the frequencies used here.

    Every function is periodic, so ``theta(0) = theta(T)`` for every choice of coefficients;
    outside ``[0, T]`` the functions repeat.

    Args:
        degree: ``d >= 0``; ``d + 1`` functions.
        T: the period (the right end of the interval).
    """

    kind = "fourier"

    def __init__(self, degree: int, T: float = 1.0):
        super().__init__(degree + 1, T)
        self.omega = 2.0 * math.pi / T

    @property
    def max_frequency(self) -> int:
        """The highest harmonic ``K = ceil(degree / 2)`` (0 for the constant alone)."""
        return self.n_functions // 2

    def frequencies(self) -> list[int]:
        """The harmonic ``k`` of each function: ``[0, 1, 1, 2, 2, ...]``, ``n_functions`` long."""
        return [(j + 1) // 2 for j in range(self.n_functions)]

    def _evaluate(self, t):
        cols = [torch.ones_like(t)]
        if self.n_functions > 1:
            x = self.omega * t
            c1, s1 = torch.cos(x), torch.sin(x)
            c, s = c1, s1
            for _ in range(self.max_frequency):
                cols += [c, s]
                c, s = c * c1 - s * s1, s * c1 + c * s1
        return torch.stack(cols[: self.n_functions], dim=-1)

    def _cos_sin(self, x: float) -> tuple[float, float]:
        # The tensor path's cos and sin of a 0-d float64 tensor: libm's and torch's kernels
        # differ in the last bit for some arguments.
        xt = torch.tensor(x, dtype=torch.float64)
        return float(torch.cos(xt)), float(torch.sin(xt))

    def _harmonics(self, t: float) -> tuple[list[float], list[float]]:
        """``cos(k omega t)`` and ``sin(k omega t)`` for ``k = 1 .. max_frequency``."""
        c1, s1 = self._cos_sin(self.omega * t)
        cos_k, sin_k = [], []
        c, s = c1, s1
        for _ in range(self.max_frequency):
            cos_k.append(c)
            sin_k.append(s)
            c, s = c * c1 - s * s1, s * c1 + c * s1
        return cos_k, sin_k

    def row(self, t: float) -> list[float]:
        values = [1.0]
        if self.n_functions > 1:
            for c, s in zip(*self._harmonics(t)):
                values += [c, s]
        return values[: self.n_functions]

    def row_derivative(self, t: float) -> list[float]:
        slopes = [0.0]
        if self.n_functions > 1:
            for k, (c, s) in enumerate(zip(*self._harmonics(t)), start=1):
                slopes += [-k * self.omega * s, k * self.omega * c]
        return slopes[: self.n_functions]

    def gram_matrix(self, dtype=torch.float64):
        # Orthogonal over a full period: int 1 = T, int cos^2 = int sin^2 = T / 2.
        d = torch.full((self.n_functions,), 0.5 * self.T, dtype=dtype)
        d[0] = self.T
        return torch.diag(d)

    def constant_coefficients(self, dtype=torch.float64):
        a = torch.zeros(self.n_functions, dtype=dtype)
        a[0] = 1.0
        return a

    def __repr__(self) -> str:
        return (f"FourierBasis(n_functions={self.n_functions}, T={self.T:g}, "
                f"max_frequency={self.max_frequency})")


class HatBasis(Basis):
    """Piecewise-linear hat functions on a uniform grid: continuous per-step weights.

    ``degree=d`` (``d >= 1``) gives ``d + 1`` hats centred at the nodes ``t_i = i h``,
    ``h = T / d``: ``p_i(t) = max(0, 1 - |t / h - i|)``. Their span is the continuous
    piecewise-linear functions with kinks at the nodes, and the coefficients are the weight
    values at the nodes (``theta(t_i) = c_i``). With ``d = n_steps`` the nodes are a stepped
    network's step times, the continuous analogue of the per-step baseline ``"none"``.

    Evaluation: the interval ``i = floor(t / h)`` (clamped to ``0 .. d - 1``; the last
    interval is closed at ``T``) and ``f = t / h - i`` give ``p_i = 1 - f``,
    ``p_{i+1} = f``. The derivative in ``t`` is the one-sided one of that interval (the
    right derivative at interior nodes, the left one at ``T``). Outside ``[0, T]`` the
    weights are continued as constants (``t`` is clamped), so the hats still sum to one.

    Args:
        degree: number of grid intervals ``d >= 1`` (``d + 1`` functions).
        T: right end of the interval.
    """

    kind = "hat"

    def __init__(self, degree: int, T: float = 1.0):
        if degree < 1:
            raise ValueError(f"the 'hat' basis needs degree >= 1 (degree=d gives d + 1 hats on "
                             f"d intervals), got {degree}")
        super().__init__(degree + 1, T)
        self.n_intervals = degree
        self.h = T / degree

    def nodes(self, dtype=torch.float64) -> torch.Tensor:
        """The ``d + 1`` node times ``i h``: ``(n_functions,)``."""
        return torch.arange(self.n_functions, dtype=dtype) * self.h

    def _evaluate(self, t):
        d = self.n_intervals
        x = torch.clamp(t / self.h, 0.0, float(d))
        index = torch.clamp(torch.nan_to_num(torch.floor(x.detach()), nan=0.0), 0, d - 1)
        frac = x - index
        index = index.long()
        one_hot = torch.nn.functional.one_hot
        left = one_hot(index, self.n_functions).to(t.dtype)
        right = one_hot(index + 1, self.n_functions).to(t.dtype)
        return left * (1.0 - frac).unsqueeze(-1) + right * frac.unsqueeze(-1)

    def _locate(self, t: float) -> tuple[int, float]:
        d = self.n_intervals
        x = min(max(t / self.h, 0.0), float(d))
        index = 0 if math.isnan(x) else min(int(math.floor(x)), d - 1)
        return index, x - index

    def row(self, t: float) -> list[float]:
        index, frac = self._locate(t)
        values = [0.0] * self.n_functions
        values[index], values[index + 1] = 1.0 - frac, frac
        return values

    def row_derivative(self, t: float) -> list[float]:
        slopes = [0.0] * self.n_functions
        x = t / self.h
        if not 0.0 <= x <= self.n_intervals:   # clamped outside [0, T]: constant in time
            return slopes
        index, _ = self._locate(t)
        slopes[index], slopes[index + 1] = -1.0 / self.h, 1.0 / self.h
        return slopes

    def gram_matrix(self, dtype=torch.float64):
        # The P1 mass matrix: h/3 (2h/3 inside) on the diagonal, h/6 beside it.
        n = self.n_functions
        diag = torch.full((n,), 2.0 * self.h / 3.0, dtype=torch.float64)
        diag[0] = diag[-1] = self.h / 3.0
        off = torch.full((n - 1,), self.h / 6.0, dtype=torch.float64)
        G = torch.diag(diag) + torch.diag(off, 1) + torch.diag(off, -1)
        return G.to(dtype)

    def constant_coefficients(self, dtype=torch.float64):
        return torch.ones(self.n_functions, dtype=dtype)

    def __repr__(self) -> str:
        return f"HatBasis(n_functions={self.n_functions}, T={self.T:g}, h={self.h:g})"


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
        kind: ``"monomial"``, ``"legendre"``, ``"chebyshev"`` (first kind, on ``[0, T]``),
            ``"fourier"`` (``1, cos, sin`` of period ``T``), ``"hat"`` (piecewise-linear
            hats on a uniform grid) or ``"none"`` (one weight set per time step).
        degree: ``d``; the basis has ``d + 1`` functions, whatever the kind: the polynomial
            degree for ``"monomial"``, ``"legendre"`` and ``"chebyshev"``; the first ``d + 1``
            of ``1, cos, sin, cos 2x, sin 2x, ...`` for ``"fourier"``; ``d >= 1`` grid
            intervals for ``"hat"``. Required for all but ``"none"``, where it is ignored.
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
    if kind == "legendre":
        return LegendreBasis(degree, T, normalized=normalized)
    if normalized:
        raise ValueError("normalized=True applies to the 'legendre' basis only")
    if kind == "hat" and degree < 1:
        raise ValueError(f"basis 'hat' needs degree >= 1 (d intervals, d + 1 hats), got {degree}")
    return {"monomial": MonomialBasis, "chebyshev": ChebyshevBasis, "fourier": FourierBasis,
            "hat": HatBasis}[kind](degree, T)


def condition_numbers(kind: str, degrees, T: float = 1.0, n_times: int = 12) -> np.ndarray:
    """Collocation condition numbers at ``n_times`` equispaced times on ``[0, T]``.

    Args:
        kind: a basis kind of :data:`BASIS_KINDS` other than ``"none"``.
        degrees: iterable of degrees.
        T: interval length.
        n_times: number of collocation times ``linspace(0, T, n_times)``.
    Returns:
        ``(len(degrees),)`` float64 array.
    """
    times = torch.linspace(0.0, T, n_times, dtype=torch.float64)
    return np.array([make_basis(kind, d, T).collocation_condition_number(times) for d in degrees])
