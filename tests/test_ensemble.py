"""Ensemble training equals training the members one at a time."""

import math

import pytest
import torch

import ctdnn
from ctdnn.training import TrainingError


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _data(n=90):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = torch.stack([torch.sin(x[:, 0]) + x[:, 1] * x[:, 2], torch.tanh(x[:, 3] - x[:, 0])], 1)
    return x[:60], y[:60], x[60:], y[60:]


CONFIGS = [dict(basis="legendre", degree=3, T=1.0), dict(basis="monomial", degree=3, T=5.0),
           dict(basis="legendre", degree=5, T=10.0), dict(basis="none", T=1.0)]


def _models(cls, init_seeds):
    out = []
    for s, cfg in zip(init_seeds, CONFIGS):
        torch.manual_seed(s)
        out.append(cls(4, 2, width=6, n_steps=5, **cfg))
    return out


@pytest.mark.parametrize("cls", [ctdnn.ResNet, ctdnn.HamiltonianNet])
def test_ensemble_matches_individual_training(f64, cls):
    seeds = [3, 4, 5, 6]
    kw = dict(epochs=4, batch_size=16, lr=1e-2, alpha_theta=1e-3, alpha_W=1e-3, progress=False)
    singles = _models(cls, [0, 1, 2, 3])
    ref = [ctdnn.train(m, _data(), seed=s, **kw) for m, s in zip(singles, seeds)]
    members = _models(cls, [0, 1, 2, 3])
    res = ctdnn.train_ensemble(members, _data(), seeds=seeds, **kw)
    for a, b, ra, rb in zip(singles, members, ref, res):
        for key, v in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[key], v, rtol=1e-7, atol=1e-9)
        for h in ("loss", "train_rel_err", "val_rel_err"):
            assert rb.history[h] == pytest.approx(ra.history[h], rel=1e-7)
        assert rb.best_epoch == ra.best_epoch


def test_padding_stays_zero(f64):
    members = _models(ctdnn.ResNet, [0, 1, 2, 3])
    net = ctdnn.StackedNet(members)
    assert net.theta.shape[1] == 6  # Legendre d=5 has the most functions
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y, _, _ = _data()
    for _ in range(5):
        opt.zero_grad()
        (net(x.expand(4, -1, -1)) - y).square().sum().backward()
        opt.step()
    assert torch.count_nonzero(net.theta[0, 4:]) == 0  # Legendre d=3: 4 functions
    assert torch.count_nonzero(net.theta[3, 5:]) == 0  # 'none' with 5 steps
    assert torch.count_nonzero(net.theta[0, 1:4]) > 0
    ctdnn.train_ensemble(members, _data(), epochs=2, progress=False)
    assert members[0].layer.theta.coefficients.shape[0] == 4


def test_diverging_member_is_frozen_others_continue(monkeypatch):
    members = _models(ctdnn.ResNet, [0, 1, 2, 3])
    original = ctdnn.StackedNet.penalty
    calls = {"n": 0}

    def penalty(self, a=0.0, b=0.0):
        calls["n"] += 1
        out = original(self, a, b)
        if calls["n"] > 4:  # 4 batches per epoch: member 1 diverges in epoch 2
            out = out + torch.tensor([0.0, math.nan, 0.0, 0.0], dtype=out.dtype)
        return out

    monkeypatch.setattr(ctdnn.StackedNet, "penalty", penalty)
    res = ctdnn.train_ensemble(members, _data(), epochs=4, batch_size=16, progress=False)
    assert [r.status for r in res] == ["completed", "diverged", "completed", "completed"]
    assert res[1].epochs_completed == 1 and res[0].epochs_completed == 4
    assert all(torch.isfinite(p).all() for m in members for p in m.parameters())


def test_bad_ensembles():
    with pytest.raises(TrainingError, match="one architecture"):
        ctdnn.StackedNet([ctdnn.ResNet(4, 2), ctdnn.HamiltonianNet(4, 2)])
    with pytest.raises(TrainingError, match=r"models\[1\].width = 8 differs"):
        ctdnn.StackedNet([ctdnn.ResNet(4, 2), ctdnn.ResNet(4, 2, width=8)])
    with pytest.raises(TrainingError, match="ResNet or HamiltonianNet"):
        ctdnn.StackedNet([ctdnn.NeuralODE(4, 2)])
    with pytest.raises(TrainingError, match="seeds has 1 entries for 2 models"):
        ctdnn.train_ensemble([ctdnn.ResNet(4, 2), ctdnn.ResNet(4, 2)], _data(), epochs=1,
                             seeds=[0], progress=False)
