"""Tests of the convection-diffusion-reaction simulator (ctdnn.data.cdr)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ctdnn.data.cdr import (
    CDR_DEFAULTS,
    CDR_VERSION,
    BandedLU,
    build_cdr_problem,
    imex_sbdf2,
    make_grid,
    sensor_matrix,
    simulate_cdr,
    transport_operator,
)

PI = np.pi
SMALL = {"n_cells": 8, "steps_per_obs": 3}  # a cheap configuration for API tests


# ---------------------------------------------------------------------------
# Manufactured solutions
# ---------------------------------------------------------------------------


def _phi(x):
    """Smooth shape with zero normal derivative on the boundary of the unit square."""
    return np.cos(PI * x[:, 0]) * np.cos(PI * x[:, 1]) + 0.5 * np.cos(PI * x[:, 0])


def _transport_of_phi(x, settings):
    """div(D grad phi) - v . grad phi, by hand, for the default D and stream function."""
    x1, x2 = x[:, 0], x[:, 1]
    d0, slope, psi0 = (settings["diffusivity"], settings["diffusivity_slope"],
                       settings["stream_amplitude"])
    phi_1 = -PI * np.sin(PI * x1) * np.cos(PI * x2) - 0.5 * PI * np.sin(PI * x1)
    phi_2 = -PI * np.cos(PI * x1) * np.sin(PI * x2)
    lap = -2 * PI**2 * np.cos(PI * x1) * np.cos(PI * x2) - 0.5 * PI**2 * np.cos(PI * x1)
    diff = d0 * (1 + slope * x1) * lap + d0 * slope * phi_1
    v1 = psi0 * PI * np.sin(PI * x1) * np.cos(PI * x2)
    v2 = -psi0 * PI * np.cos(PI * x1) * np.sin(PI * x2)
    return diff - (v1 * phi_1 + v2 * phi_2)


def _space_time_error(n, convection, batch=2):
    """Max error at t = 1 for u = 1 + sin(1 + 2t) phi(x), with the model's reactions on."""
    problem = build_cdr_problem(n_cells=n, n_obs=1, steps_per_obs=2 * n,
                                convection=convection)
    x = problem.grid.centres
    phi = _phi(x)[:, None]
    lphi = _transport_of_phi(x, problem.settings)[:, None]
    weights = np.random.default_rng(1).dirichlet(np.ones(55), batch)
    reaction = problem.right_hand_side(weights)

    def exact(t):
        return np.asfortranarray(np.broadcast_to(1 + np.sin(1 + 2 * t) * phi, (len(x), batch)))

    def explicit(t, u):
        # f_manufactured + N(u) - N(u_exact): u_exact solves du/dt = L u + explicit(t, u).
        forcing = 2 * np.cos(1 + 2 * t) * phi - np.sin(1 + 2 * t) * lphi
        return forcing - reaction(t, exact(t)) + reaction(t, u)

    out = imex_sbdf2(problem.operator, explicit, exact(0.0), problem.dt, problem.n_steps)
    return np.abs(out[-1] - exact(1.0)).max()


@pytest.mark.parametrize("convection, order", [("central", 2.0), ("upwind", 1.0)])
def test_space_time_convergence_order(convection, order):
    ns = np.array([8, 16, 32, 64])
    errors = np.array([_space_time_error(n, convection) for n in ns])
    slope = -np.polyfit(np.log(ns), np.log(errors), 1)[0]
    finest = np.log2(errors[-2] / errors[-1])
    assert errors[-1] < errors[0]
    assert abs(slope - order) < 0.15 * order, (convection, errors, slope)
    assert abs(finest - order) < 0.1 * order, (convection, errors, finest)


def test_time_convergence_order_sbdf2():
    """Spatially uniform exact solution: L u = 0, so only the time error is left."""
    batch = 3
    weights = np.random.default_rng(2).dirichlet(np.ones(55), batch)
    steps = np.array([40, 80, 160, 320])
    errors = []
    for k in steps:
        problem = build_cdr_problem(n_cells=6, n_obs=1, steps_per_obs=int(k))
        reaction = problem.right_hand_side(weights)
        cells = problem.grid.n_cells

        def exact(t):
            return np.full((cells, batch), 1.0 + 0.5 * np.sin(3 * t), order="F")

        def explicit(t, u):
            return 1.5 * np.cos(3 * t) - reaction(t, exact(t)) + reaction(t, u)

        out = imex_sbdf2(problem.operator, explicit, exact(0.0), problem.dt, problem.n_steps)
        errors.append(np.abs(out[-1] - exact(1.0)).max())
    slope = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    assert 1.85 < slope < 2.15, (errors, slope)


# ---------------------------------------------------------------------------
# Conservation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("convection", ["central", "upwind"])
def test_operator_conserves_mass_and_constants(convection):
    problem = build_cdr_problem(n_cells=10, convection=convection)
    L = problem.operator.toarray()
    volume = problem.grid.volume
    # Zero-flux boundary and flux form: V L has zero column sums (mass), and the
    # discretely divergence-free velocity leaves constants unchanged (zero row sums).
    assert np.abs(volume * L.sum(axis=0)).max() < 1e-14
    assert np.abs(L.sum(axis=1)).max() < 1e-12
    # A central scheme with a divergence-free velocity: the convective part is skew.
    if convection == "central":
        pure = transport_operator(problem.grid, lambda p: np.full(len(p), 1e-300),
                                  lambda p: np.sin(PI * p[:, 0]) * np.sin(PI * p[:, 1]))
        pure = pure.toarray()
        assert np.abs(pure + pure.T).max() < 1e-10 * np.abs(pure).max()


def test_discrete_mass_balance_is_exact():
    """3 M^{n+1} - 4 M^n + M^{n-1} = 2 dt (2 S^n - S^{n-1}) and M^1 - M^0 = dt S^0."""
    problem = build_cdr_problem(n_cells=12, steps_per_obs=5)
    weights = np.random.default_rng(3).dirichlet(np.ones(55), 4)
    steps = np.arange(problem.n_steps + 1)
    states = problem.solve(weights, record_steps=steps)  # (n_steps + 1, cells, batch)
    reaction = problem.right_hand_side(weights)
    volume, dt = problem.grid.volume, problem.dt
    mass = volume * states.sum(axis=1)
    sources = np.stack([volume * reaction(k * dt, np.asfortranarray(states[k])).sum(axis=0)
                        for k in steps[:-1]])
    scale = np.abs(mass).max() + dt * np.abs(sources).max()
    assert mass[-1].min() > 0.1  # something actually happened
    first = mass[1] - mass[0] - dt * sources[0]
    rest = 3 * mass[2:] - 4 * mass[1:-1] + mass[:-2] - 2 * dt * (2 * sources[1:] - sources[:-1])
    assert np.abs(first).max() < 1e-13 * scale
    assert np.abs(rest).max() < 1e-12 * scale


def test_no_source_no_reaction_conserves_total_mass():
    problem = build_cdr_problem(n_cells=16)
    u0 = np.random.default_rng(4).random((problem.grid.n_cells, 3))
    out = imex_sbdf2(problem.operator, lambda t, u: np.zeros_like(u), u0, 0.01, 100,
                     record_steps=[0, 50, 100])
    mass = out.sum(axis=1)
    np.testing.assert_allclose(mass, np.broadcast_to(mass[0], mass.shape), rtol=1e-13)
    # and it mixes: the spread shrinks
    assert out[-1].std(axis=0).max() < 0.5 * out[0].std(axis=0).min()


# ---------------------------------------------------------------------------
# Building blocks against independent references
# ---------------------------------------------------------------------------


def test_banded_lu_matches_sparse_solver():
    problem = build_cdr_problem(n_cells=9)
    a = (sp.identity(problem.grid.n_cells) - 0.3 * problem.operator).tocsc()
    rhs = np.random.default_rng(5).normal(size=(problem.grid.n_cells, 4))
    np.testing.assert_allclose(BandedLU(a).solve(rhs), spla.spsolve(a, rhs), rtol=1e-12,
                               atol=1e-12)


def test_sensor_interpolation_is_exact_for_linear_fields():
    grid = make_grid(7)
    pts = np.array([[0.5, 0.2], [0.13, 0.77], [0.95, 0.05], [0.3, 0.3]])
    P = sensor_matrix(grid, pts)
    field = 2.0 + 3.0 * grid.centres[:, 0] - 1.5 * grid.centres[:, 1]
    inside = np.all((pts >= 0.5 / 7) & (pts <= 1 - 0.5 / 7), axis=1)
    expected = 2.0 + 3.0 * pts[:, 0] - 1.5 * pts[:, 1]
    np.testing.assert_allclose((P @ field)[inside], expected[inside], rtol=1e-13)
    np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0, rtol=1e-14)


def test_fast_right_hand_side_matches_kinetic_families():
    problem = build_cdr_problem(n_cells=8)
    rng = np.random.default_rng(6)
    weights = rng.dirichlet(np.ones(55), 5)
    u = np.asfortranarray(rng.normal(size=(problem.grid.n_cells, 5)))
    s = problem.settings
    a = problem.rates.ravel()  # k = 11 m + j
    reference = np.repeat(problem.source[:, None], 5, axis=1)
    shapes = [-u, -u / (s["michaelis_constant"] + np.abs(u)),
              u * (1 - u / s["logistic_capacity"]), u**2 / (s["hill_constant"] ** 2 + u**2),
              -u * np.abs(u)]
    for k in range(55):
        m, j = divmod(k, 11)
        reference += weights[:, k] * a[k] * problem.patches[:, j:j + 1] * shapes[m]
    np.testing.assert_allclose(problem.right_hand_side(weights)(0.0, u), reference,
                               rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# The simulator's contract
# ---------------------------------------------------------------------------


def test_simulate_shapes_dtype_simplex_and_settings():
    x, y, settings = simulate_cdr(7, seed=3, progress=False, **SMALL)
    assert x.shape == (7, 55) and y.shape == (7, 72)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert np.all(x >= 0)
    np.testing.assert_allclose(x.sum(axis=1), 1.0, rtol=1e-12)
    assert np.all(np.isfinite(y))
    # the 8 x 8 grid has cell Peclet numbers near 5: central differencing may undershoot a bit
    assert y.min() > -0.05 * y.max() and y.max() > 0.05
    json.dumps(settings)
    assert settings["simulator"] == "cdr" and settings["version"] == CDR_VERSION
    assert settings["seed"] == 3 and settings["n_samples"] == 7
    assert settings["n_cells"] == 8 and set(CDR_DEFAULTS) <= set(settings)


def test_output_layout_is_time_major():
    x, y, _ = simulate_cdr(3, seed=0, progress=False, **SMALL)
    problem = build_cdr_problem(**SMALL)
    states = problem.solve(x)  # (12, cells, 3)
    readings = np.stack([problem.sensors @ s for s in states])  # (time, sensor, sample)
    np.testing.assert_array_equal(y.reshape(3, 12, 6), readings.transpose(2, 0, 1))
    # readings grow at the sensor nearest the source over the first times
    assert np.all(np.diff(y.reshape(3, 12, 6)[:, :4, 0], axis=1) > 0)


def test_deterministic_for_a_seed():
    x1, y1, s1 = simulate_cdr(4, seed=11, progress=False, **SMALL)
    x2, y2, s2 = simulate_cdr(4, seed=11, progress=False, **SMALL)
    x3, _, s3 = simulate_cdr(4, seed=12, progress=False, **SMALL)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert s1 == s2 and s1 != s3
    assert not np.array_equal(x1, x3)


def test_inputs_change_outputs():
    x, y, _ = simulate_cdr(20, seed=0, progress=False, **SMALL)
    relative_spread = y.std(axis=0) / np.abs(y.mean(axis=0))
    assert np.median(relative_spread) > 0.05


def test_stable_at_simplex_vertices():
    problem = build_cdr_problem()
    y = problem.observe(np.eye(55))
    assert np.all(np.isfinite(y)) and y.min() > -1e-3 and y.max() < 100


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
def test_bad_n_samples(bad):
    with pytest.raises(ValueError, match="n_samples"):
        simulate_cdr(bad, progress=False, **SMALL)


def test_bad_seed_and_settings():
    with pytest.raises(ValueError, match="seed"):
        simulate_cdr(2, seed=-1, progress=False, **SMALL)
    with pytest.raises(ValueError, match="'grid_size'"):
        simulate_cdr(2, progress=False, grid_size=10)
    with pytest.raises(ValueError, match="convection"):
        simulate_cdr(2, progress=False, convection="quick", **SMALL)
    with pytest.raises(ValueError, match="steps_per_obs"):
        simulate_cdr(2, progress=False, n_cells=8, steps_per_obs=0)
    with pytest.raises(ValueError, match="family_rates"):
        simulate_cdr(2, progress=False, family_rates=(1.0, 2.0), **SMALL)
    with pytest.raises(ValueError, match="sensors"):
        simulate_cdr(2, progress=False, sensors=((0.5, 1.5),), **SMALL)


# Distribution statistics of the stand-in as the book uses it (default settings, seed 0):
# regression values of deterministic quantities, with tolerances far above processor rounding
# (the simulation is a fixed sequence of float64 operations, not a chaotic trajectory).
# The statistics are those of the stand-ins comparison, tested on their own against numpy and
# scipy in tests/test_standins.py.
def test_cdr_distribution_statistics_regression():
    from ctdnn.experiments import standins

    x, y, _ = simulate_cdr(100, seed=0, progress=False)
    m = standins.marginal_stats(y)
    assert standins.mean_abs_correlation(y) == pytest.approx(0.70299615, abs=1e-6)
    assert standins.mean_abs_correlation(x) == pytest.approx(0.08208272, abs=1e-6)
    assert standins.norm_range(y)["ratio"] == pytest.approx(1.56453868, rel=1e-6)
    assert float(y.mean()) == pytest.approx(0.3399235885, rel=1e-6, abs=0)
    assert float(m["std"].mean()) == pytest.approx(0.04493518527, rel=1e-6)
    assert float(abs(m["skewness"]).mean()) == pytest.approx(0.19757507, abs=1e-6)
    assert standins.exact_zero_fraction(y) == {"entries": 0.0, "samples": 0.0}
    assert standins.pca_components(y) == 4
