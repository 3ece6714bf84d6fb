"""The DTO experiments' protocols: resolution of every option, the models and training they
build, parameter counts by hand, and the effects module's registry and table."""

from types import SimpleNamespace

import pytest
import torch

import ctdnn
from ctdnn.experiments import degree_sweep, dto, fidelity

ELM = SimpleNamespace(n_in=15, n_out=10)  # the paper file's sizes

CTDNN = {"init": "uniform", "tikhonov": "integral", "warm_start_alpha": 1e-6,
         "degree_semantics": "degree", "weight_times": "consistent"}
AUTHORS = {"init": "he_normal", "tikhonov": "coefficients", "warm_start_alpha": 1e-3,
           "degree_semantics": "degree", "weight_times": "paper"}


@pytest.mark.parametrize("cls", [dto.Params, degree_sweep.Params])
def test_protocol_resolution(cls):
    assert cls().protocol == "ctdnn" and cls().options == CTDNN
    assert cls(protocol="authors").options == AUTHORS
    # an explicit field overrides the protocol, the others still follow it
    p = cls(protocol="authors", init="small_normal", warm_start_alpha=1e-6)
    assert p.options == {**AUTHORS, "init": "small_normal", "warm_start_alpha": 1e-6}
    assert p.resolved("tikhonov") == "coefficients"
    assert cls(tikhonov="coefficients").options == {**CTDNN, "tikhonov": "coefficients"}
    # a parameter dict without the fields (written before they existed) is ctdnn's protocol
    assert dto.resolve_options({"width": 15}) == CTDNN


@pytest.mark.parametrize("kwargs,match", [
    ({"protocol": "matlab"}, "protocol='matlab' is unknown"),
    ({"init": "xavier"}, "init must be one of"),
    ({"tikhonov": "gram"}, "tikhonov must be one of"),
    ({"warm_start_alpha": -1.0}, "warm_start_alpha must be a positive number"),
    ({"warm_start_alpha": True}, "warm_start_alpha must be a positive number"),
    ({"degree_semantics": "order"}, "degree_semantics must be"),
    ({"weight_times": "matlab"}, "weight_times must be one of"),
    ({"degree": 0, "degree_semantics": "functions"}, "means no basis function"),
])
def test_bad_protocol_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dto.Params(**kwargs)


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ["resnet", "hamiltonian"])
def test_parameter_counts_by_hand(arch):
    """Opening n_in w + w, flow n_f w (w + 1), closing w n_out + n_out (MATLAB's nParams)."""
    w, n_in, n_out = 15, ELM.n_in, ELM.n_out
    ends = n_in * w + w + w * n_out + n_out
    for semantics, degree, n_f in (("degree", 3, 4), ("functions", 3, 3), ("degree", 6, 7),
                                   ("functions", 1, 1)):
        p = dto.Params(degree=degree, degree_semantics=semantics).as_dict()
        for basis in ("legendre", "monomial"):
            m = dto.build(p, ELM, arch, 1.0, basis, degree, 0)
            assert m.basis.n_functions == n_f
            assert m.n_time_parameters == n_f * w * (w + 1)
            assert _n_params(m) == ends + n_f * w * (w + 1)
        m = dto.build(p, ELM, arch, 1.0, "none", 0, 0)
        assert _n_params(m) == ends + 12 * w * (w + 1)
    # the paper's ELM networks with d = 3: 240 + 960 + 160
    assert _n_params(dto.build(dto.Params().as_dict(), ELM, arch, 1.0, "legendre", 3, 0)) == 1360
    assert _n_params(dto.build(dto.Params(degree_semantics="functions").as_dict(), ELM, arch,
                               1.0, "legendre", 3, 0)) == 1120


def test_each_protocol_builds_its_model():
    for protocol, expect in (("ctdnn", CTDNN), ("authors", AUTHORS)):
        p = dto.Params(protocol=protocol).as_dict()
        m = dto.build(p, ELM, "resnet", 5.0, "legendre", 3, 0)
        assert (m.init, m.weight_times) == (expect["init"], expect["weight_times"])
        assert m.basis.degree == 3
        if protocol == "authors":  # zero biases: he_normal
            assert torch.equal(m.opening.bias, torch.zeros(15))
            assert m.step_times[-1] == 5.0  # linspace(0, T, n_t)
        else:
            assert bool((m.opening.bias != 0).all())
            assert m.step_times[-1] == pytest.approx(5.0 * 11 / 12)
    # the same seed gives the same draw under one protocol, whatever the basis or T
    a = dto.build(dto.Params(protocol="authors").as_dict(), ELM, "resnet", 1.0, "legendre", 3, 4)
    b = dto.build(dto.Params(protocol="authors").as_dict(), ELM, "resnet", 5.0, "monomial", 3, 4)
    assert torch.equal(a.opening.weight, b.opening.weight)


@pytest.mark.parametrize("protocol", ["ctdnn", "authors"])
def test_run_under_each_protocol(paper_data_dir, monkeypatch, protocol):
    """A run passes the resolved options to the trainers and records them."""
    import ctdnn.gnvpro

    seen = {"ensemble": [], "gnvpro": []}
    real_ensemble, real_gnvpro = dto.train_ensemble, ctdnn.gnvpro.train_gnvpro

    def spy_ensemble(models, data, **kw):
        seen["ensemble"].append((list(models), kw))
        return real_ensemble(models, data, **kw)

    def spy_gnvpro(model, data, **kw):
        seen["gnvpro"].append((model, kw))
        return real_gnvpro(model, data, **kw)

    monkeypatch.setattr(dto, "train_ensemble", spy_ensemble)
    monkeypatch.setattr(ctdnn.gnvpro, "train_gnvpro", spy_gnvpro)
    p = dto.Params(dataset="ELM", architectures=["resnet"], T_values=[1.0],
                   bases=["legendre", "none"], epochs=1, seeds=[0], device="cpu",
                   gnvpro_work_units=2, protocol=protocol)
    res = dto.run(p)
    expect = AUTHORS if protocol == "authors" else CTDNN
    (models, kw), = seen["ensemble"]
    assert kw["tikhonov"] == expect["tikhonov"]
    assert kw["warm_start_alpha"] == expect["warm_start_alpha"] and kw["warm_start"]
    assert all(m.init == expect["init"] and m.weight_times == expect["weight_times"]
               for m in models)
    assert {kw["theta_penalty"] for _, kw in seen["gnvpro"]} == {
        "euclidean" if protocol == "authors" else "model"}
    m = dto.metrics(res)
    assert m["protocol"]["name"] == protocol and m["protocol"]["options"] == expect
    assert m["gnvpro"]["protocol"]["options"] == expect


def test_fidelity_registry_and_table(tmp_path):
    rows = fidelity.rows()
    assert {"e", "f", "g", "h"} <= set(rows) and list(rows) == sorted(rows)
    with pytest.raises(ValueError, match="already registered"):
        fidelity.register("e", lambda **kw: None)

    def fake(seeds=(0, 1, 2), **kw):
        return fidelity.Effect(
            row="z", what="a test row", option="opt", authors_value="a", ctdnn_value="c",
            settings="none", runs={"authors": {"test_rel_err": [0.2, 0.3, 0.4]},
                                   "ctdnn": {"test_rel_err": [0.1, 0.1, 0.1], "nfe": [3, 4, 5]}})

    fidelity.register("z", fake)
    try:
        eff = fidelity.ROWS["z"]()
        text = fidelity.effects_table([eff])
        assert "| z | a test row | `opt` | a | c |" in text
        eff.what = "0.5 alpha ||theta||^2"
        assert "0.5 alpha \\|\\|theta\\|\\|^2 |" in fidelity.effects_table([eff])
        assert "0.3 ± 0.1" in text and "0.1 ± 0" in text and "NFE 4 ± 1" in text
        out = tmp_path / "effects.md"
        fidelity.write_table([eff], out, command="python -m x")
        assert "python -m x" in out.read_text()
    finally:
        fidelity.ROWS.pop("z")


@pytest.mark.parametrize("row,option,authors,ctdnn_value", [
    ("e", "init", "he_normal", "uniform"), ("f", "tikhonov", "coefficients", "integral"),
    ("g", "warm_start_alpha", 1e-3, 1e-6), ("h", "degree_semantics", "functions", "degree"),
    ("dto", "protocol", "authors", "ctdnn")])
def test_dto_rows_switch_exactly_one_option(monkeypatch, row, option, authors, ctdnn_value):
    calls = []

    def fake_unit(item):
        calls.append(item)
        n = len(item["specs"])
        return {"records": [{"test_rel_err": 0.1 * (k + 1), "status": "completed"}
                            for k in range(n)],
                "n_time_parameters": {"legendre:3": 960 if len(calls) == 2 else 720}}

    monkeypatch.setattr(dto, "train_unit", fake_unit)
    eff = fidelity.dto_effect(row, seeds=(0, 1, 2), epochs=3)
    assert len(calls) == 2
    a, c = calls[0]["params"], calls[1]["params"]
    assert a[option] == authors and c[option] == ctdnn_value
    assert {k for k in a if a[k] != c[k]} == {option}
    assert all(len(x["specs"]) == 3 and x["params"]["epochs"] == 3 for x in calls)
    assert eff.stats("authors") == pytest.approx((0.2, 0.1, 3))
    assert "720 against 960" in eff.notes
