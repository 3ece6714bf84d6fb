"""The verdict rules: pure functions from numbers to one of four verdicts.

Every rule of the book lives here, once: a function decorated with :func:`rule`, whose
``text`` attribute is the rule as the book states it (printed on the experiment page and
stored in the results file from the same string). A rule returns a :class:`Decision`: the
verdict and a one-line reason naming the branch that decided it and the numbers behind it.

The verdicts (:data:`VERDICTS`):

* ``reproduced``: the numbers show what the paper states, by the rule;
* ``partly``: the rule holds in some of the configurations it covers and not in others;
* ``not reproduced``: the rule fails;
* ``inconclusive``: the numbers cannot decide: fewer than :data:`MIN_SEEDS` seeds ran, the
  compared difference lies inside the seed spread (the margin each rule states), or the
  compared models did not learn (a threshold each rule states).

Margins used throughout:

* **seed spread** of a comparison: the larger of the two population standard deviations over
  seeds; a difference of means no larger than it is noise;
* **learned**: a surrogate learned if its mean test error is below :data:`LEARN_FRACTION`
  (3/4) of the test error of predicting the training mean; a stationary-ODE model learned if
  its mean test error is below :data:`SPIRAL_LEARNED` (0.5, half the error of predicting
  zero).

The rules take plain numbers (lists of per-seed values, flags), never results files, so each
one can be unit-tested with constructed inputs that reach each of its verdicts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from ..reporting import VERDICTS

__all__ = [
    "VERDICTS", "MIN_SEEDS", "LEARN_FRACTION", "SPIRAL_LEARNED", "NFE_FLOOR",
    "SPIKE_MARGIN", "JITTER_MARGIN", "Decision", "Comparison", "RULES", "rule", "learned",
    "spread", "seed_stats",
    "conditioning_gap", "conditioning_governs_fitting", "no_worse_in_cells",
    "fewer_failures", "smoother_curves", "degree_trend", "fewer_nfe",
    "nfe_gap_unscaled", "nfe_gap_from_time_scaling", "comparable_accuracy",
]

#: Fewest seeds a comparison needs (with one seed there is no spread to judge a difference by).
MIN_SEEDS = 2
#: A surrogate learned if its mean test error is below this fraction of the error of
#: predicting the training mean.
LEARN_FRACTION = 0.75
#: A stationary-ODE model learned if its mean test relative error is below this (predicting
#: zero scores 1).
SPIRAL_LEARNED = 0.5
#: Relative noise floor of an adaptive solver's NFE count: differences of means below this
#: fraction of the larger mean are noise even when the seeds agree closely.
NFE_FLOOR = 0.02
#: Smallest difference in mean spike count that counts (and at least 20% of the larger).
SPIKE_MARGIN = 1.0
#: Smallest difference in mean tail jitter (percentage points) that counts (and at least 20%).
JITTER_MARGIN = 1.0


@dataclass(frozen=True)
class Decision:
    """The outcome of a rule: a verdict from :data:`VERDICTS` and why, in one line."""

    verdict: str
    reason: str

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


@dataclass(frozen=True)
class Comparison:
    """One cell of a comparison: per-seed values of the model the claim is about and of a
    competitor, and whether each learned.

    Attributes:
        label: the cell, e.g. ``"ResNet T=10"``.
        ours: per-seed values of the model the claim is about (e.g. Legendre test errors).
        other: per-seed values of the competitor.
        ours_learned, other_learned: whether each model learned (see :func:`learned`).
    """

    label: str
    ours: Sequence[float]
    other: Sequence[float]
    ours_learned: bool = True
    other_learned: bool = True


#: Every rule by its id (filled by :func:`rule`); ``RULES[id].text`` is the rule as the book
#: states it.
RULES: dict[str, Callable] = {}


def rule(rule_id: str, text: str):
    """Register a rule function under ``rule_id``; its ``text`` is the rule as stated."""

    def wrap(fn):
        fn.rule_id, fn.text = rule_id, " ".join(text.split())
        RULES[rule_id] = fn
        return fn

    return wrap


# ----------------------------------------------------------------------------- statistics

def seed_stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population standard deviation over seeds; ``(nan, nan)`` if empty.

    A non-finite value (a failed run, error ``inf``) makes the mean ``inf``/``nan`` and the
    standard deviation ``nan``.
    """
    v = [float(x) for x in values]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    if not math.isfinite(m):
        return m, math.nan
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / len(v))


def spread(a: Sequence[float], b: Sequence[float]) -> float:
    """The seed spread of a comparison: the larger population std of the two (nan-safe)."""
    stds = [s for s in (seed_stats(a)[1], seed_stats(b)[1]) if math.isfinite(s)]
    return max(stds) if stds else 0.0


def learned(test_errors: Sequence[float], reference: float,
            fraction: float = LEARN_FRACTION) -> bool:
    """Whether a model learned: its mean test error is below ``fraction * reference``.

    Args:
        test_errors: per-seed test errors.
        reference: the error of a predictor that learned nothing (predicting the training
            mean, or zero).
        fraction: how far below the reference the mean must lie.
    """
    m = seed_stats(test_errors)[0]
    return bool(math.isfinite(m) and math.isfinite(reference) and m < fraction * reference)


def _too_few(n_seeds: int) -> Decision | None:
    if n_seeds < MIN_SEEDS:
        return Decision("inconclusive", f"{n_seeds} seed(s) ran; a comparison needs at least "
                                        f"{MIN_SEEDS} to judge differences against the spread")
    return None


def _labels(cells: Sequence[Comparison]) -> None:
    labels = [c.label for c in cells]
    repeated = sorted({lab for lab in labels if labels.count(lab) > 1})
    if repeated:
        raise ValueError(f"cell labels must be unique; repeated: {repeated}")


def _tally(outcomes: dict[str, str], what: str) -> Decision:
    """Verdict from per-cell outcomes ``"supports"``, ``"contradicts"``, ``"undecided"``.

    Inconclusive if no cell or more than half the cells are undecided; reproduced if every
    cell supports; partly if at least half the decided cells support; not reproduced otherwise.
    """
    n = len(outcomes)
    s = sum(v == "supports" for v in outcomes.values())
    c = sum(v == "contradicts" for v in outcomes.values())
    u = n - s - c
    counts = f"{s} of {n} cells support, {c} contradict, {u} undecided ({what})"
    if n == 0 or 2 * u > n:
        return Decision("inconclusive", counts + ": most cells cannot decide")
    if s == n:
        return Decision("reproduced", counts)
    if 2 * s >= s + c:
        return Decision("partly", counts)
    return Decision("not reproduced", counts)


def _per_cell(cells: Sequence[Comparison], n_seeds: int, judge: Callable[[Comparison], str],
              what: str) -> Decision:
    """The shared frame of the per-cell rules: too few seeds, cells where neither model
    learned (undecided), then ``judge`` on each remaining cell, tallied by :func:`_tally`."""
    _labels(cells)
    few = _too_few(n_seeds)
    if few:
        return few
    outcomes = {c.label: judge(c) if (c.ours_learned or c.other_learned) else "undecided"
                for c in cells}
    return _tally(outcomes, what)


def _finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


# ----------------------------------------------------------------------------- conditioning

@rule("conditioning-gap", """
    Reproduced if the Legendre collocation matrix at degree 6 and T = 1 has a condition number
    at least 10 times smaller than the monomial one on every grid of weight times; partly if on
    some grids; not reproduced if on none; inconclusive if a condition number is missing or not
    finite (exact linear algebra, no seeds involved).""")
def conditioning_gap(ratios: dict[str, float]) -> Decision:
    """Args: ratios: ``{grid: kappa(monomial) / kappa(Legendre)}`` at degree 6, T = 1."""
    if not ratios or not all(_finite(r) for r in ratios.values()):
        return Decision("inconclusive", f"condition-number ratios missing or not finite: {ratios}")
    ok = [g for g, r in ratios.items() if r >= 10.0]
    reason = (f"ratio >= 10 on {len(ok)} of {len(ratios)} grids ("
              + ", ".join(f"{g} {r:.3g}" for g, r in ratios.items()) + ")")
    if len(ok) == len(ratios):
        return Decision("reproduced", reason)
    return Decision("partly" if ok else "not reproduced", reason)


@rule("conditioning-governs-fitting", """
    For every fitted degree and horizon, compare the relative excess loss after the fixed
    number of gradient-descent iterations (values below 1e-15, the round-off level, count as
    1e-15). Reproduced if the monomial fit's is at least 100 times the Legendre fit's in every
    configuration and every point of the sweep lies on or below the bound (1 - 1/kappa)^(2k);
    partly if the factor 100 holds in some configurations; not reproduced if in none;
    inconclusive if a loss is missing or not finite (deterministic fits, no seeds involved).""")
def conditioning_governs_fitting(ratios: dict[str, float], bound_holds: bool) -> Decision:
    """Args: ratios: ``{config: monomial excess / Legendre excess}`` (floored at 1e-15);
    bound_holds: every sweep point on or below the bound."""
    if not ratios or not all(_finite(r) for r in ratios.values()):
        return Decision("inconclusive", f"excess-loss ratios missing or not finite: {ratios}")
    n_ok = sum(r >= 100.0 for r in ratios.values())
    reason = (f"ratio >= 100 in {n_ok} of {len(ratios)} configurations; sweep within the "
              f"bound: {bool(bound_holds)}")
    if n_ok == len(ratios) and bound_holds:
        return Decision("reproduced", reason)
    return Decision("partly" if n_ok else "not reproduced", reason)


# ----------------------------------------------------------------------------- accuracy

@rule("no-worse", f"""
    Per cell, the model the claim is about (e.g. Legendre) is no worse than the competitor if
    its mean error over seeds is at most the competitor's mean plus the seed spread (the larger
    population standard deviation of the two); it is worse if above that. A cell in which
    neither model learned (mean test error not below {LEARN_FRACTION:g} of the error of
    predicting the training mean) is undecided. Inconclusive if fewer than {MIN_SEEDS} seeds
    ran or more than half the cells are undecided; reproduced if no worse in every cell;
    partly if no worse in at least half of the decided cells; not reproduced otherwise.""")
def no_worse_in_cells(cells: Sequence[Comparison], n_seeds: int) -> Decision:
    """Args: cells: per-cell per-seed errors (lower is better); n_seeds: seeds per model."""
    def judge(c: Comparison) -> str:
        mo, mc = seed_stats(c.ours)[0], seed_stats(c.other)[0]
        if math.isnan(mo) or math.isnan(mc):
            return "undecided"
        return "supports" if mo <= mc + spread(c.ours, c.other) else "contradicts"

    return _per_cell(cells, n_seeds, judge, "no worse within the seed spread")


@rule("degree-trend", f"""
    Per architecture, the highest degree is no worse than the lowest if its mean training
    error over seeds is at most the lowest degree's mean plus the seed spread; an architecture
    in which neither model learned (mean test error not below {LEARN_FRACTION:g} of the error
    of predicting the training mean) is undecided. Inconclusive if fewer than {MIN_SEEDS}
    seeds ran or more than half the architectures are undecided; reproduced if no worse for
    every architecture; partly if for at least half of the decided ones; not reproduced
    otherwise.""")
def degree_trend(cells: Sequence[Comparison], n_seeds: int) -> Decision:
    """Args: cells: one per architecture, ``ours`` the highest degree, ``other`` the lowest."""
    return no_worse_in_cells(cells, n_seeds)


@rule("comparable-accuracy", f"""
    Per degree and time scaling, the two bases are comparable if their mean test errors differ
    by at most a factor of 2 or by at most the seed spread; a cell in which neither model
    learned (mean test relative error not below {SPIRAL_LEARNED:g}, half the error of
    predicting zero) is undecided, and one in which only one learned is not comparable.
    Inconclusive if fewer than {MIN_SEEDS} seeds ran or more than half the cells are
    undecided; reproduced if comparable in every cell; partly if in at least half of the
    decided cells; not reproduced otherwise.""")
def comparable_accuracy(cells: Sequence[Comparison], n_seeds: int) -> Decision:
    """Args: cells: per (degree, scaling), ``ours`` Legendre and ``other`` monomial errors."""
    def judge(c: Comparison) -> str:
        if c.ours_learned != c.other_learned:
            return "contradicts"
        a, b = seed_stats(c.ours)[0], seed_stats(c.other)[0]
        close = _finite(a, b) and (max(a, b) <= 2 * min(a, b)
                                   or abs(a - b) <= spread(c.ours, c.other))
        return "supports" if close else "contradicts"

    return _per_cell(cells, n_seeds, judge, "comparable within a factor 2 or the seed spread")


# ----------------------------------------------------------------------------- stability

@rule("fewer-failures", f"""
    Failed runs: a run failed if it diverged or its best validation error exceeds twice the
    median of all runs with the same architecture and T. Per (architecture, T), Legendre is
    more stable if fewer of its seeds failed than of the monomial seeds, less stable if more;
    equal counts decide nothing. Inconclusive if fewer than {MIN_SEEDS} seeds ran or no cell
    differs; reproduced if Legendre fails less at the largest T for every architecture and
    more in no cell; partly if it fails less in more cells than it fails more; not reproduced
    otherwise.""")
def fewer_failures(failed: dict[tuple[str, float], tuple[int, int]], n_seeds: int) -> Decision:
    """Args: failed: ``{(architecture, T): (Legendre failures, monomial failures)}``."""
    few = _too_few(n_seeds)
    if few:
        return few
    better = [k for k, (a, b) in failed.items() if a < b]
    worse = [k for k, (a, b) in failed.items() if a > b]
    reason = (f"Legendre fails less in {len(better)}, more in {len(worse)} of {len(failed)} "
              "cells")
    if not better and not worse:
        return Decision("inconclusive", reason + ": the failure counts do not differ")
    return _directional(better, worse, failed, reason)


def _directional(better, worse, cells, reason) -> Decision:
    archs = {k[0] for k in cells}
    t_max = max(k[1] for k in cells)
    top = all((a, t_max) in better for a in archs)
    if top and not worse:
        return Decision("reproduced", reason)
    if len(better) > len(worse):
        return Decision("partly", reason)
    return Decision("not reproduced", reason)


def _rough_margin(a: float, b: float, floor: float, sd: float) -> float:
    return max(floor, 0.2 * max(abs(a), abs(b)), sd)


@rule("smoother-curves", f"""
    Curve roughness, from the validation curves of runs that did not fail: per (architecture,
    T), Legendre is smoother if its mean spike count (epochs with a validation rise above 5%)
    is lower than the monomial one by more than the margin max({SPIKE_MARGIN:g}, 20% of the
    larger, the seed spread); if the spike counts are within that margin, by the mean tail
    jitter (std of the log-changes over the last 20% of epochs, in percent) with the margin
    max({JITTER_MARGIN:g} point, 20%, the seed spread); rougher in the opposite case; within
    both margins the cell is undecided, as is a cell where a basis has no run that did not
    fail. Inconclusive if fewer than {MIN_SEEDS} seeds ran or no cell is decided; reproduced if
    Legendre is smoother at the largest T for every architecture and rougher in no cell;
    partly if smoother in more cells than rougher; not reproduced otherwise.""")
def smoother_curves(cells: dict[tuple[str, float], dict], n_seeds: int) -> Decision:
    """Args: cells: ``{(architecture, T): {"spikes": (leg, mono), "jitter": (leg, mono)}}``,
    each entry a pair of per-seed lists (runs that did not fail only)."""
    few = _too_few(n_seeds)
    if few:
        return few
    better, worse = [], []
    for key, c in cells.items():
        (sl, sm), (jl, jm) = c["spikes"], c["jitter"]
        if not sl or not sm:
            continue
        a, b = seed_stats(sl)[0], seed_stats(sm)[0]
        if abs(a - b) > _rough_margin(a, b, SPIKE_MARGIN, spread(sl, sm)):
            (better if a < b else worse).append(key)
            continue
        jl = [v for v in jl if math.isfinite(v)]
        jm = [v for v in jm if math.isfinite(v)]
        if jl and jm:
            a, b = seed_stats(jl)[0], seed_stats(jm)[0]
            if abs(a - b) > _rough_margin(a, b, JITTER_MARGIN, spread(jl, jm)):
                (better if a < b else worse).append(key)
    reason = (f"Legendre smoother in {len(better)}, rougher in {len(worse)} of {len(cells)} "
              "cells")
    if not better and not worse:
        return Decision("inconclusive", reason + ": every difference is within its margin")
    return _directional(better, worse, cells, reason)


# ----------------------------------------------------------------------------- solver work

def _direction(ours: Sequence[float], other: Sequence[float], floor: float) -> str:
    """"lower", "higher" or "within" (difference of means inside the margin)."""
    a, b = seed_stats(ours)[0], seed_stats(other)[0]
    margin = max(spread(ours, other), floor * max(abs(a), abs(b)))
    if a < b - margin:
        return "lower"
    if a > b + margin:
        return "higher"
    return "within"


@rule("fewer-nfe", f"""
    Compare the Legendre and monomial means over seeds of (i) the total training NFE and
    (ii) the NFE of a forward solve over the test set; a difference counts only if it exceeds
    the margin max(seed spread, {100 * NFE_FLOOR:g}% of the larger mean). Inconclusive if fewer
    than {MIN_SEEDS} seeds ran, if either model did not learn (mean test error not below
    {LEARN_FRACTION:g} of the error of predicting the training mean), or if both differences
    lie within the margin; reproduced if Legendre is lower in both; partly if lower in one;
    not reproduced if lower in neither.""")
def fewer_nfe(train_nfe: tuple[Sequence[float], Sequence[float]],
              test_nfe: tuple[Sequence[float], Sequence[float]],
              n_seeds: int, both_learned: bool) -> Decision:
    """Args: train_nfe, test_nfe: ``(Legendre per-seed, monomial per-seed)``."""
    few = _too_few(n_seeds)
    if few:
        return few
    if not both_learned:
        return Decision("inconclusive", "a compared model did not learn")
    d = {"training": _direction(*train_nfe, NFE_FLOOR), "test": _direction(*test_nfe, NFE_FLOOR)}
    reason = f"Legendre vs monomial: training NFE {d['training']}, test NFE {d['test']}"
    lower = sum(v == "lower" for v in d.values())
    if lower == 0 and all(v == "within" for v in d.values()):
        return Decision("inconclusive", reason + " (within the margin)")
    if lower == 2:
        return Decision("reproduced", reason)
    return Decision("partly" if lower else "not reproduced", reason)


def _ratio_spread(ratios: Sequence[float]) -> float:
    s = seed_stats(ratios)[1]
    return s if math.isfinite(s) else 0.0


@rule("nfe-gap-unscaled", f"""
    R_u is the monomial / Legendre ratio of the total training NFE (basis at absolute time),
    summed over degrees and seeds; its spread is the population std of the per-seed ratios.
    Inconclusive if fewer than {MIN_SEEDS} seeds ran, if the Legendre model did not learn
    (mean test relative error not below {SPIRAL_LEARNED:g}), or if |R_u - 1| is within the
    spread; reproduced if R_u > 2 and the ratio exceeds 1 at every degree and for every seed;
    partly if R_u > 1; not reproduced otherwise.""")
def nfe_gap_unscaled(total_ratio: float, per_degree: Sequence[float],
                     per_seed: Sequence[float], legendre_learned: bool) -> Decision:
    """Args: total_ratio: R_u; per_degree: the ratio per degree; per_seed: per seed."""
    few = _too_few(len(per_seed))
    if few:
        return few
    if not legendre_learned:
        return Decision("inconclusive", "the Legendre model did not learn")
    sd = _ratio_spread(per_seed)
    reason = f"R_u = {total_ratio:.3g} (seed spread {sd:.2g})"
    if not _finite(total_ratio) or abs(total_ratio - 1.0) <= sd:
        return Decision("inconclusive", reason + ": within the spread of 1")
    if total_ratio > 2 and all(r > 1 for r in per_degree) and all(r > 1 for r in per_seed):
        return Decision("reproduced", reason)
    return Decision("partly" if total_ratio > 1 else "not reproduced", reason)


@rule("nfe-gap-from-time-scaling", f"""
    R_u and R_r are the monomial / Legendre ratios of the total training NFE with unscaled and
    rescaled time (summed over degrees and seeds); the spread is the larger population std of
    the per-seed ratios. Inconclusive if fewer than {MIN_SEEDS} seeds ran, if the Legendre
    model did not learn (mean test relative error not below {SPIRAL_LEARNED:g}), or if
    |R_r - R_u| is within the spread; reproduced if R_r < R_u / 2 (the gap at least halves);
    partly if R_r < R_u; not reproduced otherwise.""")
def nfe_gap_from_time_scaling(r_unscaled: float, r_rescaled: float,
                              per_seed_unscaled: Sequence[float],
                              per_seed_rescaled: Sequence[float],
                              legendre_learned: bool) -> Decision:
    few = _too_few(min(len(per_seed_unscaled), len(per_seed_rescaled)))
    if few:
        return few
    if not legendre_learned:
        return Decision("inconclusive", "the Legendre model did not learn")
    sd = max(_ratio_spread(per_seed_unscaled), _ratio_spread(per_seed_rescaled))
    reason = f"R_u = {r_unscaled:.3g}, R_r = {r_rescaled:.3g} (seed spread {sd:.2g})"
    if not _finite(r_unscaled, r_rescaled) or abs(r_rescaled - r_unscaled) <= sd:
        return Decision("inconclusive", reason + ": the difference is within the spread")
    if r_rescaled < r_unscaled / 2:
        return Decision("reproduced", reason)
    return Decision("partly" if r_rescaled < r_unscaled else "not reproduced", reason)
