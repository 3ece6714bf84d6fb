r"""Direct-current resistivity (DCR) simulator: 3 conductivity parameters -> 882 potentials.

This module generates a stand-in for the paper's DCR data set (``DCR_Data.mat``: 3 inputs,
882 outputs, 10,000 samples) when the published file is not available. The mesh, the
conductivity parameterisation and the electrode layout behind the published file are not
known; the choices below are this project's, stated in full so that the data are
reproducible from ``settings`` alone.

Equation
--------
On the square :math:`\Omega = [0, L]^2` (default :math:`L = 1`, dimensionless units) with
coordinates :math:`(x, z)`, :math:`z` the depth below the top edge, the electric potential
:math:`u` of a steady current injection satisfies

.. math::

    -\nabla\cdot\big(\sigma(x, z)\, \nabla u\big) = q \quad \text{in } \Omega,
    \qquad \sigma \nabla u \cdot n = 0 \quad \text{on } \partial\Omega,

with :math:`\sigma = e^{m}` the electrical conductivity and :math:`m` the log-conductivity.
The problem is two-dimensional (line electrodes of unit length perpendicular to the section).
Every source is a dipole, :math:`q = I\,(\delta_A - \delta_B)`: a current :math:`+I` enters at
electrode A and leaves at electrode B. The zero-flux (homogeneous Neumann) boundary makes the
problem solvable only when the net current vanishes, which dipoles guarantee, and it fixes
:math:`u` only up to an additive constant. **The constant is fixed by zero mean**:
:math:`\int_\Omega u\,dV = 0`. (Numerically one cell is grounded, :math:`u = 0`, which removes
the null space exactly, and the volume-weighted mean is subtracted afterwards.)

Discretisation
--------------
Cell-centred finite volumes on a uniform ``discretize.TensorMesh`` with ``n_cells`` x
``n_cells`` square cells of width :math:`h = L / n_\text{cells}` (default 96 x 96):
potential and conductivity live at cell centres, current density on faces. With the face
divergence :math:`D`, the cell gradient :math:`G` (Neumann: zero rows on boundary faces, so
no current leaves the domain), the cell volumes :math:`V` and the face conductivity
:math:`\sigma_f`, the discrete system is

.. math::

    K(\sigma)\, u = b, \qquad K(\sigma) = -V D\, \mathrm{diag}(\sigma_f)\, G,

where :math:`K` is symmetric positive semi-definite with the constants as null space.
:math:`\sigma_f` is the *harmonic* average of the two neighbouring cell conductivities
(series resistors: it is the exact flux-continuity average across a face), computed as
``1 / (mesh.average_cell_to_face @ (1 / sigma))``. A point electrode at :math:`p` enters
the right-hand side through the bilinear interpolation weights :math:`w(p)` of :math:`p`
onto the cell centres, :math:`b = I\,(w(A) - w(B))`: the discrete delta has exact zeroth and
first moments, so the potential away from the electrodes is second-order accurate in
:math:`h` (checked in the tests). The potential at a receiver :math:`r` is read with the
same interpolation, :math:`u(r) \approx w(r)^\top u`. Because the source and receiver
operators are transposes of each other and :math:`K` is symmetric, the discrete solution
obeys reciprocity exactly.

Solving: :math:`K` is assembled directly into a fixed CSC pattern (its entries are linear in
:math:`\sigma_f`, a sparse matrix maps :math:`\sigma_f` to them), is reordered with a
minimum-degree ordering computed once from the (fixed) sparsity pattern, and is factorised once per sample with
``scipy.sparse.linalg.splu``; both source dipoles are solved with that one factorisation.

Parameters (inputs ``x``, columns in this order)
------------------------------------------------
The log-conductivity is a background plus a smooth Gaussian anomaly,

.. math::

    m(x, z) = m_0 + \Delta\, \exp\!\Big(-\frac{(x - x_a)^2 + (z - z_a)^2}{2 r_a^2}\Big),

1. ``log_sigma_background`` :math:`m_0 \sim U[-1, 1]` (conductivity 0.37 to 2.7),
2. ``log_contrast`` :math:`\Delta \sim U[-2, 2]` (anomaly conductive for :math:`\Delta > 0`,
   resistive for :math:`\Delta < 0`, up to a factor :math:`e^2 \approx 7.4`),
3. ``anomaly_depth`` :math:`z_a \sim U[0.3, 0.7]`,

with the anomaly's horizontal position :math:`x_a = 0.4` (off the layout's axis of symmetry)
and width :math:`r_a = 0.1` fixed. The anomaly is smooth so that the discretisation keeps its
second order (a sharp-edged body on a grid it does not align with would not). Note that the
background acts as an exact factor: :math:`u \propto e^{-m_0}`.

Electrodes and receivers
------------------------
Two source dipoles with :math:`I = 1`:

- source 1 (horizontal): A = (0.1, 0.5), B = (0.9, 0.5);
- source 2 (vertical):   A = (0.5, 0.1), B = (0.5, 0.9).

Receivers: a 21 x 21 grid over :math:`[0.2, 0.8]^2` (spacing 0.03), at least 0.1 away from
every electrode. Receiver :math:`k = i + 21 j` sits at :math:`(x_i, z_j)` (``x`` fastest,
like ``discretize``'s cell ordering).

Outputs (``y``, shape ``(n, 882)``)
-----------------------------------
Zero-mean potentials at the receivers, source-major: ``y[:, :441]`` are the 441 receiver
potentials for source 1, ``y[:, 441:]`` those for source 2. All arrays are float64.

Accuracy and cost: at the default 96 x 96 mesh the output vectors differ from those of a
4x finer mesh (384 x 384) by about 2e-4 relative (mean over random samples; 5e-4 at 64 x 64,
1e-4 at 128 x 128), and a dipole in a homogeneous square agrees with the exact (cosine-series)
potential to about 1e-4 relative. One sample costs one factorisation of a 9215 x 9215 sparse
matrix; 10,000 samples take a few minutes on two CPU cores.
"""

from __future__ import annotations

import functools
import copy
import math
import numbers

import discretize
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from tqdm.std import tqdm

from ..checks import check_int

# integer arguments: a ValueError naming the argument, like the simulators' other checks
_check_int = functools.partial(check_int, error=ValueError)

__all__ = [
    "DCR_DEFAULTS",
    "PARAMETER_NAMES",
    "DipoleSolver",
    "dcr_mesh",
    "dipole_potentials",
    "log_conductivity",
    "receiver_locations",
    "simulate_dcr",
]

#: Names of the three input parameters, in column order of ``x``.
PARAMETER_NAMES = ("log_sigma_background", "log_contrast", "anomaly_depth")

#: Default settings of :func:`simulate_dcr`; every key except ``simulator`` and ``version``
#: can be overridden by keyword. ``version`` changes whenever the physics changes.
DCR_DEFAULTS: dict = {
    "simulator": "dcr",
    "version": 1,
    "n_cells": 96,
    "domain_length": 1.0,
    "receiver_grid": 21,
    "receiver_extent": [0.2, 0.8],
    "electrodes": [[[0.1, 0.5], [0.9, 0.5]], [[0.5, 0.1], [0.5, 0.9]]],
    "current": 1.0,
    "anomaly_x": 0.4,
    "anomaly_radius": 0.1,
    "log_sigma_background_range": [-1.0, 1.0],
    "log_contrast_range": [-2.0, 2.0],
    "anomaly_depth_range": [0.3, 0.7],
}

_FIXED_KEYS = ("simulator", "version")
_RANGE_KEYS = tuple(f"{name}_range" for name in PARAMETER_NAMES)
# Samples whose conductivities are built together (bounds the memory of the vectorised
# assembly: a chunk holds (n_faces + nnz) x _CHUNK floats).
_CHUNK = 64


# --------------------------------------------------------------------------------------
# Geometry and conductivity model
# --------------------------------------------------------------------------------------
def dcr_mesh(n_cells: int, domain_length: float = 1.0) -> discretize.TensorMesh:
    """Uniform square mesh of ``n_cells`` x ``n_cells`` cells on ``[0, domain_length]^2``."""
    h = domain_length / n_cells
    return discretize.TensorMesh([np.full(n_cells, h), np.full(n_cells, h)], origin="00")


def receiver_locations(receiver_grid: int, receiver_extent) -> np.ndarray:
    """Receiver grid, ``x`` fastest.

    Returns:
        ``(receiver_grid**2, 2)`` array; row ``i + receiver_grid * j`` is ``(x_i, z_j)``.
    """
    lo, hi = (float(v) for v in receiver_extent)
    t = np.linspace(lo, hi, int(receiver_grid))
    xx, zz = np.meshgrid(t, t, indexing="xy")  # xx varies along columns -> x fastest
    return np.column_stack([xx.ravel(), zz.ravel()])


def log_conductivity(
    params: np.ndarray, points: np.ndarray, *, anomaly_x: float, anomaly_radius: float
) -> np.ndarray:
    """Log-conductivity ``m`` of a background plus a Gaussian anomaly, for many samples.

    Args:
        params: ``(n, 3)`` columns ``(m0, delta, z_a)`` as in :data:`PARAMETER_NAMES`.
        points: ``(n_points, 2)`` locations ``(x, z)``.
        anomaly_x: horizontal position ``x_a`` of the anomaly centre.
        anomaly_radius: standard deviation ``r_a`` of the Gaussian anomaly.

    Returns:
        ``(n, n_points)`` values ``m0 + delta * exp(-|p - (x_a, z_a)|^2 / (2 r_a^2))``.
    """
    params = np.atleast_2d(np.asarray(params, dtype=np.float64))
    points = np.asarray(points, dtype=np.float64)
    dx2 = (points[None, :, 0] - anomaly_x) ** 2
    dz2 = (points[None, :, 1] - params[:, 2:3]) ** 2
    bump = np.exp(-(dx2 + dz2) / (2.0 * anomaly_radius**2))
    return params[:, 0:1] + params[:, 1:2] * bump


# --------------------------------------------------------------------------------------
# Forward solver
# --------------------------------------------------------------------------------------
class DipoleSolver:
    """Finite-volume DC solver for fixed electrodes on a fixed ``discretize.TensorMesh``.

    Everything that does not depend on the conductivity (operators, the map from face
    conductivities to matrix entries, the fill-reducing ordering, source and receiver
    interpolation) is built once here; :meth:`solve` then costs one sparse LU
    factorisation and one solve with all source dipoles as right-hand sides.

    The potential is normalised to zero (volume-weighted) mean over the domain.

    Args:
        mesh: a 1-, 2- or 3-D ``discretize.TensorMesh``.
        sources: ``(n_src, 2, dim)`` dipoles; ``sources[s, 0]`` is the electrode where the
            current ``+current`` enters, ``sources[s, 1]`` where it leaves.
        receivers: ``(n_rx, dim)`` receiver points.
        current: injected current ``I``.
    """

    def __init__(self, mesh, sources, receivers, current: float = 1.0):
        if not isinstance(mesh, discretize.TensorMesh):
            raise ValueError(f"mesh must be a discretize.TensorMesh, got {type(mesh).__name__}")
        dim = mesh.dim
        sources = np.asarray(sources, dtype=np.float64)
        receivers = np.asarray(receivers, dtype=np.float64)
        if sources.ndim != 3 or sources.shape[1:] != (2, dim):
            raise ValueError(f"sources must have shape (n_src, 2, {dim}), got {sources.shape}")
        if receivers.ndim != 2 or receivers.shape[1] != dim:
            raise ValueError(f"receivers must have shape (n_rx, {dim}), got {receivers.shape}")
        _check_inside(mesh, sources.reshape(-1, dim), "sources")
        _check_inside(mesh, receivers, "receivers")
        if not (np.isfinite(current) and current != 0):
            raise ValueError(f"current must be finite and nonzero, got {current}")

        self.mesh = mesh
        self.n_sources = sources.shape[0]
        self.n_receivers = receivers.shape[0]
        n = mesh.n_cells
        ground = n - 1  # grounded cell: u = 0 there before the mean is removed

        self._average = mesh.average_cell_to_face.tocsr()  # (n_faces, n_cells)
        m_div = (-sp.diags(mesh.cell_volumes) @ mesh.face_divergence).tocsc()
        grad = mesh.cell_gradient.tocsr()
        rows, cols, faces, vals = _bilinear_triples(m_div, grad)
        keep = (rows != ground) & (cols != ground)
        rows, cols, faces, vals = rows[keep], cols[keep], faces[keep], vals[keep]
        rows = rows - (rows > ground)
        cols = cols - (cols > ground)
        nr = n - 1

        # Fill-reducing ordering from the pattern (it does not depend on sigma).
        k1 = sp.csc_matrix((vals, (rows, cols)), shape=(nr, nr))
        perm = spla.splu(k1, permc_spec="MMD_AT_PLUS_A", **_SPLU_SPD).perm_c
        rows, cols = perm[rows], perm[cols]

        # CSC pattern and the sparse map from face conductivities to its entries.
        key = cols.astype(np.int64) * nr + rows
        uniq, slot = np.unique(key, return_inverse=True)
        self._indices = (uniq % nr).astype(np.int32)
        self._indptr = np.concatenate(
            [[0], np.cumsum(np.bincount(uniq // nr, minlength=nr))]
        ).astype(np.int32)
        self._assembly = sp.csr_matrix(
            (vals, (slot.ravel(), faces)), shape=(uniq.size, mesh.n_faces)
        )
        self._nr = nr

        # Old cell i (i != ground) sits at perm[i - (i > ground)] in the reduced system.
        cell_to_red = np.full(n, -1)
        others = np.delete(np.arange(n), ground)
        cell_to_red[others] = perm[np.arange(nr)]
        self._cell_to_red = cell_to_red

        def interp(points):
            return mesh.get_interpolation_matrix(points, location_type="cell_centers").tocsr()

        w_src = interp(sources[:, 0]) - interp(sources[:, 1])  # (n_src, n_cells)
        rhs = np.zeros((nr, self.n_sources))
        w_src = w_src.toarray()
        rhs[cell_to_red[others]] = current * w_src[:, others].T
        self._rhs = rhs

        # Zero-mean readout: y = (P - 1 w^T) u with w the volume weights.
        vol = mesh.cell_volumes / mesh.cell_volumes.sum()
        p_rx = interp(receivers)[:, others].tocsc()
        self._p_rx = p_rx[:, np.argsort(cell_to_red[others])].tocsr()
        w_red = np.empty(nr)
        w_red[cell_to_red[others]] = vol[others]
        self._w_mean = w_red

    # -- per-sample pieces -------------------------------------------------------------
    def face_conductivity(self, sigma: np.ndarray) -> np.ndarray:
        """Harmonic face averages. ``sigma: (n_cells,)`` or ``(n_cells, k)`` -> ``(n_faces[, k])``."""
        return 1.0 / (self._average @ (1.0 / sigma))

    def matrix_entries(self, sigma: np.ndarray) -> np.ndarray:
        """Entries of the grounded, reordered ``K`` in its CSC pattern; ``sigma: (n_cells[, k])``."""
        return self._assembly @ self.face_conductivity(sigma)

    def _solve_entries(self, data: np.ndarray) -> np.ndarray:
        k = sp.csc_matrix((data, self._indices, self._indptr), shape=(self._nr, self._nr))
        lu = spla.splu(k, permc_spec="NATURAL", **_SPLU_SPD)
        u = lu.solve(self._rhs)  # (nr, n_src): one factorisation, all sources
        # The grounded cell holds u = 0: it adds nothing to P u or to the mean, but the mean
        # is subtracted from every receiver (rows of the full P sum to one).
        return (self._p_rx @ u - self._w_mean @ u).T

    def solve(self, sigma: np.ndarray) -> np.ndarray:
        """Zero-mean receiver potentials for one conductivity model.

        Args:
            sigma: ``(n_cells,)`` positive cell conductivities (``discretize`` cell order).

        Returns:
            ``(n_sources, n_receivers)`` potentials.
        """
        sigma = np.asarray(sigma, dtype=np.float64)
        if sigma.shape != (self.mesh.n_cells,):
            raise ValueError(
                f"sigma must have shape ({self.mesh.n_cells},), got {sigma.shape}"
            )
        if not np.all(np.isfinite(sigma) & (sigma > 0)):
            raise ValueError("sigma must be finite and positive")
        return self._solve_entries(self.matrix_entries(sigma))


_SPLU_SPD = dict(diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))


def dipole_potentials(mesh, sigma, sources, receivers, current: float = 1.0) -> np.ndarray:
    """Zero-mean potentials at point receivers for point-electrode dipoles.

    Solves ``-div(sigma grad u) = current * (delta_A - delta_B)`` with zero-flux boundary for
    every dipole ``(A, B)`` in ``sources`` (one factorisation for all of them).

    Args:
        mesh: ``discretize.TensorMesh``.
        sigma: ``(mesh.n_cells,)`` cell conductivities.
        sources: ``(n_src, 2, dim)``; ``sources[s] = (A, B)``, current enters at A.
        receivers: ``(n_rx, dim)``.
        current: injected current.

    Returns:
        ``(n_src, n_rx)`` potentials, normalised to zero mean over the domain. Differences
        between receivers do not depend on that normalisation.
    """
    return DipoleSolver(mesh, sources, receivers, current).solve(sigma)


def _bilinear_triples(left: sp.csc_matrix, right: sp.csr_matrix):
    """Entries of ``left @ diag(s) @ right`` as (row, col, face, coefficient) quadruples."""
    left = left.tocsc()
    left.sum_duplicates()
    left.eliminate_zeros()
    right = right.tocsr()
    right.sum_duplicates()
    right.eliminate_zeros()
    n_faces = left.shape[1]
    face_of_left = np.repeat(np.arange(n_faces), np.diff(left.indptr))
    reps = np.diff(right.indptr)[face_of_left]  # partners of each left entry
    idx_left = np.repeat(np.arange(left.nnz), reps)
    start = np.cumsum(reps) - reps
    offset = np.arange(idx_left.size) - np.repeat(start, reps)
    faces = face_of_left[idx_left]
    idx_right = right.indptr[faces] + offset
    rows = left.indices[idx_left]
    cols = right.indices[idx_right]
    vals = left.data[idx_left] * right.data[idx_right]
    return rows, cols, faces, vals


def _check_inside(mesh, points, name):
    """Points must lie within the hull of the cell centres (no clamped interpolation)."""
    bounds_lo = np.array([mesh.h[d][0] / 2 + mesh.origin[d] for d in range(mesh.dim)])
    bounds_hi = np.array(
        [mesh.origin[d] + mesh.h[d].sum() - mesh.h[d][-1] / 2 for d in range(mesh.dim)]
    )
    tol = 1e-12 * max(1.0, float(np.max(np.abs(bounds_hi))))
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} must be finite")
    if np.any(points < bounds_lo - tol) or np.any(points > bounds_hi + tol):
        raise ValueError(
            f"{name} must lie between the outermost cell centres "
            f"[{bounds_lo.tolist()}, {bounds_hi.tolist()}] of the mesh"
        )


# --------------------------------------------------------------------------------------
# Data set
# --------------------------------------------------------------------------------------
def simulate_dcr(
    n_samples: int = 10000, *, seed: int = 0, progress: bool = True, **overrides
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate the DCR data set: random conductivity parameters and receiver potentials.

    Parameters are drawn independently and uniformly over the ranges in the settings with
    ``numpy.random.default_rng(seed)``; each sample is then one finite-volume solve (one
    factorisation, both source dipoles). See the module docstring for the physics.

    Args:
        n_samples: number of samples (integer >= 1).
        seed: seed of the parameter draw (integer >= 0); the output is deterministic.
        progress: show a tqdm progress bar.
        **overrides: any key of :data:`DCR_DEFAULTS` except ``simulator`` and ``version``,
            e.g. ``n_cells=32`` for a quick, coarse run.

    Returns:
        x: ``(n_samples, 3)`` float64 parameters, columns :data:`PARAMETER_NAMES`.
        y: ``(n_samples, n_dipoles * receiver_grid**2)`` float64 zero-mean potentials,
            source-major (default ``(n_samples, 882)``: ``y[:, :441]`` is source 1).
        settings: JSON-serialisable dict of everything that determines ``(x, y)``: the
            defaults with the overrides applied, plus ``seed`` and ``n_samples``.
    """
    n_samples = _check_int("n_samples", n_samples, minimum=1)
    seed = _check_int("seed", seed, minimum=0)
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be a bool, got {progress!r}")
    settings = _resolve_settings(overrides)
    settings["seed"] = seed
    settings["n_samples"] = n_samples

    rng = np.random.default_rng(seed)
    lo = np.array([settings[k][0] for k in _RANGE_KEYS])
    hi = np.array([settings[k][1] for k in _RANGE_KEYS])
    x = lo + (hi - lo) * rng.random((n_samples, len(PARAMETER_NAMES)))

    mesh = dcr_mesh(settings["n_cells"], settings["domain_length"])
    solver = DipoleSolver(
        mesh,
        np.asarray(settings["electrodes"], dtype=np.float64),
        receiver_locations(settings["receiver_grid"], settings["receiver_extent"]),
        settings["current"],
    )
    n_rx = solver.n_receivers
    y = np.empty((n_samples, solver.n_sources * n_rx))
    with tqdm(total=n_samples, desc="DCR", unit="sample", disable=not progress) as bar:
        for start in range(0, n_samples, _CHUNK):
            stop = min(start + _CHUNK, n_samples)
            m = log_conductivity(
                x[start:stop],
                mesh.cell_centers,
                anomaly_x=settings["anomaly_x"],
                anomaly_radius=settings["anomaly_radius"],
            )
            # matrix entries of the whole chunk at once: (chunk, nnz)
            entries = np.ascontiguousarray(solver.matrix_entries(np.exp(m).T).T)
            for k in range(stop - start):
                y[start + k] = solver._solve_entries(entries[k]).ravel()
                bar.update(1)
    return x, y, settings




def _check_float(name, value, *, positive=False, nonzero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonzero and value == 0:
        raise ValueError(f"{name} must be nonzero")
    return value


def _check_pair(name, value):
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair [low, high] of numbers, got {value!r}") from None
    if arr.shape != (2,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a pair [low, high] of finite numbers, got {value!r}")
    if arr[0] > arr[1]:
        raise ValueError(f"{name} must have low <= high, got {value!r}")
    return [float(arr[0]), float(arr[1])]


def _resolve_settings(overrides: dict) -> dict:
    """Defaults + validated overrides, as plain JSON types."""
    for key in overrides:
        if key in _FIXED_KEYS:
            raise ValueError(f"{key!r} is fixed by the simulator and cannot be overridden")
        if key not in DCR_DEFAULTS:
            known = ", ".join(k for k in DCR_DEFAULTS if k not in _FIXED_KEYS)
            raise ValueError(f"unknown DCR setting {key!r}; known settings: {known}")
    s = copy.deepcopy(DCR_DEFAULTS)
    s.update(copy.deepcopy(overrides))

    s["n_cells"] = _check_int("n_cells", s["n_cells"], minimum=4)
    s["domain_length"] = _check_float("domain_length", s["domain_length"], positive=True)
    s["receiver_grid"] = _check_int("receiver_grid", s["receiver_grid"], minimum=1)
    s["receiver_extent"] = _check_pair("receiver_extent", s["receiver_extent"])
    s["current"] = _check_float("current", s["current"], nonzero=True)
    s["anomaly_x"] = _check_float("anomaly_x", s["anomaly_x"])
    s["anomaly_radius"] = _check_float("anomaly_radius", s["anomaly_radius"], positive=True)
    for key in _RANGE_KEYS:
        s[key] = _check_pair(key, s[key])

    try:
        electrodes = np.asarray(s["electrodes"], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("electrodes must be a nested list of shape (n_dipoles, 2, 2)") from None
    if electrodes.ndim != 3 or electrodes.shape[1:] != (2, 2) or electrodes.shape[0] < 1:
        raise ValueError(
            f"electrodes must have shape (n_dipoles, 2, 2), got {electrodes.shape}"
        )
    if np.any(np.all(electrodes[:, 0] == electrodes[:, 1], axis=-1)):
        raise ValueError("electrodes: the two electrodes of a dipole must differ")
    s["electrodes"] = electrodes.tolist()

    # Points must sit inside the outermost cell centres, where interpolation is bilinear.
    h = s["domain_length"] / s["n_cells"]
    inner = (h / 2, s["domain_length"] - h / 2)
    tol = 1e-12 * s["domain_length"]
    if not (inner[0] - tol <= s["receiver_extent"][0] and s["receiver_extent"][1] <= inner[1] + tol):
        raise ValueError(
            f"receiver_extent {s['receiver_extent']} must lie within {list(inner)} "
            f"(the outermost cell centres for n_cells={s['n_cells']})"
        )
    if np.any(electrodes < inner[0] - tol) or np.any(electrodes > inner[1] + tol):
        raise ValueError(
            f"electrodes must lie within {list(inner)} "
            f"(the outermost cell centres for n_cells={s['n_cells']})"
        )
    return s
