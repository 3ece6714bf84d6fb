"""The results record of one experiment run: typed, validated on write, typed again on read.

A run writes one JSON file through :func:`write_run`; the summary and reproducibility pages
read them back with :func:`read_runs`, which returns :class:`RunResults` objects whose fields
have the types declared here, so the pages need no defensive type checks. Files written in the
earlier layout (no ``schema`` key, ``data`` a free dictionary, claims without ``dataset``) are
converted on reading, so verdicts of older builds can be listed side by side with new ones.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from .. import reporting
from .rules import VERDICTS, Decision

__all__ = ["SCHEMA_VERSION", "Claim", "DataSource", "RunResults", "make_claim", "write_run",
           "read_run", "read_runs", "SchemaError", "NOT_EXPERIMENTS"]

SCHEMA_VERSION = 2
#: Runs that summarise others and hold no claims of their own.
NOT_EXPERIMENTS = frozenset({"06_summary", "07_reproducibility", "benchmarks"})
_DATASETS = ("ELM", "CDR", "DCR")


class SchemaError(ValueError):
    """A results record does not have the declared fields or types."""


@dataclass(frozen=True)
class Claim:
    """One checked claim of the paper, on one data set.

    Attributes:
        id: unique in a build: ``key`` plus ``-DATASET`` where the claim is per data set.
        key: the claim without its data set (the summary's row), e.g.
            ``"dto-legendre-vs-monomial"``.
        dataset: ``"ELM"``, ``"CDR"``, ``"DCR"``, ``"spiral"`` or ``""`` (no data set).
        statement: the paper's claim in one sentence.
        paper: the paper's number or statement, or ``"not given"``.
        ours: our numbers, short (one line).
        verdict: one of :data:`~ctdnn.experiments.rules.VERDICTS`.
        rule: the rule's text (``rules.RULES[rule_id].text``).
        rule_id: the rule's name in :data:`~ctdnn.experiments.rules.RULES`.
        reason: why this verdict: the branch of the rule and its numbers.
        details: longer numbers (per cell), optional.
    """

    id: str
    key: str
    dataset: str
    statement: str
    paper: str
    ours: str
    verdict: str
    rule: str
    rule_id: str
    reason: str
    details: str = ""

    def __post_init__(self):
        for f in fields(self):
            if not isinstance(getattr(self, f.name), str):
                raise SchemaError(f"Claim.{f.name} must be a string, got "
                                  f"{type(getattr(self, f.name)).__name__}")
        if self.verdict not in VERDICTS:
            raise SchemaError(f"claim {self.id!r}: verdict must be one of {VERDICTS}, "
                              f"got {self.verdict!r}")
        if not self.id or not self.key:
            raise SchemaError("a claim needs a non-empty id and key")


def make_claim(key: str, dataset: str, statement: str, paper: str, ours: str, rule_fn,
               decision: Decision, details: str = "") -> Claim:
    """A :class:`Claim` whose rule text comes from the rule function itself."""
    return Claim(id=f"{key}-{dataset}" if dataset in _DATASETS else key, key=key, dataset=dataset,
                 statement=statement, paper=paper, ours=ours, verdict=decision.verdict,
                 rule=rule_fn.text, rule_id=rule_fn.rule_id, reason=decision.reason,
                 details=details)


@dataclass(frozen=True)
class DataSource:
    """Where one data set of a run came from, for banners and the summary.

    Attributes:
        name: ``"ELM"``, ``"CDR"``, ``"DCR"`` or ``"spiral"``.
        source: ``"paper"`` (the paper's file), ``"simulated"`` or ``"analytic"``.
        description: one line for a banner, e.g. ``"paper file NNERDS.mat (sha256 e0b1daed...)"``
            or ``"simulator ctdnn.data.dcr.simulate (2000 samples)"``.
        n_samples: samples in the run (train + validation + test), or 0 if not applicable.
        filename, sha256: of the paper's file ("" if simulated).
        simulator: the simulator function ("" for the paper's file).
        extra: further provenance (split, normalisation, cache key, reason for simulating).
    """

    name: str
    source: str
    description: str
    n_samples: int = 0
    filename: str = ""
    sha256: str = ""
    simulator: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.source not in ("paper", "simulated", "analytic"):
            raise SchemaError(f"data set {self.name!r}: source must be 'paper', 'simulated' or "
                              f"'analytic', got {self.source!r}")
        if not isinstance(self.n_samples, int) or isinstance(self.n_samples, bool):
            raise SchemaError(f"data set {self.name!r}: n_samples must be an int")


@dataclass(frozen=True)
class RunResults:
    """Everything one run reports; written as ``{output_dir}/{run}.json``.

    ``metrics`` is experiment-specific (documented by each experiment module); everything else
    is common to all runs.
    """

    run: str
    notebook: str
    title: str
    preset: str
    data: tuple[DataSource, ...]
    parameters: dict
    metrics: dict
    claims: tuple[Claim, ...]
    wall_time_s: float
    environment: dict
    schema: int = SCHEMA_VERSION

    def __post_init__(self):
        for name in ("run", "notebook", "title", "preset"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise SchemaError(f"RunResults.{name} must be a non-empty string")
        for name in ("parameters", "metrics", "environment"):
            if not isinstance(getattr(self, name), dict):
                raise SchemaError(f"RunResults.{name} must be a dict")
        object.__setattr__(self, "data", tuple(self.data))
        object.__setattr__(self, "claims", tuple(self.claims))
        if not all(isinstance(d, DataSource) for d in self.data):
            raise SchemaError("RunResults.data must hold DataSource records")
        if not all(isinstance(c, Claim) for c in self.claims):
            raise SchemaError("RunResults.claims must hold Claim records")
        ids = [c.id for c in self.claims]
        if len(set(ids)) != len(ids):
            raise SchemaError(f"claim ids repeat in run {self.run!r}: {ids}")
        if not isinstance(self.wall_time_s, (int, float)):
            raise SchemaError("RunResults.wall_time_s must be a number")
        _check_optimizer_metrics(self.run, self.metrics)

    def to_dict(self) -> dict:
        return {"schema": self.schema, "run": self.run, "notebook": self.notebook,
                "title": self.title, "preset": self.preset,
                "data": [asdict(d) for d in self.data], "parameters": self.parameters,
                "metrics": self.metrics, "claims": [asdict(c) for c in self.claims],
                "wall_time_s": float(self.wall_time_s), "environment": self.environment}

    @classmethod
    def from_dict(cls, obj: dict) -> "RunResults":
        """A record from its JSON form (either layout); raises :class:`SchemaError`."""
        if not isinstance(obj, dict):
            raise SchemaError(f"a results record is a JSON object, got {type(obj).__name__}")
        if obj.get("schema") == SCHEMA_VERSION:
            try:
                data = tuple(DataSource(**d) for d in obj["data"])
                claims = tuple(Claim(**c) for c in obj["claims"])
                return cls(run=obj["run"], notebook=obj["notebook"], title=obj["title"],
                           preset=obj["preset"], data=data, parameters=obj["parameters"],
                           metrics=obj["metrics"], claims=claims,
                           wall_time_s=_number(obj["wall_time_s"]),
                           environment=obj["environment"])
            except (KeyError, TypeError) as err:
                raise SchemaError(f"results record {obj.get('run')!r}: {err}") from err
        return _from_legacy(obj)


#: Optimizers of the DTO experiment; each but Adam has its own block in ``metrics``.
OPTIMIZERS = ("adam", "gnvpro")
_CELL_KEYS = ("architecture", "T", "basis", "runs")


def _check_optimizer_metrics(run: str, metrics: dict) -> None:
    """The optimizer axis of a record's metrics, where present (the DTO experiment):
    ``optimizers`` a list from :data:`OPTIMIZERS`; ``gnvpro`` a dict with a ``protocol``
    dict holding an integer ``max_work_units`` and a ``cells`` list of dicts with
    ``architecture``, ``T``, ``basis`` and ``runs``; ``equal_work`` a dict with a ``rows``
    list. Raises :class:`SchemaError` naming the run and the field."""
    where = f"run {run!r}: metrics"
    opts = metrics.get("optimizers")
    if opts is not None and not (isinstance(opts, list) and set(opts) <= set(OPTIMIZERS)):
        raise SchemaError(f"{where}['optimizers'] must be a list from {OPTIMIZERS}, got {opts!r}")
    gn = metrics.get("gnvpro")
    if gn is not None:
        if not (isinstance(gn, dict) and isinstance(gn.get("protocol"), dict)
                and isinstance(gn.get("cells"), list)):
            raise SchemaError(f"{where}['gnvpro'] must be a dict with a 'protocol' dict and a "
                              "'cells' list")
        budget = gn["protocol"].get("max_work_units")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise SchemaError(f"{where}['gnvpro']['protocol']['max_work_units'] must be an "
                              f"int, got {budget!r}")
        for c in gn["cells"]:
            if not (isinstance(c, dict) and all(k in c for k in _CELL_KEYS)
                    and isinstance(c["runs"], list)):
                raise SchemaError(f"{where}['gnvpro']['cells']: every cell is a dict with "
                                  f"{_CELL_KEYS} ('runs' a list)")
    eq = metrics.get("equal_work")
    if eq is not None and not (isinstance(eq, dict) and isinstance(eq.get("rows"), list)):
        raise SchemaError(f"{where}['equal_work'] must be a dict with a 'rows' list")


def _number(v) -> float:
    if v in ("inf", "-inf"):
        return float(v)
    return math.nan if v is None else float(v)


def write_run(output_dir: str | os.PathLike, results: RunResults) -> Path:
    """Validate ``results`` (by reading its JSON form back) and write ``{run}.json`` atomically.

    Raises:
        SchemaError: if the record does not round-trip.
    """
    if not isinstance(results, RunResults):
        raise SchemaError(f"write_run needs a RunResults record, got {type(results).__name__}")
    path = reporting.write_results(Path(output_dir) / f"{results.run}.json", results.to_dict())
    read_run(path)   # what was written must read back
    return path


def read_run(path: str | os.PathLike) -> RunResults:
    """One results file, in either layout."""
    with open(path) as fh:
        return RunResults.from_dict(json.load(fh))


def read_runs(directory: str | os.PathLike, *, experiments_only: bool = True) -> list[RunResults]:
    """Every results file of a folder, sorted by run name.

    Args:
        directory: the results folder (``book/generated/results``).
        experiments_only: skip the summary, reproducibility and benchmark files.

    Raises:
        SchemaError: naming the file, if one does not hold a results record.
    """
    out = []
    for p in sorted(Path(directory).glob("*.json")):
        if experiments_only and p.stem in NOT_EXPERIMENTS:
            continue
        try:
            out.append(read_run(p))
        except (SchemaError, ValueError) as err:
            raise SchemaError(f"{p.name}: {err}") from err
    return sorted(out, key=lambda r: r.run)


# ----------------------------------------------------------------------------- old layout

def _legacy_source(name: str, d: dict) -> DataSource:
    source = d.get("source")
    if source == "paper":
        fn = str(d.get("filename") or "")
        sha = str(d.get("sha256") or "")
        n = d.get("n_samples")
        return DataSource(name, "paper", f"paper file {fn} (sha256 {sha[:12]})",
                          int(n) if isinstance(n, int) else 0, filename=fn, sha256=sha)
    if isinstance(source, str) and source.startswith("simulated"):
        n = d.get("n_samples") or d.get("n_points") or 0
        fn = str(d.get("function") or "")
        return DataSource(name, "simulated", f"simulator {fn or source} ({n} samples)",
                          int(n), simulator=fn)
    return DataSource(name or "none", "analytic", str(d.get("description") or "no data set"))


def _from_legacy(obj: dict) -> RunResults:
    data = obj.get("data") or {}
    sources = []
    if isinstance(data.get("source"), str):
        name = str(data.get("dataset") or data.get("name") or "")
        sources.append(_legacy_source(name, data))
    else:
        sources += [_legacy_source(k, v) for k, v in data.items()
                    if isinstance(v, dict) and "source" in v]
    claims = []
    for c in obj.get("claims") or []:
        cid = str(c.get("id", ""))
        m = re.match(r"^(.*)-(ELM|CDR|DCR)$", cid)
        key, dataset = (m.group(1), m.group(2)) if m else (cid, "")
        if not dataset and cid.startswith("stationary"):
            dataset = "spiral"
        claims.append(Claim(id=cid, key=key, dataset=dataset, statement=str(c.get("claim", "")),
                            paper=str(c.get("paper", "")), ours=str(c.get("ours", "")),
                            verdict=str(c.get("verdict")), rule=str(c.get("rule", "")),
                            rule_id="", reason="(earlier layout: no reason recorded)"))
    return RunResults(run=str(obj.get("run") or "?"), notebook=str(obj.get("notebook") or "?"),
                      title=str(obj.get("title") or "?"), preset=str(obj.get("preset") or "?"),
                      data=tuple(sources), parameters=dict(obj.get("parameters") or {}),
                      metrics=dict(obj.get("metrics") or {}), claims=tuple(claims),
                      wall_time_s=_number(obj.get("wall_time_s")),
                      environment=dict(obj.get("environment") or {}), schema=1)
