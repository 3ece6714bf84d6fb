"""The experiment layer: results schema, verdict listing, shared helpers, plots, one run."""

import json
import math

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ctdnn.experiments import (Claim, DataSource, RunResults, SchemaError, make_claim,  # noqa: E402
                               read_run, read_runs, rules, write_run)
from ctdnn.experiments import verdicts  # noqa: E402
from ctdnn.experiments.common import Table, pm, stability, thinned, without_paths  # noqa: E402
from ctdnn.experiments.plots import log_ticks, seed_curves, tidy_log_axis  # noqa: E402


def _claim(dataset="ELM", verdict="reproduced"):
    return make_claim("dto-legendre-vs-monomial", dataset, "statement", "not given", "ours",
                      rules.no_worse_in_cells, rules.Decision(verdict, "why"))


def _run(claims=(), run="02_dto_surrogates_ELM"):
    return RunResults(run=run, notebook="02_dto_surrogates", title="DTO surrogates: ELM",
                      preset="smoke", data=(DataSource("ELM", "paper", "paper file x", 10,
                                                       filename="x", sha256="ab"),),
                      parameters={"epochs": 1}, metrics={"err": math.inf, "a": [1, 2]},
                      claims=tuple(claims), wall_time_s=1.5, environment={})


def test_claim_id_key_and_rule_text_come_from_the_rule():
    c = _claim()
    assert (c.id, c.key, c.dataset) == ("dto-legendre-vs-monomial-ELM",
                                        "dto-legendre-vs-monomial", "ELM")
    assert c.rule == rules.no_worse_in_cells.text and c.rule_id == "no-worse"
    assert rules.RULES[c.rule_id].text == c.rule
    assert _claim(dataset="spiral").id == "dto-legendre-vs-monomial"   # not a data-set suffix


def test_schema_rejects_bad_records():
    with pytest.raises(SchemaError, match="verdict must be one of"):
        Claim("a", "a", "", "", "", "", "maybe", "", "", "")
    with pytest.raises(SchemaError, match="source must be"):
        DataSource("ELM", "file", "")
    with pytest.raises(SchemaError, match="repeat"):
        _run([_claim(), _claim()])
    with pytest.raises(SchemaError, match="metrics must be a dict"):
        RunResults(run="r", notebook="n", title="t", preset="p", data=(), parameters={},
                   metrics=[], claims=(), wall_time_s=0.0, environment={})
    with pytest.raises(SchemaError, match="needs a RunResults"):
        write_run("/nonexistent", {"run": "x"})


def test_write_and_read_back_round_trip(tmp_path):
    rec = _run([_claim(), _claim("CDR", "inconclusive")])
    path = write_run(tmp_path, rec)
    assert path.name == "02_dto_surrogates_ELM.json"
    back = read_run(path)
    assert back.claims == rec.claims and back.data == rec.data
    assert back.metrics["err"] == "inf"          # non-finite floats stored as text
    assert isinstance(back.wall_time_s, float) and back.schema == 2
    (tmp_path / "06_summary.json").write_text(json.dumps({"run": "06_summary"}))
    assert [r.run for r in read_runs(tmp_path)] == ["02_dto_surrogates_ELM"]
    (tmp_path / "03_bad.json").write_text("[1, 2]")
    with pytest.raises(SchemaError, match="03_bad.json"):
        read_runs(tmp_path)


LEGACY = {"run": "04_neural_ode_surrogates_CDR", "notebook": "04_neural_ode_surrogates",
          "title": "Neural-ODE surrogates (CDR)", "preset": "quick",
          "data": {"dataset": "CDR", "source": "paper", "filename": "CDR_Data.mat",
                   "sha256": "1a19f4f6", "n_samples": 800},
          "parameters": {}, "metrics": {}, "wall_time_s": 3.0, "environment": {},
          "claims": [{"id": "node-nfe-legendre-vs-monomial-CDR", "claim": "fewer NFE",
                      "paper": "Table 5", "ours": "1 vs 2", "verdict": "reproduced",
                      "rule": "lower in both"}]}
LEGACY_DATA = {"run": "00_data", "notebook": "00_data", "title": "The data", "preset": "quick",
               "data": {"requested_source": "auto",
                        "ELM": {"source": "paper", "filename": "NNERDS.mat", "sha256": "e0"},
                        "DCR": {"source": "simulated", "function": "simulate_dcr",
                                "n_samples": 2000}},
               "parameters": {}, "metrics": {}, "claims": [], "wall_time_s": None,
               "environment": {}}


def test_earlier_layout_is_converted(tmp_path):
    (tmp_path / "04.json").write_text(json.dumps(LEGACY))
    (tmp_path / "00.json").write_text(json.dumps(LEGACY_DATA))
    runs = {r.run: r for r in read_runs(tmp_path)}
    node = runs["04_neural_ode_surrogates_CDR"]
    assert node.schema == 1
    (c,) = node.claims
    assert (c.key, c.dataset, c.verdict, c.statement) == (
        "node-nfe-legendre-vs-monomial", "CDR", "reproduced", "fewer NFE")
    assert node.data[0].name == "CDR" and node.data[0].source == "paper"
    data = runs["00_data"]
    assert [(d.name, d.source, d.n_samples) for d in data.data] == [
        ("ELM", "paper", 0), ("DCR", "simulated", 2000)]
    assert math.isnan(data.wall_time_s)


def test_verdicts_lists_and_compares(tmp_path, capsys):
    before, after = tmp_path / "before", tmp_path / "after"
    before.mkdir()
    (before / "04.json").write_text(json.dumps(LEGACY))
    new = _run([make_claim("node-nfe-legendre-vs-monomial", "CDR", "s", "p", "o",
                           rules.fewer_nfe, rules.Decision("inconclusive", "within"))],
               run="04_neural_ode_surrogates_CDR")
    write_run(after, new)
    assert verdicts.main([str(before)]) == 0
    out = capsys.readouterr().out
    assert "node-nfe-legendre-vs-monomial-CDR  CDR     reproduced" in out
    assert verdicts.main([str(before), str(after)]) == 0
    out = capsys.readouterr().out
    assert "reproduced       inconclusive     *" in out and "1 changed" in out
    assert verdicts.main([str(tmp_path / "missing-folder")]) == 0   # no files: empty table
    (after / "bad.json").write_text("3")
    assert verdicts.main([str(after)]) == 2


def test_without_paths_keeps_urls():
    text = "file /home/u/.cache/ctdnn/x.mat not found; see https://zenodo.org/records/1/files"
    assert without_paths(text) == ("file <local path> not found; see "
                                   "https://zenodo.org/records/1/files")


def test_stability_against_hand_counts():
    v = [1.0, 0.9, 1.0, 0.8, 0.85, 0.7]
    s = stability(v, spike_rise=0.05, tail_fraction=0.2)
    assert s["spikes"] == 2                         # 0.9 -> 1.0 and 0.8 -> 0.85
    tail = np.diff(np.log([0.8, 0.85, 0.7]))
    assert s["tail_jitter"] == pytest.approx(100 * tail.std())
    assert math.isnan(stability([1.0, 0.5])["tail_jitter"])


def test_thinned_pm_and_table():
    h = {"epoch": list(range(1000)), "loss": [float(i) for i in range(1000)], "note": "x"}
    t = thinned(h, 50)
    assert len(t["epoch"]) == 50 and t["epoch"][0] == 0 and t["epoch"][-1] == 999
    assert t["note"] == "x" and t["loss"] == [float(e) for e in t["epoch"]]
    assert pm([1.0, 3.0]) == "2 ± 1" and pm([2.0]) == "2" and pm([]) == "n/a"
    assert pm([1.0, math.inf]) == "inf"
    tab = Table(["a", "b"], [[1, "x<y"]], caption="cap")
    assert "<td>x&lt;y</td>" in tab._repr_html_() and "<caption>cap</caption>" in tab._repr_html_()
    assert str(tab).splitlines() == ["cap", "a  b", "1  x<y"]
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        Table(["a", "b"], [[1]])


@pytest.mark.parametrize("lo,hi", [(0.031, 0.045), (0.2, 0.9), (1e-3, 1.0), (0.0312, 0.0318),
                                   (3.1e4, 3.3e4)])
def test_log_ticks_lie_inside_the_range(lo, hi):
    ticks = log_ticks(lo, hi)
    assert len(ticks) >= 2 and all(lo <= t <= hi for t in ticks)


def test_log_ticks_label_inside_a_decade_and_use_decades_for_wide_ranges():
    assert log_ticks(0.12, 3.8) == pytest.approx([0.2, 0.5, 1.0, 2.0])
    assert log_ticks(1e-3, 1.0) == pytest.approx([1e-3, 1e-2, 0.1, 1.0])
    assert log_ticks(0.031, 0.045) == pytest.approx([0.035, 0.04])   # evenly in log


def test_tidy_log_axis_labels_ticks_where_the_data_lie():
    fig, ax = plt.subplots()
    ax.semilogy([0, 1, 2], [0.031, 0.04, 0.045])
    tidy_log_axis(ax)
    fig.canvas.draw()
    lo, hi = ax.get_ylim()
    labels = [t.get_text() for t in ax.get_yticklabels() if lo <= t.get_position()[1] <= hi]
    assert len([s for s in labels if s]) >= 2
    plt.close(fig)
    with pytest.raises(ValueError, match="0 < lo < hi"):
        log_ticks(0.0, 1.0)


def test_seed_curves_draw_a_median_and_band_for_several_seeds():
    fig, ax = plt.subplots()
    x = np.arange(5)
    curves = np.array([[1, 2, 3, 4, 5], [2, 3, 4, 5, 6], [3, 4, 5, 6, 7.0]])
    line = seed_curves(ax, x, curves, color="k", label="L")
    assert np.allclose(line.get_ydata(), curves[1]) and "median of 3 seeds" in line.get_label()
    assert len(ax.collections) == 1 and len(ax.lines) == 1
    seed_curves(ax, x, curves[:1], color="r", label="one")
    assert len(ax.lines) == 2 and len(ax.collections) == 1
    plt.close(fig)


def test_dto_run_end_to_end(paper_data_dir, tmp_path):
    from ctdnn.experiments import dto

    p = dto.Params(dataset="ELM", architectures=["resnet"], T_values=[1.0, 5.0], epochs=1,
                   seeds=[0, 1], device="cpu", optimizers=["adam"])
    res = dto.run(p)
    assert set(res.runs["resnet"]) == {(T, b) for T in (1.0, 5.0) for b in p.bases}
    assert all(len(v) == 2 for v in res.runs["resnet"].values())
    cl = dto.claims(res)
    assert [c.key for c in cl] == ["dto-legendre-vs-monomial", "dto-legendre-vs-none",
                                   "dto-failures-legendre-vs-monomial",
                                   "dto-roughness-legendre-vs-monomial"]
    assert all(c.verdict in rules.VERDICTS and c.dataset == "ELM" for c in cl)
    # One epoch has no curve to judge: the roughness rule cannot decide.
    assert cl[-1].verdict == "inconclusive"
    rec = dto.record(res, run_name="02_dto_surrogates_ELM", preset="test", claims_list=cl,
                     t_start=0.0)
    back = read_run(write_run(tmp_path, rec))
    assert back.claims == tuple(cl) and back.data[0].source == "paper"
    assert len(back.metrics["cells"]) == 6
    with pytest.raises(ValueError, match="unknown entries"):
        dto.Params(bases=["chebyshev"])


def test_dto_run_with_both_optimizers(paper_data_dir, tmp_path):
    from ctdnn.experiments import dto

    p = dto.Params(dataset="ELM", architectures=["resnet"], T_values=[1.0, 5.0], epochs=2,
                   seeds=[0, 1], device="cpu", gnvpro_work_units=5)
    res = dto.run(p)
    assert res.ran() == ["adam", "gnvpro"]
    for recs in res.gnvpro_runs["resnet"].values():
        assert len(recs) == 2
        for r in recs:
            wu = r["history"]["work_units"]
            assert wu[0] == 2 and wu == sorted(wu) and r["work_units"] == wu[-1] >= 5
            assert r["status"] == "completed" and r["seconds"] > 0
    for opt in ("adam", "gnvpro"):
        assert len(dto.error_table(res, opt).rows) == 2
        assert len(dto.stability_table(res, opt).rows) == 2
    cl = dto.claims(res)
    keys = ["dto-legendre-vs-monomial", "dto-legendre-vs-none",
            "dto-failures-legendre-vs-monomial", "dto-roughness-legendre-vs-monomial"]
    assert [c.key for c in cl] == keys + [k + "-gnvpro" for k in keys]
    assert cl[4].id == "dto-legendre-vs-monomial-gnvpro-ELM" and "GNvpro" in cl[4].statement
    assert all(c.verdict in rules.VERDICTS for c in cl)
    # Equal work: Adam's 2 epochs are 2 * 2 + 1 (warm start) = 5 work units; GNvpro's first
    # iteration alone costs more, so every cell compares against Adam's whole run.
    rows = dto.equal_work_rows(res)
    assert len(rows) == 6 and all(r["adam_work_units"] == [5.0, 5.0] and r["adam_short"]
                                  for r in rows)
    table = dto.equal_work_table(res)
    assert len(table.rows) == 6 and table.header[3] == "GNvpro work units"
    for fig in (dto.curves_figure(res, "resnet", "t", "gnvpro"),
                dto.equal_work_figure(res, "resnet", "t"), dto.error_figure(res, "t", "gnvpro")):
        plt.close(fig)
    rec = dto.record(res, run_name="02_dto_surrogates_ELM", preset="test", claims_list=cl,
                     t_start=0.0)
    back = read_run(write_run(tmp_path, rec))
    assert back.claims == tuple(cl)
    m = back.metrics
    assert m["optimizers"] == ["adam", "gnvpro"] and len(m["cells"]) == 6
    assert m["gnvpro"]["protocol"]["max_work_units"] == 5 and len(m["gnvpro"]["cells"]) == 6
    assert len(m["equal_work"]["rows"]) == 6 and m["equal_work"]["adam_work_units_per_epoch"] == 2
    from ctdnn.experiments.rejudge import _clean

    again = dto.claims(dto.from_metrics(p, res.ds, res.mean_pred_err, _clean(m)))
    assert [(c.id, c.verdict) for c in again] == [(c.id, c.verdict) for c in cl]
    # GNvpro alone: no Adam claims, no comparison.
    only = dto.run(dto.Params(dataset="ELM", architectures=["resnet"], T_values=[1.0],
                              bases=["legendre", "monomial"], device="cpu",
                              optimizers=["gnvpro"], gnvpro_work_units=3))
    assert only.ran() == ["gnvpro"] and not only.runs
    assert all(c.key.endswith("-gnvpro") for c in dto.claims(only))
    assert "equal_work" not in dto.metrics(only) and dto.metrics(only)["cells"] == []
    with pytest.raises(ValueError, match="optimizers"):
        dto.Params(optimizers=["sgd"])
    with pytest.raises(ValueError, match="gnvpro_work_units"):
        dto.Params(gnvpro_work_units=0)


def test_dto_equal_work_counts_adam_epochs_as_two_work_units():
    from types import SimpleNamespace

    from ctdnn.experiments import dto

    p = dto.Params(architectures=["resnet"], T_values=[1.0], bases=["legendre"], seeds=[0])

    def adam(wall):
        return {"history": {"epoch": [1, 2, 3], "val_rel_err": [0.5, 0.3, 0.4],
                            "wall_time": wall}}

    def gn(units):
        return {"work_units": units, "best_val_rel_err": 0.2, "seconds": 0.7}

    for units, adam_err, adam_wu, seconds, short in ((5, 0.3, 5.0, 2.0, False),
                                                     (4, 0.5, 3.0, 1.0, False),
                                                     (9, 0.3, 7.0, 3.0, True),
                                                     (2, math.nan, math.nan, math.nan, False)):
        res = dto.Results(p, SimpleNamespace(name="ELM"), [], 1.0, {},
                          {"resnet": {(1.0, "legendre"): [adam([1.0, 2.0, 3.0])]}}, {},
                          gnvpro_runs={"resnet": {(1.0, "legendre"): [gn(units)]}})
        (row,) = dto.equal_work_rows(res)
        # epochs 1, 2, 3 cost 3, 5, 7 work units (2 per epoch after the 1 of the warm start)
        np.testing.assert_equal([row["adam_best_val_rel_err"][0], row["adam_work_units"][0],
                                 row["adam_seconds"][0]], [adam_err, adam_wu, seconds])
        assert row["adam_short"] is short and row["gnvpro_work_units"] == [float(units)]


def test_schema_checks_the_optimizer_axis_of_the_metrics():
    good = {"optimizers": ["adam", "gnvpro"],
            "gnvpro": {"protocol": {"max_work_units": 150},
                       "cells": [{"architecture": "resnet", "T": 1.0, "basis": "legendre",
                                  "runs": []}]},
            "equal_work": {"rows": []}}
    base = dict(run="r", notebook="n", title="t", preset="p", data=(), parameters={},
                claims=(), wall_time_s=0.0, environment={})
    RunResults(metrics=good, **base)
    for bad, match in (({**good, "optimizers": ["sgd"]}, "optimizers"),
                       ({**good, "gnvpro": {"cells": []}}, r"\['gnvpro'\] must be"),
                       ({**good, "gnvpro": {"protocol": {"max_work_units": 1.5}, "cells": []}},
                        "max_work_units"),
                       ({**good, "gnvpro": {"protocol": {"max_work_units": 1},
                                            "cells": [{"T": 1}]}}, "every cell"),
                       ({**good, "equal_work": []}, "equal_work")):
        with pytest.raises(SchemaError, match=match):
            RunResults(metrics=bad, **base)


def _spiral_run(seed, status="completed", train_nfe=100, test_err=0.2):
    return {"seed": seed, "status": status, "train_nfe": train_nfe, "test_nfe": 20,
            "test_rel_err": test_err, "rollout_status": {"test": "ok"}}


def test_rejudge_decides_stored_numbers_with_the_current_rules(tmp_path, capsys):
    """A stored stationary-ODE file of the earlier layout (runs keyed by basis and scaling,
    no loss history) is decided by today's headline rule."""
    models = {
        "legendre_d3_rescaled": ("legendre", "rescaled", [_spiral_run(0, train_nfe=100),
                                                          _spiral_run(1, train_nfe=110)]),
        "monomial_d3_rescaled": ("monomial", "rescaled", [_spiral_run(0, train_nfe=850),
                                                          _spiral_run(1, train_nfe=900)]),
    }
    legacy = {"run": "05_stationary_ode_nfe", "notebook": "05_stationary_ode_nfe",
              "title": "Stationary ODE", "preset": "quick", "data": {"source": "simulated"},
              "parameters": {"degrees": [3], "seeds": [0, 1], "include_baseline": False,
                             "time_scalings": ["rescaled"], "optimizer": "rmsprop",
                             "iterations": 30},
              "metrics": {"models": {k: {"basis": b, "degree": 3, "time_scaling": sc,
                                         "runs": runs} for k, (b, sc, runs) in models.items()}},
              "claims": [{"id": "stationary-nfe-headline", "claim": "c",
                          "paper": "p", "ours": "o", "verdict": "inconclusive", "rule": "r"}],
              "wall_time_s": 1.0, "environment": {}}
    (tmp_path / "05.json").write_text(json.dumps(legacy))
    from ctdnn.experiments.rejudge import rejudge

    claims = {c.key: c for c in rejudge(tmp_path)["05_stationary_ode_nfe"]}
    # R = 1750 / 210 = 8.3 in the band; 30 iterations: totals not comparable -> partly
    assert claims["stationary-nfe-headline"].verdict == "partly"
    assert claims["stationary-test-accuracy-legendre-vs-monomial"].verdict == "reproduced"
    assert verdicts.main(["--rejudge", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "* stationary-nfe-headline" in out and "inconclusive    -> partly" in out
    # The same runs where no model learned: every claim is inconclusive.
    for _, _, runs in models.values():
        for r in runs:
            r["test_rel_err"] = 1.2
    (tmp_path / "05.json").write_text(json.dumps(legacy))
    assert {c.verdict for c in rejudge(tmp_path)["05_stationary_ode_nfe"]} == {"inconclusive"}


def test_conditioning_run_and_claims_on_a_small_grid():
    from ctdnn.experiments import conditioning

    p = conditioning.Params(max_degree=6, horizons=[1.0, 10.0], fit_iterations=50,
                            high_precision_digits=30)
    res = conditioning.run(p)
    assert res.checks["numpy_deviation"] < 1e-12 and res.checks["gradient_vs_autograd"] < 1e-12
    # Legendre Gram matrix: kappa = 2d + 1 exactly, for every T.
    assert res.gram_ref["Legendre", 10.0].tolist() == [2.0 * d + 1 for d in p.degrees]
    cl = conditioning.claims(res)
    assert [(c.key, c.verdict) for c in cl] == [("bases-conditioning", "reproduced"),
                                                ("conditioning-governs-fitting", "reproduced")]
    with pytest.raises(ValueError, match="weight times"):
        conditioning.Params(max_degree=12, n_steps=12)


def test_stationary_run_without_learning_is_inconclusive():
    from ctdnn.experiments import stationary

    p = stationary.Params(seeds=[0, 1], iterations=2, eval_every=1, device="cpu",
                          time_scalings=["rescaled"], degree_semantics=["degree"],
                          include_baseline=False, eval_max_nfe=5000)
    res = stationary.run(p)
    assert set(res.runs) == set(p.models) and all(len(v) == 2 for v in res.runs.values())
    assert not any(res.learned(m) for m in res.runs)       # two iterations learn nothing
    assert {c.verdict for c in stationary.claims(res)} == {"inconclusive"}
    r = res.ratios[("rescaled", "degree")]
    assert r["per_seed"][0] > 0 and r["ratio"] == pytest.approx(
        r["total"]["monomial"] / r["total"]["legendre"])
    with pytest.raises(ValueError, match="time_scalings"):
        stationary.Params(time_scalings=["relative"])