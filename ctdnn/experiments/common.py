"""What the experiments share: data loading with provenance, per-seed statistics, tables.

Nothing here trains a model; these are the small pieces every experiment page used to define
for itself (loading a data set with its warnings turned into notes, the record of where the
data came from, errors on the three splits, curve stability, thinned histories, "mean ± std"
text and HTML tables).
"""

from __future__ import annotations

import dataclasses
import html
import math
import re
import time
import warnings
from typing import Sequence

import numpy as np
import torch

from .. import data as ctdnn_data
from ..reporting import environment_info
from ..training import relative_error
from .rules import seed_stats
from .schema import Claim, DataSource, RunResults

__all__ = ["without_paths", "load_data", "data_source", "mean_predictor_error", "split_errors",
           "stability", "thinned", "pm", "Table", "ParamsBase", "finish", "plain",
           "claims_markdown"]

_PATH = re.compile(r"(?<![\w.:/~])/[^\s'\"(),;]+")


def without_paths(text) -> str:
    """``text`` with every absolute path of this machine replaced by ``<local path>``.

    URLs are kept (a path preceded by ``:`` or ``/`` is part of one).
    """
    return _PATH.sub("<local path>", str(text))


def load_data(name: str, *, source: str = "auto", seed: int = 0, n_samples=None,
              device="cpu", dtype: torch.dtype = torch.float32, split: str = "default",
              normalize: str | None = None):
    """Load a data set quietly: ``(dataset, notes)``.

    Every warning raised while loading (why the simulator stands in for the paper's file, a
    progress-bar library's complaint) becomes one line of ``notes``, without paths, so
    nothing reaches the page's error stream.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ctdnn_data.load(name, source=source, seed=seed, n_samples=n_samples,
                             progress=False, device=device, dtype=dtype, split=split,
                             normalize=normalize)
    notes = []
    for w in caught:
        if w.category.__name__ == "TqdmWarning":
            continue   # progress bars are off: a progress library's widget notice is irrelevant
        kind = ("data source" if issubclass(w.category, ctdnn_data.DataSourceWarning)
                else w.category.__name__)
        notes.append(f"{kind}: {without_paths(w.message)}")
    return ds, notes


def data_source(ds) -> DataSource:
    """The provenance record of a loaded :class:`ctdnn.data.Dataset`, without paths."""
    meta = ds.meta
    extra = {"requested_source": meta["requested_source"], "split": meta["split"],
             "split_sizes": dict(zip(("train", "val", "test"), ds.sizes)),
             "n_in": ds.n_in, "n_out": ds.n_out,
             "normalization": meta["normalization"]["mode"],
             "reason": without_paths(meta["source_reason"])}
    n = int(meta["n_samples"])
    if ds.source == "paper":
        f = meta["file"]
        extra.update(found_in=f["location"], url=f["url"])
        return DataSource(ds.name, "paper", f"paper file {f['filename']} (sha256 {f['sha256']})",
                          n, filename=f["filename"], sha256=f["sha256"], extra=extra)
    sim = meta["simulator"]
    extra.update(simulator_seed=sim["seed"], cache_key=sim["cache_key"])
    return DataSource(ds.name, "simulated",
                      f"simulated by {sim['function']} ({n} samples, seed {sim['seed']})", n,
                      simulator=sim["function"], extra=extra)


@torch.no_grad()
def mean_predictor_error(ds, metric: str = "mean_ratio") -> float:
    """Test relative error of predicting the training mean: the no-learning reference.

    ``metric``: ``"mean_ratio"`` or ``"frobenius"`` (see :data:`ctdnn.training.METRICS`).
    """
    from ..training import metric_function

    pred = ds.y_train.mean(dim=0, keepdim=True).expand_as(ds.y_test)
    return float(metric_function(metric)(pred, ds.y_test))


@torch.no_grad()
def split_errors(model, ds) -> dict:
    """``{"train_rel_err", "val_rel_err", "test_rel_err"}`` of a model in evaluation mode."""
    model.eval()
    return {f"{s}_rel_err": float(relative_error(model(getattr(ds, f"x_{s}")),
                                                 getattr(ds, f"y_{s}")))
            for s in ("train", "val", "test")}


def stability(val: Sequence[float], spike_rise: float = 0.05,
              tail_fraction: float = 0.2) -> dict:
    """Spike count and tail jitter (percent) of one validation curve.

    Args:
        val: validation errors, one per epoch.
        spike_rise: an epoch whose error exceeds the previous one by more than this fraction
            is a spike.
        tail_fraction: the jitter is the std of the log-changes over this last fraction of
            the epochs (at least two changes; NaN with fewer than three epochs).
    """
    v = np.asarray(val, dtype=float)
    spikes = int(np.sum(v[1:] > (1.0 + spike_rise) * v[:-1])) if v.size > 1 else 0
    n_tail = max(2, math.ceil(tail_fraction * v.size))
    steps = np.diff(np.log(v[-(n_tail + 1):])) if v.size >= 3 else np.array([])
    jitter = 100.0 * float(steps.std()) if steps.size >= 2 else math.nan
    return {"spikes": spikes, "tail_jitter": jitter}


def thinned(history: dict, max_points: int = 200) -> dict:
    """At most ``max_points`` entries of every list of a history (first and last kept)."""
    lengths = {len(v) for v in history.values() if isinstance(v, list)}
    n = max(lengths) if lengths else 0
    if n <= max_points:
        return dict(history)
    keep = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return {k: [v[i] for i in keep] if isinstance(v, list) and len(v) == n else v
            for k, v in history.items()}


def pm(values: Sequence[float], fmt: str = ".3g", prefix: str = "") -> str:
    """``"m ± s"`` over seeds (the value alone for one seed; ``"n/a"``/``"inf"`` if not finite)."""
    values = list(values)
    m, s = seed_stats(values)
    if math.isnan(m):
        return "n/a"
    if not math.isfinite(m) or len(values) == 1:
        return f"{prefix}{m:{fmt}}"
    return f"{prefix}{m:{fmt}} ± {s:{fmt}}"


class Table:
    """A results table that renders as an HTML table in the book and as text elsewhere.

    Args:
        header: column titles.
        rows: one sequence of cells (strings or numbers) per row.
        caption: shown above the table.
    """

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence], caption: str = ""):
        self.header, self.caption = [str(h) for h in header], caption
        self.rows = [[str(c) for c in r] for r in rows]
        bad = [r for r in self.rows if len(r) != len(self.header)]
        if bad:
            raise ValueError(f"every row needs {len(self.header)} cells; got {bad[0]}")

    def _repr_html_(self) -> str:
        e = html.escape
        head = "".join(f"<th>{e(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                       for r in self.rows)
        cap = f"<caption>{e(self.caption)}</caption>" if self.caption else ""
        return (f'<div style="overflow-x:auto"><table class="table ctdnn-results">{cap}'
                f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")

    def __str__(self) -> str:
        widths = [max(len(x) for x in col) for col in zip(self.header, *self.rows)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
        out = ([self.caption] if self.caption else []) + [line(self.header)]
        return "\n".join(out + [line(r) for r in self.rows])

    __repr__ = __str__


class ParamsBase:
    """Mixin of the experiments' parameter dataclasses."""

    @classmethod
    def pick(cls, namespace: dict, **overrides):
        """The parameters named in ``namespace`` (a notebook's globals), others at default."""
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: namespace[k] for k in names if k in namespace}
        return cls(**{**given, **overrides})

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def plain(obj):
    """``obj`` with statuses, tuples and numpy scalars turned into plain Python values."""
    if isinstance(obj, dict):
        return {(k if isinstance(k, (str, int, float)) else str(k)): plain(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, str):
        return str(obj)   # a StrEnum member becomes its value
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def finish(*, run: str, notebook: str, title: str, preset: str, data: Sequence[DataSource],
           parameters: dict, metrics: dict, claims: Sequence[Claim], t_start: float,
           device) -> RunResults:
    """The :class:`RunResults` of a run that started at ``t_start`` (``time.perf_counter``)."""
    return RunResults(run=run, notebook=notebook, title=title, preset=preset, data=tuple(data),
                      parameters=plain(parameters), metrics=plain(metrics),
                      claims=tuple(claims), wall_time_s=time.perf_counter() - t_start,
                      environment=environment_info(device))


def claims_markdown(claims: Sequence[Claim]) -> str:
    """The claims of a page as Markdown: verdict, claim, our numbers, the rule and why.

    Each rule's text is shown once, however many claims it decides: the rule text stored in
    the results file is this same string.
    """
    lines, shown = [], set()
    for c in claims:
        lines.append(f"* **{c.verdict}**: {c.statement}  \n  Ours: {c.ours}.  \n"
                     f"  Why: {c.reason}.  ")
        if c.rule_id not in shown:
            lines.append(f"  *Rule ({c.rule_id}):* {c.rule}")
            shown.add(c.rule_id)
        else:
            lines.append(f"  *Rule ({c.rule_id}):* as above.")
    return "\n".join(lines) if lines else "No claims are checked on this page."
