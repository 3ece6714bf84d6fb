"""Tests of the DCR simulator: accuracy against an exact solution, convergence under mesh
refinement, reciprocity, scaling, and the data-set contract (shapes, determinism, ranges,
argument checks)."""

import json

import numpy as np
import pytest

from ctdnn.data.dcr import (
    DCR_DEFAULTS,
    PARAMETER_NAMES,
    DipoleSolver,
    dcr_mesh,
    dipole_potentials,
    log_conductivity,
    receiver_locations,
    simulate_dcr,
)


# ---------------------------------------------------------------------------------------
# Exact reference: dipole in a homogeneous square with zero-flux boundary
# ---------------------------------------------------------------------------------------
def neumann_square_dipole(points, a, b, sigma, length=1.0, current=1.0, n_modes=4000):
    """Exact zero-mean potential of ``current * (delta_a - delta_b)`` in ``[0, L]^2``.

    Cosine series in x (the Neumann eigenfunctions cos(k x), k = m pi / L); each mode's
    z-dependence is the closed-form Green's function of -d^2/dz^2 + k^2 with zero-derivative
    ends, cosh(k z<) cosh(k (L - z>)) / (k sinh(k L)), written with decaying exponentials.
    The m = 0 mode is the 1-D solution -|z - z_s| / 2 shifted to zero mean. The series
    converges exponentially for points with z different from the electrodes' z.
    """
    x, z = points[:, 0:1], points[:, 1:2]
    k = np.arange(1, n_modes + 1)[None, :] * np.pi / length

    def green_z(zs):
        lo, hi = np.minimum(z, zs), np.maximum(z, zs)
        num = (
            np.exp(-k * (hi - lo))
            + np.exp(-k * (hi + lo))
            + np.exp(-k * (2 * length - hi - lo))
            + np.exp(-k * (2 * length - hi + lo))
        )
        return num / (2 * k * (1 - np.exp(-2 * k * length)))

    u = np.zeros(points.shape[0])
    for (xs, zs), sign in ((a, 1.0), (b, -1.0)):
        # ||cos(k x)||^2 = L / 2 for m >= 1, = L for m = 0
        u += sign * (np.cos(k * x) * np.cos(k * xs) * green_z(zs)).sum(axis=1) * 2 / length
        mode0 = -np.abs(z[:, 0] - zs) / 2 + (zs**2 + (length - zs) ** 2) / (4 * length)
        u += sign * mode0 / length
    return current / sigma * u


def test_reference_has_free_space_singularity():
    # Near an electrode the potential must follow -(I / (2 pi sigma)) ln r.
    sigma, a, b = 2.0, (0.3, 0.35), (0.65, 0.6)
    r = 1e-3
    pts = np.array([[a[0] + r, a[1] + r], [a[0] + 2 * r, a[1] + 2 * r]])
    u = neumann_square_dipole(pts, a, b, sigma, n_modes=40000)
    np.testing.assert_allclose(u[0] - u[1], np.log(2) / (2 * np.pi * sigma), rtol=2e-2)


# Receivers away from the electrodes, none at an electrode's depth (fast series convergence).
_RX = np.array([[0.2, 0.8], [0.7, 0.15], [0.5, 0.5], [0.85, 0.85], [0.1, 0.1], [0.45, 0.2]])
_A, _B = (0.3, 0.35), (0.65, 0.6)


def test_homogeneous_dipole_matches_exact_potential():
    sigma = 2.0
    exact = neumann_square_dipole(_RX, _A, _B, sigma)
    errors = {}
    for n in (64, 128):
        mesh = dcr_mesh(n)
        u = dipole_potentials(mesh, np.full(mesh.n_cells, sigma), np.array([[_A, _B]]), _RX)[0]
        errors[n] = np.abs(u - exact).max() / np.abs(exact).max()
        # differences between receivers are free of the zero-mean normalisation
        diff = np.abs((u - u[2]) - (exact - exact[2])).max() / np.abs(exact).max()
        assert diff < 4 * errors[n] + 1e-12
    # second-order scheme: h = 1/128 gives ~6e-5 relative error (measured), 64 -> 128 shrinks it
    assert errors[128] < 2e-4
    assert errors[64] / errors[128] > 2.5


def test_convergence_under_refinement_heterogeneous():
    # Smooth conductivity with a strong anomaly; successive differences shrink like h^2.
    src = np.asarray(DCR_DEFAULTS["electrodes"])
    rx = receiver_locations(5, [0.2, 0.8])
    sols, hs = [], []
    for n in (24, 48, 96, 192):
        mesh = dcr_mesh(n)
        m = log_conductivity(
            np.array([[0.3, 1.5, 0.45]]), mesh.cell_centers, anomaly_x=0.4, anomaly_radius=0.1
        )[0]
        sols.append(dipole_potentials(mesh, np.exp(m), src, rx))
        hs.append(1.0 / n)
    diffs = np.array([np.abs(sols[i + 1] - sols[i]).max() for i in range(3)])
    slope = np.polyfit(np.log(hs[:3]), np.log(diffs), 1)[0]
    assert slope > 1.7, (slope, diffs)
    assert diffs[-1] < 2e-4


def test_reciprocity_on_heterogeneous_medium():
    rng = np.random.default_rng(7)
    mesh = dcr_mesh(40)
    sigma = np.exp(rng.normal(scale=1.0, size=mesh.n_cells))  # rough, arbitrary medium
    a, b, m, n = [0.13, 0.71], [0.52, 0.29], [0.81, 0.66], [0.37, 0.88]
    v_ab_mn = dipole_potentials(mesh, sigma, np.array([[a, b]]), np.array([m, n]))[0]
    v_mn_ab = dipole_potentials(mesh, sigma, np.array([[m, n]]), np.array([a, b]))[0]
    dv1, dv2 = v_ab_mn[0] - v_ab_mn[1], v_mn_ab[0] - v_mn_ab[1]
    assert abs(dv1) > 1e-3
    np.testing.assert_allclose(dv1, dv2, rtol=1e-10)


def test_physical_invariances():
    mesh = dcr_mesh(32)
    src = np.asarray(DCR_DEFAULTS["electrodes"])
    rx = receiver_locations(7, [0.2, 0.8])
    solver = DipoleSolver(mesh, src, rx, current=1.0)
    m = log_conductivity(
        np.array([[0.0, -1.2, 0.6]]), mesh.cell_centers, anomaly_x=0.4, anomaly_radius=0.1
    )[0]
    u = solver.solve(np.exp(m))
    # u is proportional to current and to 1 / sigma
    np.testing.assert_allclose(solver.solve(np.exp(m + 0.7)), u * np.exp(-0.7), rtol=1e-11)
    np.testing.assert_allclose(
        DipoleSolver(mesh, src, rx, current=-2.5).solve(np.exp(m)), -2.5 * u, rtol=1e-11
    )
    # zero mean over the domain: all cell-centre potentials through the solver average to 0
    cc = DipoleSolver(mesh, src[:1], mesh.cell_centers).solve(np.exp(m))[0]
    assert abs(cc.mean()) < 1e-12 * np.abs(cc).max()


# ---------------------------------------------------------------------------------------
# Data-set contract
# ---------------------------------------------------------------------------------------
def test_default_shapes_dtypes_and_settings():
    x, y, settings = simulate_dcr(3, seed=1, progress=False)
    assert x.shape == (3, 3) and y.shape == (3, 882)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert np.all(np.isfinite(y))
    json.dumps(settings)  # JSON-serialisable cache key
    assert settings["simulator"] == "dcr" and isinstance(settings["version"], int)
    assert settings["seed"] == 1 and settings["n_samples"] == 3
    assert settings["n_cells"] == DCR_DEFAULTS["n_cells"]
    # source-major order: the first 441 outputs are source 1, checked by a direct solve
    mesh = dcr_mesh(settings["n_cells"])
    m = log_conductivity(x[:1], mesh.cell_centers, anomaly_x=0.4, anomaly_radius=0.1)[0]
    rx = receiver_locations(21, [0.2, 0.8])
    direct = dipole_potentials(mesh, np.exp(m), np.asarray(DCR_DEFAULTS["electrodes"]), rx)
    np.testing.assert_allclose(y[0, :441], direct[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(y[0, 441:], direct[1], rtol=1e-12, atol=1e-14)


def test_determinism_and_seed_dependence():
    kw = dict(progress=False, n_cells=16, receiver_grid=4)
    x1, y1, _ = simulate_dcr(5, seed=3, **kw)
    x2, y2, _ = simulate_dcr(5, seed=3, **kw)
    x3, y3, _ = simulate_dcr(5, seed=4, **kw)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(x1, x3) and not np.allclose(y1, y3)
    assert y1.shape == (5, 2 * 16)


def test_parameter_ranges_respected():
    x, _, s = simulate_dcr(400, seed=0, progress=False, n_cells=8, receiver_grid=2)
    for j, name in enumerate(PARAMETER_NAMES):
        lo, hi = DCR_DEFAULTS[f"{name}_range"]
        assert lo <= x[:, j].min() and x[:, j].max() <= hi
        assert x[:, j].max() - x[:, j].min() > 0.9 * (hi - lo)  # the range is covered
    x, _, s = simulate_dcr(
        50, seed=0, progress=False, n_cells=8, receiver_grid=2, log_contrast_range=[0.5, 0.6]
    )
    assert np.all((x[:, 1] >= 0.5) & (x[:, 1] <= 0.6))
    assert s["log_contrast_range"] == [0.5, 0.6]


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((0,), {}, "n_samples"),
        ((2.5,), {}, "n_samples"),
        ((True,), {}, "n_samples"),
        (("10",), {}, "n_samples"),
        ((2,), {"seed": -1}, "seed"),
        ((2,), {"seed": 1.5}, "seed"),
        ((2,), {"progress": "yes"}, "progress"),
        ((2,), {"n_cell": 32}, "n_cell"),
        ((2,), {"version": 2}, "version"),
        ((2,), {"n_cells": 2}, "n_cells"),
        ((2,), {"anomaly_radius": 0.0}, "anomaly_radius"),
        ((2,), {"log_contrast_range": [1.0, -1.0]}, "log_contrast_range"),
        ((2,), {"anomaly_depth_range": [0.1]}, "anomaly_depth_range"),
        ((2,), {"electrodes": [[0.1, 0.5], [0.9, 0.5]]}, "electrodes"),
        ((2,), {"electrodes": [[[0.0, 0.5], [0.9, 0.5]]]}, "electrodes"),
        ((2,), {"receiver_extent": [0.0, 0.8]}, "receiver_extent"),
        ((2,), {"current": 0.0}, "current"),
    ],
)
def test_bad_arguments_raise_clear_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_dcr(*args, progress=kwargs.pop("progress", False), **kwargs)


def test_solver_argument_checks():
    mesh = dcr_mesh(8)
    with pytest.raises(ValueError, match="sources"):
        DipoleSolver(mesh, np.zeros((1, 3, 2)), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="receivers"):
        DipoleSolver(mesh, np.array([[[0.3, 0.3], [0.6, 0.6]]]), np.array([[0.01, 0.5]]))
    solver = DipoleSolver(mesh, np.array([[[0.3, 0.3], [0.6, 0.6]]]), np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="sigma"):
        solver.solve(np.full(mesh.n_cells, -1.0))
    with pytest.raises(ValueError, match="sigma"):
        solver.solve(np.ones(5))


# Distribution statistics of the stand-in as the book uses it (default settings, seed 0):
# regression values of deterministic quantities, with tolerances far above processor rounding
# (the simulation is a fixed sequence of float64 operations, not a chaotic trajectory).
# The statistics are those of the stand-ins comparison, tested on their own against numpy and
# scipy in tests/test_standins.py.
def test_dcr_distribution_statistics_regression():
    from ctdnn.experiments import standins

    x, y, _ = simulate_dcr(50, seed=0, progress=False)
    m = standins.marginal_stats(y)
    assert standins.mean_abs_correlation(y) == pytest.approx(0.78695628, abs=1e-6)
    assert standins.mean_abs_correlation(x) == pytest.approx(0.15380985, abs=1e-6)
    assert standins.norm_range(y)["ratio"] == pytest.approx(6.64341920, rel=1e-6)
    assert float(y.mean()) == pytest.approx(0.00102747553, rel=0, abs=1e-7)
    assert float(m["std"].mean()) == pytest.approx(0.1037557185, rel=1e-6)
    assert float(abs(m["skewness"]).mean()) == pytest.approx(0.82932209, abs=1e-6)
    assert standins.exact_zero_fraction(y) == {"entries": 0.0, "samples": 0.0}
    assert standins.pca_components(y) == 3
