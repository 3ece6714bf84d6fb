"""The book's report layer (ctdnn.book): page titles, the provenance banner, the summary."""

from __future__ import annotations

import html.parser
import json

import pytest

from ctdnn import book
from ctdnn.experiments import Claim, DataSource, RunResults, write_run

ELM_SHA = "e0b1daed8b835eab8595a87e20798c17dc251cf569c35f6eac6120dcaf906bb2"

PAPER_ELM = DataSource("ELM", "paper", "paper file NNERDS.mat", 2486, filename="NNERDS.mat",
                       sha256=ELM_SHA)
SIM_DCR = DataSource("DCR", "simulated", "simulator", 700, simulator="ctdnn.data.dcr.simulate_dcr")
SIM_DCR_BIG = DataSource("DCR", "simulated", "simulator", 2000,
                         simulator="ctdnn.data.dcr.simulate_dcr")


class _Tags(html.parser.HTMLParser):
    """Start/end tags of an HTML fragment, to check that it is well nested."""

    VOID = {"br", "img", "hr", "meta", "input", "link"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(tag)

    def handle_data(self, data):
        self.text.append(data)


def parse(fragment: str) -> _Tags:
    tags = _Tags()
    tags.feed(fragment)
    tags.close()
    assert not tags.errors and not tags.stack, (tags.errors, tags.stack)
    return tags


# --- titles ---------------------------------------------------------------------------------

@pytest.mark.parametrize("heading, title, subtitle", [
    ("DTO surrogates: monomial and Legendre (Table 2)", "DTO surrogates: CDR",
     "monomial and Legendre (Table 2)"),
    ("Degree sweep of the Legendre weights", "Degree sweep of the Legendre weights: CDR", ""),
    ("DTO surrogates: CDR", "DTO surrogates: CDR", ""),
])
def test_page_title(heading, title, subtitle):
    assert book.page_title(heading, "CDR") == (title, subtitle)


def test_page_title_rejects_empty_input():
    with pytest.raises(ValueError, match="heading and a data set"):
        book.page_title("DTO surrogates", " ")


def _notebook(tmp_path, cells, parameters):
    nb = {"cells": cells, "metadata": {"papermill": {"parameters": parameters}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "run.ipynb"
    path.write_text(json.dumps(nb))
    return path


def _md(text):
    return {"cell_type": "markdown", "metadata": {}, "source": text.splitlines(keepends=True)}


def test_prepare_executed_copy_names_the_data_set_once(tmp_path):
    path = _notebook(tmp_path, [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "# defaults",
         "outputs": [], "execution_count": None},
        {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]},
         "source": "# Parameters\ndataset = 'CDR'", "outputs": [], "execution_count": None},
        _md("{#dto}\n# DTO surrogates: bases (Table 2)\n\nText with # inside.\n## Part"),
        _md("# Another heading"),
    ], {"dataset": "CDR", "preset": "quick"})
    assert book.prepare_executed_copy(path) == "DTO surrogates: CDR"
    first = json.loads(path.read_text())
    assert "".join(first["cells"][2]["source"]) == (
        "{#dto}\n# DTO surrogates: CDR\n\n*bases (Table 2)*\n\nText with # inside.\n## Part")
    assert "".join(first["cells"][3]["source"]) == "# Another heading"
    assert first["cells"][0]["metadata"]["tags"] == ["parameters", "hide-input"]
    assert first["cells"][1]["metadata"]["tags"] == ["injected-parameters"]   # shown
    assert first["cells"][0]["source"] == "# defaults"
    assert book.prepare_executed_copy(path) == "DTO surrogates: CDR"   # idempotent
    assert json.loads(path.read_text()) == first


def test_prepare_leaves_runs_without_a_data_set_and_uninjected_notebooks(tmp_path):
    path = _notebook(tmp_path, [
        {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "x = 1",
         "outputs": [], "execution_count": None},
        _md("# Reproduction summary")], {"preset": "quick"})
    before = path.read_text()
    assert book.prepare_executed_copy(path) is None
    assert path.read_text() == before      # nothing injected: the parameters stay in view


# --- banner ---------------------------------------------------------------------------------

def test_banner_names_preset_file_checksum_and_sample_count():
    b = book.banner("quick", PAPER_ELM, SIM_DCR)
    page = b._repr_html_()
    tags = parse(page)
    text = " ".join("".join(tags.text).split())
    assert 'class="ctdnn-banner"' in page
    assert "Preset quick" in text and "not the paper's" in text
    assert f"NNERDS.mat, sha256 {ELM_SHA}, 2486 samples" in text
    assert "DCR: simulated by ctdnn.data.dcr.simulate_dcr: 700 samples" in text
    assert str(b).splitlines()[1] == (f"ELM: the paper's file NNERDS.mat (sha256 {ELM_SHA}), "
                                      "2486 samples")


def test_banner_without_data_and_bad_input():
    assert "No data set is read" in book.banner("smoke")._repr_html_()
    assert "odd" in book.banner("odd")._repr_html_()   # an unknown preset is still named
    with pytest.raises(ValueError, match="preset"):
        book.banner("")
    with pytest.raises(TypeError, match="Dataset objects or DataSource records"):
        book.banner("quick", {"source": "paper"})


def test_banner_of_loaded_data_sets_prints_no_path(paper_data_dir):
    from ctdnn.data import load

    b = book.banner("default", load("ELM"), load("DCR", source="simulated", n_samples=60, progress=False))
    elm, dcr = b.sources
    assert (elm.name, elm.source, elm.filename, elm.sha256, elm.n_samples) == (
        "ELM", "paper", "NNERDS.mat", ELM_SHA, 2486)
    assert (dcr.source, dcr.n_samples, dcr.simulator) == ("simulated", 60,
                                                          "ctdnn.data.dcr.simulate_dcr")
    page = b._repr_html_()
    assert str(paper_data_dir) not in page and "/tmp" not in page and ".cache" not in page


# --- summary --------------------------------------------------------------------------------

def _claim(key, dataset, verdict, rule="Rule A.", paper="not given", ours="0.1 vs 0.2"):
    return Claim(id=f"{key}-{dataset}" if dataset else key, key=key, dataset=dataset,
                 statement=f"Statement of {key}", paper=paper, ours=ours, verdict=verdict,
                 rule=rule, rule_id="r", reason=f"because {verdict}")


def _run(name, data, claims, preset="quick"):
    return RunResults(run=name, notebook=name.rsplit("_", 1)[0], title=name, preset=preset,
                      data=data, parameters={}, metrics={}, claims=claims, wall_time_s=1.0,
                      environment={})


RUNS = [
    _run("02_dto_DCR", (SIM_DCR,), (_claim("dto-a", "DCR", "partly"),
                                     _claim("dto-b", "DCR", "inconclusive", rule="Rule B."))),
    _run("02_dto_ELM", (PAPER_ELM,), (_claim("dto-a", "ELM", "reproduced"),
                                       _claim("dto-b", "ELM", "not reproduced", rule="Rule B.",
                                              paper="1.2e-2"))),
    _run("00_data", (PAPER_ELM, SIM_DCR_BIG), ()),
    _run("01_bases", (DataSource("none", "analytic", "no data set"),),
         (_claim("bases", "", "reproduced", rule="Rule A.", paper="Figure 1"),)),
]


def test_claim_rows_group_by_claim_with_one_cell_per_data_set():
    rows, rules = book.claim_rows(RUNS)
    assert [r.key for r in rows] == ["dto-a", "dto-b", "bases"]
    assert [c.claim.dataset for c in rows[0].cells] == ["ELM", "DCR"]   # ELM, CDR, DCR order
    assert [c.run for c in rows[0].cells] == ["02_dto_ELM", "02_dto_DCR"]
    assert rules == ["Rule A.", "Rule B."]
    assert [r.rules for r in rows] == [(1,), (2,), (1,)]
    assert rows[0].paper == "not given"
    assert rows[1].paper == "ELM: 1.2e-2; DCR: not given"   # differing numbers, per data set
    assert rows[2].paper == "Figure 1"


def test_verdict_counts_cover_all_four_verdicts():
    assert book.verdict_counts(RUNS) == {"reproduced": 2, "partly": 1, "not reproduced": 1,
                                         "inconclusive": 1}


def test_summary_banner_lists_each_distinct_source_once():
    elm_unsized = DataSource("ELM", "paper", "paper file", 0, filename="NNERDS.mat",
                             sha256=ELM_SHA)
    runs = RUNS + [_run("00_extra", (elm_unsized,), ())]
    b = book.summary_banner(runs, "quick")
    assert [(s.name, s.n_samples) for s in b.sources] == [("ELM", 2486), ("DCR", 700),
                                                          ("DCR", 2000)]
    assert b.used_by == ("", "runs: 02_dto_DCR", "runs: 00_data")   # one file, one line
    assert not b.note
    mixed = book.summary_banner(RUNS + [_run("05_x", (), (), preset="smoke")], "quick")
    assert "another preset (smoke)" in mixed.note


def test_summary_table_html():
    rows, rules = book.claim_rows(RUNS)
    page = book.summary_table_html(rows) + book.rules_html(rules)
    tags = parse(page)
    assert page.count("<tbody>") == 1 and page.count('<tr style') == 3
    assert 'href="02_dto_ELM.html"' in page and 'id="rule-2"' in page
    assert 'href="#rule-2"' in page
    assert page.count('data-verdict="inconclusive"') == 1
    assert 'title="because partly"' in page
    text = "".join(tags.text)
    assert "Rule B." in text and text.count("Rule B.") == 1   # each rule once, as a footnote
    long = book.summary_table_html(book.claim_rows([_run("x_ELM", (PAPER_ELM,), (
        _claim("k", "ELM", "partly", ours="; ".join(["0.123 vs 0.456"] * 30)),))])[0])
    parse(long)
    assert "<details>" in long


def test_glance_html_has_a_badge_per_claim_and_data_set():
    rows, _ = book.claim_rows(RUNS)
    page = book.glance_html(rows, book.verdict_counts(RUNS), link_prefix="generated/")
    tags = parse(page)
    assert page.count('class="ctdnn-verdict"') == 5 + 4   # 5 verdicts + the 4 count badges
    assert 'href="generated/02_dto_DCR.html">DCR</a>' in page
    assert "5</strong> verdicts" in page
    assert "bases" in "".join(tags.text)


def test_claims_csv_round_trips(tmp_path):
    import csv

    rows = list(csv.DictReader(book.claims_csv(RUNS).splitlines()))
    assert len(rows) == 5
    assert tuple(rows[0]) == book.CSV_COLUMNS
    first = rows[0]
    assert (first["run"], first["dataset"], first["verdict"]) == ("02_dto_DCR", "DCR", "partly")
    assert "700 samples" in first["data_source"]
    assert rows[2]["data_source"].startswith("the paper's file NNERDS.mat")


def test_summary_from_a_folder_writes_csv_and_bundle(tmp_path):
    import zipfile

    for run in RUNS:
        write_run(tmp_path, run)
    (tmp_path / "02_dto_ELM_curves.png").write_bytes(b"png")
    (tmp_path / "06_summary.json").write_text("{}")     # not an experiment: skipped
    summary = book.Summary.from_folder(tmp_path, "quick")
    assert [r.run for r in summary.runs] == sorted(r.run for r in RUNS)
    assert summary.counts["inconclusive"] == 1
    csv_path, bundle = summary.write_downloads(tmp_path)
    names = zipfile.ZipFile(bundle).namelist()
    assert names == sorted(names)
    assert {"results/claims.csv", "results/02_dto_ELM_curves.png",
            "results/02_dto_ELM.json"} <= set(names)
    assert "results/ctdnn-results.zip" not in names
    stamp = bundle.stat().st_mtime_ns
    assert book.write_bundle(tmp_path).stat().st_mtime_ns == stamp   # unchanged: not rewritten
    assert csv_path.read_text().startswith("run,notebook,preset")
    md = summary.downloads_markdown()
    assert "{download}`All results" in md and "<results/00_data.json>" in md
    record = summary.write_record(tmp_path, "06_summary", wall_time_s=1.5)
    from ctdnn.experiments import read_run
    assert read_run(record).metrics["verdict_counts"] == summary.counts
    empty = book.Summary.from_folder(tmp_path / "missing", "quick")
    assert empty.rows == () and sum(empty.counts.values()) == 0
    with pytest.raises(FileNotFoundError, match="run the notebooks first"):
        book.write_bundle(tmp_path / "missing")


# --- reproducibility ------------------------------------------------------------------------

def test_reproducibility_reads_manifest_results_and_benchmarks(tmp_path):
    results = tmp_path / "results"
    for run in RUNS:
        write_run(results, run)
    manifest = {"02_dto_ELM": {"notebook": "02_dto", "wall_time_s": 10.0,
                               "finished": "2026-01-02T03:04:05+0000",
                               "parameters": {"preset": "quick"}},
                "benchmarks": {"notebook": None, "wall_time_s": 5.0, "parameters": {}},
                "07_reproducibility": {"notebook": "07_reproducibility", "wall_time_s": 2.0}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (results / "benchmarks.json").write_text(json.dumps({
        "command": "python benchmarks/bench.py --quick --json /tmp/secret/b.json",
        "environment": {"device": "cpu", "cpu_count": 2, "versions": {"torch": "2.13.0"}},
        "wall_time_s": 12.0,
        "rows": [{"id": "a1", "timed": "one step", "subject": "ctdnn", "subject_median_s": 0.002,
                  "baseline": "loop", "baseline_median_s": 0.02, "ratio": 10.0, "ratio_q1": 9.0,
                  "ratio_q3": 11.0, "goal": ">= 5", "verdict": "PASS", "device": "cpu"}]}))
    report = book.Reproducibility.from_folder(results, "quick", "cpu", "07_reproducibility")
    rows = report.run_rows()
    assert [r[0] for r in rows] == ["02_dto_ELM", "benchmarks", "07_reproducibility",
                                    "00_data", "01_bases", "02_dto_DCR", "total"]
    assert rows[2][2] == "this page (an earlier execution)"
    assert rows[0][1:5] == ("quick", "ELM: paper file NNERDS.mat (sha256 e0b1daed8b83)",
                            "10.0 s", "1.0 s")
    assert rows[0][5] == "2026-01-02 03:04"
    assert rows[1][2] == "benchmark script"
    assert rows[-1][3:5] == ("17.0 s", "4.0 s")
    assert rows[0][6] == "not recorded"           # the constructed runs have no environment
    bench = report.benchmarks_html()
    parse(bench)
    assert "10 [9, 11]" in bench and "2 ms" in bench and "/tmp/secret" not in bench
    assert "--quick" in bench
    parse(report.runs_html() + report.machine_html() + report.versions_html())
    record = report.write_record(results, "07_reproducibility", wall_time_s=1.0, device="cpu")
    from ctdnn.experiments import read_run
    metrics = read_run(record).metrics
    assert (metrics["total_executed_s"], metrics["benchmark_rows"]) == (17.0, 1)


def test_reproducibility_without_files_and_with_a_broken_one(tmp_path):
    report = book.Reproducibility.from_folder(tmp_path / "results", "smoke")
    assert report.run_rows() == [] and "No runs recorded" in report.runs_html()
    assert "No benchmark was run" in report.benchmarks_html()
    (tmp_path / "results").mkdir()
    (tmp_path / "manifest.json").write_text("{not json")
    broken = book.Reproducibility.from_folder(tmp_path / "results", "smoke")
    assert broken.manifest == {} and broken.problems[0].startswith("manifest.json could not")


def test_manifest_path_in_place_and_in_the_runners_staging_folder(tmp_path):
    generated = tmp_path / "generated"
    assert book.manifest_path(generated / "results") == generated / "manifest.json"
    staged = generated / ".staging" / "07_reproducibility" / "results"
    assert book.manifest_path(staged) == generated / "manifest.json"


def test_the_build_refreshes_the_bundle_from_the_generated_results(tmp_path, monkeypatch):
    import importlib
    import sys
    import types
    import zipfile
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "book" / "_ext"))
    sys.modules.pop("results_bundle", None)
    extension = importlib.import_module("results_bundle")
    results = tmp_path / "book" / "generated" / "results"
    results.mkdir(parents=True)
    (results / "02_dto_ELM_curves.png").write_bytes(b"png")
    app = types.SimpleNamespace(srcdir=str(tmp_path))
    extension._bundle(app)
    names = zipfile.ZipFile(results / book.BUNDLE_NAME).namelist()
    assert names == ["results/02_dto_ELM_curves.png"]
    extension._bundle(types.SimpleNamespace(srcdir=str(tmp_path / "elsewhere")))  # no results
