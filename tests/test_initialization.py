"""Initialisation schemes: moments of the draws, zero biases, constant in time, reproducible."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import ctdnn
from ctdnn.initialization import INIT_SCHEMES, initialize


def _moments_ok(x, var):
    """Mean 0 and variance ``var`` to within four standard errors of a normal sample."""
    x = np.asarray(x.detach(), dtype=np.float64).ravel()
    n = x.size
    assert abs(x.mean()) < 4 * math.sqrt(var / n), (x.mean(), var, n)
    assert abs(x.var() / var - 1) < 4 * math.sqrt(2 / n), (x.var(), var, n)


def _tv_K_b(layer):
    """Constant-direction coefficient split into K and b (the weight at every time)."""
    c = layer.theta.coefficients.detach()
    const = layer.theta.basis.constant_coefficients(dtype=c.dtype)
    j = int(torch.nonzero(const)[0])
    W = c[j] / const[j]
    return W[:, :-1], W[:, -1]


def test_default_is_todays_uniform_draw():
    """init="uniform" (the default) reproduces the construction order of nn.Linear layers
    then the time-varying layer's uniform draw, bit for bit."""
    for cls in (ctdnn.ResNet, ctdnn.HamiltonianNet):
        ctdnn.seed_everything(5)
        model = cls(4, 2, width=6, n_steps=5, basis="legendre", degree=3)
        ctdnn.seed_everything(5)
        explicit = cls(4, 2, width=6, n_steps=5, basis="legendre", degree=3, init="uniform")
        ctdnn.seed_everything(5)
        opening, closing = nn.Linear(4, 6), nn.Linear(6, 2)
        bound = 1 / math.sqrt(6)
        W = torch.empty(6, 7).uniform_(-bound, bound)
        for m in (model, explicit):
            assert torch.equal(m.opening.weight, opening.weight)
            assert torch.equal(m.opening.bias, opening.bias)
            assert torch.equal(m.closing.weight, closing.weight)
            assert torch.equal(m.layer.theta.coefficients[0], W)
            assert torch.equal(m.layer.theta.coefficients[1:], torch.zeros(3, 6, 7))
        assert model.init == "uniform"


@pytest.mark.parametrize("basis", ["legendre", "monomial", "none"])
def test_he_normal_moments_and_zero_biases(basis):
    n_in, width = 200, 300
    ctdnn.seed_everything(0)
    model = ctdnn.ResNet(n_in, 3, width=width, n_steps=4, T=5.0, basis=basis, degree=3,
                         init="he_normal")
    _moments_ok(model.opening.weight, 2 / n_in)
    assert torch.equal(model.opening.bias, torch.zeros(width))
    K, b = _tv_K_b(model.layer)
    _moments_ok(K, 2 / width)
    assert torch.equal(b, torch.zeros(width))
    # constant in time: every step sees the same weights
    Ks, bs = model.step_weights()
    assert torch.allclose(Ks, K.expand_as(Ks), rtol=0, atol=1e-6)
    assert torch.equal(bs, torch.zeros_like(bs))
    # the closing layer is left as construction drew it (MATLAB sets W by a ridge solve)
    ctdnn.seed_everything(0)
    default = ctdnn.ResNet(n_in, 3, width=width, n_steps=4, T=5.0, basis=basis, degree=3)
    assert torch.equal(model.closing.weight, default.closing.weight)
    assert torch.equal(model.closing.bias, default.closing.bias)


def test_small_normal_moments_and_zero_biases():
    width = 400
    ctdnn.seed_everything(1)
    model = ctdnn.HamiltonianNet(5, 2, width=width, n_steps=3, basis="legendre", degree=2,
                                 init="small_normal")
    K, b = _tv_K_b(model.layer)
    _moments_ok(K, 0.1 ** 2)
    assert torch.equal(b, torch.zeros(width))
    assert torch.equal(model.layer.theta.coefficients[1:],
                       torch.zeros_like(model.layer.theta.coefficients[1:]))
    # embed and readout keep nn.Linear's default draw
    ctdnn.seed_everything(1)
    default = ctdnn.HamiltonianNet(5, 2, width=width, n_steps=3, basis="legendre", degree=2)
    assert torch.equal(model.opening.weight, default.opening.weight)
    assert torch.equal(model.closing.weight, default.closing.weight)


def test_uniform_redraw_moments():
    width = 300
    ctdnn.seed_everything(2)
    model = ctdnn.ResNet(100, 2, width=width, n_steps=3, basis="monomial", degree=2)
    out = initialize(model, "uniform")
    assert out is model
    K, b = _tv_K_b(model.layer)
    bound = 1 / math.sqrt(width)
    for x in (K, b):
        assert float(x.abs().max()) <= bound
    _moments_ok(K, bound ** 2 / 3)
    assert bool((b != 0).all())
    _moments_ok(model.opening.weight, (1 / math.sqrt(100)) ** 2 / 3)
    assert bool((model.opening.bias != 0).all())


def test_initialize_is_reproducible_and_returns_the_model():
    def draw():
        ctdnn.seed_everything(7)
        return ctdnn.ResNet(3, 2, width=5, n_steps=4, init="he_normal").state_dict()

    a, b = draw(), draw()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_initialize_neural_ode_with_hidden_layer(scheme):
    hidden, width = 300, 200
    ctdnn.seed_everything(3)
    model = ctdnn.NeuralODE(4, 2, width=width, hidden=hidden, basis="legendre", degree=2)
    opening = model.opening.weight.detach().clone()
    assert initialize(model, scheme) is model
    layers = list(model.dynamics.layers)
    assert [(l.n_in, l.n_out) for l in layers] == [(width, hidden), (hidden, width)]
    for layer in layers:
        K, b = _tv_K_b(layer)
        if scheme == "he_normal":
            _moments_ok(K, 2 / layer.n_in)
        elif scheme == "small_normal":
            _moments_ok(K, 0.01)
        else:
            _moments_ok(K, 1 / (3 * layer.n_in))
        assert bool((b == 0).all()) == (scheme != "uniform")
    if scheme == "small_normal":
        assert torch.equal(model.opening.weight, opening)
    elif scheme == "he_normal":
        _moments_ok(model.opening.weight, 2 / 4)  # 800 draws
        assert torch.equal(model.opening.bias, torch.zeros(width))


def test_initialize_trajectory_ode():
    ctdnn.seed_everything(4)
    model = ctdnn.TrajectoryODE(dim=2, hidden=2000, basis="legendre", degree=3)
    initialize(model, "small_normal")
    for layer in model.dynamics.layers:
        K, b = _tv_K_b(layer)
        _moments_ok(K, 0.01)
        assert bool((b == 0).all())


def test_bad_scheme_and_empty_module():
    with pytest.raises(ValueError, match="init must be one of"):
        ctdnn.ResNet(3, 2, init="xavier")
    with pytest.raises(ValueError, match="init must be one of"):
        initialize(ctdnn.ResNet(3, 2), "glorot")
    with pytest.raises(ValueError, match="no TimeVaryingLinear or nn.Linear"):
        initialize(nn.Tanh(), "he_normal")
