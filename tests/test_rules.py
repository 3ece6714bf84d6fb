"""Every verdict rule reaches each of its four verdicts on constructed inputs."""

import math

import pytest

from ctdnn.experiments import rules as R
from ctdnn.experiments.rules import Comparison as C
from ctdnn.reporting import VERDICTS


def verdicts(*decisions):
    return [d.verdict for d in decisions]


def test_verdict_vocabulary_is_shared():
    assert R.VERDICTS == VERDICTS
    assert VERDICTS == ("reproduced", "partly", "not reproduced", "inconclusive")
    with pytest.raises(ValueError, match="verdict must be one of"):
        R.Decision("maybe", "")


def test_every_rule_has_text_once_and_is_registered():
    # the ten rules of the rules module; experiment modules register their own beside them
    assert sum(fn.__module__ == R.__name__ for fn in R.RULES.values()) == 10
    for rule_id, fn in R.RULES.items():
        assert fn.rule_id == rule_id
        assert len(fn.text) > 80 and "  " not in fn.text and "\n" not in fn.text
        assert "inconclusive" in fn.text.lower()


def test_seed_stats_and_spread():
    m, s = R.seed_stats([1.0, 3.0])
    assert (m, s) == (2.0, 1.0)   # population std
    assert R.seed_stats([1.0, math.inf])[0] == math.inf
    assert math.isnan(R.seed_stats([])[0])
    assert R.spread([1.0, 3.0], [5.0, 5.0]) == 1.0
    assert R.learned([0.1, 0.2], 1.0) and not R.learned([0.8, 0.9], 1.0)
    assert not R.learned([math.nan], 1.0)


def test_conditioning_gap():
    assert verdicts(
        R.conditioning_gap({"consistent": 50.0, "paper": 20.0}),
        R.conditioning_gap({"consistent": 50.0, "paper": 2.0}),
        R.conditioning_gap({"consistent": 5.0, "paper": 2.0}),
        R.conditioning_gap({"consistent": math.nan, "paper": 20.0}),
    ) == ["reproduced", "partly", "not reproduced", "inconclusive"]
    assert verdicts(R.conditioning_gap({})) == ["inconclusive"]


def test_conditioning_governs_fitting():
    assert verdicts(
        R.conditioning_governs_fitting({"a": 1e3, "b": 200.0}, True),
        R.conditioning_governs_fitting({"a": 1e3, "b": 200.0}, False),
        R.conditioning_governs_fitting({"a": 1e3, "b": 2.0}, True),
        R.conditioning_governs_fitting({"a": 3.0, "b": 2.0}, True),
        R.conditioning_governs_fitting({"a": math.inf}, True),
    ) == ["reproduced", "partly", "partly", "not reproduced", "inconclusive"]


def test_no_worse_in_cells():
    better = C("T=1", [0.10, 0.11], [0.20, 0.21])
    tie = C("T=5", [0.205, 0.215], [0.20, 0.21])      # worse by less than the spread
    worse = C("T=10", [0.40, 0.41], [0.20, 0.21])
    neither = [C(f"T={t}", [0.9, 0.9], [0.95, 0.95], ours_learned=False, other_learned=False)
               for t in (20, 30)]
    assert verdicts(
        R.no_worse_in_cells([better, tie], 2),
        R.no_worse_in_cells([better, tie, worse], 2),
        R.no_worse_in_cells([better, worse, C("T=20", [0.5, 0.5], [0.2, 0.2])], 2),
        R.no_worse_in_cells([better, tie], 1),
        R.no_worse_in_cells([better, *neither], 2),
    ) == ["reproduced", "partly", "not reproduced", "inconclusive", "inconclusive"]
    # One learned model against one that did not: compared by the numbers.
    only_ours = C("T=1", [0.1, 0.1], [0.9, 0.9], other_learned=False)
    assert R.no_worse_in_cells([only_ours], 2).verdict == "reproduced"
    with pytest.raises(ValueError, match="repeated"):
        R.no_worse_in_cells([better, better], 2)


def test_degree_trend_uses_its_own_text():
    cells = [C("ResNet", [0.1, 0.1], [0.1, 0.1]), C("Hamiltonian", [0.3, 0.3], [0.1, 0.1])]
    assert R.degree_trend(cells, 2).verdict == "partly"
    assert R.degree_trend(cells[:1], 2).verdict == "reproduced"
    assert R.degree_trend(cells[1:], 2).verdict == "not reproduced"
    assert R.degree_trend(cells, 1).verdict == "inconclusive"
    assert R.degree_trend.text != R.no_worse_in_cells.text


def test_comparable_accuracy():
    close = C("d=3 rescaled", [0.10, 0.12], [0.15, 0.16])
    far = C("d=3 unscaled", [0.10, 0.12], [0.45, 0.46])
    one_learned = C("d=4 unscaled", [0.1, 0.1], [1.3, math.inf], other_learned=False)
    neither = [C(f"d={d}", [0.9, 1.4], [0.56, math.inf], ours_learned=False,
                 other_learned=False) for d in (3, 4)]
    assert verdicts(
        R.comparable_accuracy([close], 2),
        R.comparable_accuracy([close, far], 2),
        R.comparable_accuracy([far, one_learned], 2),
        R.comparable_accuracy(neither, 2),
        R.comparable_accuracy([close], 1),
    ) == ["reproduced", "partly", "not reproduced", "inconclusive", "inconclusive"]


def test_fewer_failures():
    assert verdicts(
        R.fewer_failures({("resnet", 1.0): (0, 0), ("resnet", 10.0): (0, 2)}, 2),
        R.fewer_failures({("resnet", 1.0): (0, 1), ("resnet", 10.0): (0, 0)}, 2),
        R.fewer_failures({("resnet", 1.0): (1, 0), ("resnet", 10.0): (0, 0)}, 2),
        R.fewer_failures({("resnet", 1.0): (0, 0), ("resnet", 10.0): (0, 0)}, 2),
        R.fewer_failures({("resnet", 10.0): (0, 2)}, 1),
    ) == ["reproduced", "partly", "not reproduced", "inconclusive", "inconclusive"]
    # Fewer failures at the largest T for one architecture only, more nowhere: partly.
    two = {("resnet", 10.0): (0, 1), ("hamiltonian", 10.0): (0, 0)}
    assert R.fewer_failures(two, 2).verdict == "partly"


def _rough(spikes, jitter=((1.0, 1.0), (1.0, 1.0))):
    return {"spikes": spikes, "jitter": jitter}


def test_smoother_curves():
    smooth = _rough(([1.0, 1.0], [10.0, 12.0]))           # Legendre far fewer spikes
    rough = _rough(([186.0, 180.0], [1.5, 1.0]))          # the DCR case: Legendre rougher
    noise = _rough(([2.0, 2.0], [2.5, 2.0]))              # within max(1, 20%)
    by_jitter = _rough(([2.0, 2.0], [2.0, 2.0]), (([1.0, 1.2], [6.0, 5.0])))
    empty = _rough(([], [3.0]))                           # every Legendre run failed
    assert verdicts(
        R.smoother_curves({("resnet", 1.0): noise, ("resnet", 10.0): smooth}, 2),
        R.smoother_curves({("resnet", 1.0): by_jitter, ("resnet", 10.0): noise}, 2),
        R.smoother_curves({("resnet", 1.0): noise, ("resnet", 10.0): rough}, 2),
        R.smoother_curves({("resnet", 1.0): noise, ("resnet", 10.0): empty}, 2),
        R.smoother_curves({("resnet", 10.0): smooth}, 1),
    ) == ["reproduced", "partly", "not reproduced", "inconclusive", "inconclusive"]


def test_smoother_curves_margin_includes_seed_spread():
    # Means 5 vs 12 differ by 7 > max(1, 20% of 12) but the seeds spread by 8: noise.
    wide = _rough(([1.0, 9.0], [4.0, 20.0]))
    assert R.smoother_curves({("resnet", 10.0): wide}, 2).verdict == "inconclusive"


def test_fewer_nfe():
    low = ([1.0e4, 1.02e4], [2.0e4, 2.1e4])
    high = ([2.0e4, 2.1e4], [1.0e4, 1.02e4])
    elm = ([1.30e4 - 165, 1.30e4 + 165], [1.34e4 - 1220, 1.34e4 + 1220])   # the case
    assert verdicts(
        R.fewer_nfe(low, low, 2, True),
        R.fewer_nfe(low, elm, 2, True),
        R.fewer_nfe(high, elm, 2, True),
        R.fewer_nfe(elm, elm, 2, True),
        R.fewer_nfe(low, low, 1, True),
        R.fewer_nfe(low, low, 2, False),
    ) == ["reproduced", "partly", "not reproduced", "inconclusive", "inconclusive",
          "inconclusive"]
    # Identical seeds still leave the 2% floor: 1.0e4 vs 1.01e4 is noise.
    tight = ([1.0e4, 1.0e4], [1.01e4, 1.01e4])
    assert R.fewer_nfe(tight, tight, 2, True).verdict == "inconclusive"


def test_nfe_gap_unscaled():
    assert verdicts(
        R.nfe_gap_unscaled(5.0, [5.0], [4.0, 6.0], True),
        R.nfe_gap_unscaled(1.5, [1.5], [1.4, 1.6], True),
        R.nfe_gap_unscaled(0.5, [0.5], [0.45, 0.55], True),
        R.nfe_gap_unscaled(1.1, [1.1], [0.8, 1.4], True),      # within the spread of 1
        R.nfe_gap_unscaled(5.0, [5.0], [5.0], True),            # one seed
        R.nfe_gap_unscaled(5.0, [5.0], [4.0, 6.0], False),      # Legendre did not learn
    ) == ["reproduced", "partly", "not reproduced", "inconclusive", "inconclusive",
          "inconclusive"]
    # A seed whose ratio is below 1 keeps a large total from "reproduced".
    assert R.nfe_gap_unscaled(3.0, [3.0], [0.95, 3.5, 3.6], True).verdict == "partly"


def test_nfe_gap_from_time_scaling():
    assert verdicts(
        R.nfe_gap_from_time_scaling(8.0, 1.2, [7.5, 8.5], [1.1, 1.3], True),
        R.nfe_gap_from_time_scaling(8.0, 6.0, [7.9, 8.1], [5.9, 6.1], True),
        R.nfe_gap_from_time_scaling(2.0, 4.0, [1.9, 2.1], [3.9, 4.1], True),
        R.nfe_gap_from_time_scaling(2.0, 2.2, [1.0, 3.0], [2.1, 2.3], True),
        R.nfe_gap_from_time_scaling(8.0, 1.2, [8.0], [1.2], True),
        R.nfe_gap_from_time_scaling(8.0, 1.2, [7.5, 8.5], [1.1, 1.3], False),
    ) == ["reproduced", "partly", "not reproduced", "inconclusive", "inconclusive",
          "inconclusive"]
