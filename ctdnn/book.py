"""What the book shows around the experiments: page titles, the provenance banner, the summary.

The experiment notebooks run once per data set; the executed copies must not share one
title, so ``prepare_executed_copy`` writes the data set into the first heading of each
copy (``"DTO surrogates: CDR"``). Every experiment page and the summary open with
``banner``, which names the preset and, per data set, where the data came from: the
paper's file with its sha256 checksum, or the simulator with its sample count. The summary
page, the results at a glance on the introduction (``Summary``), the downloads
(``claims_csv``, ``write_bundle``) and the reproducibility page
(``Reproducibility``) are built here from the results files, so that the notebooks hold
calls only.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import Dataset
from .experiments.common import data_source as experiment_data_source
from .experiments.rules import VERDICTS
from .experiments.schema import Claim, DataSource, RunResults, read_run, read_runs, write_run
from .reporting import environment_info
from .storage import write_bytes_atomic, write_text_atomic

__all__ = ["page_title", "prepare_executed_copy", "data_source", "Banner", "banner",
           "preset_note", "PRESET_NOTES", "badge", "ClaimRow", "claim_rows", "verdict_counts",
           "summary_banner", "summary_table_html", "rules_html", "glance_html", "claims_csv",
           "write_bundle", "Summary", "html_table", "Reproducibility", "manifest_path", "Cell",
           "STANDINS_NOTEBOOK", "agreement_html", "trust_markdown"]

# ---------------------------------------------------------------------------
# Page titles
# ---------------------------------------------------------------------------

_HEADING = re.compile(r"^#[ \t]+(?P<text>\S.*?)[ \t]*#*[ \t]*$")


def page_title(heading: str, dataset: str) -> tuple[str, str]:
    """The title of one data set's page, and the subtitle that moves below it.

    The part of a notebook's heading before its first colon names the experiment;
    ``"DTO surrogates: monomial and Legendre weights"`` on CDR becomes the title
    ``"DTO surrogates: CDR"`` with the subtitle ``"monomial and Legendre weights"``. A
    heading without a colon keeps its text, and the data set follows it.

    Args:
        heading: the notebook's first heading, without the leading ``#``.
        dataset: the data set of the run, e.g. ``"CDR"``.

    Returns:
        ``(title, subtitle)``; the subtitle is ``""`` where the heading had no colon.
    """
    heading, dataset = str(heading).strip(), str(dataset).strip()
    if not heading or not dataset:
        raise ValueError(f"page_title needs a heading and a data set, got {heading!r} and "
                         f"{dataset!r}")
    name, colon, rest = heading.partition(":")
    if name.strip() and colon:
        if rest.strip() == dataset:   # already titled
            return heading, ""
        return f"{name.strip()}: {dataset}", rest.strip()
    return f"{heading}: {dataset}", ""


def prepare_executed_copy(path: str | os.PathLike) -> str | None:
    """Make an executed notebook read as its own page: its data set in the title, and the
    parameters of the run shown once.

    * The data set is the ``dataset`` parameter papermill injected (recorded in the
      notebook's ``metadata.papermill.parameters``); the first level-1 heading becomes
      ``page_title``'s title, and the subtitle an emphasised line under it. A run without
      a ``dataset`` keeps its title.
    * The cell papermill injected holds the values of this run; the notebook's own
      ``parameters`` cell above it holds the defaults they override, so its input is folded
      (tag ``hide-input``), one click away.

    Applying it twice changes nothing more.

    Args:
        path: an executed copy written by papermill; rewritten in place.

    Returns:
        The new title, or ``None`` where the title was kept.
    """
    path = Path(path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    params = ((nb.get("metadata") or {}).get("papermill") or {}).get("parameters") or {}
    cells = nb.get("cells", [])
    changed = False
    if any("injected-parameters" in _tags(c) for c in cells):
        for cell in cells:
            tags = _tags(cell)
            if "parameters" in tags and "hide-input" not in tags:
                cell.setdefault("metadata", {})["tags"] = tags + ["hide-input"]
                changed = True
    title = None
    dataset = params.get("dataset")
    if isinstance(dataset, str) and dataset.strip():
        title, changed_title = _retitle(cells, dataset)
        changed = changed or changed_title
    if changed:
        write_text_atomic(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return title


def _tags(cell: dict) -> list:
    return list((cell.get("metadata") or {}).get("tags") or [])


def _retitle(cells: list, dataset: str) -> tuple[str | None, bool]:
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        source = cell.get("source", "")
        lines = ("".join(source) if isinstance(source, list) else source).split("\n")
        for i, line in enumerate(lines):
            match = _HEADING.match(line)
            if not match:
                continue
            title, subtitle = page_title(match.group("text"), dataset)
            if line == f"# {title}" and not subtitle:
                return title, False
            lines[i:i + 1] = [f"# {title}"] + (["", f"*{subtitle}*"] if subtitle else [])
            cell["source"] = "\n".join(lines).splitlines(keepends=True)
            return title, True
    return None, False


# ---------------------------------------------------------------------------
# Provenance banner
# ---------------------------------------------------------------------------

#: What each preset of ``notebooks/presets.yml`` runs, in the words of the banner.
PRESET_NOTES = {
    "smoke": "a few epochs or iterations per notebook, to test the code: its numbers say "
             "nothing about the paper's claims",
    "quick": "every experiment with fewer epochs, seeds and samples than the paper: the "
             "numbers are those of this reduced run, not the paper's",
    "paper": "the paper's protocol (epochs, seeds, solver tolerances)",
    "default": "the notebook's own defaults, a run of seconds that tests the code: its "
               "numbers say nothing about the paper's claims",
}


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def data_source(data: Any) -> DataSource:
    """The provenance record of a data set, for a banner.

    Args:
        data: a ``ctdnn.experiments.DataSource`` (returned as it is) or a loaded
            ``ctdnn.data.Dataset`` (described by ``ctdnn.experiments.common.data_source``).

    Raises:
        TypeError: ``data`` is neither.
    """
    if isinstance(data, DataSource):
        return data
    if isinstance(data, Dataset):
        return experiment_data_source(data)
    raise TypeError(f"a banner takes Dataset objects or DataSource records, got "
                    f"{type(data).__name__}")


def _source_text(s: DataSource) -> str:
    if s.source == "paper":
        n = f", {s.n_samples} samples" if s.n_samples else ""
        return f"the paper's file {s.filename} (sha256 {s.sha256 or 'not recorded'}){n}"
    if s.source == "simulated":
        who = f" {s.simulator}" if s.simulator else ""
        return f"simulated by{who or ' a simulator'}: {s.n_samples} samples"
    return s.description


def _source_html(s: DataSource) -> str:
    if s.source == "paper":
        check = (f'sha256 <code style="overflow-wrap:anywhere">{_e(s.sha256)}</code>'
                 if s.sha256 else "checksum not recorded")
        n = f", {s.n_samples} samples" if s.n_samples else ""
        return f"the paper's file <code>{_e(s.filename)}</code>, {check}{n}"
    if s.source == "simulated":
        who = f" <code>{_e(s.simulator)}</code>" if s.simulator else " a simulator"
        return f"<strong>simulated</strong> by{who}: <strong>{s.n_samples}</strong> samples"
    return _e(s.description)


@dataclass(frozen=True)
class Banner:
    """The box at the top of a results page: the preset and where every data set came from.

    In a notebook it renders as HTML (``<div class="ctdnn-banner">``); ``str()`` gives the
    same content as plain text.

    Attributes:
        preset: the preset's name.
        sources: one record per data set.
        used_by: per source, the runs that used it ("" on an experiment page).
        note: an optional sentence under the list.
    """

    preset: str
    sources: tuple[DataSource, ...]
    used_by: tuple[str, ...] = ()
    note: str = ""

    def _uses(self) -> tuple[str, ...]:
        return self.used_by or ("",) * len(self.sources)

    def text(self) -> str:
        """Plain text, one line per data set."""
        lines = [f"Preset {self.preset}: {preset_note(self.preset)}."]
        lines += [f"{s.name}: {_source_text(s)}" + (f" ({u})" if u else "")
                  for s, u in zip(self.sources, self._uses())]
        if not self.sources:
            lines.append("No data set is read on this page.")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    def __repr__(self) -> str:   # the text/plain of a notebook output
        return self.text()

    def _repr_html_(self) -> str:
        items = "".join(
            f"<li><strong>{_e(s.name)}</strong>: {_source_html(s)}"
            + (f' <span style="color:#4b5563">({_e(u)})</span>' if u else "") + "</li>"
            for s, u in zip(self.sources, self._uses()))
        data = (f'<ul style="margin:.3em 0 0 0">{items}</ul>' if items else
                '<p style="margin:.3em 0 0 0">No data set is read on this page.</p>')
        note = f'<p style="margin:.4em 0 0 0">{_e(self.note)}</p>' if self.note else ""
        return (f'<div class="ctdnn-banner" role="note" data-preset="{_e(self.preset)}" '
                'style="border-left:5px solid #2563eb;background:#eef4ff;color:#111827;'
                'padding:.6em 1em;margin:0 0 1em 0;border-radius:4px">'
                f'<p style="margin:0"><strong>Preset <code>{_e(self.preset)}</code></strong>: '
                f"{_e(preset_note(self.preset))}.</p>{data}{note}</div>")


def preset_note(preset: str) -> str:
    """What a preset runs, in a few words (``PRESET_NOTES``)."""
    return PRESET_NOTES.get(preset, f"a preset not described here (see notebooks/presets.yml "
                                    f"for {preset!r})")


def banner(preset: str, *data: Any, note: str = "") -> Banner:
    """The provenance banner of an experiment page: the preset and each data set's source.

    One line in an experiment notebook, once the data are loaded::

        display(banner(preset, ds))

    Args:
        preset: the notebook's ``preset`` parameter (``"default"`` when run by hand).
        *data: the page's data sets: ``ctdnn.data.Dataset`` objects or
            ``ctdnn.experiments.DataSource`` records. None: the page reads no data set.
        note: an optional sentence shown under the list.

    Raises:
        ValueError: ``preset`` is empty.
    """
    if not isinstance(preset, str) or not preset.strip():
        raise ValueError(f"banner needs the preset's name (the notebook's `preset` "
                         f"parameter), got {preset!r}")
    return Banner(preset.strip(), tuple(data_source(d) for d in data), note=note)


# ---------------------------------------------------------------------------
# The reproduction summary
# ---------------------------------------------------------------------------

#: Badge colours per verdict (background, text), readable on light and dark themes.
VERDICT_COLOURS = {"reproduced": ("#d7f0dc", "#14532d"), "partly": ("#fdf1c7", "#713f12"),
                   "not reproduced": ("#f9d6d5", "#7f1d1d"),
                   "inconclusive": ("#e5e7eb", "#1f2937")}
_DATASET_ORDER = ("ELM", "CDR", "DCR", "spiral", "")
#: The data sets' names in the summary's cells ("" marks claims about the bases themselves).
DATASET_LABELS = {"": "bases", "spiral": "spiral ODE"}
#: An "ours" text longer than this is folded under its first part.
OURS_FOLD = 160


def badge(verdict: str, reason: str = "") -> str:
    """A verdict as a coloured HTML badge; ``reason`` becomes its tooltip."""
    back, fore = VERDICT_COLOURS.get(verdict, ("#ffffff", "#000000"))
    tip = f' title="{_e(reason)}"' if reason else ""
    return (f'<span class="ctdnn-verdict" data-verdict="{_e(verdict)}"{tip} '
            f'style="background:{back};color:{fore};font-weight:600;padding:.05em .45em;'
            f'border-radius:.6em;white-space:nowrap">{_e(verdict)}</span>')


def _dataset_rank(name: str) -> tuple[int, str]:
    return (_DATASET_ORDER.index(name) if name in _DATASET_ORDER else 3, name)


@dataclass(frozen=True)
class Cell:
    """One data set's outcome of a claim: a badge and our numbers."""

    claim: Claim
    run: str


@dataclass(frozen=True)
class ClaimRow:
    """One row of the summary: a claim of the paper across the data sets it was checked on.

    Attributes:
        key: the claim without its data set.
        statement: the paper's claim.
        paper: the paper's number, or per data set where they differ.
        cells: one per data set, in the order ELM, CDR, DCR, others.
        rules: numbers of the rules (footnotes) the verdicts follow, 1-based.
    """

    key: str
    statement: str
    paper: str
    cells: tuple[Cell, ...]
    rules: tuple[int, ...]


def claim_rows(runs: Iterable[RunResults]) -> tuple[list[ClaimRow], list[str]]:
    """Group the claims of all runs by claim (``Claim.key``), rules numbered once.

    Returns:
        ``(rows, rules)``: rows in the order the claims first appear (runs sorted by name),
        and the distinct rule texts; ``rows[i].rules`` index into ``rules`` from 1.
    """
    by_key: dict[str, list[Cell]] = {}
    for run in runs:
        for c in run.claims:
            by_key.setdefault(c.key, []).append(Cell(c, run.run))
    rules: list[str] = []
    rows = []
    for key, cells in by_key.items():
        cells = sorted(cells, key=lambda cell: _dataset_rank(cell.claim.dataset))
        numbers = []
        for cell in cells:
            text = cell.claim.rule.strip()
            if text and text not in rules:
                rules.append(text)
            if text and rules.index(text) + 1 not in numbers:
                numbers.append(rules.index(text) + 1)
        papers = list(dict.fromkeys(cell.claim.paper.strip() or "not given" for cell in cells))
        paper = papers[0] if len(papers) == 1 else "; ".join(
            f"{_label(cell.claim.dataset)}: {cell.claim.paper.strip() or 'not given'}"
            for cell in cells)
        statements = list(dict.fromkeys(_strip_dataset(cell.claim.statement, cell.claim.dataset)
                                        for cell in cells))
        rows.append(ClaimRow(key, statements[0], paper, tuple(cells), tuple(numbers)))
    return rows, rules


def _label(dataset: str) -> str:
    return DATASET_LABELS.get(dataset, dataset)


def _strip_dataset(statement: str, dataset: str) -> str:
    # Results of the earlier layout name the data set in the statement: "(ELM)".
    return statement.replace(f" ({dataset})", "").strip() if dataset else statement.strip()


def verdict_counts(runs: Iterable[RunResults]) -> dict[str, int]:
    """How many claims (one per data set) got each verdict, in the order of ``VERDICTS``."""
    counts = dict.fromkeys(VERDICTS, 0)
    for run in runs:
        for c in run.claims:
            counts[c.verdict] += 1
    return counts


def summary_banner(runs: Iterable[RunResults], preset: str) -> Banner:
    """The summary's banner: its preset and every distinct data source of the runs.

    A paper file is one source whatever run read it (its sample count is the largest any run
    recorded); a simulated data set is one source per sample count, since the data page may
    simulate more samples than an experiment: where a data set has more than one source, each
    names the runs that used it. Runs of other presets than ``preset`` are named in the note.
    """
    runs = list(runs)
    used: dict[tuple, list[str]] = {}
    records: dict[tuple, DataSource] = {}
    for run in runs:
        for s in run.data:
            if s.source == "analytic":
                continue
            ident = (s.name, s.source, s.filename, s.sha256, s.simulator,
                     0 if s.source == "paper" else s.n_samples)
            if ident not in records or s.n_samples > records[ident].n_samples:
                records[ident] = s
            used.setdefault(ident, []).append(run.run)
    idents = sorted(records, key=lambda i: (_dataset_rank(i[0]), i[1:]))
    names = [i[0] for i in idents]
    used_by = tuple(("runs: " + ", ".join(used[i])) if names.count(i[0]) > 1 else ""
                    for i in idents)
    other = sorted({r.preset for r in runs} - {preset})
    note = (f"Some runs used another preset ({', '.join(other)}); run all of them with one "
            "preset for a consistent summary." if other else "")
    return Banner(preset, tuple(records[i] for i in idents), used_by, note)


def counts_html(counts: Mapping[str, int]) -> str:
    """The verdict counts as a line of badges."""
    total = sum(counts.values())
    parts = " ".join(f'<span style="margin-right:1em"><strong>{n}</strong> {badge(v)}</span>'
                     for v, n in counts.items())
    return (f'<div class="ctdnn-counts" style="font-size:1.1em;margin:.3em 0 1em 0">'
            f"<strong>{total}</strong> verdicts (one per claim and data set): {parts}</div>")


def _ours_html(text: str) -> str:
    text = text.strip()
    if len(text) <= OURS_FOLD:
        return _e(text)
    cut = text.rfind(";", 0, OURS_FOLD)
    cut = cut if cut > OURS_FOLD // 2 else OURS_FOLD
    return (f"<details><summary>{_e(text[:cut].rstrip())} &hellip;</summary>"
            f"{_e(text[cut:].lstrip('; '))}</details>")


#: The notebook that decides the claims on both sources (the paper's data and the simulators).
STANDINS_NOTEBOOK = "08_standins"
_OTHER = {"paper": "simulated", "simulated": "paper"}
_SOURCE_WORDS = {"paper": "paper's data", "simulated": "simulated"}


def agreement_html(cell: Cell, source: str | None, agreement: Mapping | None) -> str:
    """Whether the same claim agrees on the other source, shown under a verdict's badge.

    Args:
        cell: the verdict of one data set.
        source: the source of the cell's run (``"paper"`` or ``"simulated"``), if known.
        agreement: ``{(dataset, claim key): row}`` of the stand-ins comparison (rows with the
            ``paper`` and ``simulated`` verdicts and ``agrees``), or ``None`` when the build
            has no comparison.

    Returns:
        HTML (empty for data sets without a stand-in, or when nothing was compared).
    """
    ds = cell.claim.dataset
    if ds == "DCR":
        return ('<div class="ctdnn-agreement" style="font-size:.85em">paper&#x27;s data: '
                "not measured (no file)</div>")
    if ds not in ("ELM", "CDR") or agreement is None:
        return ""
    row = agreement.get((ds, cell.claim.key))
    other = _OTHER.get(source)
    if row is None or other is None or row.get(other) is None:
        return ('<div class="ctdnn-agreement" style="font-size:.85em">other source: '
                "not compared</div>")
    # Against this cell's own verdict: an archived paper-data verdict (a build without the
    # paper's files) stands beside whatever this build decided on the simulator.
    agrees = cell.claim.verdict == row[other]
    word = "agrees" if agrees else "differs"
    colour = "#14532d" if agrees else "#7f1d1d"
    where = _SOURCE_WORDS[other] + (" (archived comparison)" if row.get("archived") else "")
    return (f'<div class="ctdnn-agreement" data-agrees="{str(agrees).lower()}" '
            f'style="font-size:.85em">{_e(where)}: {_e(row[other])}, '
            f'<span style="color:{colour};font-weight:600">{word}</span></div>')


def summary_table_html(rows: list[ClaimRow], *, link_prefix: str = "",
                       table_id: str = "reproduction-summary",
                       agreement: Mapping | None = None,
                       sources: Mapping[tuple[str, str], str] | None = None) -> str:
    """One row per claim: the claim, the paper's number, a verdict badge and our numbers per
    data set (linked to its page), and the rules as footnote links (``#rule-N``).

    With ``agreement`` (see :func:`agreement_html`) and ``sources`` (``{(run, dataset):
    source}``), each badge carries whether the same claim on the other source (the paper's
    data for a simulated-data verdict, and the reverse) gets the same verdict.
    """
    head = "".join(f'<th style="width:{w}%">{h}</th>' for h, w in
                   (("claim", 24), ("paper", 18), ("verdict", 15), ("ours", 35), ("rule", 8)))
    body = []
    for row in rows:
        verdicts = "".join(
            f'<div style="margin-bottom:.25em"><a href="{_e(link_prefix + c.run)}.html">'
            f"{_e(_label(c.claim.dataset))}</a> {badge(c.claim.verdict, c.claim.reason)}"
            + agreement_html(c, (sources or {}).get((c.run, c.claim.dataset)), agreement)
            + "</div>" for c in row.cells)
        ours = "".join(f'<div style="margin-bottom:.25em"><strong>{_e(_label(c.claim.dataset))}'
                       f"</strong>: {_ours_html(c.claim.ours)}</div>" for c in row.cells)
        rules = ", ".join(f'<a href="#rule-{n}">rule&nbsp;{n}</a>' for n in row.rules)
        body.append(f'<tr style="vertical-align:top"><td>{_e(row.statement)}<br>'
                    f'<code style="font-size:.85em">{_e(row.key)}</code></td>'
                    f"<td>{_e(row.paper)}</td><td>{verdicts}</td><td>{ours}</td>"
                    f"<td>{rules or 'not recorded'}</td></tr>")
    return ('<div style="overflow-x:auto">'
            f'<table id="{_e(table_id)}" class="table ctdnn-summary" '
            'style="font-size:.85em;table-layout:fixed;width:100%;min-width:46em">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def rules_html(rules: list[str]) -> str:
    """The rule texts as a numbered list, each an anchor ``rule-N`` of the table's links."""
    items = "".join(f'<li id="rule-{i}" style="margin-bottom:.4em">{_e(text)}</li>'
                    for i, text in enumerate(rules, 1))
    return f'<ol class="ctdnn-rules" style="font-size:.9em">{items}</ol>'


def glance_html(rows: list[ClaimRow], counts: Mapping[str, int], *,
                link_prefix: str = "") -> str:
    """The results at a glance, for the introduction: the counts, then per claim one badge
    per data set (no numbers), each data set's name linking to its experiment page."""
    body = []
    for row in rows:
        badges = " ".join(
            f'<span style="white-space:nowrap;margin-right:.6em">'
            f'<a href="{_e(link_prefix + c.run)}.html">{_e(_label(c.claim.dataset))}</a>&nbsp;'
            f"{badge(c.claim.verdict, c.claim.reason)}</span>" for c in row.cells)
        body.append(f'<tr style="vertical-align:top"><td>{_e(row.statement)}</td>'
                    f"<td>{badges}</td></tr>")
    return (counts_html(counts) + '<div style="overflow-x:auto">'
            '<table class="table ctdnn-glance" style="font-size:.85em;width:100%">'
            '<thead><tr><th style="width:55%">claim</th><th>verdict per data set</th></tr>'
            f"</thead><tbody>{''.join(body)}</tbody></table></div>")


CSV_COLUMNS = ("run", "notebook", "preset", "claim_id", "key", "dataset", "data_source",
               "statement", "paper", "ours", "verdict", "rule_id", "rule", "reason", "details")


def claims_csv(runs: Iterable[RunResults]) -> str:
    """Every claim of every run, one CSV row each (columns ``CSV_COLUMNS``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        sources = {s.name: s for s in run.data}
        for c in run.claims:
            s = sources.get(c.dataset) or (run.data[0] if len(run.data) == 1 else None)
            writer.writerow([run.run, run.notebook, run.preset, c.id, c.key, c.dataset,
                             _source_text(s) if s else "", c.statement, c.paper, c.ours,
                             c.verdict, c.rule_id, c.rule, c.reason, c.details])
    return buffer.getvalue()


#: Files of a results folder that go into the download bundle.
BUNDLE_PATTERNS = ("*.json", "*.csv", "*.png", "*.svg", "*.pdf")
BUNDLE_NAME = "ctdnn-results.zip"


def write_bundle(results_dir: str | os.PathLike, name: str = BUNDLE_NAME) -> Path:
    """Zip the results files, the claims CSV and the figures of a results folder.

    The archive is reproducible (sorted entries, fixed timestamps) and rewritten only when its
    content changes. Returns its path (``results_dir / name``).

    Raises:
        FileNotFoundError: ``results_dir`` is not a folder.
    """
    folder = Path(results_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no results folder at {folder}: run the notebooks first "
                                "(python -m ctdnn run)")
    files = sorted({p for pattern in BUNDLE_PATTERNS for p in folder.glob(pattern)
                    if p.is_file() and not p.name.startswith(".")})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for p in files:
            info = zipfile.ZipInfo(f"results/{p.name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, p.read_bytes())
    target = folder / name
    content = buffer.getvalue()
    if not target.is_file() or target.read_bytes() != content:
        write_bytes_atomic(target, content)
    return target


@dataclass(frozen=True)
class Summary:
    """Everything the summary page shows, built from the results of the experiment runs.

    Attributes:
        runs: the experiment runs, sorted by name.
        preset: the summary's own preset.
        rows, rules: from ``claim_rows``.
        counts: from ``verdict_counts``.
    """

    runs: tuple[RunResults, ...]
    preset: str
    rows: tuple[ClaimRow, ...]
    rules: tuple[str, ...]
    counts: dict
    standins: RunResults | None = None

    @classmethod
    def from_folder(cls, results_dir: str | os.PathLike, preset: str) -> Summary:
        """Read every experiment's results file of ``results_dir`` (none: an empty summary).

        The stand-ins comparison (:data:`STANDINS_NOTEBOOK`) holds no claims of its own; it is
        kept apart and supplies the agreement column and the trust statements.
        """
        folder = Path(results_dir)
        runs = tuple(read_runs(folder)) if folder.is_dir() else ()
        standins = next((r for r in runs if r.notebook == STANDINS_NOTEBOOK), None)
        runs = tuple(r for r in runs if r.notebook != STANDINS_NOTEBOOK)
        rows, rules = claim_rows(runs)
        return cls(runs, preset, tuple(rows), tuple(rules), verdict_counts(runs), standins)

    def agreement(self) -> dict | None:
        """``{(dataset, claim key): row}`` of the stand-ins comparison, or None."""
        if self.standins is None:
            return None
        return {(r["dataset"], r["key"]): r for r in self.standins.metrics.get("agreement", [])}

    def sources(self) -> dict:
        """``{(run, dataset): "paper" | "simulated" | ...}`` of every run's data."""
        return {(r.run, s.name): s.source for r in self.runs for s in r.data}

    def trust_markdown(self) -> str:
        """How far each data set's verdicts can be trusted (see :func:`trust_markdown`)."""
        return trust_markdown(self.standins, self.runs)

    def banner(self) -> Banner:
        return summary_banner(self.runs, self.preset)

    def counts_html(self) -> str:
        return counts_html(self.counts)

    def table_html(self) -> str:
        return (summary_table_html(list(self.rows), agreement=self.agreement(),
                                   sources=self.sources()) + rules_html(list(self.rules)))

    def glance_html(self, link_prefix: str = "generated/") -> str:
        return glance_html(list(self.rows), self.counts, link_prefix=link_prefix)

    def write_downloads(self, results_dir: str | os.PathLike) -> tuple[Path, Path]:
        """Write ``claims.csv`` (every claim) and the archive of ``write_bundle``."""
        path = Path(results_dir) / "claims.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, claims_csv(self.runs))
        return path, write_bundle(results_dir)

    def write_record(self, results_dir: str | os.PathLike, run_name: str, *,
                     wall_time_s: float, device: str = "auto") -> Path:
        """The summary's own results file: how many runs and verdicts it collected."""
        return write_run(results_dir, RunResults(
            run=run_name, notebook="06_summary", title="Reproduction summary",
            preset=self.preset, data=(), parameters={"device": device},
            metrics={"n_runs": len(self.runs), "runs": [r.run for r in self.runs],
                     "n_claims": sum(self.counts.values()), "verdict_counts": self.counts,
                     "presets": sorted({r.preset for r in self.runs})},
            claims=(), wall_time_s=float(wall_time_s), environment=environment_info(device)))

    def downloads_markdown(self, results_dir: str | os.PathLike = "results") -> str:
        """MyST Markdown with ``{download}`` links: the bundle, the CSV, each run's JSON."""
        d = Path(results_dir).as_posix()
        lines = [f"* {{download}}`All results, figures and the claims table (zip) "
                 f"<{d}/{BUNDLE_NAME}>`",
                 f"* {{download}}`Every claim as CSV (claims.csv) <{d}/claims.csv>`",
                 "* The results file of each run: " + ", ".join(
                     f"{{download}}`{r.run}.json <{d}/{r.run}.json>`" for r in self.runs)]
        return "\n".join(lines[:2] + (lines[2:] if self.runs else []))


def trust_markdown(standins: RunResults | None, runs: Iterable[RunResults] = ()) -> str:
    """Markdown: per simulated data set of ``runs``, how far its verdicts can be trusted.

    The statements come from the stand-ins comparison's ``metrics["trust"]``; without a
    comparison in the build, a line says that the agreement was not measured.
    """
    simulated = sorted({s.name for r in runs for s in r.data if s.source == "simulated"
                        and s.name in ("ELM", "CDR", "DCR")}, key=_dataset_rank)
    if standins is None:
        if not simulated:
            return ""
        return ("The verdicts on simulated data (" + ", ".join(simulated) + ") were not "
                "compared with the paper's data in this build: run the stand-ins page "
                f"({STANDINS_NOTEBOOK}) to measure how far they carry over.")
    trust = standins.metrics.get("trust") or {}
    names = sorted(set(trust) | set(simulated), key=_dataset_rank)
    lines = [f"* {trust[n]}" if n in trust else f"* {n}: not measured by the comparison."
             for n in names]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# The reproducibility page
# ---------------------------------------------------------------------------

def html_table(header: Iterable[str], rows: Iterable[Iterable[Any]], table_id: str) -> str:
    """An HTML table with escaped cells, scrolling sideways on narrow screens."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join('<tr style="vertical-align:top">' + "".join(f"<td>{_e(c)}</td>" for c in row)
                   + "</tr>" for row in rows)
    return (f'<div style="overflow-x:auto"><table id="{_e(table_id)}" class="table" '
            f'style="font-size:.85em"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _seconds(value) -> str:
    return f"{value:.1f} s" if isinstance(value, (int, float)) and value == value else ""


def _duration(value) -> str:
    if not isinstance(value, (int, float)) or value != value:
        return ""
    return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"


def _number(value) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else ""


def _source_short(s: DataSource) -> str:
    if s.source == "paper":
        return f"{s.name}: paper file {s.filename} (sha256 {s.sha256[:12]})"
    if s.source == "simulated":
        return f"{s.name}: simulated, {s.n_samples} samples"
    return s.description


def _drop_option(command: str, option: str) -> str:
    # The output path of a command names a folder of the machine that ran it.
    words = str(command).split()
    return " ".join(w for i, w in enumerate(words)
                    if w != option and (i == 0 or words[i - 1] != option))


@dataclass(frozen=True)
class Reproducibility:
    """What the reproducibility page reports, read from the files the runs left behind.

    Attributes:
        preset: the page's own preset.
        env: ``ctdnn.reporting.environment_info`` of the kernel running the page.
        runs: the results of every run (the summary's included), sorted by name.
        manifest: the runner's ``manifest.json`` (``{}`` if absent): wall time per run.
        benchmarks: the benchmark script's results (``None`` if it did not run).
        problems: files that exist but could not be read, with the reason.
        run_name: the page's own run (its row says so: it has no results file yet).
    """

    preset: str
    env: dict
    runs: tuple[RunResults, ...]
    manifest: dict
    benchmarks: Any
    problems: tuple[str, ...] = ()
    run_name: str = ""

    @classmethod
    def from_folder(cls, results_dir: str | os.PathLike, preset: str,
                    device: str = "auto", run_name: str = "") -> Reproducibility:
        """Read ``results_dir`` and the runner's manifest (see ``manifest_path``)."""
        folder = Path(results_dir)
        problems = []
        runs = list(read_runs(folder)) if folder.is_dir() else []
        if (folder / "06_summary.json").is_file():
            runs.append(read_run(folder / "06_summary.json"))
        manifest = _read_json(manifest_path(folder), problems) or {}
        bench = _read_json(folder / "benchmarks.json", problems)
        return cls(preset, environment_info(device), tuple(sorted(runs, key=lambda r: r.run)),
                   manifest if isinstance(manifest, dict) else {}, bench, tuple(problems),
                   run_name)

    def machine_html(self) -> str:
        """The machine, the compute device and the preset of this page."""
        env = self.env
        rows = [("Python", env.get("python")), ("platform", env.get("platform")),
                ("processor", env.get("processor")), ("CPU cores", env.get("cpu_count")),
                ("torch threads", env.get("torch_threads")),
                ("compute device", env.get("device"))]
        if env.get("gpu"):
            rows.append(("GPU", env["gpu"]))
        rows.append(("preset of this page", self.preset))
        return html_table(["item", "value"], rows, "machine")

    def versions_html(self) -> str:
        return html_table(["package", "version"],
                          [(n, v or "not installed")
                           for n, v in (self.env.get("versions") or {}).items()], "versions")

    def _environment_note(self, run: RunResults) -> str:
        other = run.environment
        if not other:
            return "not recorded"
        notes = [f"device {other.get('device')}"] if other.get("device") != self.env.get(
            "device") else []
        mine = self.env.get("versions") or {}
        notes += [f"{n} {v}" for n, v in (other.get("versions") or {}).items() if mine.get(n) != v]
        return "as above" if not notes else "differs: " + ", ".join(notes)

    def run_rows(self) -> list[tuple]:
        """One row per run: name, preset, data, executed in, reported, finished, environment;
        the last row sums the times."""
        by_run = {r.run: r for r in self.runs}
        names = list(self.manifest) + [n for n in by_run if n not in self.manifest]
        rows, executed_total, reported_total = [], 0.0, 0.0
        for name in names:
            entry = self.manifest.get(name) if isinstance(self.manifest.get(name), dict) else {}
            run = by_run.get(name)
            executed = entry.get("wall_time_s")
            reported = run.wall_time_s if run else None
            executed_total += executed if isinstance(executed, (int, float)) else 0.0
            reported_total += reported if isinstance(reported, (int, float)) and \
                reported == reported else 0.0
            if run:
                data = "; ".join(_source_short(s) for s in run.data) or "no data set"
                preset = run.preset
            else:
                data = ("this page (an earlier execution)" if name == self.run_name else
                        "benchmark script" if entry.get("notebook") is None else
                        "no results file")
                preset = str((entry.get("parameters") or {}).get("preset", ""))
            rows.append((name, preset, data, _seconds(executed), _seconds(reported),
                         str(entry.get("finished", ""))[:16].replace("T", " "),
                         self._environment_note(run) if run else ""))
        if rows:
            rows.append(("total", "", "", _seconds(executed_total), _seconds(reported_total),
                         "", ""))
        return rows

    def runs_html(self) -> str:
        rows = self.run_rows()
        if not rows:
            return ("<p><strong>No runs recorded</strong>: neither a runner manifest nor results "
                    "files. <code>python -m ctdnn run --preset quick</code> executes every "
                    "notebook and records them.</p>")
        return html_table(["run", "preset", "data", "executed in", "reported", "finished",
                           "environment"], rows, "run-times")

    def benchmarks_html(self) -> str:
        """The benchmark table with its command and machine, or a sentence why there is none."""
        bench = self.benchmarks
        rows = bench.get("rows") if isinstance(bench, dict) else None
        if not isinstance(rows, list) or not rows:
            return ("<p>No benchmark was run for this book; <code>python benchmarks/bench.py"
                    "</code> measures them.</p>")
        rows = [r for r in rows if isinstance(r, dict)]
        table = html_table(
            ["row", "what is timed", "subject (median)", "baseline (median)", "ratio [IQR]",
             "ratio means", "goal", "verdict", "set-up"],
            [_timing_row(r) for r in rows], "benchmarks")
        env = bench.get("environment") if isinstance(bench.get("environment"), dict) else {}
        command = _drop_option(bench.get("command", ""), "--json") or "not recorded"
        return (table + f"<p>Command: <code>{_e(command)}</code>; machine: "
                f"{_e(env.get('device', '?'))}, {_e(env.get('cpu_count', '?'))} CPU cores, torch "
                f"{_e((env.get('versions') or {}).get('torch', '?'))}; wall time "
                f"{_e(_duration(bench.get('wall_time_s')) or '?')}.</p>")

    def write_record(self, results_dir: str | os.PathLike, run_name: str, *,
                     wall_time_s: float, device: str = "auto") -> Path:
        """The page's own results file: the runs it listed and their total times."""
        executed = [e.get("wall_time_s") for e in self.manifest.values() if isinstance(e, dict)]
        return write_run(results_dir, RunResults(
            run=run_name, notebook="07_reproducibility", title="Reproducibility",
            preset=self.preset, data=(), parameters={"device": device},
            metrics={"n_runs": len(set(self.manifest) | {r.run for r in self.runs}),
                     "total_executed_s": sum(t for t in executed if isinstance(t, (int, float))),
                     "total_reported_s": sum(r.wall_time_s for r in self.runs
                                             if r.wall_time_s == r.wall_time_s),
                     "benchmark_rows": len((self.benchmarks or {}).get("rows") or [])
                     if isinstance(self.benchmarks, dict) else 0},
            claims=(), wall_time_s=float(wall_time_s), environment=self.env))


def manifest_path(results_dir: str | os.PathLike) -> Path:
    """Where the runner's ``manifest.json`` is for a results folder.

    The runner keeps it beside ``results/`` in the generated folder, and executes every run in
    a staging folder ``<generated>/.staging/<run>/`` holding copies of the results files; a
    page executed there finds the manifest two levels up.
    """
    parent = Path(results_dir).resolve().parent
    if parent.parent.name == ".staging":
        return parent.parent.parent / "manifest.json"
    return parent / "manifest.json"


def _timing_row(r: dict) -> tuple:
    iqr = (f" [{_number(r.get('ratio_q1'))}, {_number(r.get('ratio_q3'))}]"
           if "ratio_q1" in r and "ratio_q3" in r else "")
    setup = ", ".join(str(r[k]) for k in ("device", "dtype") if r.get(k))
    if r.get("threads"):
        setup += f", {r['threads']} thread(s)"
    return (r.get("id", ""), r.get("timed", ""),
            f"{r.get('subject', '')}: {_duration(r.get('subject_median_s'))}",
            f"{r.get('baseline', '')}: {_duration(r.get('baseline_median_s'))}",
            _number(r.get("ratio")) + iqr, r.get("ratio_meaning", ""), r.get("goal", ""),
            r.get("verdict", ""), setup)


def _read_json(path: Path, problems: list) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problems.append(f"{path.name} could not be read: {err}")
        return None
