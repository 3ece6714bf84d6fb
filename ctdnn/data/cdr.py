r"""Convection-diffusion-reaction (CDR) simulator: a stand-in for the paper's CDR data set.

The published CDR data (Newman, Ruthotto, Hart, van Bloemen Waanders, "Train Like a
(Var)Pro", SIMODS 2021) come from

.. math::

    \partial_t u = \nabla\cdot(D\nabla u) - v\cdot\nabla u + f + \sum_{k=1}^{55} y_k r_k(u),
    \qquad D\nabla u\cdot n = 0 \text{ on } \partial\Omega, \qquad u(\cdot, 0) = 0,

with reaction weights :math:`y` on the probability simplex and the state observed at sensors
over time. Grid, :math:`D`, :math:`v`, :math:`f` and :math:`r_k` were not published; this module
chooses them as follows (all quantities dimensionless; every number below is a key of
:data:`CDR_DEFAULTS` and can be overridden).

Domain and grid
    :math:`\Omega = [0, 1]^2`, a uniform ``n_cells x n_cells`` grid of square cells of side
    :math:`h = 1/n` (default 32 x 32), cell-centred finite volumes. Cell ``c = ix + n * iy``.

Diffusivity
    :math:`D(x_1, x_2) = D_0 (1 + a_D x_1)`, :math:`D_0 = 0.04`, :math:`a_D = 0.5`
    (more diffusive towards the east), evaluated at face centres.

Velocity
    One recirculating cell from the stream function
    :math:`\psi = \psi_0 \sin(\pi x_1)\sin(\pi x_2)`, :math:`v = (\partial_2\psi, -\partial_1\psi)`,
    :math:`\psi_0 = 0.5` (counter-clockwise, speed at most :math:`\pi\psi_0 \approx 1.57`, so a
    parcel near the rim travels a distance of order one by :math:`T = 1`).
    The volumetric flux through a face is the difference of :math:`\psi` at its two end points,
    so the discrete velocity is exactly divergence-free and vanishes on the boundary
    (:math:`\psi = 0` there). Convection is therefore written in flux form,
    :math:`-\nabla\cdot(v u) = -v\cdot\nabla u`, with zero boundary flux, and the total mass
    obeys :math:`\frac{d}{dt}\int u = \int (f + \sum_k y_k r_k(u))` exactly at the discrete
    level. Face values of :math:`u` are central (second order; the default: the cell Peclet
    number :math:`|v| h / D` is at most 1.23 on the default grid, below the bound 2 that keeps
    central differencing free of wiggles) or upwind (first order).

Source
    A steady Gaussian :math:`f = f_0 \exp(-|x - s|^2 / (2 w^2))` with :math:`f_0 = 20`,
    :math:`s = (0.3, 0.25)`, :math:`w = 0.08` (injected upstream of the sensors).

Reactions
    55 terms :math:`r_k(u) = a_k \varphi_{j}(x)\, g_m(u)` with ``k = 11 m + j``: five kinetic
    families :math:`g_m` times eleven spatial patches :math:`\varphi_j`.

    * ``m = 0``, first-order decay: :math:`g_0 = -u`, base rate 30;
    * ``m = 1``, Michaelis-Menten uptake: :math:`g_1 = -u / (K_1 + |u|)`, :math:`K_1 = 0.5`,
      base rate 30;
    * ``m = 2``, logistic (autocatalytic) growth: :math:`g_2 = u (1 - u / u_{max})`,
      :math:`u_{max} = 2`, base rate 30;
    * ``m = 3``, Hill-type production: :math:`g_3 = u^2 / (K_3^2 + u^2)`, :math:`K_3 = 1`,
      base rate 30;
    * ``m = 4``, second-order decay: :math:`g_4 = -u |u|`, base rate 5.

    The :math:`|u|` forms keep every rate finite and Lipschitz if central differencing undershoots
    slightly below zero. Within a family the rate constants spread geometrically,
    :math:`a_{m,j} = \text{base}_m\, 2^{(j - 5)/5}` (a factor 0.5 to 2), and the patches are
    Gaussians :math:`\varphi_j = \exp(-|x - c_j|^2 / (2\sigma^2))`, :math:`\sigma = 0.15`, centred
    at eleven Halton points (bases 2 and 3) mapped to :math:`[0.1, 0.9]^2`. Because
    :math:`\sum_k y_k = 1`, the inputs decide which kinetics act where, not how much reaction
    there is in total.

Observations
    Six sensors (bilinear interpolation between cell centres) at
    (0.50, 0.20), (0.80, 0.35), (0.75, 0.75), (0.40, 0.80), (0.20, 0.50), (0.50, 0.50), read at
    the twelve times :math:`t_i = i T / 12`, :math:`i = 1..12`, :math:`T = 1`. The 72 outputs are
    **time-major**: column ``6 * i + s`` is sensor ``s`` at time ``t_{i+1}``, so
    ``y.reshape(n, 12, 6)`` is (sample, time, sensor). The published ``C`` matrix has the same
    layout (its sensor index varies fastest).

Inputs
    Points of the 55-simplex drawn with ``numpy.random.default_rng(seed)``. By default
    (``input_distribution="normalized-uniform"``) :math:`y = u / \sum_k u_k` with
    :math:`u_k \sim U(0, 1)` independent: the published CDR inputs follow this law closely
    (Kolmogorov-Smirnov distance 0.007 on the pooled weights, against 0.15 for a flat
    Dirichlet). ``input_distribution="dirichlet"`` draws
    :math:`\mathrm{Dirichlet}(\alpha, \dots, \alpha)` with ``dirichlet_alpha``.

Time stepping
    IMEX SBDF2: second-order backward differentiation for the linear diffusion-convection
    operator :math:`L`, second-order extrapolation for source and reactions :math:`N`,

    .. math::

        \frac{3u^{n+1} - 4u^n + u^{n-1}}{2\Delta t}
        = L u^{n+1} + 2N(t_n, u^n) - N(t_{n-1}, u^{n-1}),

    started by one IMEX Euler step. Both matrices (:math:`I - \Delta t L` and
    :math:`3I - 2\Delta t L`) are sparse and banded (half bandwidth one grid row); each is
    factorised once (banded LU, LAPACK ``gbtrf``) and reused for every step and every sample:
    the samples are the columns of the right-hand side (passed to LAPACK in blocks of 64).
    Default
    :math:`\Delta t = T / 240` (20 steps between observations). Because the columns of
    :math:`V L` sum to zero (:math:`V` the cell volumes), the discrete total mass
    :math:`M^n = \sum_c V_c u_c^n` satisfies exactly (to the round-off of the linear solves)

    .. math:: 3M^{n+1} - 4M^n + M^{n-1} = 2\Delta t\,(2S^n - S^{n-1}),
              \qquad M^1 - M^0 = \Delta t\, S^0,

    with :math:`S^n = \sum_c V_c N_c(t_n, u^n)`.

The solver core (:func:`make_grid`, :func:`transport_operator`, :func:`imex_sbdf2`) is public
so that tests can drive it with manufactured solutions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from tqdm import tqdm

from ..checks import check_int

# integer arguments: a ValueError naming the argument, like the simulators' other checks
_check_int = functools.partial(check_int, error=ValueError)

__all__ = [
    "CDR_DEFAULTS",
    "CDR_REACTION_FAMILIES",
    "CDR_VERSION",
    "CDRGrid",
    "BandedLU",
    "CDRProblem",
    "build_cdr_problem",
    "imex_sbdf2",
    "make_grid",
    "sensor_matrix",
    "simulate_cdr",
    "transport_operator",
]

#: Bumped whenever a change alters the simulated numbers (part of the cache key).
CDR_VERSION = 2

N_REACTIONS = 55
N_FAMILIES = 5
N_PATCHES = 11


def _halton(index: int, base: int) -> float:
    result, fraction = 0.0, 1.0
    while index > 0:
        fraction /= base
        result += fraction * (index % base)
        index //= base
    return result


# Eleven patch centres: Halton points 1..11 (bases 2, 3) mapped to [0.1, 0.9]^2.
_PATCH_CENTRES = tuple(
    (round(0.1 + 0.8 * _halton(i, 2), 6), round(0.1 + 0.8 * _halton(i, 3), 6))
    for i in range(1, N_PATCHES + 1)
)

CDR_REACTION_FAMILIES = (
    "first-order decay",
    "Michaelis-Menten uptake",
    "logistic growth",
    "Hill-type production",
    "second-order decay",
)

#: Default settings; every key may be overridden in :func:`simulate_cdr`.
CDR_DEFAULTS: dict = {
    "n_cells": 32,
    "final_time": 1.0,
    "n_obs": 12,
    "steps_per_obs": 20,
    "diffusivity": 0.04,
    "diffusivity_slope": 0.5,
    "stream_amplitude": 0.5,
    "convection": "central",
    "source_amplitude": 20.0,
    "source_centre": (0.3, 0.25),
    "source_width": 0.08,
    "family_rates": (30.0, 30.0, 30.0, 30.0, 5.0),
    "rate_spread": 2.0,
    "michaelis_constant": 0.5,
    "logistic_capacity": 2.0,
    "hill_constant": 1.0,
    "patch_centres": _PATCH_CENTRES,
    "patch_width": 0.15,
    "sensors": ((0.5, 0.2), (0.8, 0.35), (0.75, 0.75), (0.4, 0.8), (0.2, 0.5), (0.5, 0.5)),
    "input_distribution": "normalized-uniform",
    "dirichlet_alpha": 1.0,
}


# ---------------------------------------------------------------------------
# Grid and operators
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CDRGrid:
    """Uniform cell-centred grid on the unit square.

    Attributes:
        n: cells per side.
        h: cell side, ``1 / n``.
        centres: (n_cells, 2) cell centres, cell ``c = ix + n * iy``.
    """

    n: int
    h: float
    centres: np.ndarray

    @property
    def n_cells(self) -> int:
        return self.n * self.n

    @property
    def volume(self) -> float:
        """Area of one cell (all cells are equal)."""
        return self.h * self.h


def make_grid(n: int) -> CDRGrid:
    """Uniform ``n x n`` grid on [0, 1]^2.

    Args:
        n: cells per side (>= 2).
    """
    n = _check_int("n", n, minimum=2)
    h = 1.0 / n
    c = (np.arange(n) + 0.5) * h
    x1, x2 = np.meshgrid(c, c, indexing="xy")  # x1 varies fastest in ravel order
    return CDRGrid(n=n, h=h, centres=np.column_stack([x1.ravel(), x2.ravel()]))


def _interior_faces(grid: CDRGrid):
    """Interior faces as (left cell, right cell, face centre, end point a, end point b).

    The face normal points from the first cell to the second (+x1 or +x2). The end points
    are ordered so that ``psi(b) - psi(a)`` is the volumetric flux of ``v = curl psi`` in
    the direction of that normal.
    """
    n, h = grid.n, grid.h
    ix, iy = np.meshgrid(np.arange(n - 1), np.arange(n), indexing="xy")
    ix, iy = ix.ravel(), iy.ravel()
    # Vertical faces at x1 = (ix + 1) h: flux = int v_1 dx2 = psi(top) - psi(bottom).
    left_v = ix + n * iy
    xf = (ix + 1) * h
    centre_v = np.column_stack([xf, (iy + 0.5) * h])
    a_v = np.column_stack([xf, iy * h])
    b_v = np.column_stack([xf, (iy + 1) * h])
    # Horizontal faces at x2 = (jy + 1) h: flux = int v_2 dx1 = -(psi(right) - psi(left)).
    jx, jy = np.meshgrid(np.arange(n), np.arange(n - 1), indexing="xy")
    jx, jy = jx.ravel(), jy.ravel()
    left_h = jx + n * jy
    yf = (jy + 1) * h
    centre_h = np.column_stack([(jx + 0.5) * h, yf])
    a_h = np.column_stack([(jx + 1) * h, yf])
    b_h = np.column_stack([jx * h, yf])
    first = np.concatenate([left_v, left_h])
    second = np.concatenate([left_v + 1, left_h + n])
    return (first, second, np.vstack([centre_v, centre_h]), np.vstack([a_v, a_h]),
            np.vstack([b_v, b_h]))


def transport_operator(
    grid: CDRGrid,
    diffusivity: Callable[[np.ndarray], np.ndarray],
    stream_function: Callable[[np.ndarray], np.ndarray] | None = None,
    *,
    convection: str = "central",
) -> sp.csr_matrix:
    """Finite-volume diffusion-convection operator with zero-flux boundaries.

    Returns the matrix ``L`` of the semi-discrete system ``du/dt = L u`` that approximates
    ``div(D grad u) - v . grad u`` with ``v = (d psi / d x2, -d psi / d x1)``. Only interior
    faces carry flux, and every face flux leaves one cell and enters its neighbour, so
    ``V * L`` has zero column sums: total mass changes only through sources.

    Args:
        grid: the grid.
        diffusivity: ``D(points)`` for points (m, 2) -> (m,), evaluated at face centres.
        stream_function: ``psi(points)`` (m, 2) -> (m,); must vanish on the boundary for
            zero convective boundary flux (only interior faces are used, so a nonzero
            boundary value is simply ignored). ``None`` means no convection.
        convection: ``"central"`` (second order) or ``"upwind"`` (first order) face values.

    Returns:
        (n_cells, n_cells) CSR matrix.
    """
    if convection not in ("central", "upwind"):
        raise ValueError(f"convection must be 'central' or 'upwind', got {convection!r}")
    first, second, centres, a, b = _interior_faces(grid)
    # Diffusive conductance D_f * (face length) / (centre distance) = D_f for square cells.
    g = np.asarray(diffusivity(centres), dtype=np.float64)
    if np.any(g <= 0) or not np.all(np.isfinite(g)):
        raise ValueError("diffusivity must be positive and finite at every face")
    if stream_function is None:
        q = np.zeros_like(g)
    else:
        q = np.asarray(stream_function(b), dtype=np.float64) - np.asarray(
            stream_function(a), dtype=np.float64)
    # Flux F from `first` to `second` = coef_first * u_first + coef_second * u_second.
    # Diffusive part g (u_first - u_second); convective part q u_face.
    if convection == "central":
        c_first = g + 0.5 * q
        c_second = -g + 0.5 * q
    else:
        c_first = g + np.maximum(q, 0.0)
        c_second = -g + np.minimum(q, 0.0)
    # V du_first/dt -= F ; V du_second/dt += F.
    rows = np.concatenate([first, first, second, second])
    cols = np.concatenate([first, second, first, second])
    vals = np.concatenate([-c_first, -c_second, c_first, c_second]) / grid.volume
    n = grid.n_cells
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, n))


def sensor_matrix(grid: CDRGrid, points: Sequence[Sequence[float]]) -> sp.csr_matrix:
    """Bilinear interpolation from cell centres to points (clamped near the boundary).

    Args:
        grid: the grid.
        points: (n_points, 2) sensor coordinates in [0, 1]^2.

    Returns:
        (n_points, n_cells) CSR matrix ``P`` with ``P @ u`` the interpolated values.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if np.any(pts < 0) or np.any(pts > 1):
        raise ValueError("sensor points must lie in [0, 1]^2")
    n, h = grid.n, grid.h
    s = np.clip(pts / h - 0.5, 0.0, n - 1.0)  # position in cell-index units
    i0 = np.minimum(np.floor(s).astype(int), n - 2)
    w = s - i0
    rows, cols, vals = [], [], []
    for dx in (0, 1):
        for dy in (0, 1):
            wx = w[:, 0] if dx else 1.0 - w[:, 0]
            wy = w[:, 1] if dy else 1.0 - w[:, 1]
            rows.append(np.arange(len(pts)))
            cols.append((i0[:, 0] + dx) + n * (i0[:, 1] + dy))
            vals.append(wx * wy)
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(pts), grid.n_cells),
    )


# ---------------------------------------------------------------------------
# Time stepping
# ---------------------------------------------------------------------------


class BandedLU:
    """LU factorisation of a sparse banded matrix (LAPACK ``gbtrf``), reused for many solves.

    On the cell-ordered grid the diffusion-convection matrices are banded with half
    bandwidth ``n`` (one grid row), so a banded factorisation costs ``O(n_cells n^2)`` once
    and ``O(n_cells n)`` per right-hand side; many right-hand sides (the samples) go
    through one LAPACK call.

    Args:
        matrix: (m, m) sparse matrix.
    """

    def __init__(self, matrix: sp.spmatrix):
        a = sp.coo_matrix(matrix)
        m = a.shape[0]
        if a.shape != (m, m):
            raise ValueError(f"matrix must be square, got {a.shape}")
        offset = a.row - a.col
        self.kl = int(max(offset.max(initial=0), 0))
        self.ku = int(max((-offset).max(initial=0), 0))
        band = np.zeros((2 * self.kl + self.ku + 1, m))
        np.add.at(band, (self.kl + self.ku + a.row - a.col, a.col), a.data)
        self._lu, self._piv, info = lapack.dgbtrf(band, self.kl, self.ku)
        if info != 0:
            raise np.linalg.LinAlgError(f"banded LU failed: gbtrf info = {info}")
        self.shape = (m, m)

    #: Right-hand sides per LAPACK call. Blocks of this size keep the working set in cache
    #: and the rank-one updates inside ``gbtrs`` below the size at which the BLAS goes
    #: multi-threaded; one call with hundreds of columns measured up to 100x slower on a
    #: busy two-core machine, blocks of 64 measured steady and faster.
    block = 64

    def solve(self, b: np.ndarray) -> np.ndarray:
        """Solve ``A x = b`` for b of shape (m,) or (m, k); returns a Fortran-ordered array."""
        b = np.asarray(b, dtype=np.float64)
        if b.ndim == 1 or b.shape[1] <= self.block:
            return self._solve(np.asfortranarray(b))
        x = np.empty(b.shape, order="F")
        for start in range(0, b.shape[1], self.block):
            cols = slice(start, start + self.block)
            x[:, cols] = self._solve(np.asfortranarray(b[:, cols]))
        return x

    def _solve(self, b: np.ndarray) -> np.ndarray:
        x, info = lapack.dgbtrs(self._lu, self.kl, self.ku, b, self._piv)
        if info != 0:
            raise np.linalg.LinAlgError(f"banded solve failed: gbtrs info = {info}")
        return x


def imex_sbdf2(
    operator: sp.spmatrix,
    explicit: Callable[[float, np.ndarray], np.ndarray],
    u0: np.ndarray,
    dt: float,
    n_steps: int,
    *,
    record_steps: Sequence[int] | None = None,
    progress: bool = False,
    desc: str = "CDR",
) -> np.ndarray:
    """Integrate ``du/dt = L u + N(t, u)`` with IMEX SBDF2 (IMEX Euler first step).

    ``L`` is treated implicitly through two banded LU factorisations (:class:`BandedLU`)
    computed once; ``N`` explicitly with second-order extrapolation. Every column of ``u`` is an
    independent system (a batch of samples solved together).

    Args:
        operator: (n, n) sparse ``L``.
        explicit: ``N(t, u)`` returning an array shaped like ``u``.
        u0: (n,) or (n, batch) initial state.
        dt: time step (> 0).
        n_steps: number of steps (>= 1); the final time is ``n_steps * dt``.
        record_steps: step indices in ``0..n_steps`` whose states are returned
            (default: only the last).
        progress: show a tqdm bar over the steps.
        desc: label of the bar.

    Returns:
        (len(record_steps), *u0.shape) states at the recorded steps.
    """
    n_steps = _check_int("n_steps", n_steps, minimum=1)
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be positive and finite, got {dt}")
    u = np.asarray(u0, dtype=np.float64)
    n = operator.shape[0]
    if u.shape[0] != n:
        raise ValueError(f"u0 has {u.shape[0]} rows, the operator {n}")
    record = [n_steps] if record_steps is None else [int(s) for s in record_steps]
    if any(s < 0 or s > n_steps for s in record):
        raise ValueError(f"record_steps must lie in 0..{n_steps}")
    wanted: dict[int, list[int]] = {}
    for pos, s in enumerate(record):
        wanted.setdefault(s, []).append(pos)
    out = np.empty((len(record),) + u.shape)

    def keep(step: int, state: np.ndarray) -> None:
        for pos in wanted.get(step, ()):
            out[pos] = state

    eye = sp.identity(n, format="csr")
    L = sp.csr_matrix(operator)
    lu_euler = BandedLU(eye - dt * L)
    lu_bdf2 = BandedLU(3.0 * eye - 2.0 * dt * L)

    keep(0, u)
    bar = tqdm(total=n_steps, desc=desc, disable=not progress, leave=False)
    n_prev = explicit(0.0, u)
    u_prev, u = u, lu_euler.solve(u + dt * n_prev)
    bar.update(1)
    keep(1, u)
    for step in range(1, n_steps):
        n_now = explicit(step * dt, u)
        rhs = 4.0 * u - u_prev + (2.0 * dt) * (2.0 * n_now - n_prev)
        u_prev, u, n_prev = u, lu_bdf2.solve(rhs), n_now
        bar.update(1)
        keep(step + 1, u)
    bar.close()
    return out


# ---------------------------------------------------------------------------
# The CDR problem
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CDRProblem:
    """Everything of the CDR model except the reaction weights.

    Attributes:
        grid: the grid.
        operator: (n_cells, n_cells) diffusion-convection matrix ``L``.
        source: (n_cells,) source ``f`` at cell centres.
        patches: (n_cells, 11) spatial patches ``phi_j`` at cell centres.
        rates: (5, 11) rate constants ``a_{m, j}``.
        sensors: (6, n_cells) interpolation matrix.
        dt: time step.
        n_steps: number of steps to the final time.
        obs_steps: (n_obs,) step indices of the observation times.
        settings: the settings used.
    """

    grid: CDRGrid
    operator: sp.csr_matrix
    source: np.ndarray
    patches: np.ndarray
    rates: np.ndarray
    sensors: sp.csr_matrix
    dt: float
    n_steps: int
    obs_steps: np.ndarray
    settings: dict

    def reaction_fields(self, weights: np.ndarray) -> np.ndarray:
        """Coefficient fields ``A_m(x) = sum_j y_{11 m + j} a_{m, j} phi_j(x)``.

        Args:
            weights: (batch, 55) reaction weights.

        Returns:
            (5, n_cells, batch).
        """
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or w.shape[1] != N_REACTIONS:
            raise ValueError(f"weights must have shape (batch, {N_REACTIONS}), got {w.shape}")
        scaled = w.reshape(-1, N_FAMILIES, N_PATCHES) * self.rates[None]  # (b, 5, 11)
        return np.einsum("cj,bmj->mcb", self.patches, scaled, optimize=True)

    def kinetics(self, u: np.ndarray) -> np.ndarray:
        """The five kinetic shapes ``g_m(u)`` stacked on a new first axis: (5, *u.shape)."""
        s = self.settings
        au = np.abs(u)
        u2 = u * u
        return np.stack([
            -u,
            -u / (s["michaelis_constant"] + au),
            u * (1.0 - u / s["logistic_capacity"]),
            u2 / (s["hill_constant"] ** 2 + u2),
            -u * au,
        ])

    def right_hand_side(self, weights: np.ndarray) -> Callable[[float, np.ndarray], np.ndarray]:
        """Explicit part ``N(t, u) = f + sum_k y_k r_k(u)`` for a batch of weights.

        Args:
            weights: (batch, 55).

        Returns:
            ``N(t, u)`` for ``u`` of shape (n_cells, batch).
        """
        s = self.settings
        fields = self.reaction_fields(weights)
        # g_0..g_4 regrouped as u * (B - C|u| - A_1/(K_1 + |u|) - E u) + A_3 u^2/(K_3^2 + u^2),
        # fewer passes over the (n_cells, batch) arrays; Fortran order matches the solver.
        lin = np.asfortranarray(fields[2] - fields[0])
        quad_abs = np.asfortranarray(fields[4])
        quad = np.asfortranarray(fields[2] / s["logistic_capacity"])
        mm = np.asfortranarray(fields[1])
        hill = np.asfortranarray(fields[3])
        k1, k3sq = s["michaelis_constant"], s["hill_constant"] ** 2
        f = self.source[:, None]

        def explicit(t: float, u: np.ndarray) -> np.ndarray:
            au = np.abs(u)
            tmp = np.add(au, k1)
            np.divide(mm, tmp, out=tmp)
            r = np.multiply(quad_abs, au)
            r += tmp
            np.multiply(quad, u, out=tmp)
            r += tmp
            np.subtract(lin, r, out=r)
            r *= u
            np.multiply(u, u, out=au)
            np.add(au, k3sq, out=tmp)
            np.divide(au, tmp, out=tmp)
            tmp *= hill
            r += tmp
            r += f
            return r

        return explicit

    def solve(self, weights: np.ndarray, *, record_steps: Sequence[int] | None = None,
              progress: bool = False) -> np.ndarray:
        """States for a batch of reaction weights.

        Args:
            weights: (batch, 55).
            record_steps: step indices to return (default: the observation steps).
            progress: show a progress bar.

        Returns:
            (n_record, n_cells, batch).
        """
        w = np.asarray(weights, dtype=np.float64)
        u0 = np.zeros((self.grid.n_cells, w.shape[0]), order="F")
        steps = self.obs_steps if record_steps is None else record_steps
        return imex_sbdf2(self.operator, self.right_hand_side(w), u0, self.dt, self.n_steps,
                          record_steps=steps, progress=progress)

    def observe(self, weights: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """Sensor readings, time-major.

        Args:
            weights: (batch, 55).

        Returns:
            (batch, n_obs * n_sensors), column ``n_sensors * i + s``.
        """
        states = self.solve(weights, progress=progress)  # (n_obs, n_cells, b)
        readings = np.stack([self.sensors @ s for s in states])  # (n_obs, n_sensors, b)
        return np.ascontiguousarray(readings.transpose(2, 0, 1).reshape(states.shape[2], -1))


def build_cdr_problem(**overrides) -> CDRProblem:
    """Assemble the CDR model from :data:`CDR_DEFAULTS` updated by ``overrides``."""
    s = _settings(overrides)
    grid = make_grid(s["n_cells"])
    d0, slope = s["diffusivity"], s["diffusivity_slope"]
    psi0 = s["stream_amplitude"]

    def diffusivity(p):
        return d0 * (1.0 + slope * p[:, 0])

    def stream(p):
        return psi0 * np.sin(np.pi * p[:, 0]) * np.sin(np.pi * p[:, 1])

    L = transport_operator(grid, diffusivity, stream, convection=s["convection"])
    xc = grid.centres
    src = np.asarray(s["source_centre"], dtype=np.float64)
    source = s["source_amplitude"] * np.exp(
        -np.sum((xc - src) ** 2, axis=1) / (2.0 * s["source_width"] ** 2))
    centres = np.asarray(s["patch_centres"], dtype=np.float64)
    d2 = np.sum((xc[:, None, :] - centres[None]) ** 2, axis=2)
    patches = np.exp(-d2 / (2.0 * s["patch_width"] ** 2))
    half = (N_PATCHES - 1) / 2
    spread = s["rate_spread"] ** ((np.arange(N_PATCHES) - half) / half)
    rates = np.asarray(s["family_rates"], dtype=np.float64)[:, None] * spread[None]
    n_steps = s["n_obs"] * s["steps_per_obs"]
    return CDRProblem(
        grid=grid, operator=L, source=source, patches=patches, rates=rates,
        sensors=sensor_matrix(grid, s["sensors"]), dt=s["final_time"] / n_steps,
        n_steps=n_steps, obs_steps=np.arange(1, s["n_obs"] + 1) * s["steps_per_obs"],
        settings=s,
    )


def simulate_cdr(n_samples: int = 800, *, seed: int = 0, progress: bool = True,
                 **overrides) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate the CDR data set.

    Args:
        n_samples: number of samples (positive int).
        seed: seed of ``numpy.random.default_rng`` for the inputs.
        progress: show a tqdm bar over the time steps.
        **overrides: any key of :data:`CDR_DEFAULTS`.

    Returns:
        ``x`` (n_samples, 55) float64 reaction weights on the simplex; ``y``
        (n_samples, 72) float64 sensor readings, time-major (``y.reshape(n, 12, 6)`` is
        sample x time x sensor); ``settings``, a JSON-serialisable dict of everything that
        determines the output (a cache key).
    """
    n_samples = _check_int("n_samples", n_samples, minimum=1)
    seed = _check_int("seed", seed, minimum=0)
    problem = build_cdr_problem(**overrides)
    rng = np.random.default_rng(seed)
    if problem.settings["input_distribution"] == "dirichlet":
        x = rng.dirichlet(np.full(N_REACTIONS, problem.settings["dirichlet_alpha"]), size=n_samples)
    else:
        u = rng.uniform(size=(n_samples, N_REACTIONS))
        x = u / u.sum(axis=1, keepdims=True)
    y = problem.observe(x, progress=progress)
    if not np.all(np.isfinite(y)):
        raise RuntimeError(
            "the CDR simulation produced non-finite values; reduce the time step "
            "(steps_per_obs) or the reaction rates (family_rates)")
    settings = {"simulator": "cdr", "version": CDR_VERSION, "n_samples": n_samples,
                "seed": seed, "output_layout": "time-major (n, n_obs, n_sensors)",
                **_jsonable(problem.settings)}
    return x, y, settings


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------




def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return float(value)


def _points(name: str, value, count: int | None = None) -> tuple:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or (count is not None and arr.shape[0] != count):
        want = f"({count}, 2)" if count is not None else "(m, 2)"
        raise ValueError(f"{name} must have shape {want}, got {arr.shape}")
    if np.any(arr < 0) or np.any(arr > 1):
        raise ValueError(f"{name} must lie in [0, 1]^2")
    return tuple(tuple(float(v) for v in row) for row in arr)


def _settings(overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(CDR_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown CDR setting(s) {', '.join(map(repr, unknown))}; "
                         f"valid names are {', '.join(CDR_DEFAULTS)}")
    s = {**CDR_DEFAULTS, **overrides}
    s["n_cells"] = _check_int("n_cells", s["n_cells"], minimum=2)
    s["n_obs"] = _check_int("n_obs", s["n_obs"], minimum=1)
    s["steps_per_obs"] = _check_int("steps_per_obs", s["steps_per_obs"], minimum=1)
    for key in ("final_time", "diffusivity", "source_width", "michaelis_constant",
                "logistic_capacity", "hill_constant", "patch_width", "rate_spread",
                "dirichlet_alpha"):
        s[key] = _check_positive(key, s[key])
    for key in ("stream_amplitude", "source_amplitude"):
        if not math.isfinite(float(s[key])):
            raise ValueError(f"{key} must be finite, got {s[key]!r}")
        s[key] = float(s[key])
    if s["input_distribution"] not in ("normalized-uniform", "dirichlet"):
        raise ValueError("input_distribution must be 'normalized-uniform' or 'dirichlet', "
                         f"got {s['input_distribution']!r}")
    s["diffusivity_slope"] = float(s["diffusivity_slope"])
    if not s["diffusivity_slope"] > -1.0:
        raise ValueError("diffusivity_slope must exceed -1 so that D stays positive on [0, 1]")
    if s["convection"] not in ("central", "upwind"):
        raise ValueError(f"convection must be 'central' or 'upwind', got {s['convection']!r}")
    rates = np.asarray(s["family_rates"], dtype=np.float64)
    if rates.shape != (N_FAMILIES,) or np.any(rates < 0) or not np.all(np.isfinite(rates)):
        raise ValueError(f"family_rates must be {N_FAMILIES} non-negative numbers")
    s["family_rates"] = tuple(float(r) for r in rates)
    s["source_centre"] = _points("source_centre", [s["source_centre"]], 1)[0]
    s["patch_centres"] = _points("patch_centres", s["patch_centres"], N_PATCHES)
    s["sensors"] = _points("sensors", s["sensors"])
    return s


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
