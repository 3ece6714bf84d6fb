r"""A DALEC-type ecosystem carbon model: a public stand-in for the E3SM Land Model ensemble.

The paper's "ELM" data set holds outputs of an ensemble of the E3SM Land Model over 15
uniformly sampled parameters. That model and its forcing are not reproduced here. This module
is a **stand-in** with the same flavour and the same shape (15 inputs, 10 outputs): a
DALEC-type five-pool carbon model (Williams et al. 2005, Global Change Biology) with GPP from
the aggregated canopy model (ACM; Williams et al. 1997), run at a single synthetic site.
It is not ELM and its numbers are not ELM's.

Pools (gC m^-2)
    foliage ``C_f``, wood ``C_w``, fine roots ``C_r``, litter ``C_l``, soil organic matter
    ``C_s``.

Daily fluxes (gC m^-2 d^-1), with :math:`\Delta t` = 1 day
    * GPP :math:`G` from the ACM (below) at :math:`\mathrm{LAI} = C_f / \mathrm{LMA}`.
    * Growth respiration :math:`R_g = f_g G`; the rest :math:`(1 - f_g) G` is allocated:
      :math:`A_f = f_{fol}(1 - f_g)G` to foliage, :math:`A_r = f_{root}((1 - f_g)G - A_f)` to
      roots, the remainder :math:`A_w` to wood (DALEC's allocation order).
    * Maintenance respiration of foliage and roots, proportional to their nitrogen:
      rate :math:`m_f = 86400\, b_{mr} N_a / \mathrm{LMA}` (foliar C:N = LMA / N_a) and
      :math:`m_r = 86400\, b_{mr} / 42` (root C:N 42), both times
      :math:`1.5^{(T - 20)/10}` (base rate at 20 degC, as ELM's ``br_mr``).
    * Turnover: foliage :math:`k_f` and roots :math:`k_r` to litter, wood :math:`k_w` to soil
      organic matter (as in DALEC, woody debris enters the soil pool directly).
    * Heterotrophic respiration and decomposition with a Q10 response
      :math:`\tau(T) = Q_{10}^{(T - 10)/10}`: litter is mineralised at :math:`k_l\tau` and
      decomposed to soil organic matter at :math:`k_d\tau`; soil organic matter is mineralised
      at :math:`k_s\tau`.

    Each pool loses, over one day, the exact first-order amount
    :math:`C (1 - e^{-k_{tot}\Delta t})` for its total loss rate :math:`k_{tot}` (fixed within
    the day), shared among its destinations in proportion to the individual rates. Every flux
    leaves one pool and enters another pool or the atmosphere, so the change of total carbon
    over any period equals :math:`\sum (G - R_a - R_h)` to round-off
    (:math:`R_a = R_g + R_{m,f} + R_{m,r}`, :math:`R_h` = litter + soil mineralisation), and no
    pool can become negative.

ACM (Williams et al. 1997), coefficients ``a2..a10`` of that paper
    .. math::

        g_c &= |\psi_d|^{a_{10}} / (a_6 r_{tot} + \tfrac12 (T_{max} - T_{min})), \\
        p &= \mathrm{LAI}\, N_a\, a_1 / g_c \cdot e^{25 a_8}\,
             \exp\!\Big(\frac{E_a}{R}\Big(\frac{1}{298.15}
             - \frac{1}{T_{max} + 273.15}\Big)\Big), \\
        q &= a_3 - a_4, \quad
        c_i = \tfrac12\big(C_a + q - p + \sqrt{(C_a + q - p)^2 - 4(C_a q - p a_3)}\big), \\
        e_0 &= a_7 \mathrm{LAI}^2 / (\mathrm{LAI}^2 + a_9), \quad
        G = \frac{e_0 I\, g_c (C_a - c_i)}{e_0 I + g_c (C_a - c_i)} (a_2 \lambda + a_5),

    with :math:`\psi_d = -2` MPa, :math:`r_{tot} = 1`, :math:`C_a` the CO2 mixing ratio (ppm),
    :math:`I` the daily radiation (MJ m^-2 d^-1) and :math:`\lambda` the day length (h). The
    original ACM scales the carboxylation term with :math:`e^{a_8 T_{max}}`; here that factor
    is written as an Arrhenius law with activation energy :math:`E_a` (the role of the Vcmax
    activation energy in ELM), normalised to the original at 25 degC. The N-use efficiency
    :math:`a_1` and foliar nitrogen :math:`N_a` are parameters.

Climate (analytic, a mild temperate site at 45 degN)
    :math:`T(d) = 11 + 10 \sin(2\pi (d - 105)/365)` degC (daily mean),
    :math:`T_{max/min} = T \pm 5`, radiation :math:`I = 14 + 10 \sin(2\pi (d - 81)/365)`,
    day length from the solar declination :math:`\delta = -23.44^\circ \cos(2\pi(d + 10)/365)`:
    :math:`\lambda = (24/\pi) \arccos(-\tan\phi \tan\delta)`. Daily means stay above
    freezing (1 to 21 degC), so, as in the evergreen DALEC, the canopy photosynthesises all
    year and no frost rule is needed.

Protocol
    1. Spin-up at CO2 = 350 ppm: the foliage equation depends on no other pool, so its
       periodic state (start-of-year ``C_f``) is the fixed point of the annual map, found by
       Steffensen-accelerated iteration to a relative tolerance (default 1e-12). Given the
       periodic foliage trajectory, the other four pools follow an affine annual map
       :math:`X \mapsto \Phi X + c`; :math:`\Phi` and :math:`c` come from one simulated year
       of five stacked initial states (zero and the four unit vectors), and the periodic
       steady state solves :math:`(I - \Phi) X = c`. Integrating one year from the result
       returns to it (checked in the tests). With :math:`e_0 \propto \mathrm{LAI}^2` at small
       LAI the bare state is also stable; the iteration starts from a full canopy (LAI 4) and
       finds the vegetated state whenever one exists. For rare corners of the parameter box
       (about 1 in 5000 samples) none does, and the canopy and its fluxes decay to nearly
       zero, as happens to some members of real land-model ensembles.
    2. Transient of ``n_transient_years`` (default 30) with CO2 rising linearly to 400 ppm
       and a warming of 1 degC, reached in the last year.
    3. Outputs (:data:`DALEC_OUTPUTS`): the last year's annual GPP, NPP, Ra, Rh and NEE
       (= Ra + Rh - GPP, positive for a source; nonzero because the ecosystem is out of
       equilibrium with the transient), and the end-of-year pools.

Nominal values are chosen (not calibrated) for a plausible temperate forest: at the nominal
parameters the steady cycle has LAI about 3.7, GPP about 1500 gC m^-2 yr^-1, wood about
17 kgC m^-2 and soil organic matter about 11 kgC m^-2.

Inputs: the 15 parameters of :data:`DALEC_PARAMETERS`, sampled independently and uniformly
on nominal x [0.6, 1.4] (:func:`dalec_parameter_ranges`), as the ELM ensemble was. Index 11 is
the maintenance respiration base rate (2.52e-6 gC gN^-1 s^-1) and index 14 the activation
energy of the carboxylation capacity (65330 J mol^-1), the roles of parameters #12 and #15 of
the ELM ensemble. All samples run together as arrays; the Python loop runs over days.
"""

from __future__ import annotations

import functools
import math
from typing import Mapping

import numpy as np
from tqdm import tqdm

from ..checks import check_int

# integer arguments: a ValueError naming the argument, like the simulators' other checks
_check_int = functools.partial(check_int, error=ValueError)

__all__ = [
    "DALEC_DEFAULTS",
    "DALEC_OUTPUTS",
    "DALEC_PARAMETERS",
    "DALEC_POOLS",
    "DALEC_VERSION",
    "dalec_parameter_ranges",
    "dalec_spinup",
    "dalec_year",
    "seasonal_climate",
    "simulate_dalec",
]

#: Bumped whenever a change alters the simulated numbers (part of the cache key).
DALEC_VERSION = 1

#: (name, nominal value, unit, description) of the 15 inputs, in column order.
DALEC_PARAMETERS: list[tuple[str, float, str, str]] = [
    ("k_decomp", 1.5e-3, "d-1", "litter-to-soil decomposition rate at 10 degC"),
    ("f_growth", 0.25, "1", "fraction of GPP spent as growth respiration"),
    ("f_foliage", 0.45, "1", "fraction of net allocation to foliage"),
    ("f_root", 0.40, "1", "fraction of the non-foliar allocation to fine roots"),
    ("k_foliage", 2.7e-3, "d-1", "foliage turnover (litterfall) rate"),
    ("k_wood", 6.0e-5, "d-1", "wood turnover rate"),
    ("k_root", 2.5e-3, "d-1", "fine-root turnover rate"),
    ("k_litter", 1.0e-2, "d-1", "litter mineralisation rate at 10 degC"),
    ("k_som", 8.0e-5, "d-1", "soil organic matter mineralisation rate at 10 degC"),
    ("q10_het", 2.0, "1", "Q10 of heterotrophic respiration and decomposition"),
    ("nue", 5.0, "gC gN-1 (ACM a1)", "canopy nitrogen-use efficiency of the ACM"),
    ("br_mr", 2.52e-6, "gC gN-1 s-1", "maintenance respiration base rate at 20 degC"),
    ("lma", 40.0, "gC m-2", "leaf carbon mass per leaf area"),
    ("foliar_n", 1.5, "gN m-2", "foliar nitrogen per leaf area"),
    ("ea_vcmax", 65330.0, "J mol-1", "activation energy of the carboxylation capacity"),
]

#: (name, unit, description) of the 10 outputs, in column order.
DALEC_OUTPUTS: list[tuple[str, str, str]] = [
    ("gpp", "gC m-2 yr-1", "gross primary production, last year"),
    ("npp", "gC m-2 yr-1", "net primary production (GPP - Ra), last year"),
    ("ra", "gC m-2 yr-1", "autotrophic respiration (growth + maintenance), last year"),
    ("rh", "gC m-2 yr-1", "heterotrophic respiration, last year"),
    ("nee", "gC m-2 yr-1", "net ecosystem exchange Ra + Rh - GPP (positive: source)"),
    ("c_foliage", "gC m-2", "foliage carbon at the end of the last year"),
    ("c_wood", "gC m-2", "wood carbon at the end of the last year"),
    ("c_root", "gC m-2", "fine-root carbon at the end of the last year"),
    ("c_litter", "gC m-2", "litter carbon at the end of the last year"),
    ("c_som", "gC m-2", "soil organic matter carbon at the end of the last year"),
]

DALEC_POOLS = ("foliage", "wood", "root", "litter", "som")

#: Default settings; every key may be overridden in :func:`simulate_dalec`.
DALEC_DEFAULTS: dict = {
    "latitude": 45.0,
    "t_mean": 11.0,
    "t_amplitude": 10.0,
    "t_range": 10.0,
    "rad_mean": 14.0,
    "rad_amplitude": 10.0,
    "co2_spinup": 350.0,
    "co2_final": 400.0,
    "warming": 1.0,
    "n_transient_years": 30,
    "initial_lai": 4.0,
    "spinup_rtol": 1e-12,
    "spinup_max_iter": 200,
}

RANGE_FACTORS = (0.6, 1.4)
N_PARAMETERS = len(DALEC_PARAMETERS)
DAYS = 365
SECONDS_PER_DAY = 86400.0
GAS_CONSTANT = 8.314  # J mol-1 K-1
ROOT_CN = 42.0
Q10_MAINTENANCE = 1.5
# ACM coefficients a2..a10 (Williams et al. 1997); a1 is the parameter `nue`.
_ACM = {"a2": 0.0142, "a3": 217.9, "a4": 0.980, "a5": 0.155, "a6": 2.653, "a7": 4.309,
        "a8": 0.060, "a9": 1.062, "a10": 0.0006, "psi_d": -2.0, "r_tot": 1.0}


def dalec_parameter_ranges() -> np.ndarray:
    """Sampling ranges, nominal x [0.6, 1.4].

    Returns:
        (15, 2) float64, columns (low, high), rows in :data:`DALEC_PARAMETERS` order.
    """
    nominal = np.array([p[1] for p in DALEC_PARAMETERS], dtype=np.float64)
    return np.column_stack([nominal * RANGE_FACTORS[0], nominal * RANGE_FACTORS[1]])


# ---------------------------------------------------------------------------
# Climate and canopy
# ---------------------------------------------------------------------------


def seasonal_climate(*, latitude: float = 45.0, t_mean: float = 11.0,
                     t_amplitude: float = 10.0, t_range: float = 10.0,
                     rad_mean: float = 14.0, rad_amplitude: float = 10.0,
                     warming: float = 0.0) -> dict[str, np.ndarray]:
    """Analytic daily climate of one year (day of year 1..365).

    Returns:
        dict of (365,) arrays: ``t_mean``, ``t_max``, ``t_min`` (degC), ``radiation``
        (MJ m-2 d-1), ``day_length`` (h).
    """
    doy = np.arange(1, DAYS + 1, dtype=np.float64)
    tm = t_mean + warming + t_amplitude * np.sin(2 * np.pi * (doy - 105.0) / DAYS)
    rad = rad_mean + rad_amplitude * np.sin(2 * np.pi * (doy - 81.0) / DAYS)
    decl = -math.radians(23.44) * np.cos(2 * np.pi * (doy + 10.0) / DAYS)
    cos_h = np.clip(-math.tan(math.radians(latitude)) * np.tan(decl), -1.0, 1.0)
    return {"t_mean": tm, "t_max": tm + 0.5 * t_range, "t_min": tm - 0.5 * t_range,
            "radiation": rad, "day_length": 24.0 / np.pi * np.arccos(cos_h)}


def acm_gpp(lai, n_area, nue, capacity_factor, t_max, t_min, radiation, day_length, co2):
    """Daily GPP (gC m-2 d-1) of the aggregated canopy model.

    Args:
        lai: leaf area index (broadcastable arrays throughout).
        n_area: foliar nitrogen per leaf area (gN m-2).
        nue: nitrogen-use efficiency ``a1``.
        capacity_factor: temperature factor of the carboxylation term (``e^{a8 Tmax}`` in
            the original ACM; Arrhenius here, see the module docstring).
        t_max, t_min: daily extreme temperatures (degC).
        radiation: daily radiation (MJ m-2 d-1).
        day_length: hours.
        co2: CO2 mixing ratio (ppm).
    """
    a = _ACM
    gc = abs(a["psi_d"]) ** a["a10"] / (a["a6"] * a["r_tot"] + 0.5 * (t_max - t_min))
    pp = lai * n_area * nue / gc * capacity_factor
    qq = a["a3"] - a["a4"]
    b = co2 + qq - pp
    ci = 0.5 * (b + np.sqrt(b * b - 4.0 * (co2 * qq - pp * a["a3"])))
    lai2 = lai * lai
    e0 = a["a7"] * lai2 / (lai2 + a["a9"])
    light = e0 * radiation
    diffusion = gc * (co2 - ci)
    return light * diffusion / (light + diffusion) * (a["a2"] * day_length + a["a5"])


# ---------------------------------------------------------------------------
# Time stepping
# ---------------------------------------------------------------------------


def _unpack(params) -> dict[str, np.ndarray]:
    p = np.asarray(params, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != N_PARAMETERS:
        raise ValueError(f"params must have shape (n, {N_PARAMETERS}), got {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p <= 0):
        raise ValueError("params must be positive and finite")
    return {name: p[:, i] for i, (name, *_) in enumerate(DALEC_PARAMETERS)}


def _daily_factors(par: Mapping[str, np.ndarray], climate: Mapping[str, np.ndarray]) -> dict:
    """Per-day, per-sample rate factors, computed for the whole year at once: (365, n)."""
    t = climate["t_mean"][:, None]
    t_max_k = climate["t_max"][:, None] + 273.15
    capacity = np.exp(25.0 * _ACM["a8"]) * np.exp(
        par["ea_vcmax"] / GAS_CONSTANT * (1.0 / 298.15 - 1.0 / t_max_k))
    maint = SECONDS_PER_DAY * par["br_mr"] * Q10_MAINTENANCE ** ((t - 20.0) / 10.0)
    tau = par["q10_het"] ** ((t - 10.0) / 10.0)
    k_f_tot = par["k_foliage"] + maint * par["foliar_n"] / par["lma"]
    k_r_tot = par["k_root"] + maint / ROOT_CN
    k_l_tot = (par["k_litter"] + par["k_decomp"]) * tau
    return {
        "capacity": capacity,
        "keep_f": np.exp(-k_f_tot), "litter_share_f": par["k_foliage"] / k_f_tot,
        "keep_r": np.exp(-k_r_tot), "litter_share_r": par["k_root"] / k_r_tot,
        "keep_w": np.broadcast_to(np.exp(-par["k_wood"]), capacity.shape),
        "keep_l": np.exp(-k_l_tot), "decomp_share": np.broadcast_to(
            par["k_decomp"] / (par["k_litter"] + par["k_decomp"]), capacity.shape),
        "keep_s": np.exp(-par["k_som"] * tau),
    }


def _foliage_day(cf, d, par, fac, climate, co2):
    """Foliage update of day ``d``: it depends on no other pool (used by the spin-up)."""
    gpp = acm_gpp(cf / par["lma"], par["foliar_n"], par["nue"], fac["capacity"][d],
                  climate["t_max"][d], climate["t_min"][d], climate["radiation"][d],
                  climate["day_length"][d], co2)
    npp_alloc = (1.0 - par["f_growth"]) * gpp
    alloc_f = par["f_foliage"] * npp_alloc
    loss_f = cf * (1.0 - fac["keep_f"][d])
    litter_f = loss_f * fac["litter_share_f"][d]
    return cf - loss_f + alloc_f, gpp, npp_alloc, alloc_f, litter_f, loss_f - litter_f


def dalec_year(pools: np.ndarray, params: np.ndarray, climate: Mapping[str, np.ndarray],
               co2: float, *, daily: bool = False, _factors: dict | None = None):
    """Integrate one year of daily steps for a batch of parameter sets.

    Args:
        pools: (..., n, 5) start-of-year pools (gC m-2) in :data:`DALEC_POOLS` order;
            leading dimensions stack extra initial states for the same parameters.
        params: (n, 15) parameters in :data:`DALEC_PARAMETERS` order.
        climate: output of :func:`seasonal_climate`: (n_days,) arrays, one step per entry
            (365 for a year; shorter slices integrate part of a year).
        co2: CO2 mixing ratio (ppm) for the year.
        daily: also return the daily fluxes.

    Returns:
        ``(pools_end, annual)`` with ``pools_end`` shaped like ``pools`` and ``annual`` a dict
        of (..., n) sums over the days ``gpp``, ``ra``, ``rh``, ``npp``, ``nee``
        (gC m-2 yr-1 for a full year); with ``daily=True`` also a dict of (n_days, ..., n)
        daily fluxes ``gpp``, ``ra``, ``rh``.
    """
    par = _unpack(params)
    fac = _daily_factors(par, climate) if _factors is None else _factors
    pools = np.asarray(pools, dtype=np.float64)
    cf, cw, cr, cl, cs = (pools[..., i].copy() for i in range(5))
    zero = np.zeros(cf.shape)
    total = {"gpp": zero.copy(), "ra": zero.copy(), "rh": zero.copy()}
    n_days = len(climate["t_mean"])
    record = {k: np.empty((n_days,) + cf.shape) for k in total} if daily else None
    for d in range(n_days):
        cf_new, gpp, npp_alloc, alloc_f, litter_f, mr_f = _foliage_day(
            cf, d, par, fac, climate, co2)
        alloc_r = par["f_root"] * (npp_alloc - alloc_f)
        alloc_w = npp_alloc - alloc_f - alloc_r
        loss_r = cr * (1.0 - fac["keep_r"][d])
        litter_r = loss_r * fac["litter_share_r"][d]
        loss_w = cw * (1.0 - fac["keep_w"][d])
        loss_l = cl * (1.0 - fac["keep_l"][d])
        decomp = loss_l * fac["decomp_share"][d]
        rh_s = cs * (1.0 - fac["keep_s"][d])
        ra = (gpp - npp_alloc) + mr_f + (loss_r - litter_r)
        rh = (loss_l - decomp) + rh_s
        cf = cf_new
        cr = cr - loss_r + alloc_r
        cw = cw - loss_w + alloc_w
        cl = cl - loss_l + litter_f + litter_r
        cs = cs - rh_s + decomp + loss_w
        total["gpp"] += gpp
        total["ra"] += ra
        total["rh"] += rh
        if daily:
            record["gpp"][d], record["ra"][d], record["rh"][d] = gpp, ra, rh
    total["npp"] = total["gpp"] - total["ra"]
    total["nee"] = total["ra"] + total["rh"] - total["gpp"]
    end = np.stack([cf, cw, cr, cl, cs], axis=-1)
    return (end, total, record) if daily else (end, total)


def _foliage_year(cf, par, fac, climate, co2):
    for d in range(len(climate["t_mean"])):
        cf = _foliage_day(cf, d, par, fac, climate, co2)[0]
    return cf


def dalec_spinup(params: np.ndarray, climate: Mapping[str, np.ndarray], co2: float, *,
                 initial_lai: float = 4.0, rtol: float = 1e-12, max_iter: int = 200,
                 progress: bool = False) -> tuple[np.ndarray, dict]:
    """Periodic steady state (start-of-year pools) for a repeated climate year.

    Args:
        params: (n, 15) parameters.
        climate: output of :func:`seasonal_climate`.
        co2: CO2 mixing ratio (ppm).
        initial_lai: starting guess of the foliage iteration (the vegetation-free state is
            also a fixed point; starting from a full canopy selects the vegetated one when
            it exists).
        rtol: relative tolerance of the foliage fixed point.
        max_iter: maximum number of accelerated iterations (two model years each).
        progress: show a progress bar.

    Returns:
        ``(pools, info)``: (n, 5) pools and a dict with ``iterations`` and
        ``foliage_residual`` (largest change of the start-of-year foliage over the last plain
        iteration, relative to the foliage floored at 1 gC m-2).
    """
    par = _unpack(params)
    fac = _daily_factors(par, climate)
    atol = 1e-9  # gC m-2: a collapsed canopy converges to zero only geometrically
    c = initial_lai * par["lma"]
    bar = tqdm(total=max_iter, desc="DALEC spin-up", disable=not progress, leave=False)
    residual = np.inf
    it = 0
    for it in range(1, max_iter + 1):
        c1 = _foliage_year(c, par, fac, climate, co2)
        c2 = _foliage_year(c1, par, fac, climate, co2)
        bar.update(1)
        step = np.abs(c2 - c1)
        # relative to the canopy, floored at 1 gC m-2 so collapsed canopies do not dominate
        residual = float(np.max(step / np.maximum(np.abs(c2), 1.0)))
        if np.all(step <= rtol * np.abs(c2) + atol):
            c = c2
            break
        denom = c2 - 2.0 * c1 + c
        with np.errstate(divide="ignore", invalid="ignore"):
            accelerated = c - (c1 - c) ** 2 / denom
        ok = np.isfinite(accelerated) & (accelerated > 0) & (np.abs(denom) > 0)
        c = np.where(ok, accelerated, c2)
    else:
        raise RuntimeError(f"DALEC spin-up did not converge in {max_iter} iterations "
                           f"(foliage residual {residual:.3g})")
    bar.close()
    # The other pools: affine annual map X -> Phi X + c0 given the periodic foliage.
    n = c.shape[0]
    stacked = np.zeros((5, n, 5))
    stacked[..., 0] = c
    for i in range(4):
        stacked[i + 1, :, i + 1] = 1.0
    end, _ = dalec_year(stacked, params, climate, co2, _factors=fac)
    c0 = end[0, :, 1:]  # (n, 4)
    phi = np.stack([end[i + 1, :, 1:] - c0 for i in range(4)], axis=-1)  # (n, 4, 4)
    x = np.linalg.solve(np.eye(4) - phi, c0[..., None])[..., 0]
    return np.column_stack([c, x]), {"iterations": it, "foliage_residual": residual}


# ---------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------


def simulate_dalec(n_samples: int = 2486, *, seed: int = 0, progress: bool = True,
                   **overrides) -> tuple[np.ndarray, np.ndarray, dict]:
    """Simulate the ELM stand-in ensemble.

    Args:
        n_samples: number of parameter sets (positive int).
        seed: seed of ``numpy.random.default_rng``; parameters are uniform on
            :func:`dalec_parameter_ranges`.
        progress: show tqdm progress bars.
        **overrides: any key of :data:`DALEC_DEFAULTS`.

    Returns:
        ``x`` (n_samples, 15) float64 parameters (:data:`DALEC_PARAMETERS` order), ``y``
        (n_samples, 10) float64 outputs (:data:`DALEC_OUTPUTS` order) and ``settings``, a
        JSON-serialisable dict of everything that determines the output (a cache key).
    """
    n_samples = _check_int("n_samples", n_samples, minimum=1)
    seed = _check_int("seed", seed, minimum=0)
    s = _settings(overrides)
    ranges = dalec_parameter_ranges()
    rng = np.random.default_rng(seed)
    x = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * rng.random((n_samples, N_PARAMETERS))

    climate_keys = ("latitude", "t_mean", "t_amplitude", "t_range", "rad_mean",
                    "rad_amplitude")
    base = {k: s[k] for k in climate_keys}
    pools, _ = dalec_spinup(x, seasonal_climate(**base), s["co2_spinup"],
                            initial_lai=s["initial_lai"], rtol=s["spinup_rtol"],
                            max_iter=s["spinup_max_iter"], progress=progress)
    years = s["n_transient_years"]
    annual = None
    for year in tqdm(range(1, years + 1), desc="DALEC transient", disable=not progress,
                     leave=False):
        frac = year / years
        climate = seasonal_climate(**base, warming=s["warming"] * frac)
        co2 = s["co2_spinup"] + (s["co2_final"] - s["co2_spinup"]) * frac
        pools, annual = dalec_year(pools, x, climate, co2)
    if annual is None:  # no transient: report the steady cycle
        pools, annual = dalec_year(pools, x, seasonal_climate(**base), s["co2_spinup"])
    y = np.column_stack([annual["gpp"], annual["npp"], annual["ra"], annual["rh"],
                         annual["nee"], pools])
    if not np.all(np.isfinite(y)):
        raise RuntimeError("the DALEC simulation produced non-finite values")
    settings = {
        "simulator": "dalec", "version": DALEC_VERSION, "n_samples": n_samples, "seed": seed,
        **s,
        "time_step_days": 1.0, "days_per_year": DAYS,
        "parameters": [p[0] for p in DALEC_PARAMETERS],
        "parameter_ranges": ranges.tolist(),
        "outputs": [o[0] for o in DALEC_OUTPUTS],
    }
    return x, y, settings




def _settings(overrides: dict) -> dict:
    unknown = sorted(set(overrides) - set(DALEC_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown DALEC setting(s) {', '.join(map(repr, unknown))}; "
                         f"valid names are {', '.join(DALEC_DEFAULTS)}")
    s = {**DALEC_DEFAULTS, **overrides}
    for key in ("n_transient_years",):
        s[key] = _check_int(key, s[key], minimum=0)
    s["spinup_max_iter"] = _check_int("spinup_max_iter", s["spinup_max_iter"], minimum=1)
    for key in ("latitude", "t_mean", "t_amplitude", "t_range", "rad_mean", "rad_amplitude",
                "co2_spinup", "co2_final", "warming", "initial_lai", "spinup_rtol"):
        value = s[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer,
                                                             np.floating)):
            raise ValueError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{key} must be finite, got {value!r}")
        s[key] = float(value)
    for key in ("co2_spinup", "co2_final", "initial_lai", "spinup_rtol", "t_range"):
        if s[key] <= 0:
            raise ValueError(f"{key} must be positive, got {s[key]}")
    if abs(s["latitude"]) >= 66.0:
        raise ValueError(f"latitude must lie within the polar circles, got {s['latitude']}")
    if s["rad_mean"] - abs(s["rad_amplitude"]) <= 0:
        raise ValueError("rad_mean must exceed |rad_amplitude| so that radiation stays positive")
    return s
