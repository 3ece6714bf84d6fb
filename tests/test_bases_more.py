"""Chebyshev, Fourier and hat bases against independent references (numpy's Chebyshev
module, numpy's trigonometric functions and interpolation, adaptive quadrature)."""

import math

import numpy as np
import pytest
import scipy.integrate
import torch
from numpy.polynomial import chebyshev as npcheb

import ctdnn
from ctdnn.bases import BASIS_KINDS, ChebyshevBasis, FourierBasis, HatBasis, condition_numbers


def _fourier_reference(t, degree, T):
    """``[1, cos(w t), sin(w t), cos(2 w t), ...][: degree + 1]`` straight from numpy."""
    w = 2 * np.pi / T
    cols = [np.ones_like(t)]
    for k in range(1, degree // 2 + 2):
        cols += [np.cos(k * w * t), np.sin(k * w * t)]
    return np.stack(cols[: degree + 1], axis=-1)


def _hat_reference(t, degree, T):
    """Hat ``i`` is the linear interpolant of the unit vector ``e_i`` on the nodes."""
    nodes = np.linspace(0, T, degree + 1)
    return np.stack([np.interp(t, nodes, np.eye(degree + 1)[i]) for i in range(degree + 1)], -1)


def _quad_gram(basis, breakpoints=None):
    """``int_0^T p_i p_j dt`` by adaptive quadrature of the basis' own float evaluation."""
    n = basis.n_functions
    G = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            G[i, j] = G[j, i] = scipy.integrate.quad(
                lambda t: basis.row(t)[i] * basis.row(t)[j], 0.0, basis.T, points=breakpoints,
                epsabs=1e-13, epsrel=1e-12, limit=200)[0]
    return G


@pytest.mark.parametrize("T", [1.0, 5.0, 25.0])
@pytest.mark.parametrize("degree", [0, 1, 3, 6, 10])
def test_chebyshev_matches_numpy(T, degree):
    t = np.random.default_rng(degree).uniform(0, T, size=150)
    ours = ctdnn.make_basis("chebyshev", degree, T=T)(torch.tensor(t, dtype=torch.float64))
    np.testing.assert_allclose(ours.numpy(), npcheb.chebvander(2 * t / T - 1, degree),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [1.0, 7.5])
def test_chebyshev_gram_closed_form_against_quadrature(T):
    basis = ctdnn.make_basis("chebyshev", 7, T=T)
    G = basis.gram_matrix().numpy()
    np.testing.assert_allclose(G, _quad_gram(basis), rtol=1e-11, atol=1e-12)
    assert G[0, 0] == pytest.approx(T) and G[0, 1] == 0.0
    assert basis.gram_condition_number() == pytest.approx(np.linalg.cond(G), rel=1e-12)
    # well conditioned, unlike monomials: below 20 at degree 7
    assert basis.gram_condition_number() < 20


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_chebyshev_derivative_against_numpy(T):
    basis = ctdnn.make_basis("chebyshev", 6, T=T)
    for t in np.random.default_rng(1).uniform(0, T, size=6):
        s = 2 * t / T - 1
        expected = [npcheb.chebval(s, npcheb.chebder(np.eye(7)[j])) * 2 / T for j in range(7)]
        np.testing.assert_allclose(basis.row_derivative(t), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.5, 25.0])
@pytest.mark.parametrize("degree", [0, 1, 2, 5, 8, 13])
def test_fourier_matches_numpy(T, degree):
    t = np.random.default_rng(degree).uniform(-0.2 * T, 1.2 * T, size=150)
    basis = ctdnn.make_basis("fourier", degree, T=T)
    ours = basis(torch.tensor(t, dtype=torch.float64)).numpy()
    assert ours.shape == (150, degree + 1)
    np.testing.assert_allclose(ours, _fourier_reference(t, degree, T), rtol=0, atol=1e-13)
    assert basis.max_frequency == math.ceil(degree / 2)
    assert basis.frequencies()[-1] == basis.max_frequency


def test_fourier_degree_to_functions():
    # d + 1 functions; an odd d ends with a cosine (its sine partner is not included)
    b = ctdnn.make_basis("fourier", 3, T=2.0)
    np.testing.assert_allclose(b.row(0.3), _fourier_reference(np.array([0.3]), 3, 2.0)[0],
                               atol=1e-15)
    assert b.n_functions == 4 and b.frequencies() == [0, 1, 1, 2]
    assert ctdnn.make_basis("fourier", 4).frequencies() == [0, 1, 1, 2, 2]
    # periodic: theta(0) = theta(T) for every coefficient vector
    c = torch.randn(9, dtype=torch.float64)
    f = ctdnn.make_basis("fourier", 8, T=3.0)
    ends = f(torch.tensor([0.0, 3.0], dtype=torch.float64)) @ c
    assert float(ends[0]) == pytest.approx(float(ends[1]), abs=1e-13)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_fourier_gram_against_quadrature(T):
    basis = ctdnn.make_basis("fourier", 6, T=T)
    np.testing.assert_allclose(basis.gram_matrix().numpy(), _quad_gram(basis),
                               rtol=1e-11, atol=1e-12)
    assert basis.gram_condition_number() == pytest.approx(2.0)


def test_fourier_derivative_against_numpy():
    T, degree = 2.0, 7
    basis = ctdnn.make_basis("fourier", degree, T=T)
    w = 2 * np.pi / T
    for t in np.random.default_rng(2).uniform(0, T, size=6):
        expected = [0.0]
        for k in range(1, 5):
            expected += [-k * w * np.sin(k * w * t), k * w * np.cos(k * w * t)]
        np.testing.assert_allclose(basis.row_derivative(t), expected[: degree + 1], rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize("T", [1.0, 25.0])
@pytest.mark.parametrize("degree", [1, 3, 12])
def test_hat_matches_interpolation(T, degree):
    t = np.concatenate([np.random.default_rng(degree).uniform(0, T, size=100),
                        np.linspace(0, T, degree + 1)])   # the nodes themselves
    basis = ctdnn.make_basis("hat", degree, T=T)
    ours = basis(torch.tensor(t, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ours, _hat_reference(t, degree, T), rtol=0, atol=1e-13)
    np.testing.assert_allclose(basis.nodes().numpy(), np.linspace(0, T, degree + 1), rtol=1e-15)
    # outside [0, T]: continued as constants, still a partition of unity
    out = basis(torch.tensor([-1.0, 2 * T], dtype=torch.float64))
    assert out[0, 0] == 1.0 and out[1, -1] == 1.0 and torch.all(out.sum(-1) == 1.0)


@pytest.mark.parametrize("degree,T", [(1, 1.0), (4, 3.0)])
def test_hat_gram_against_quadrature(degree, T):
    basis = ctdnn.make_basis("hat", degree, T=T)
    G = _quad_gram(basis, breakpoints=list(np.linspace(0, T, degree + 1)[1:-1]) or None)
    np.testing.assert_allclose(basis.gram_matrix().numpy(), G, rtol=1e-11, atol=1e-13)


def test_hat_derivative_against_finite_differences():
    basis = ctdnn.make_basis("hat", 5, T=2.0)
    eps = 1e-6
    for t in [0.05, 0.31, 0.9, 1.5, 1.97]:   # inside intervals (kinks at 0.4 k)
        fd = (np.array(basis.row(t + eps)) - np.array(basis.row(t - eps))) / (2 * eps)
        np.testing.assert_allclose(basis.row_derivative(t), fd, rtol=1e-6, atol=1e-6)
    # at an interior node: the right derivative (the interval starting there)
    right = (np.array(basis.row(0.8 + eps)) - np.array(basis.row(0.8))) / eps
    np.testing.assert_allclose(basis.row_derivative(0.8), right, atol=1e-6)
    assert basis.row_derivative(-0.5) == [0.0] * 6 and basis.row_derivative(2.5) == [0.0] * 6


def test_autograd_derivative_against_row_derivative():
    for kind, T in (("chebyshev", 3.0), ("fourier", 3.0), ("hat", 3.0)):
        basis = ctdnn.make_basis(kind, 6, T=T)
        ts = torch.tensor([0.13, 0.77, 1.61, 2.9], dtype=torch.float64, requires_grad=True)
        P = basis(ts)
        for j in range(basis.n_functions):
            (g,) = torch.autograd.grad(P[:, j].sum(), ts, retain_graph=True)
            expected = [basis.row_derivative(float(t))[j] for t in ts.detach()]
            np.testing.assert_allclose(g.numpy(), expected, rtol=1e-12, atol=1e-12, err_msg=kind)


NEW = [("chebyshev", {"degree": 5}, 2.5), ("chebyshev", {"degree": 0}, 1.0),
       ("fourier", {"degree": 6}, 2.5), ("fourier", {"degree": 3}, 25.0),
       ("fourier", {"degree": 0}, 1.0), ("hat", {"degree": 4}, 2.5), ("hat", {"degree": 1}, 1.0)]


@pytest.mark.parametrize("kind,kwargs,T", NEW)
def test_row_equals_tensor_evaluation_bit_for_bit(kind, kwargs, T):
    basis = ctdnn.make_basis(kind, T=T, **kwargs)
    rng = np.random.default_rng(3)
    times = [0.0, 0.1, 0.37 * T, 0.5 * T, T / 5 * 2, 0.999 * T, T, 1.3 * T, -0.2]
    for t in times + list(rng.uniform(0, T, size=200)):
        expected = basis(torch.tensor(t, dtype=torch.float64)).tolist()
        assert basis.row(float(t)) == expected, (kind, t)


@pytest.mark.parametrize("kind,kwargs,T", NEW)
def test_scalar_row_values_and_gradient(kind, kwargs, T):
    basis = ctdnn.make_basis(kind, T=T, **kwargs)
    scale = 0.7
    t = torch.tensor(0.63, dtype=torch.float64, requires_grad=True)
    row = basis.scalar_row(t, scale)
    ref = basis(scale * t).reshape(1, -1)
    assert torch.equal(row, ref.detach())
    if ref.requires_grad:
        w = torch.randn(basis.n_functions, dtype=torch.float64)
        (g,) = torch.autograd.grad((row[0] * w).sum(), t)
        (g_ref,) = torch.autograd.grad((ref[0] * w).sum(), t)
        torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda tt: basis.scalar_row(tt, scale), (t,))


@pytest.mark.parametrize("kind,kwargs", [("chebyshev", {"degree": 4}), ("fourier", {"degree": 5}),
                                         ("hat", {"degree": 4})])
def test_constant_coefficients_dtype_and_shape(kind, kwargs):
    basis = ctdnn.make_basis(kind, T=3.0, **kwargs)
    t = torch.linspace(0, 3.0, 17, dtype=torch.float64)
    np.testing.assert_allclose((basis(t) @ basis.constant_coefficients()).numpy(), 1.0,
                               atol=1e-14)
    t32 = torch.rand(4, 5, dtype=torch.float32) * 3
    assert basis(t32).shape == (4, 5, basis.n_functions) and basis(t32).dtype == torch.float32
    np.testing.assert_allclose(basis(t32).double().numpy(),
                               basis(t32.double()).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", ["chebyshev", "fourier", "hat"])
def test_values_on_cuda(kind):
    basis = ctdnn.make_basis(kind, 4, T=2.0)
    t = torch.linspace(0, 2.0, 9, dtype=torch.float64)
    torch.testing.assert_close(basis(t.cuda()).cpu(), basis(t), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("T", [1.0, 10.0])
def test_collocation_condition_numbers_against_numpy(T):
    times = np.linspace(0, T, 12)
    for d in range(1, 8):
        cheb = ctdnn.make_basis("chebyshev", d, T=T).collocation_condition_number(times)
        assert cheb == pytest.approx(np.linalg.cond(npcheb.chebvander(2 * times / T - 1, d)),
                                     rel=1e-8)
        four = ctdnn.make_basis("fourier", d, T=T).collocation_condition_number(times)
        assert four == pytest.approx(np.linalg.cond(_fourier_reference(times, d, T)), rel=1e-8)
        hat = ctdnn.make_basis("hat", d, T=T).collocation_condition_number(times)
        assert hat == pytest.approx(np.linalg.cond(_hat_reference(times, d, T)), rel=1e-8)
    np.testing.assert_allclose(condition_numbers("chebyshev", [2, 5], T=T),
                               [np.linalg.cond(npcheb.chebvander(2 * times / T - 1, k))
                                for k in (2, 5)], rtol=1e-8)


def test_kinds_and_classes():
    assert {"chebyshev", "fourier", "hat"} <= set(BASIS_KINDS)
    assert isinstance(ctdnn.make_basis("CHEBYSHEV", 2), ChebyshevBasis)
    assert isinstance(ctdnn.make_basis("fourier", 2), FourierBasis)
    assert isinstance(ctdnn.make_basis("hat", 2), HatBasis)


@pytest.mark.parametrize("call,error,match", [
    (lambda: ctdnn.make_basis("hat", 0), ValueError, "needs degree >= 1"),
    (lambda: ctdnn.make_basis("fourier", -1), ValueError, "degree must be >= 0"),
    (lambda: ctdnn.make_basis("chebyshev"), ValueError, "needs a degree"),
    (lambda: ctdnn.make_basis("chebyshev", 3, normalized=True), ValueError, "normalized"),
    (lambda: ctdnn.make_basis("fourier", 3, T=-1.0), ValueError, "T must be a positive"),
    (lambda: ctdnn.make_basis("hat", 2.0), TypeError, "degree must be an integer"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("kind", ["chebyshev", "fourier", "hat"])
def test_models_accept_the_new_bases(kind):
    torch.manual_seed(0)
    net = ctdnn.ResNet(3, 2, width=4, n_steps=6, T=2.0, basis=kind, degree=3).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    assert net(x).shape == (5, 2)
    # constant-in-time initialisation: the weights at every step are equal
    K, b = net.step_weights()
    torch.testing.assert_close(K, K[:1].expand_as(K), rtol=0, atol=1e-14)
    ode = ctdnn.NeuralODE(3, 2, width=4, hidden=5, T=1.0, basis=kind, degree=3, rtol=1e-6,
                          atol=1e-8, adjoint=False).double()
    assert ode(x).shape == (5, 2)
    # an exact Gram matrix makes the Tikhonov penalty exact: compare with quadrature
    with torch.no_grad():
        for p in net.time_parameters():
            p.normal_()
    t = torch.linspace(0, 2.0, 2001, dtype=torch.float64)
    W = torch.cat([w.reshape(t.numel(), -1) for pair in net.weights_at(t) for w in pair], 1)
    ref = scipy.integrate.simpson(W.square().sum(1).detach().numpy(), x=t.numpy())
    assert float(net.penalty(alpha_theta=2.0).detach()) == pytest.approx(ref, rel=1e-4)
