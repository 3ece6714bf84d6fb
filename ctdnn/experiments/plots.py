"""Plotting helpers of the experiment pages.

* :func:`tidy_log_axis`: a log axis whose tick labels always include values where the data
  lie, also when they span less than a decade (matplotlib then labels no tick at all);
* :func:`thin`: at most a few hundred points of a long curve;
* :func:`seed_curves`: a line for one seed, the median with a band (the
  seeds' range) for more, so that many noisy curves stay readable;
* :func:`caption`: the preset and data-source tag every figure carries.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib import ticker

__all__ = ["log_ticks", "tidy_log_axis", "thin", "seed_curves", "caption"]


def log_ticks(lo: float, hi: float, min_ticks: int = 2) -> list[float]:
    """Tick positions for a log axis on ``[lo, hi]``: at least ``min_ticks`` inside it.

    Decades first (if more than ``min_ticks`` lie inside); then 1-2-5 in every decade; then every integer mantissa; then values
    evenly spaced in log, rounded to the fewest significant digits (at least two) that keep
    them inside.
    """
    if not (lo > 0 and hi > lo and math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"a log axis needs 0 < lo < hi, got lo={lo}, hi={hi}")
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    # Decades alone only where they give a label more than min_ticks: two decade labels
    # around data spread over one decade leave the data unlabelled.
    for mantissas, need in (((1,), min_ticks + 1), ((1, 2, 5), min_ticks),
                            (tuple(range(1, 10)), min_ticks)):
        ticks = [m * 10.0 ** e for e in decades for m in mantissas]
        inside = [t for t in ticks if lo <= t <= hi]
        if len(inside) >= need:
            return inside
    raw = np.geomspace(lo, hi, min_ticks + 2)[1:-1]
    for digits in range(2, 16):   # the fewest digits that keep every tick inside, distinct
        ticks = sorted({float(f"{t:.{digits}g}") for t in raw})
        if len(ticks) == len(raw) and all(lo <= t <= hi for t in ticks):
            return ticks
    return [float(t) for t in raw]


def tidy_log_axis(ax, axis: str = "y") -> None:
    """Label a log axis where its data lie; call after the data are drawn.

    Args:
        ax: a matplotlib axes whose ``axis`` ("x" or "y") is logarithmic.
    """
    which = ax.yaxis if axis == "y" else ax.xaxis
    if (ax.get_yscale() if axis == "y" else ax.get_xscale()) != "log":
        return
    lo, hi = ax.get_ylim() if axis == "y" else ax.get_xlim()
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and hi > lo):
        return
    ticks = log_ticks(lo, hi)
    if len(ticks) > 8:
        return   # several decades: matplotlib's own decade labels are the readable choice
    which.set_major_locator(ticker.FixedLocator(ticks))
    which.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    which.set_minor_formatter(ticker.NullFormatter())
    if axis == "y":
        ax.set_ylim(lo, hi)
    else:
        ax.set_xlim(lo, hi)


def thin(x, *ys, max_points: int = 400):
    """``x`` and ``ys`` at most ``max_points`` evenly spread indices (first and last kept)."""
    x = np.asarray(x)
    n = len(x)
    if n <= max_points:
        return (x, *[np.asarray(y) for y in ys])
    keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return (x[keep], *[np.asarray(y)[keep] for y in ys])


def seed_curves(ax, x, curves, *, color, label=None, ls="-", lw=1.5, max_points=400,
                band_alpha=0.18, log=True):
    """Curves of several seeds on one axes: a line for one seed, else the median and a band.

    Args:
        ax: the axes.
        x: (n,) common abscissa (e.g. epochs).
        curves: (n_seeds, n) values; NaN entries are ignored in the median.
        color, label, ls, lw: line style; the label gets "(median of N seeds)" for a band.
        log: draw on a log y axis.
    Returns:
        The line of the median (or of the first seed).
    """
    curves = np.atleast_2d(np.asarray(curves, dtype=float))
    draw = ax.semilogy if log else ax.plot
    if curves.shape[0] == 1:
        line = None
        for k, c in enumerate(curves):
            xs, cs = thin(x, c, max_points=max_points)
            (ln,) = draw(xs, cs, color=color, ls=ls, lw=lw, alpha=0.85,
                         label=label if k == 0 else None)
            line = line or ln
        return line
    med = np.nanmedian(curves, axis=0)
    lo, hi = np.nanmin(curves, axis=0), np.nanmax(curves, axis=0)
    xs, med, lo, hi = thin(x, med, lo, hi, max_points=max_points)
    text = f"{label} (median of {curves.shape[0]} seeds)" if label else None
    (line,) = draw(xs, med, color=color, ls=ls, lw=lw, label=text)
    ax.fill_between(xs, lo, hi, color=color, alpha=band_alpha, lw=0)
    return line


def caption(preset: str, data: str) -> str:
    """The tag of a figure: ``"preset 'quick', CDR data (paper)"``."""
    return f"preset '{preset}', {data}"
