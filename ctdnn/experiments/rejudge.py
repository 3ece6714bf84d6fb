"""Apply the current rules to the numbers stored in a results folder.

A results file keeps every run's per-seed numbers, so the claims of a finished build can be
decided again by today's rules without training anything: ``rejudge(directory)`` rebuilds each
experiment's results from its file (both layouts) and calls the experiment's ``claims``. Only
the no-learning reference (the test error of predicting the training mean) is recomputed,
from the data set the run used. Used by ``python -m ctdnn.experiments.verdicts --rejudge``.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

from . import bases_beyond, conditioning, degree_sweep, dto, node, rules, stationary
from .common import load_data, mean_predictor_error
from .schema import RunResults, make_claim, read_runs

__all__ = ["rejudge", "rejudge_run"]


def _num(v):
    if isinstance(v, str) and v in ("inf", "-inf"):
        return float(v)
    return math.nan if v is None else v


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return _num(obj)


def _params(cls, parameters: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in parameters.items() if k in names})


def _reference(p) -> tuple:
    ds, _ = load_data(p.dataset, source=p.data_source, seed=p.split_seed,
                      n_samples=p.n_samples, device="cpu")
    return SimpleNamespace(name=ds.name, source=ds.source), mean_predictor_error(ds)


def _dto(r: RunResults):
    p = _params(dto.Params, r.parameters)
    ds, ref = _reference(p)
    return dto.claims(dto.from_metrics(p, ds, ref, _clean(r.metrics)))


def _degree_sweep(r: RunResults):
    p = _params(degree_sweep.Params, r.parameters)
    ds, ref = _reference(p)
    runs = {}
    for m in _clean(r.metrics["models"]):
        name = "none" if m["basis"] == "none" else f"legendre{m['degree']}"
        runs.setdefault(m["architecture"], {})[name] = m["runs"]
    return degree_sweep.claims(degree_sweep.Results(p, ds, [], ref, {}, runs, {}))


def _node(r: RunResults):
    p = _params(node.Params, r.parameters)
    # the run's own data preparation and error metric (they differ under protocol="authors")
    ds, _ = node._load(p.as_dict(), p.seeds[0], "cpu")
    ds, ref = (SimpleNamespace(name=ds.name, source=ds.source),
               mean_predictor_error(ds, p.resolved("metric")))
    runs = {name: m["runs"] for name, m in _clean(r.metrics["models"]).items()}
    return node.claims(node.Results(p, ds, [], ref, 0, 0, 0.0, runs))


def _stationary(r: RunResults):
    p = _params(stationary.Params, r.parameters)
    runs = {}
    for m in _clean(r.metrics["models"]).values():
        runs[(m["basis"], int(m["degree"]), m["time_scaling"])] = m["runs"]
    res = stationary.Results(p, None, runs)
    res.ratios = stationary._ratios(res)
    return stationary.claims(res)


def _conditioning(r: RunResults):
    m = _clean(r.metrics)
    i6 = m["degrees"].index(6)
    ratio_a = {g: m["collocation_condition"][g]["monomial"]["T=1"][i6]
               / m["collocation_condition"][g]["Legendre"]["T=1"][i6]
               for g in conditioning.GRIDS}
    fit = m["fit_final_relative_excess"]["GD"]
    ratio_b = {k: max(fit["monomial"][k], conditioning.ROUNDOFF)
               / max(fit["Legendre"][k], conditioning.ROUNDOFF) for k in fit["monomial"]}
    old = {c.key: c for c in r.claims}
    out = []
    for key, fn, d in (("bases-conditioning", rules.conditioning_gap,
                        rules.conditioning_gap(ratio_a)),
                       ("conditioning-governs-fitting", rules.conditioning_governs_fitting,
                        rules.conditioning_governs_fitting(ratio_b, m["gd_sweep_within_bound"]))):
        c = old.get(key)
        out.append(make_claim(key, "", c.statement if c else key, c.paper if c else "",
                              c.ours if c else "", fn, d))
    return out


def _beyond(r: RunResults):
    return bases_beyond.claims(bases_beyond.from_record(r))


_BY_NOTEBOOK = {"01_bases_conditioning": _conditioning, "02_dto_surrogates": _dto,
                "03_degree_sweep": _degree_sweep, "04_neural_ode_surrogates": _node,
                "05_stationary_ode_nfe": _stationary, "10_beyond_bases": _beyond}


def rejudge_run(r: RunResults) -> list:
    """The claims of one stored run, decided by the current rules."""
    fn = _BY_NOTEBOOK.get(r.notebook)
    return fn(r) if fn else []


def rejudge(directory) -> dict:
    """``{run: [Claim]}`` for every experiment run of a results folder."""
    return {r.run: rejudge_run(r) for r in read_runs(directory)}
