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

    def penalty(self, a=0.0, b=0.0, tikhonov="integral"):
        calls["n"] += 1
        out = original(self, a, b, tikhonov)
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


_PENALTY = ctdnn.StackedNet.penalty


def _diverging_penalty(monkeypatch, after_calls):
    """Member 1's penalty becomes NaN after ``after_calls`` minibatches (4 per epoch)."""
    original = _PENALTY
    calls = {"n": 0}

    def penalty(self, a=0.0, b=0.0, tikhonov="integral"):
        calls["n"] += 1
        out = original(self, a, b, tikhonov)
        if calls["n"] > after_calls:
            out = out + torch.tensor([0.0, math.nan, 0.0, 0.0], dtype=out.dtype)
        return out

    monkeypatch.setattr(ctdnn.StackedNet, "penalty", penalty)
    return calls


def _same_results(a_models, a_res, b_models, b_res):
    for ma, mb, ra, rb in zip(a_models, b_models, a_res, b_res):
        for key, v in ma.state_dict().items():
            assert torch.equal(v, mb.state_dict()[key]), key
        for h in ("epoch", "loss", "train_rel_err", "val_rel_err"):
            assert ra.history[h] == rb.history[h], h
        assert (ra.status, ra.best_epoch, ra.message) == (rb.status, rb.best_epoch, rb.message)


KW = dict(epochs=5, batch_size=16, lr=1e-2, seeds=[3, 4, 5, 6], progress=False)


@pytest.mark.parametrize("diverge_after", [4, 12])  # member 1 diverges in epoch 2 or 4
def test_ensemble_resume_is_bit_identical(tmp_path, monkeypatch, diverge_after):
    # The checkpoint after epoch 2 holds a frozen member, or a member that diverges later.
    _diverging_penalty(monkeypatch, diverge_after)
    full = _models(ctdnn.ResNet, [0, 1, 2, 3])
    ref = ctdnn.train_ensemble(full, _data(), **KW)
    assert [r.status for r in ref] == ["completed", "diverged", "completed", "completed"]
    ck = tmp_path / "ens.ckpt"
    calls = _diverging_penalty(monkeypatch, diverge_after)
    first = ctdnn.train_ensemble(_models(ctdnn.ResNet, [0, 1, 2, 3]), _data(), checkpoint=ck,
                                 max_epochs=2, **KW)
    assert [r.status for r in first] == (["partial"] * 4 if diverge_after == 12 else
                                         ["partial", "diverged", "partial", "partial"])
    assert "stopped after epoch 2 of 5" in first[0].message
    calls["n"] = 8  # the penalty's call count continues where the first call stopped
    resumed = _models(ctdnn.ResNet, [7, 8, 9, 10])  # everything must come from the checkpoint
    res = ctdnn.train_ensemble(resumed, _data(), checkpoint=ck, resume=True, **KW)
    _same_results(full, ref, resumed, res)
    with pytest.raises(TrainingError, match=r"training\.seeds"):
        ctdnn.train_ensemble(_models(ctdnn.ResNet, [0, 1, 2, 3]), _data(), checkpoint=ck,
                             resume=True, **{**KW, "seeds": [3, 4, 5, 7]})


def test_ensemble_interrupt_saves_and_resume_is_bit_identical(tmp_path, monkeypatch):
    full = _models(ctdnn.ResNet, [0, 1, 2, 3])
    ref = ctdnn.train_ensemble(full, _data(), **KW)
    original = ctdnn.StackedNet.penalty
    calls = {"n": 0}

    def interrupting(self, a=0.0, b=0.0, tikhonov="integral"):
        calls["n"] += 1
        if calls["n"] == 4 * 3 + 2:  # mid-epoch 4
            raise KeyboardInterrupt
        return original(self, a, b, tikhonov)

    monkeypatch.setattr(ctdnn.StackedNet, "penalty", interrupting)
    ck = tmp_path / "ens.ckpt"
    with pytest.raises(KeyboardInterrupt):
        ctdnn.train_ensemble(_models(ctdnn.ResNet, [0, 1, 2, 3]), _data(), checkpoint=ck,
                             checkpoint_every=100, **KW)
    saved = ctdnn.training.load_checkpoint(ck, "ensemble")
    assert saved["epoch"] == 3 and [h["epoch"] for h in saved["histories"]] == [[1, 2, 3]] * 4
    monkeypatch.setattr(ctdnn.StackedNet, "penalty", original)
    resumed = _models(ctdnn.ResNet, [7, 8, 9, 10])
    res = ctdnn.train_ensemble(resumed, _data(), checkpoint=ck, resume=True, **KW)
    _same_results(full, ref, resumed, res)


# -- the per-step baseline inside an ensemble: member m, step k uses its weight set k ----------

@pytest.mark.parametrize("cls,kind", [(ctdnn.ResNet, "resnet"), (ctdnn.HamiltonianNet, "hamiltonian")])
def test_ensemble_step_k_uses_weight_set_k(f64, cls, kind):
    import numpy as np

    horizons = (0.5, 1.0, 5.0, 10.0, 25.0)
    x = np.random.default_rng(1).normal(size=(3, 2))
    for n in range(1, 65):
        models, sets = [], []
        rng = np.random.default_rng(n)
        for T in horizons:
            m = cls(2, 2, width=3, n_steps=n, T=T, basis="none")
            s = rng.normal(0.0, 0.7, size=(n, 3, 4))
            with torch.no_grad():
                m.layer.theta.coefficients.copy_(torch.tensor(s))
            models.append(m)
            sets.append(s)
        net = ctdnn.StackedNet(models)
        K, b = net.step_weights()
        assert np.array_equal(K.detach().numpy(), np.stack(sets)[..., :-1]), n
        assert np.array_equal(b.detach().numpy(), np.stack(sets)[..., -1]), n
        out = net(torch.tensor(x).expand(len(models), -1, -1)).detach().numpy()
        for i, (m, s, T) in enumerate(zip(models, sets, horizons)):
            W0, b0 = m.opening.weight.detach().numpy(), m.opening.bias.detach().numpy()
            W, c = m.closing.weight.detach().numpy(), m.closing.bias.detach().numpy()
            u, z, h = np.tanh(x @ W0.T + b0), 0.0 * x[:, :1], T / n
            z = np.zeros_like(u)
            for k in range(n):  # hand-written loop, set k at step k
                Kk, bk = s[k, :, :-1], s[k, :, -1]
                if kind == "resnet":
                    u = u + h * np.tanh(u @ Kk.T + bk)
                else:
                    z = z - h * np.tanh(u @ Kk + bk)
                    u = u + h * np.tanh(z @ Kk.T + bk)
            np.testing.assert_allclose(out[i], u @ W.T + c, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{n=}, {T=}")


def test_ensemble_coefficient_penalty_matches_formula(f64):
    """tikhonov="coefficients": 0.5 alpha (||K0||^2 + ||b0||^2 + ||coefficients||^2) per member."""
    members = _models(ctdnn.ResNet, [0, 1, 2, 3])
    net = ctdnn.StackedNet(members)
    a_t, a_w = 0.3, 0.7
    got = net.penalty(a_t, a_w, "coefficients").detach()
    for k, m in enumerate(members):
        theta = sum(float((p.detach() ** 2).sum()) for p in
                    (m.opening.weight, m.opening.bias, m.layer.theta.coefficients))
        W = float((m.closing.weight.detach() ** 2).sum() + (m.closing.bias.detach() ** 2).sum())
        assert math.isclose(float(got[k]), 0.5 * a_t * theta + 0.5 * a_w * W, rel_tol=1e-13)
        assert math.isclose(float(got[k]), float(m.penalty(a_t, a_w, tikhonov="coefficients").detach()),
                            rel_tol=1e-13)
    with pytest.raises(ValueError, match="tikhonov must be one of"):
        net.penalty(a_t, a_w, "gram")
    with pytest.raises(TrainingError, match="tikhonov must be one of"):
        ctdnn.train_ensemble(members, _data(), epochs=1, tikhonov="gram", progress=False)


def test_ensemble_coefficient_penalty_trains_like_individual_runs(f64):
    """Each member of an ensemble under tikhonov="coefficients" follows its own train()."""
    cfgs = CONFIGS[:2]
    def build(s, cfg):
        torch.manual_seed(s)
        return ctdnn.ResNet(4, 2, width=6, n_steps=5, **cfg)
    ens = [build(s, c) for s, c in zip([0, 1], cfgs)]
    res = ctdnn.train_ensemble(ens, _data(), epochs=2, batch_size=16, seeds=[3, 4],
                               alpha_theta=1e-2, alpha_W=1e-2, tikhonov="coefficients",
                               progress=False)
    for s, cfg, seed, r in zip([0, 1], cfgs, [3, 4], res):
        single = build(s, cfg)
        ref = ctdnn.train(single, _data(), epochs=2, batch_size=16, seed=seed, alpha_theta=1e-2,
                          alpha_W=1e-2, tikhonov="coefficients", progress=False)
        assert r.history["loss"] == pytest.approx(ref.history["loss"], rel=1e-10)
