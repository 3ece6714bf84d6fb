"""Bases against independent references (numpy's Legendre module, quadrature, Hilbert)."""

import numpy as np
import pytest
import scipy.linalg
import torch
from numpy.polynomial import legendre as npleg

import ctdnn
from ctdnn.bases import condition_numbers


@pytest.mark.parametrize("T", [1.0, 5.0, 10.0, 25.0])
@pytest.mark.parametrize("degree", [0, 1, 3, 6, 10])
def test_legendre_matches_numpy(T, degree):
    rng = np.random.default_rng(degree + int(T))
    t = rng.uniform(0, T, size=200)
    basis = ctdnn.make_basis("legendre", degree, T=T)
    ours = basis(torch.tensor(t, dtype=torch.float64)).numpy()
    ref = npleg.legvander(2 * t / T - 1, degree)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert ours.shape == (200, degree + 1)


@pytest.mark.parametrize("T", [1.0, 7.5])
def test_legendre_orthogonality_by_gauss_quadrature(T):
    degree = 8
    nodes, weights = npleg.leggauss(degree + 2)  # exact for polynomials of degree <= 2d+3
    t = torch.tensor(T * (nodes + 1) / 2, dtype=torch.float64)
    w = torch.tensor(T * weights / 2, dtype=torch.float64)
    for normalized in (False, True):
        basis = ctdnn.make_basis("legendre", degree, T=T, normalized=normalized)
        P = basis(t)
        G = P.T @ (w[:, None] * P)
        expected = np.eye(degree + 1) if normalized else np.diag(T / (2 * np.arange(degree + 1) + 1))
        np.testing.assert_allclose(G.numpy(), expected, atol=1e-12)
        np.testing.assert_allclose(basis.gram_matrix().numpy(), expected, atol=1e-15)


@pytest.mark.parametrize("T", [1.0, 5.0])
def test_monomial_gram_is_scaled_hilbert(T):
    degree = 5
    basis = ctdnn.make_basis("monomial", degree, T=T)
    D = np.diag(T ** np.arange(degree + 1))
    expected = T * D @ scipy.linalg.hilbert(degree + 1) @ D
    np.testing.assert_allclose(basis.gram_matrix().numpy(), expected, rtol=1e-13)
    # and by quadrature of the basis itself
    nodes, weights = npleg.leggauss(degree + 1)
    t = torch.tensor(T * (nodes + 1) / 2, dtype=torch.float64)
    P = basis(t).numpy()
    np.testing.assert_allclose(P.T @ ((T * weights / 2)[:, None] * P), expected, rtol=1e-11)


def test_monomial_values_and_gradient_at_zero():
    t = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    P = ctdnn.make_basis("monomial", 3, T=2.0)(t)
    np.testing.assert_allclose(P.detach().numpy(), np.vander(t.detach().numpy(), 4, increasing=True))
    P[:, 3].sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), 3 * t.detach().numpy() ** 2)
    assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("T", [1.0, 10.0])
def test_condition_numbers_agree_with_numpy(T):
    times = np.linspace(0, T, 12)
    for d in range(1, 8):
        mono = ctdnn.make_basis("monomial", d, T=T).collocation_condition_number(times)
        leg = ctdnn.make_basis("legendre", d, T=T).collocation_condition_number(times)
        assert mono == pytest.approx(np.linalg.cond(np.vander(times, d + 1, increasing=True)), rel=1e-8)
        assert leg == pytest.approx(np.linalg.cond(npleg.legvander(2 * times / T - 1, d)), rel=1e-8)
        gram = ctdnn.make_basis("monomial", d, T=T).gram_condition_number()
        ref = np.linalg.cond(T * scipy.linalg.hilbert(d + 1) * np.outer(T ** np.arange(d + 1), T ** np.arange(d + 1)))
        # the relative accuracy of a computed condition number degrades like cond * eps
        assert gram == pytest.approx(ref, rel=max(1e-8, ref * 1e-14))
    np.testing.assert_allclose(
        condition_numbers("monomial", [2, 3], T=T),
        [np.linalg.cond(np.vander(times, k + 1, increasing=True)) for k in (2, 3)], rtol=1e-8)
    # the paper's point: monomials are far worse conditioned than Legendre
    assert condition_numbers("monomial", [6], T=T)[0] > 100 * condition_numbers("legendre", [6], T=T)[0]


def test_piecewise_constant_basis():
    basis = ctdnn.make_basis("none", n_steps=4, T=2.0)
    t = torch.tensor([0.0, 0.49, 0.5, 1.2, 1.99, 2.0])
    idx = basis(t).argmax(-1).tolist()
    assert idx == [0, 0, 1, 2, 3, 3]
    assert torch.equal(basis(t).sum(-1), torch.ones(6))
    np.testing.assert_allclose(basis.gram_matrix().numpy(), 0.5 * np.eye(4))


@pytest.mark.parametrize("kind,kwargs", [("monomial", {"degree": 3}), ("legendre", {"degree": 4}),
                                         ("legendre", {"degree": 4, "normalized": True}),
                                         ("none", {"n_steps": 5})])
def test_constant_coefficients_give_one(kind, kwargs):
    basis = ctdnn.make_basis(kind, T=3.0, **kwargs)
    t = torch.linspace(0, 3.0, 17, dtype=torch.float64)
    np.testing.assert_allclose((basis(t) @ basis.constant_coefficients()).numpy(), 1.0, atol=1e-14)


def test_basis_follows_dtype_and_shape():
    basis = ctdnn.make_basis("legendre", 3, T=1.0)
    t = torch.rand(4, 5, dtype=torch.float32)
    assert basis(t).shape == (4, 5, 4) and basis(t).dtype == torch.float32
    assert basis(t.double()).dtype == torch.float64


@pytest.mark.parametrize("call,match", [
    (lambda: ctdnn.make_basis("bernstein", 3), "unknown basis 'bernstein'"),
    (lambda: ctdnn.make_basis("legendre", -1), "degree must be >= 0"),
    (lambda: ctdnn.make_basis("legendre"), "needs a degree"),
    (lambda: ctdnn.make_basis("none", 3), "needs n_steps"),
    (lambda: ctdnn.make_basis("legendre", 3, T=0.0), "T must be a positive"),
    (lambda: ctdnn.make_basis("monomial", 3, normalized=True), "normalized"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_degree_must_be_integer():
    with pytest.raises(TypeError, match="degree must be an integer"):
        ctdnn.make_basis("legendre", 2.5)


ROW_BASES = [("monomial", {"degree": 4}, 2.5), ("legendre", {"degree": 5}, 2.5),
             ("legendre", {"degree": 3, "normalized": True}, 4.0), ("legendre", {"degree": 0}, 1.0),
             ("none", {"n_steps": 5}, 2.5)]


@pytest.mark.parametrize("kind,kwargs,T", ROW_BASES)
def test_row_equals_tensor_evaluation_bit_for_bit(kind, kwargs, T):
    basis = ctdnn.make_basis(kind, T=T, **kwargs)
    for t in [0.0, 0.1, 0.37 * T, 0.5 * T, T / 5 * 2, 0.999 * T, T, 1.3 * T, -0.2]:
        expected = basis(torch.tensor(t, dtype=torch.float64)).tolist()
        assert basis.row(t) == expected, t


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_row_derivative_against_numpy(T):
    rng = np.random.default_rng(0)
    for t in rng.uniform(0, T, size=7):
        s = 2 * t / T - 1
        legendre = ctdnn.make_basis("legendre", 5, T=T)
        expected = [npleg.legval(s, npleg.legder(np.eye(6)[j])) * 2 / T for j in range(6)]
        np.testing.assert_allclose(legendre.row_derivative(t), expected, rtol=1e-12, atol=1e-12)
        normalized = ctdnn.make_basis("legendre", 5, T=T, normalized=True)
        scale = np.sqrt((2 * np.arange(6) + 1) / T)
        np.testing.assert_allclose(normalized.row_derivative(t), scale * expected, rtol=1e-12,
                                   atol=1e-12)
        monomial = ctdnn.make_basis("monomial", 4, T=T)
        np.testing.assert_allclose(monomial.row_derivative(t),
                                   [j * t ** (j - 1) if j else 0.0 for j in range(5)], rtol=1e-13)
    assert ctdnn.make_basis("none", n_steps=3).row_derivative(0.5) == [0.0, 0.0, 0.0]


def test_piecewise_constant_row_edges():
    basis = ctdnn.make_basis("none", n_steps=4, T=2.0)
    assert [basis.row(t).index(1.0) for t in (0.0, 0.49, 0.5, 1.99, 2.0, 7.0, -1.0)] == \
        [0, 0, 1, 3, 3, 3, 0]
    assert basis.row(float("nan")) == [1.0, 0.0, 0.0, 0.0]
    assert basis.row(float("inf")).index(1.0) == 3


@pytest.mark.parametrize("kind,kwargs,T", ROW_BASES)
def test_scalar_row_values_and_gradient(kind, kwargs, T):
    basis = ctdnn.make_basis(kind, T=T, **kwargs)
    scale = 0.7
    t = torch.tensor(0.63, dtype=torch.float64, requires_grad=True)
    row = basis.scalar_row(t, scale)
    ref = basis(scale * t).reshape(1, -1)  # the tensor recurrence, through autograd
    assert row.shape == (1, basis.n_functions) and torch.equal(row, ref.detach())
    w = torch.randn(basis.n_functions, dtype=torch.float64)
    (g,) = torch.autograd.grad((row[0] * w).sum(), t)
    if ref.requires_grad:
        (g_ref,) = torch.autograd.grad((ref[0] * w).sum(), t)
    else:  # degree 0: the recurrence is a constant, not even in the graph
        g_ref = torch.zeros((), dtype=torch.float64)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)
    if kind != "none":  # a jump has no derivative; elsewhere check numerically
        assert torch.autograd.gradcheck(lambda tt: basis.scalar_row(tt, scale), (t,))
    with torch.no_grad():
        assert not basis.scalar_row(t, scale).requires_grad
    assert basis.scalar_row(t.detach().float(), scale).dtype == torch.float32


# -- the per-step basis: which weight set acts at which time ----------------------------------

STEP_COUNTS = range(1, 65)
HORIZONS = (0.5, 1.0, 5.0, 10.0, 25.0)


def test_naive_floor_misses_a_breakpoint():
    # The trap the interval rule avoids: floor(t_7 / h) is 6 at n_steps=12, T=1.
    h = 1.0 / 12
    assert int((7 * h) // h) == 6
    assert ctdnn.PiecewiseConstantBasis(12, 1.0).interval_index(7 * 1.0 / 12) == 7


@pytest.mark.parametrize("T", HORIZONS)
def test_every_breakpoint_starts_its_interval(T):
    """t_j = j*T/n is in interval j, the float just below it in j - 1 (Python and tensor)."""
    for n in STEP_COUNTS:
        basis = ctdnn.PiecewiseConstantBasis(n, T)
        edges = [j * T / n for j in range(n)]
        below = [np.nextafter(e, -np.inf) for e in edges[1:]]
        above = [np.nextafter(e, np.inf) for e in edges]
        # the rule written out: the last j with t_j <= t, clamped to 0 .. n-1
        expect_edges, expect_below = list(range(n)), list(range(n - 1))
        assert [basis.interval_index(e) for e in edges] == expect_edges, n
        assert [basis.interval_index(float(e)) for e in below] == expect_below, n
        assert [basis.interval_index(float(e)) for e in above] == expect_edges, n
        t64 = torch.tensor(edges + below, dtype=torch.float64)
        assert basis.interval_index(t64).tolist() == expect_edges + expect_below, n
        # float32 times: the breakpoint rounded to float32 stays in its interval
        t32 = torch.tensor(edges, dtype=torch.float32)
        assert basis.interval_index(t32).tolist() == expect_edges, n
        # the one-hot rows agree with the index, Python path bit for bit with the tensor path
        rows = basis(t64)
        assert torch.equal(rows.argmax(-1), basis.interval_index(t64))
        assert torch.equal(rows, torch.tensor([basis.row(float(t)) for t in t64],
                                              dtype=torch.float64))


@pytest.mark.parametrize("T", HORIZONS)
def test_ends_and_outside_times_take_the_nearest_interval(T):
    for n in (1, 2, 12, 64):
        basis = ctdnn.PiecewiseConstantBasis(n, T)
        outside = [-1.0, -0.0, np.nextafter(T, -np.inf), T, np.nextafter(T, np.inf), 2 * T,
                   np.inf, -np.inf, np.nan]
        expect = [0, 0, n - 1, n - 1, n - 1, n - 1, n - 1, 0, 0]
        assert [basis.interval_index(float(t)) for t in outside] == expect
        assert basis.interval_index(torch.tensor(outside, dtype=torch.float64)).tolist() == expect


def test_interval_index_shape_and_dtype():
    basis = ctdnn.PiecewiseConstantBasis(12, 1.0)
    t = torch.linspace(0, 1, 24, dtype=torch.float64).reshape(2, 3, 4)
    idx = basis.interval_index(t)
    assert idx.shape == (2, 3, 4) and idx.dtype == torch.long
    assert isinstance(basis.interval_index(0.5), int)
