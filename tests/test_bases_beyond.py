"""The beyond-the-paper experiment: its rules reach every verdict, its pieces against
independent references (hand-made work-precision curves, exact re-expression), and a tiny
end-to-end run whose record validates."""

import math

import numpy as np
import pytest
import torch

import ctdnn
from ctdnn.experiments import RULES, bases_beyond as bb, rules
from ctdnn.experiments.rules import Comparison


# --------------------------------------------------------------------- rules, every verdict

def test_well_conditioned_verdicts():
    good = {"monomial": (1e4, 1e8), "legendre": (3.7, 13), "chebyshev": (1.8, 8.7),
            "fourier": (1.5, 2.0), "hat": (1.8, 3.9)}
    assert bb.well_conditioned(good).verdict == "reproduced"
    assert bb.well_conditioned({**good, "hat": (100.0, 3.9)}).verdict == "partly"
    bad = {"legendre": (1.0, 1.0), "chebyshev": (50.0, 1.0), "fourier": (1.0, 11.0)}
    assert bb.well_conditioned(bad).verdict == "not reproduced"
    # monomials within the factor as well: the statement (monomials are the outlier) fails
    assert bb.well_conditioned({**good, "monomial": (5.0, 20.0)}).verdict == "partly"
    assert bb.well_conditioned({**good, "hat": (math.nan, 1.0)}).verdict == "inconclusive"
    assert bb.well_conditioned({"legendre": (1.0, 1.0)}).verdict == "inconclusive"


def _cells(pairs, ours_learned=True):
    return [Comparison(name, [1000.0, 1010.0], other, ours_learned, True)
            for name, other in pairs]


def test_no_basis_fewer_nfe_verdicts():
    f = bb.no_basis_fewer_nfe
    more = [("chebyshev", [1500.0, 1520.0]), ("hat", [1004.0, 1008.0]), ("none", [3000.0, 3100.0])]
    assert f(_cells(more), 2).verdict == "reproduced"          # higher or within: none cheaper
    one = more[:2] + [("none", [500.0, 510.0])]
    assert f(_cells(one), 2).verdict == "partly"               # 1 of 3 cheaper
    two = [("chebyshev", [500.0, 510.0]), ("hat", [600.0, 590.0]), ("none", [3000.0, 3100.0])]
    assert f(_cells(two), 2).verdict == "not reproduced"
    assert f(_cells(more), 1).verdict == "inconclusive"        # one seed
    assert f(_cells(more, ours_learned=False), 2).verdict == "inconclusive"
    unlearned = [Comparison("hat", [1000.0, 1000.0], [1.0, 1.0], True, False)]
    assert f(unlearned, 2).verdict == "inconclusive"
    with pytest.raises(ValueError, match="unique"):
        f(_cells([("hat", [1.0, 1.0]), ("hat", [2.0, 2.0])]), 2)


def test_ranking_across_solvers_verdicts():
    f = bb.ranking_across_solvers
    ref = {"legendre": 100.0, "monomial": 200.0, "hat": 400.0}
    same = {"dopri5": ref, "bosh3": {"legendre": 300.0, "monomial": 500.0, "hat": 900.0}}
    d = f(same)
    assert d.verdict == "reproduced" and "3 keep the order" in d.reason
    one_rev = {"dopri5": ref, "bosh3": {"legendre": 300.0, "monomial": 250.0, "hat": 900.0}}
    d = f(one_rev)
    assert d.verdict == "partly" and "1 under bosh3" in d.reason   # 2 keep, 1 reverses
    rev = {"dopri5": ref, "bosh3": {"legendre": 900.0, "monomial": 500.0, "hat": 100.0}}
    assert f(rev).verdict == "not reproduced"
    tie = {"dopri5": ref, "bosh3": {"legendre": 305.0, "monomial": 300.0, "hat": 900.0}}
    d = f(tie)   # legendre/monomial reversed by < 10%: a tie, not a reversal
    assert d.verdict == "reproduced" and "1 tie" in d.reason
    flat = {"dopri5": {"legendre": 100.0, "monomial": 105.0}, "bosh3": {"legendre": 1.0,
                                                                      "monomial": 9.0}}
    assert f(flat).verdict == "inconclusive"                   # nothing ordered under dopri5
    unreached = {"dopri5": ref, "bosh3": {b: math.nan for b in ref}}
    assert f(unreached).verdict == "inconclusive"
    assert f({"bosh3": ref}).verdict == "inconclusive"


def test_same_function_same_nfe_verdicts():
    f = bb.same_function_same_nfe
    assert f([(100, 100), (200, 203)]).verdict == "reproduced"
    assert f([(100, 100), (200, 260)]).verdict == "partly"
    assert f([(100, 100), (200, 260), (300, 400)]).verdict == "not reproduced"
    assert f([]).verdict == "inconclusive"
    assert f([(math.nan, 100)]).verdict == "inconclusive"


def test_rules_are_registered_with_their_text():
    for fn in (bb.well_conditioned, bb.no_basis_fewer_nfe, bb.ranking_across_solvers,
               bb.same_function_same_nfe):
        assert RULES[fn.rule_id] is fn and fn.text and fn.rule_id.startswith("beyond-")


# --------------------------------------------------------------------- pieces

def test_nfe_at_target_against_hand_computation():
    # log-log interpolation between (100, 1e-4) and (1000, 1e-6): the target 1e-5 lies halfway
    assert bb.nfe_at_target([100, 1000, 5000], [1e-4, 1e-6, 1e-8], 1e-5) == pytest.approx(
        math.sqrt(100 * 1000), rel=1e-12)
    # already below the target at the loosest tolerance: that NFE
    assert bb.nfe_at_target([80, 300], [1e-7, 1e-9], 1e-5) == 80
    assert math.isnan(bb.nfe_at_target([80, 300], [1e-3, 1e-4], 1e-5))
    # a failed or skipped solve (None, NaN) is not a point of the curve
    assert math.isnan(bb.nfe_at_target([80, None], [1e-3, math.nan], 1e-5))
    assert bb.nfe_at_target([80, 3000, None], [1e-3, 1e-6, math.nan], 1e-5) == pytest.approx(
        math.exp(math.log(80) + (2 / 3) * (math.log(3000) - math.log(80))), rel=1e-12)


@pytest.mark.parametrize("target", ["chebyshev", "monomial"])
def test_reexpress_keeps_the_weight_function(target):
    torch.manual_seed(0)
    src = ctdnn.NeuralODE(3, 2, width=4, hidden=6, basis="legendre", degree=4,
                          adjoint=False).double()
    with torch.no_grad():
        for p in src.time_parameters():
            p.normal_()
    dst = ctdnn.NeuralODE(3, 2, width=4, hidden=6, basis=target, degree=4,
                          adjoint=False).double()
    bb.reexpress(src, dst)
    t = torch.rand(50, dtype=torch.float64)
    for (K1, b1), (K2, b2) in zip(src.weights_at(t), dst.weights_at(t)):
        torch.testing.assert_close(K2, K1, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b2, b1, rtol=1e-10, atol=1e-10)
    x = torch.randn(7, 3, dtype=torch.float64)
    src.rtol = dst.rtol = 1e-10
    src.atol = dst.atol = 1e-12
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="same number of functions"):
        bb.reexpress(src, ctdnn.NeuralODE(3, 2, width=4, hidden=6, basis="chebyshev", degree=3))


def test_work_precision_against_an_exact_solution():
    # constant weights, tanh dynamics without hidden layer: compare with scipy's DOP853
    from scipy.integrate import solve_ivp

    torch.manual_seed(1)
    model = ctdnn.NeuralODE(2, 1, width=3, hidden=None, basis="legendre", degree=0,
                            adjoint=False).double()
    x = torch.randn(2, 2, dtype=torch.float64)
    ((K, b),) = model.weights_at(torch.zeros(()))
    K, b = K.detach().numpy(), b.detach().numpy()
    u0 = torch.tanh(model.opening(x)).detach().numpy()
    ref = np.stack([solve_ivp(lambda t, u: np.tanh(K @ u + b), (0, 1), u, method="DOP853",
                              rtol=1e-13, atol=1e-13).y[:, -1] for u in u0])
    solve = lambda m: bb._solve_features(m, x)
    wp = bb.work_precision(model, solve, ["dopri5", "bosh3"], [1e-3, 1e-6, 1e-9],
                           atol_factor=0.01, max_nfe=100000)
    u_ref, _ = solve(model)
    assert np.allclose(u_ref.detach().numpy(), ref, atol=1e-11)
    for method in ("dopri5", "bosh3"):
        r = wp[method]
        assert r["status"] == ["ok"] * 3 and r["nfe"] == sorted(r["nfe"])
        assert r["error"][-1] < 0.01 * r["error"][0] and r["error"][-1] < 1e-5
    assert (model.method, model.rtol) == ("dopri5", 1e-7)     # settings restored
    # a tight budget stops the solver and skips its tighter tolerances
    wp = bb.work_precision(model, solve, ["adaptive_heun"], [1e-3, 1e-9, 1e-10],
                           atol_factor=0.01, max_nfe=100)
    assert wp["adaptive_heun"]["status"][1:] == ["too_many_steps", "skipped"]
    assert wp["adaptive_heun"]["nfe"][1] == 100          # the budget, whatever the outputs
    # ... also for a solve with many output times (torchdiffeq's step budget is per interval)
    spiral = bb.build_spiral({"degree": 2, "spiral_rtol": 1e-6, "spiral_atol": 1e-8}, "hat")
    t = torch.linspace(0, 25, 40, dtype=torch.float64)
    y0 = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    wp = bb.work_precision(spiral, lambda m: bb._solve_spiral(m, y0, t), ["bosh3"], [1e-8],
                           atol_factor=0.01, max_nfe=300)
    assert wp["bosh3"]["status"] == ["too_many_steps"] and wp["bosh3"]["nfe"] == [300]
    assert spiral.dynamics._forward_pre_hooks == {}       # the guard is removed


def test_params_refuse_bad_settings():
    with pytest.raises(ValueError, match="unknown entries \\['rk4'\\] in solvers"):
        bb.Params(solvers=["rk4"])
    with pytest.raises(ValueError, match="must include 'legendre'"):
        bb.Params(bases=["monomial", "hat"])
    with pytest.raises(ValueError, match="unknown entries"):
        bb.Params(bases=["legendre", "bspline"])
    with pytest.raises(ValueError, match="tolerances"):
        bb.Params(tolerances=[1e-4, 2.0])
    assert bb.Params(tolerances=[1e-8, 1e-4]).tolerances == [1e-4, 1e-8]
    with pytest.raises(ValueError, match="wp_seeds must be between 1 and the number of seeds"):
        bb.Params(seeds=[0, 1], wp_seeds=3)
    assert bb.Params(seeds=[3, 4, 5], wp_seeds=2).wp_seed_list == [3, 4]


def test_conditioning_numbers():
    cond = bb.conditioning(bb.Params(cond_degrees=[3, 6]))
    assert set(cond) == {"monomial", "legendre", "chebyshev", "fourier", "hat"}
    assert cond["fourier"]["gram"] == pytest.approx([2.0, 2.0])
    assert cond["legendre"]["gram"] == pytest.approx([7.0, 13.0])
    assert cond["monomial"]["collocation"][1] > 1000 * cond["chebyshev"]["collocation"][1]


# --------------------------------------------------------------------- end to end (tiny)

def test_tiny_run_and_record(tmp_path, monkeypatch):
    from ctdnn.experiments import read_run, write_run

    p = bb.Params(datasets=["CDR"], bases=["legendre", "hat"], architectures=["resnet"],
                  seeds=[0, 1], epochs=1, node_iterations=1, spiral_iterations=1,
                  solvers=["dopri5", "bosh3"], tolerances=[1e-3, 1e-5], wp_samples=4,
                  wp_max_nfe=400, cond_degrees=[2, 6], spiral_times=6, n_points=200,
                  wp_seeds=2, device="cpu")
    res = bb.run(p)
    cl = bb.claims(res)
    ids = [c.id for c in cl]
    assert ids == ["beyond-conditioning", "beyond-dto-accuracy-CDR", "beyond-node-nfe-CDR",
                   "beyond-nfe-ranking-node-CDR", "beyond-nfe-ranking-spiral",
                   "beyond-same-function"]
    assert {c.verdict for c in cl} <= set(rules.VERDICTS)
    # one function, three representations: the same solver work
    same = next(c for c in cl if c.key == "beyond-same-function")
    assert same.verdict == "reproduced", same.reason
    rec = bb.record(res, run_name="10_beyond_bases", preset="test", claims_list=cl,
                    t_start=0.0)
    back = read_run(write_run(tmp_path, rec))
    assert back.notebook == "10_beyond_bases" and len(back.claims) == 6
    assert set(back.metrics["node"]["runs"]) == {"legendre", "hat"}
    assert [len(v) for v in res.wp("spiral").values()] == [2, 2]
    assert [len(v) for v in res.wp("node").values()] == [2, 2]
    assert res.control("node") and res.control("spiral")
    # the stored record decides the same findings again, without training
    again = bb.claims(bb.from_record(back))
    assert [(c.id, c.verdict, c.reason) for c in again] == \
        [(c.id, c.verdict, c.reason) for c in cl]
    note = bb.closing_note(res, cl, "test")
    assert "Which basis?" in note and "solver's?" in note
    for t in (bb.conditioning_table(res), bb.dto_table(res, "CDR"), bb.node_table(res),
              bb.target_table(res, "spiral"), bb.control_table(res)):
        assert str(t)


def test_confidence_levels():
    assert bb.confidence(1, ["reproduced"]) == "low"
    assert bb.confidence(2, ["reproduced", "inconclusive"]) == "low"
    assert bb.confidence(2, []) == "low"
    assert bb.confidence(2, ["partly", "not reproduced"]) == "moderate"
    assert bb.confidence(5, ["partly", "reproduced"]) == "high"


def test_beaten_cells():
    p = bb.Params(datasets=["CDR"], architectures=["resnet"], bases=["legendre", "hat", "fourier"],
                  seeds=[0, 1])
    errs = {"legendre": [0.10, 0.12], "hat": [0.05, 0.06], "fourier": [0.105, 0.10]}
    recs = [{"arch": "resnet", "spec": [5.0, b, 3, s], "test_rel_err": e}
            for b, v in errs.items() for s, e in enumerate(v)]
    res = bb.Results(p, {}, {"CDR": {"records": recs, "mean_pred_err": 1.0}}, {}, 1.0, {}, [], [])
    # hat: 0.055 < 0.11 - 0.01; fourier: 0.1025 is inside the spread of Legendre's 0.11
    assert bb.beaten(res) == {"hat": ["CDR ResNet"]}
    res.params = bb.Params(seeds=[0])   # one seed: no spread, nothing is judged
    assert bb.beaten(res) == {}
