"""Tests of the DALEC-type ecosystem carbon model (ctdnn.data.dalec), the ELM stand-in."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ctdnn.data import dalec
from ctdnn.data.dalec import (
    DALEC_DEFAULTS,
    DALEC_OUTPUTS,
    DALEC_PARAMETERS,
    DALEC_VERSION,
    acm_gpp,
    dalec_parameter_ranges,
    dalec_spinup,
    dalec_year,
    seasonal_climate,
    simulate_dalec,
)

FAST = {"n_transient_years": 3}
NOMINAL = np.array([p[1] for p in DALEC_PARAMETERS])


def _sample(n, seed=0):
    ranges = dalec_parameter_ranges()
    rng = np.random.default_rng(seed)
    return ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * rng.random((n, 15))


@pytest.fixture(scope="module")
def spun_up():
    params = _sample(40, seed=1)
    climate = seasonal_climate()
    pools, info = dalec_spinup(params, climate, 350.0)
    return params, climate, pools, info


# ---------------------------------------------------------------------------
# Parameters and climate
# ---------------------------------------------------------------------------


def test_parameter_table_and_ranges():
    assert len(DALEC_PARAMETERS) == 15 and len(DALEC_OUTPUTS) == 10
    names = [p[0] for p in DALEC_PARAMETERS]
    assert len(set(names)) == 15
    assert names[11] == "br_mr" and DALEC_PARAMETERS[11][1] == 2.52e-6
    assert names[14] == "ea_vcmax" and DALEC_PARAMETERS[14][1] == 65330.0
    ranges = dalec_parameter_ranges()
    assert ranges.shape == (15, 2) and ranges.dtype == np.float64
    np.testing.assert_allclose(ranges[:, 0], 0.6 * NOMINAL, rtol=1e-15)
    np.testing.assert_allclose(ranges[:, 1], 1.4 * NOMINAL, rtol=1e-15)
    fractions = NOMINAL[1:4] * 1.4
    assert np.all(fractions < 1)  # growth, foliage and root fractions stay fractions


def test_climate_day_length_and_seasons():
    c = seasonal_climate(latitude=45.0)
    # Solstices at 45 degN (no refraction): about 15.4 h and 8.6 h; the year averages 12 h.
    assert abs(c["day_length"].max() - 15.43) < 0.05
    assert abs(c["day_length"].min() - 8.57) < 0.05
    assert abs(c["day_length"].mean() - 12.0) < 0.05
    assert 160 <= np.argmax(c["day_length"]) + 1 <= 180
    assert abs(seasonal_climate(latitude=0.0)["day_length"] - 12.0).max() < 1e-9
    assert 180 <= np.argmax(c["t_mean"]) + 1 <= 210
    assert np.all(c["radiation"] > 0) and np.all(c["t_max"] > c["t_min"])


def test_acm_gpp_responses():
    kw = dict(n_area=1.5, nue=5.0, capacity_factor=math.exp(25 * 0.06), t_max=25.0,
              t_min=15.0, radiation=20.0, day_length=14.0, co2=380.0)
    lai = np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0])
    gpp = acm_gpp(lai, **kw)
    assert gpp[0] == 0.0
    assert np.all(np.diff(gpp) > 0)
    assert 5.0 < gpp[-2] < 20.0  # gC m-2 d-1 on a bright summer day
    # saturating canopy: diminishing returns in LAI
    assert np.all(np.diff(np.diff(gpp[1:]) / np.diff(lai[1:])) < 0)
    base = acm_gpp(3.0, **kw)
    assert acm_gpp(3.0, **{**kw, "co2": 420.0}) > base
    assert acm_gpp(3.0, **{**kw, "radiation": 25.0}) > base
    assert acm_gpp(3.0, **{**kw, "capacity_factor": 2.0}) < base
    # ACM at Ca = 380 (Williams et al. 1997 form), written out independently here
    gc = 2.0 ** 0.0006 / (2.653 + 5.0)
    p = 3.0 * 1.5 * 5.0 / gc * math.exp(1.5)
    q = 217.9 - 0.98
    ci = 0.5 * (380 + q - p + math.sqrt((380 + q - p) ** 2 - 4 * (380 * q - p * 217.9)))
    e0 = 4.309 * 9 / (9 + 1.062)
    expected = e0 * 20 * gc * (380 - ci) / (e0 * 20 + gc * (380 - ci)) * (0.0142 * 14 + 0.155)
    assert abs(base - expected) < 1e-12 * expected


# ---------------------------------------------------------------------------
# Conservation and steady state
# ---------------------------------------------------------------------------


def test_carbon_mass_balance_over_a_year_is_exact():
    params = _sample(30, seed=2)
    rng = np.random.default_rng(3)
    pools = rng.uniform([50, 5e3, 50, 20, 3e3], [300, 3e4, 300, 200, 2e4], size=(30, 5))
    climate = seasonal_climate(warming=0.7)
    end, annual, daily = dalec_year(pools, params, climate, 390.0, daily=True)
    change = end.sum(axis=1) - pools.sum(axis=1)
    net = annual["gpp"] - annual["ra"] - annual["rh"]
    scale = pools.sum(axis=1)
    assert np.abs(change - net).max() < 1e-12 * scale.max()
    assert np.abs(net).min() > 1.0  # the check is not trivial: the system is out of balance
    np.testing.assert_allclose(daily["gpp"].sum(axis=0), annual["gpp"], rtol=1e-13)
    np.testing.assert_allclose(annual["nee"], -net, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(annual["npp"], annual["gpp"] - annual["ra"], rtol=1e-14)
    assert np.all(end > 0) and np.all(daily["gpp"] >= 0) and np.all(daily["ra"] > 0)


def test_mass_balance_day_by_day():
    params = NOMINAL[None]
    pools = np.array([[120.0, 1.5e4, 90.0, 60.0, 1.0e4]])
    climate = seasonal_climate()
    previous = pools
    for days in (1, 2, 30, 200):
        # a part of the year: the first `days` entries of the climate
        cut = {k: v[:days] for k, v in climate.items()}
        end, annual = dalec_year(pools, params, cut, 350.0)
        net = annual["gpp"] - annual["ra"] - annual["rh"]
        assert abs(end.sum() - pools.sum() - net[0]) < 1e-12 * pools.sum()
        assert not np.array_equal(end, previous)
        previous = end


def test_spinup_reaches_a_periodic_steady_state(spun_up):
    params, climate, pools, info = spun_up
    assert info["foliage_residual"] < 1e-10
    end, annual = dalec_year(pools, params, climate, 350.0)
    np.testing.assert_allclose(end, pools, rtol=1e-9)
    # in a steady cycle the ecosystem neither gains nor loses carbon
    assert np.abs(annual["nee"]).max() < 1e-6 * annual["gpp"].min()
    # and a second year repeats the first
    end2, annual2 = dalec_year(end, params, climate, 350.0)
    np.testing.assert_allclose(annual2["gpp"], annual["gpp"], rtol=1e-9)


def test_spinup_foliage_matches_plain_iteration(spun_up):
    """Steffensen-accelerated foliage equals many plain repetitions of the annual cycle."""
    params, climate, pools, _ = spun_up
    par = dalec._unpack(params[:5])
    factors = dalec._daily_factors(par, climate)
    cf = 4.0 * par["lma"]
    for _ in range(150):
        cf = dalec._foliage_year(cf, par, factors, climate, 350.0)
    np.testing.assert_allclose(pools[:5, 0], cf, rtol=1e-8)


def test_spinup_fast_pools_match_plain_iteration(spun_up):
    """Roots and litter turn over within years: repeating the cycle reaches the same state."""
    params, climate, pools, _ = spun_up
    start = pools[:5].copy()
    start[:, 2:4] *= 3.0  # perturb roots and litter only
    state = start
    for _ in range(40):
        state, _ = dalec_year(state, params[:5], climate, 350.0)
    np.testing.assert_allclose(state[:, 2:4], pools[:5, 2:4], rtol=1e-6)


# ---------------------------------------------------------------------------
# The simulator's contract
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run():
    return simulate_dalec(25, seed=5, progress=False, **FAST)


def test_simulate_shapes_dtype_ranges_positivity(small_run):
    x, y, settings = small_run
    assert x.shape == (25, 15) and y.shape == (25, 10)
    assert x.dtype == np.float64 and y.dtype == np.float64
    ranges = dalec_parameter_ranges()
    assert np.all(x >= ranges[:, 0]) and np.all(x <= ranges[:, 1])
    assert np.all(np.isfinite(y))
    names = [o[0] for o in DALEC_OUTPUTS]
    col = {n: y[:, i] for i, n in enumerate(names)}
    for key in ("gpp", "npp", "ra", "rh", "c_foliage", "c_wood", "c_root", "c_litter", "c_som"):
        assert np.all(col[key] > 0), key
    np.testing.assert_allclose(col["npp"], col["gpp"] - col["ra"], rtol=1e-12)
    np.testing.assert_allclose(col["nee"], col["ra"] + col["rh"] - col["gpp"], rtol=1e-9,
                               atol=1e-9)
    assert np.all(col["nee"] < 0)  # rising CO2 makes the forest a sink
    lai = col["c_foliage"] / x[:, 12]
    assert 0.3 < np.median(lai) < 8
    json.dumps(settings)
    assert settings["simulator"] == "dalec" and settings["version"] == DALEC_VERSION
    assert settings["n_samples"] == 25 and settings["seed"] == 5
    assert settings["n_transient_years"] == 3 and set(DALEC_DEFAULTS) <= set(settings)


def test_deterministic_for_a_seed(small_run):
    x, y, s = small_run
    x2, y2, s2 = simulate_dalec(25, seed=5, progress=False, **FAST)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert s == s2
    x3, _, s3 = simulate_dalec(25, seed=6, progress=False, **FAST)
    assert not np.array_equal(x, x3) and s != s3


def test_samples_are_independent_of_the_batch(small_run):
    """Vectorisation over samples must not couple them."""
    x, y, _ = small_run
    params = x[:4]
    climate = seasonal_climate()
    pools_all, _ = dalec_spinup(x, climate, 350.0)
    pools_few, _ = dalec_spinup(params, climate, 350.0)
    np.testing.assert_allclose(pools_few, pools_all[:4], rtol=1e-10)


def test_maintenance_rate_and_activation_energy_matter():
    climate = seasonal_climate()
    base = NOMINAL[None]
    more_mr = base.copy()
    more_mr[0, 11] *= 1.4
    more_ea = base.copy()
    more_ea[0, 14] *= 1.4
    pools, _ = dalec_spinup(np.vstack([base, more_mr, more_ea]), climate, 350.0)
    _, annual = dalec_year(pools, np.vstack([base, more_mr, more_ea]), climate, 350.0)
    # more maintenance respiration: a larger share of GPP respired, smaller canopy
    ra_share = annual["ra"] / annual["gpp"]
    assert ra_share[1] > ra_share[0] * 1.02
    assert pools[1, 0] < pools[0, 0]
    # a steeper Arrhenius law lowers GPP at a site below 25 degC most of the year
    assert annual["gpp"][2] < 0.98 * annual["gpp"][0]


@pytest.mark.parametrize("bad", [0, -1, 3.0, True, "5", None])
def test_bad_n_samples(bad):
    with pytest.raises(ValueError, match="n_samples"):
        simulate_dalec(bad, progress=False, **FAST)


def test_bad_seed_and_settings():
    with pytest.raises(ValueError, match="seed"):
        simulate_dalec(2, seed=-2, progress=False, **FAST)
    with pytest.raises(ValueError, match="'n_years'"):
        simulate_dalec(2, progress=False, n_years=3)
    with pytest.raises(ValueError, match="n_transient_years"):
        simulate_dalec(2, progress=False, n_transient_years=-1)
    with pytest.raises(ValueError, match="co2_final"):
        simulate_dalec(2, progress=False, co2_final="high")
    with pytest.raises(ValueError, match="latitude"):
        simulate_dalec(2, progress=False, latitude=80.0)
    with pytest.raises(ValueError, match="params"):
        dalec_year(np.ones((2, 5)), np.ones((2, 14)), seasonal_climate(), 350.0)


# Distribution statistics of the stand-in as the book uses it (default settings, seed 0):
# regression values of deterministic quantities, with tolerances far above processor rounding
# (the simulation is a fixed sequence of float64 operations, not a chaotic trajectory).
# The statistics are those of the stand-ins comparison, tested on their own against numpy and
# scipy in tests/test_standins.py.
def test_dalec_distribution_statistics_regression():
    from ctdnn.experiments import standins

    x, y, _ = simulate_dalec(200, seed=0, progress=False)
    m = standins.marginal_stats(y)
    assert standins.mean_abs_correlation(y) == pytest.approx(0.35979410, abs=1e-6)
    assert standins.mean_abs_correlation(x) == pytest.approx(0.06151040, abs=1e-6)
    assert standins.norm_range(y)["ratio"] == pytest.approx(4.06781268, rel=1e-6)
    assert float(y.mean()) == pytest.approx(3569.344409, rel=1e-6, abs=0)
    assert float(m["std"].mean()) == pytest.approx(1120.990345, rel=1e-6)
    assert float(abs(m["skewness"]).mean()) == pytest.approx(0.73760871, abs=1e-6)
    assert standins.exact_zero_fraction(y) == {"entries": 0.0, "samples": 0.0}
    assert standins.pca_components(y / y.std(axis=0)) == 8
