"""The stand-ins comparison: statistics against numpy/scipy references, the verdict-agreement
logic, and the summary's agreement column."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats

from ctdnn import book
from ctdnn.experiments import standins as st
from ctdnn.experiments.schema import Claim, DataSource, RunResults


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# ----------------------------------------------------------------------------- statistics

def test_marginal_stats_match_scipy(rng):
    a = np.column_stack([rng.gamma(2.0, size=500), rng.normal(size=500), rng.uniform(size=500),
                         np.full(500, 3.0)])
    m = st.marginal_stats(a)
    np.testing.assert_allclose(m["mean"], a.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(m["std"], a.std(axis=0, ddof=0), rtol=1e-13)
    np.testing.assert_allclose(m["skewness"][:3], scipy.stats.skew(a[:, :3], bias=True),
                               rtol=1e-10)
    np.testing.assert_allclose(m["excess_kurtosis"][:3],
                               scipy.stats.kurtosis(a[:, :3], fisher=True, bias=True), rtol=1e-10)
    assert m["skewness"][3] == 0.0 and m["excess_kurtosis"][3] == 0.0   # constant feature


def test_mean_abs_correlation_matches_pairwise_pearson(rng):
    z = rng.normal(size=(300, 4))
    a = np.column_stack([z[:, 0], z[:, 0] + 0.5 * z[:, 1], -z[:, 2], z[:, 3], np.ones(300)])
    pairs = [abs(scipy.stats.pearsonr(a[:, i], a[:, j])[0])
             for i in range(4) for j in range(i + 1, 4)]
    assert st.mean_abs_correlation(a) == pytest.approx(np.mean(pairs), rel=1e-12)
    assert math.isnan(st.mean_abs_correlation(np.column_stack([z[:, 0], np.ones(300)])))


def test_exact_zero_fraction_counts():
    a = np.array([[0.0, 1.0], [2.0, 3.0], [0.0, 0.0], [1e-300, 5.0]])
    assert st.exact_zero_fraction(a) == {"entries": 3 / 8, "samples": 2 / 4}


def test_norm_range_against_explicit_quantiles(rng):
    y = rng.lognormal(size=(400, 3))
    n = np.sqrt((y ** 2).sum(axis=1))
    out = st.norm_range(y)
    assert out["ratio"] == pytest.approx(np.quantile(n, 0.99) / np.quantile(n, 0.01), rel=1e-12)
    assert out["small"] == pytest.approx(np.mean(n < 0.1 * np.median(n)))
    y0 = np.vstack([np.zeros((10, 3)), y])
    assert st.norm_range(y0)["ratio"] == math.inf
    with pytest.raises(ValueError, match="low < high"):
        st.norm_range(y, low=0.5, high=0.5)


def test_pca_components_against_covariance_eigenvalues(rng):
    basis = rng.normal(size=(3, 8))
    a = rng.normal(size=(200, 3)) * np.array([10.0, 3.0, 1.0]) @ basis
    a += 1e-6 * rng.normal(size=a.shape)
    ev = np.sort(np.linalg.eigvalsh(np.cov(a, rowvar=False)))[::-1]
    share = np.cumsum(ev) / ev.sum()
    for frac in (0.5, 0.9, 0.99, 0.999999):
        assert st.pca_components(a, frac) == int(np.argmax(share >= frac * (1 - 1e-12)) + 1)
    assert st.pca_components(np.ones((5, 3))) == 0
    with pytest.raises(ValueError, match="fraction"):
        st.pca_components(a, 0.0)


def test_ks_distance_matches_scipy(rng):
    a, b = rng.normal(size=300), rng.normal(0.3, 1.2, size=450)
    assert st.ks_distance(a, b) == pytest.approx(scipy.stats.ks_2samp(a, b).statistic, abs=1e-15)
    # ties and a 2-D argument (flattened)
    c, d = rng.integers(0, 5, size=(40, 3)), rng.integers(0, 6, size=90)
    assert st.ks_distance(c, d) == pytest.approx(scipy.stats.ks_2samp(c.ravel(), d).statistic)
    assert st.ks_distance(a, a) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        st.ks_distance([], a)


def test_relative_error_against_loop(rng):
    y, p = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    ref = np.mean([np.linalg.norm(p[i] - y[i]) / np.linalg.norm(y[i]) for i in range(50)])
    assert st.relative_error(p, y) == pytest.approx(ref, rel=1e-13)
    with pytest.raises(ValueError, match="one shape"):
        st.relative_error(p[:, :3], y)


def test_linear_least_squares_error(rng):
    x = rng.normal(size=(120, 5))
    w, b = rng.normal(size=(5, 3)), rng.normal(size=3) + 5.0
    y = x @ w + b
    assert st.linear_least_squares_error(x[:80], y[:80], x[80:], y[80:]) < 1e-12
    # noisy data: the same number as scipy's least-squares solution
    yn = y + rng.normal(size=y.shape)
    a = np.column_stack([x[:80], np.ones(80)])
    coef = scipy.linalg.lstsq(a, yn[:80])[0]
    pred = np.column_stack([x[80:], np.ones(40)]) @ coef
    ref = np.mean(np.linalg.norm(pred - yn[80:], axis=1) / np.linalg.norm(yn[80:], axis=1))
    assert st.linear_least_squares_error(x[:80], yn[:80], x[80:], yn[80:]) == pytest.approx(
        ref, rel=1e-9)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="non-finite"):
        st.marginal_stats(np.array([[1.0, np.nan], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="at least two"):
        st.mean_abs_correlation(np.ones((1, 3)))


# ----------------------------------------------------------------------------- verdicts

def test_agreement_pairs_verdicts_by_claim():
    rows = st.agreement({"paper": {"a": "reproduced", "b": "partly", "c": "inconclusive"},
                         "simulated": {"a": "reproduced", "b": "reproduced",
                                       "c": "inconclusive", "d": "partly"}})
    by = {r["key"]: r for r in rows}
    assert [r["key"] for r in rows] == ["a", "b", "c", "d"]
    assert by["a"]["agrees"] is True and by["b"]["agrees"] is False
    assert by["c"]["agrees"] is True and by["d"]["agrees"] is None and by["d"]["paper"] is None
    s = st.agreement_summary(rows)
    assert s == {"compared": 3, "agree": 2, "differ": 1, "missing": 1, "decisive": 2,
                 "decisive_agree": 1}
    with pytest.raises(ValueError, match="unknown sources"):
        st.agreement({"file": {}})


def test_trust_statement_levels():
    def summ(*pairs):
        return st.agreement_summary(st.agreement({
            "paper": {str(i): a for i, (a, _) in enumerate(pairs)},
            "simulated": {str(i): b for i, (_, b) in enumerate(pairs)}}))

    high = st.trust_statement("ELM", summ(("reproduced", "reproduced"), ("partly", "partly")),
                              [0.1, 0.2])
    assert "2 of 2" in high and "is high" in high and "easier" in high
    low = st.trust_statement("CDR", summ(("reproduced", "partly"), ("partly", "reproduced"),
                                         ("reproduced", "reproduced")), [2.0])
    assert "is low" in low and "1 of the 3" in low and "easier" not in low
    none = st.trust_statement("CDR", summ(("inconclusive", "inconclusive")), [])
    assert "not established" in none
    assert "not measured" in st.trust_statement("ELM", summ(), [])


def test_error_ratio_rows():
    rows = st.error_ratio_rows({"ELM": {"paper": {"a": 0.2, "b": 0.0, "c": 0.1},
                                        "simulated": {"a": 0.05, "b": 0.1}}})
    assert [r["cell"] for r in rows] == ["a", "b"]
    assert rows[0]["ratio"] == pytest.approx(0.25) and math.isnan(rows[1]["ratio"])


def test_authors_dcr_levels_and_trust_text():
    errs = st.authors_test_errors("DCR")
    assert len(errs) == 5 and 1.6 < min(errs) < 1.61 and 3.70 < max(errs) < 3.71
    text = st.dcr_trust("0.46 ± 0.1")
    assert "1.6 to 3.7" in text and "0.46 ± 0.1" in text and text.startswith("DCR: not measured")
    assert "published error level" not in st.dcr_trust()


def test_params_are_checked():
    with pytest.raises(ValueError, match="no paper file"):
        st.Params(datasets=["DCR"])
    with pytest.raises(ValueError, match="unknown experiments"):
        st.Params(experiments=["05_stationary_ode_nfe"])
    with pytest.raises(ValueError, match="reference_epochs"):
        st.Params(reference_epochs=0)


# ----------------------------------------------------------------------------- the summary

def _claim(key, dataset, verdict):
    return Claim(id=f"{key}-{dataset}", key=key, dataset=dataset, statement=f"{key} holds",
                 paper="not given", ours="numbers", verdict=verdict, rule="a rule",
                 rule_id="r", reason="why")


def _run(name, notebook, dataset, source, claims, metrics=None):
    data = (DataSource(dataset, source, f"{source} {dataset}", 10),) if dataset else ()
    return RunResults(run=name, notebook=notebook, title=name, preset="quick", data=data,
                      parameters={}, metrics=metrics or {}, claims=tuple(claims),
                      wall_time_s=1.0, environment={})


def test_summary_shows_agreement_with_the_other_source(tmp_path):
    from ctdnn.experiments import write_run

    write_run(tmp_path, _run("02_dto_surrogates_ELM", "02_dto_surrogates", "ELM", "simulated",
                             [_claim("k1", "ELM", "partly")]))
    write_run(tmp_path, _run("02_dto_surrogates_CDR", "02_dto_surrogates", "CDR", "paper",
                             [_claim("k1", "CDR", "reproduced")]))
    write_run(tmp_path, _run("02_dto_surrogates_DCR", "02_dto_surrogates", "DCR", "simulated",
                             [_claim("k1", "DCR", "reproduced")]))
    rows = [{"dataset": "ELM", "key": "k1", "paper": "reproduced", "simulated": "partly",
             "agrees": False},
            {"dataset": "CDR", "key": "k1", "paper": "reproduced", "simulated": "reproduced",
             "agrees": True}]
    write_run(tmp_path, _run("08_standins", "08_standins", "", "", [],
                             {"agreement": rows, "trust": {"ELM": "ELM: trust is low.",
                                                           "CDR": "CDR: trust is high."}}))
    summary = book.Summary.from_folder(tmp_path, "quick")
    assert [r.run for r in summary.runs] == ["02_dto_surrogates_CDR", "02_dto_surrogates_DCR",
                                            "02_dto_surrogates_ELM"]
    assert sum(summary.counts.values()) == 3
    page = summary.table_html()
    assert page.count("<th style") == 5                           # the columns are unchanged
    assert 'data-agrees="false" style="font-size:.85em">paper&#x27;s data: reproduced, ' in page
    assert 'data-agrees="true" style="font-size:.85em">simulated: reproduced, ' in page  # CDR
    assert "paper&#x27;s data: not measured (no file)" in page
    assert page.count('class="ctdnn-agreement"') == 3
    trust = summary.trust_markdown()
    assert "ELM: trust is low." in trust and "CDR: trust is high." in trust
    assert "DCR: not measured" in trust


def test_summary_without_comparison(tmp_path):
    from ctdnn.experiments import write_run

    write_run(tmp_path, _run("02_dto_surrogates_ELM", "02_dto_surrogates", "ELM", "simulated",
                             [_claim("k1", "ELM", "partly")]))
    summary = book.Summary.from_folder(tmp_path, "quick")
    assert summary.standins is None and summary.agreement() is None
    assert "ctdnn-agreement" not in summary.table_html()
    assert "were not compared" in summary.trust_markdown()


# ----------------------------------------------------------------------------- runs

def test_run_without_the_paper_file_says_not_measured(tmp_path):
    # The autouse fixture of conftest.py unsets CTDNN_DATA_DIR and empties the cache.
    res = st.run(st.Params(datasets=["ELM"], results_dir=str(tmp_path), compare_dcr=False,
                           archive=None))
    assert set(res.unavailable) == {"ELM"} and not res.stats and not res.verdicts
    m = st.metrics(res)
    assert m["agreement"] == [] and "ELM: not measured in this build" in m["trust"]["ELM"]
    assert "no measured agreement" in m["trust"]["ELM"]


def test_run_without_the_paper_file_uses_the_archived_comparison(tmp_path):
    from ctdnn.experiments import write_run

    rows = [{"dataset": "ELM", "key": "k1", "paper": "reproduced", "simulated": "partly",
             "agrees": False},
            {"dataset": "ELM", "key": "k2", "paper": "partly", "simulated": "partly",
             "agrees": True}]
    measured = _run("08_standins", "08_standins", "", "", [], {
        "agreement": rows, "trust": {"ELM": "ELM: trust is low."},
        "agreement_summary": {"ELM": st.agreement_summary(rows)}})
    archive = st.write_archive(measured, tmp_path / "archive.json")
    assert st.read_archive(archive)["paper_verdicts"] == {"ELM": {"k1": "reproduced",
                                                                  "k2": "partly"}}
    results = tmp_path / "results"
    write_run(results, _run("04_neural_ode_surrogates_ELM", "04_neural_ode_surrogates", "ELM",
                            "simulated", [_claim("k1", "ELM", "reproduced"),
                                          _claim("k2", "ELM", "reproduced")]))
    res = st.run(st.Params(datasets=["ELM"], results_dir=str(results), preset="quick",
                           compare_dcr=False, archive=str(archive)))
    got = {r["key"]: r for r in res.agreement_rows()}
    assert got["k1"]["agrees"] is True and got["k2"]["agrees"] is False
    assert all(r["archived"] for r in got.values())
    m = st.metrics(res)
    assert "archived comparison (preset 'quick'), 1 of 2 claims" in m["trust"]["ELM"]
    assert m["trust"]["ELM"].endswith("ELM: trust is low.")
    assert "reproduced (archived)" in str(st.verdict_table(res))
    # the summary compares the archived paper verdict with each badge's own verdict
    write_run(results, st.record(res, run_name="08_standins", preset="quick", t_start=0.0))
    page = book.Summary.from_folder(results, "quick").table_html()
    assert "paper&#x27;s data (archived comparison): reproduced, " in page
    with pytest.raises(ValueError, match="nothing to archive"):
        st.write_archive(_run("08_standins", "08_standins", "", "", [], {"agreement": []}),
                         tmp_path / "none.json")


def test_run_reuses_a_page_and_trains_the_other_source(paper_data_dir, tmp_path):
    import time

    from ctdnn.experiments import node, read_runs, write_run

    node_params = node.Params(dataset="CDR", data_source="paper", seeds=[0, 1], iterations=1,
                              bases=["legendre", "monomial"], device="cpu")
    t0 = time.perf_counter()
    page = node.run(node_params)
    write_run(tmp_path, node.record(page, run_name="04_neural_ode_surrogates_CDR",
                                    preset="smoke", claims_list=node.claims(page), t_start=t0))
    p = st.Params(datasets=["CDR"], experiments=["04_neural_ode_surrogates"],
                  results_dir=str(tmp_path), preset="smoke", reference_epochs=1,
                  compare_dcr=False, device="cpu")
    res = st.run(p)
    assert res.origin["CDR"]["04_neural_ode_surrogates"] == {
        "paper": "reused 04_neural_ode_surrogates_CDR", "simulated": "trained here"}
    assert res.stats["CDR"]["paper"]["shape"] == [55, 72]
    assert res.stats["CDR"]["simulated"]["sizes"] == [400, 200, 200]
    keys = {c.key for c in node.claims(page)}
    assert {r["key"] for r in res.agreement_rows()} == keys
    for r in res.agreement_rows():
        assert r["paper"] == res.verdicts["CDR"]["paper"][r["key"]]
        assert r["agrees"] == (r["paper"] == r["simulated"])
    ref = res.references["CDR"]
    assert 0 < ref["paper"]["linear"] < ref["paper"]["mean"]
    assert {"mean", "linear", "dto_small"} <= set(ref["simulated"])
    assert len(st.error_ratio_rows(res.errors)) == 2          # one per neural-ODE basis
    write_run(tmp_path, st.record(res, run_name="08_standins", preset="smoke", t_start=t0))
    stored = [r for r in read_runs(tmp_path) if r.notebook == "08_standins"]
    assert stored and stored[0].claims == () and len(stored[0].metrics["agreement"]) == len(keys)
