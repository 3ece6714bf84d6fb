"""DTO networks against hand-written loops, scipy references and exact inverses (float64)."""

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as npleg
from scipy.integrate import solve_ivp

import ctdnn


@pytest.fixture
def f64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _randomise(model, scale=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_none_basis_resnet_equals_hand_loop(f64):
    torch.manual_seed(1)
    n_steps, w = 7, 5
    model = ctdnn.ResNet(3, 2, width=w, n_steps=n_steps, T=2.0, basis="none")
    _randomise(model)
    x = torch.randn(9, 3)
    coeffs = model.layer.theta.coefficients.detach().numpy()  # (n_steps, w, w + 1)
    K0, b0 = model.opening.weight.detach().numpy(), model.opening.bias.detach().numpy()
    W, c = model.closing.weight.detach().numpy(), model.closing.bias.detach().numpy()
    u = np.tanh(x.numpy() @ K0.T + b0)
    h = 2.0 / n_steps
    for k in range(n_steps):
        u = u + h * np.tanh(u @ coeffs[k, :, :w].T + coeffs[k, :, w])
    np.testing.assert_allclose(model(x).detach().numpy(), u @ W.T + c, rtol=1e-13, atol=1e-13)


def test_polynomial_weights_match_numpy_legendre(f64):
    model = ctdnn.ResNet(2, 1, width=3, n_steps=6, T=5.0, basis="legendre", degree=3)
    _randomise(model)
    K, b = model.step_weights()
    C = model.layer.theta.coefficients.detach().numpy()
    for k, t in enumerate(np.arange(6) * 5.0 / 6):
        V = npleg.legvander(np.array([2 * t / 5.0 - 1]), 3)[0]
        ref = np.tensordot(V, C, axes=1)
        np.testing.assert_allclose(K[k].detach().numpy(), ref[:, :3], atol=1e-13)
        np.testing.assert_allclose(b[k].detach().numpy(), ref[:, 3], atol=1e-13)


def test_paper_weight_grid(f64):
    model = ctdnn.ResNet(2, 1, n_steps=12, T=1.0, weight_times="paper")
    np.testing.assert_allclose(model.step_times, np.linspace(0, 1, 12))
    model = ctdnn.ResNet(2, 1, n_steps=12, T=1.0)
    np.testing.assert_allclose(model.step_times, np.arange(12) / 12)


def test_initialisation_constant_in_time():
    model = ctdnn.ResNet(4, 2, basis="monomial", degree=3, T=5.0)
    K, b = model.step_weights()
    assert torch.allclose(K, K[:1].expand_as(K)) and torch.allclose(b, b[:1].expand_as(b))
    assert torch.count_nonzero(model.layer.theta.coefficients[1:]) == 0


def _reference_ode(model, x, T):
    """u(T) for du/dt = tanh(K(t) u + b(t)) with numpy Legendre and scipy's DOP853."""
    C = model.layer.theta.coefficients.detach().numpy()
    w = model.width
    d = C.shape[0] - 1
    u0 = np.tanh(x @ model.opening.weight.detach().numpy().T + model.opening.bias.detach().numpy())

    def rhs(t, y):
        V = npleg.legvander(np.array([2 * t / T - 1]), d)[0]
        W = np.tensordot(V, C, axes=1)
        U = y.reshape(-1, w)
        return np.tanh(U @ W[:, :w].T + W[:, w]).ravel()

    sol = solve_ivp(rhs, (0, T), u0.ravel(), method="DOP853", rtol=1e-12, atol=1e-13)
    return sol.y[:, -1].reshape(-1, w)


def test_resnet_converges_first_order_to_the_ode(f64):
    torch.manual_seed(3)
    T = 2.0
    x = np.random.default_rng(0).normal(size=(4, 3))
    errors, hs = [], []
    ref = None
    for n in (8, 16, 32, 64, 128):
        model = ctdnn.ResNet(3, 2, width=4, n_steps=n, T=T, basis="legendre", degree=3)
        _randomise(model, scale=0.6, seed=42)  # identical parameters for every n
        if ref is None:
            ref = _reference_ode(model, x, T)
        feats = model.features(torch.tensor(x)).detach().numpy()
        errors.append(np.abs(feats - ref).max())
        hs.append(T / n)
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert 0.9 < slope < 1.1, (slope, errors)
    assert all(a > b for a, b in zip(errors, errors[1:]))


def test_neural_ode_matches_scipy(f64):
    T = 2.0
    model = ctdnn.NeuralODE(3, 2, width=4, T=T, basis="legendre", degree=3, rtol=1e-10,
                            atol=1e-12, adjoint=False)
    # NeuralODE(rescaled) evaluates the basis on [0, 1] at t / T: same functions as on [0, T]
    ref_model = ctdnn.ResNet(3, 2, width=4, n_steps=1, T=T, basis="legendre", degree=3)
    _randomise(model, scale=0.6, seed=42)
    with torch.no_grad():
        ref_model.opening.load_state_dict(model.opening.state_dict())
        ref_model.layer.theta.coefficients.copy_(model.dynamics.layers[0].theta.coefficients)
    x = np.random.default_rng(0).normal(size=(4, 3))
    ref = _reference_ode(ref_model, x, T)
    np.testing.assert_allclose(model.features(torch.tensor(x)).detach().numpy(), ref, atol=1e-8)


def test_hamiltonian_step_is_exactly_invertible(f64):
    model = ctdnn.HamiltonianNet(3, 2, width=6, n_steps=12, T=5.0, basis="legendre", degree=4)
    _randomise(model, scale=1.0, seed=7)
    u0, z0 = torch.randn(10, 6), torch.randn(10, 6)
    u, z = model.flow_with_momentum(u0, z0)
    assert (u - u0).abs().max() > 1e-2  # the map does something
    u_back, z_back = model.inverse_flow(u, z)
    torch.testing.assert_close(u_back, u0, atol=1e-12, rtol=0)
    torch.testing.assert_close(z_back, z0, atol=1e-12, rtol=0)


def test_hamiltonian_matches_hand_loop(f64):
    model = ctdnn.HamiltonianNet(2, 2, width=3, n_steps=4, T=1.0, basis="none")
    _randomise(model, seed=5)
    C = model.layer.theta.coefficients.detach().numpy()
    u = np.random.default_rng(1).normal(size=(5, 3))
    z = np.zeros_like(u)
    h = 0.25
    out = model.flow(torch.tensor(u)).detach().numpy()
    for k in range(4):
        K, b = C[k, :, :3], C[k, :, 3]
        z = z - h * np.tanh(u @ K + b)      # K^T u, in row form
        u = u + h * np.tanh(z @ K.T + b)    # K z
    np.testing.assert_allclose(out, u, atol=1e-14)


def test_gradcheck_time_varying_weights(f64):
    basis = ctdnn.make_basis("legendre", 3, T=2.0)
    param = ctdnn.TimeVaryingParameter(basis, (3, 2), torch.randn(3, 2))
    t = torch.rand(5) * 2

    def f(coeffs, times):
        return basis(times) @ coeffs.reshape(4, -1)

    coeffs = torch.randn(4, 3, 2, requires_grad=True)
    times = t.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (coeffs, times))
    model = ctdnn.ResNet(2, 2, width=3, n_steps=4, basis="monomial", degree=2)
    x = torch.randn(3, 2)
    assert torch.autograd.gradcheck(lambda c: torch.func.functional_call(
        model, {"layer.theta.coefficients": c}, (x,)), (model.layer.theta.coefficients.detach().clone().requires_grad_(True),))
    assert param(t).shape == (5, 3, 2)


def test_l2_penalty_is_exact_trajectory_norm(f64):
    basis = ctdnn.make_basis("monomial", 3, T=3.0)
    param = ctdnn.TimeVaryingParameter(basis, (2,))
    with torch.no_grad():
        param.coefficients.copy_(torch.randn(4, 2))
    nodes, weights = npleg.leggauss(10)
    t = torch.tensor(1.5 * (nodes + 1))
    quad = (torch.tensor(1.5 * weights) * param(t).square().sum(-1)).sum()
    torch.testing.assert_close(param.l2_norm_squared(), quad, rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [ctdnn.ResNet, ctdnn.HamiltonianNet, ctdnn.NeuralODE])
def test_bad_input(cls):
    model = cls(4, 2, width=3)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, n_in=4\), got \(5, 3\)"):
        model(torch.randn(5, 3))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        model(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="unknown basis"):
        cls(4, 2, basis="wavelet")
    with pytest.raises(ValueError, match="degree must be >= 0"):
        cls(4, 2, degree=-2)
    with pytest.raises(ValueError, match="n_in must be >= 1"):
        cls(0, 2)


def test_none_without_n_steps_for_neural_ode():
    with pytest.raises(ValueError, match="needs n_steps"):
        ctdnn.NeuralODE(3, 2, basis="none")


def test_weight_times_option_validated():
    with pytest.raises(ValueError, match="weight_times"):
        ctdnn.ResNet(3, 2, weight_times="matlab")


# -- weight values at given times ---------------------------------------------------------

def _numpy_weights(coeffs, values):
    """sum_j c_j p_j(t) by hand: coeffs (n_functions, out, in + 1), values (n_times, n_functions)."""
    W = np.einsum("tj,joi->toi", values, coeffs)
    return W[..., :-1], W[..., -1]


def _legendre_values(s, n_functions, interval, normalized=False):
    """Shifted Legendre P_j(2 s / interval - 1) from numpy's Legendre module."""
    x = 2.0 * np.asarray(s, dtype=np.float64) / interval - 1.0
    cols = []
    for j in range(n_functions):
        v = npleg.legval(x, np.eye(n_functions)[j])
        cols.append(v * np.sqrt((2 * j + 1) / interval) if normalized else v)
    return np.stack(cols, axis=-1)


@pytest.mark.parametrize("cls", [ctdnn.ResNet, ctdnn.HamiltonianNet])
@pytest.mark.parametrize("normalized", [False, True])
def test_weights_at_equals_a_numpy_legendre_sum(f64, cls, normalized):
    model = cls(3, 2, width=4, n_steps=6, T=2.5, basis="legendre", degree=4, normalized=normalized)
    _randomise(model, seed=3)
    t = np.array([0.0, 0.3, 1.1, 2.0, 2.5])
    (K, b), = model.weights_at(torch.tensor(t))
    assert K.shape == (5, 4, 4) and b.shape == (5, 4) and K.dtype == torch.float64
    C = model.layer.theta.coefficients.detach().numpy()
    K_ref, b_ref = _numpy_weights(C, _legendre_values(t, 5, 2.5, normalized))
    np.testing.assert_allclose(K.detach().numpy(), K_ref, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(b.detach().numpy(), b_ref, rtol=1e-13, atol=1e-13)
    # at the step times they are the weights the network steps with
    K_steps, b_steps = model.step_weights()
    (K2, b2), = model.weights_at(model.step_times)
    torch.testing.assert_close(K2, K_steps, rtol=0, atol=1e-14)
    torch.testing.assert_close(b2, b_steps, rtol=0, atol=1e-14)


@pytest.mark.parametrize("time_scaling", ["rescaled", "unscaled"])
def test_weights_at_of_a_two_layer_neural_ode(f64, time_scaling):
    T = 4.0
    model = ctdnn.NeuralODE(3, 2, width=4, hidden=6, T=T, basis="legendre", degree=3,
                            time_scaling=time_scaling)
    _randomise(model, seed=5)
    t = np.linspace(0.0, T, 7)
    pairs = model.weights_at(torch.tensor(t))
    assert [(K.shape, b.shape) for K, b in pairs] == [((7, 6, 4), (7, 6)), ((7, 4, 6), (7, 4))]
    # rescaled: the basis lives on [0, 1] at t / T; unscaled: on [0, T] at t
    s, interval = (t / T, 1.0) if time_scaling == "rescaled" else (t, T)
    values = _legendre_values(s, 4, interval)
    for (K, b), layer in zip(pairs, model.dynamics.layers):
        K_ref, b_ref = _numpy_weights(layer.theta.coefficients.detach().numpy(), values)
        np.testing.assert_allclose(K.detach().numpy(), K_ref, rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(b.detach().numpy(), b_ref, rtol=1e-13, atol=1e-13)


def test_weights_at_of_unscaled_monomials(f64):
    # monomials at absolute time: t**j with t up to T (the authors' earlier setting)
    model = ctdnn.NeuralODE(2, 1, width=3, T=5.0, basis="monomial", degree=3,
                            time_scaling="unscaled")
    _randomise(model, seed=7)
    t = np.array([0.0, 1.5, 5.0])
    (K, b), = model.weights_at(torch.tensor(t))
    values = np.stack([t ** j for j in range(4)], axis=-1)
    K_ref, b_ref = _numpy_weights(model.dynamics.layers[0].theta.coefficients.detach().numpy(),
                                  values)
    np.testing.assert_allclose(K.detach().numpy(), K_ref, rtol=1e-13)
    np.testing.assert_allclose(b.detach().numpy(), b_ref, rtol=1e-13)


def test_weights_at_drive_the_trajectory_right_hand_side(f64):
    model = ctdnn.TrajectoryODE(2, hidden=5, T=25.0, basis="legendre", degree=3)
    _randomise(model, scale=0.3, seed=2)
    y = torch.randn(1, 2)
    for t in (0.0, 7.5, 25.0):
        (K1, b1), (K2, b2) = model.weights_at(t)
        assert K1.shape == (5, 2) and K2.shape == (2, 5)
        expected = torch.tanh(y ** 3 @ K1.T + b1) @ K2.T + b2
        torch.testing.assert_close(model.dynamics.rhs(torch.tensor(t), y), expected,
                                   rtol=1e-13, atol=1e-13)


def test_weights_at_shapes_gradients_and_bad_times(f64):
    model = ctdnn.ResNet(2, 1, width=3, T=1.0, degree=2)
    (K, b), = model.weights_at(torch.full((2, 4), 0.5))
    assert K.shape == (2, 4, 3, 3) and b.shape == (2, 4, 3)
    (K, b), = ctdnn.weights_at(model, 0.25)
    assert K.shape == (3, 3) and b.shape == (3,)
    (K.sum() + b.sum()).backward()  # differentiable in the coefficients
    assert model.layer.theta.coefficients.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\] = \[0, 1\]"):
        model.weights_at(torch.tensor([0.0, 1.5]))
    with pytest.raises(ValueError, match="t must lie"):
        model.weights_at(float("nan"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_weights_at_follows_the_model_to_cuda():
    model = ctdnn.NeuralODE(2, 1, width=3, hidden=4, T=2.0).cuda()
    cpu = [(K.cpu(), b.cpu()) for K, b in model.weights_at(torch.tensor([0.0, 1.0]))]
    pairs = model.weights_at(torch.tensor([0.0, 1.0]))
    assert all(K.is_cuda and b.is_cuda for K, b in pairs)
    for (K, b), (Kc, bc) in zip(pairs, cpu):
        torch.testing.assert_close(K.cpu(), Kc)
        torch.testing.assert_close(b.cpu(), bc)


# -- the per-step baseline: step k uses weight set k ------------------------------------------

STEP_COUNTS = range(1, 65)
HORIZONS = (0.5, 1.0, 5.0, 10.0, 25.0)


def _distinct_sets(model, seed):
    """Give every weight set its own random values; returns them as numpy ``(n, w, w+1)``."""
    rng = np.random.default_rng(seed)
    n, w = model.n_steps, model.width
    sets = rng.normal(0.0, 0.7, size=(n, w, w + 1))
    with torch.no_grad():
        model.layer.theta.coefficients.copy_(torch.tensor(sets))
        for p in (model.opening.weight, model.opening.bias, model.closing.weight,
                  model.closing.bias):
            p.copy_(torch.tensor(rng.normal(0.0, 0.7, size=tuple(p.shape))))
    return sets


def _reference_flow(kind, sets, x, opening, closing, h):
    """Plain loop over steps in numpy, set k at step k, from the formulas."""
    W0, b0 = opening
    W, c = closing
    u = np.tanh(x @ W0.T + b0)
    z = np.zeros_like(u)
    for k in range(sets.shape[0]):
        K, b = sets[k, :, :-1], sets[k, :, -1]
        if kind == "resnet":
            u = u + h * np.tanh(u @ K.T + b)
        else:  # z - h tanh(K^T u + b), then u + h tanh(K z + b), row vectors
            z = z - h * np.tanh(u @ K + b)
            u = u + h * np.tanh(z @ K.T + b)
    return u @ W.T + c


def _numpy(layer):
    return layer.weight.detach().numpy(), layer.bias.detach().numpy()


@pytest.mark.parametrize("weight_times", ["consistent", "paper"])
@pytest.mark.parametrize("cls,kind", [(ctdnn.ResNet, "resnet"),
                                      (ctdnn.HamiltonianNet, "hamiltonian")])
def test_step_k_uses_weight_set_k(f64, cls, kind, weight_times):
    x = np.random.default_rng(1).normal(size=(3, 2))
    for T in HORIZONS:
        for n in STEP_COUNTS:
            model = cls(2, 2, width=3, n_steps=n, T=T, basis="none", weight_times=weight_times)
            sets = _distinct_sets(model, seed=n)
            K, b = model.step_weights()
            assert np.array_equal(K.detach().numpy(), sets[:, :, :-1]), (n, T)
            assert np.array_equal(b.detach().numpy(), sets[:, :, -1]), (n, T)
            ref = _reference_flow(kind, sets, x, _numpy(model.opening), _numpy(model.closing),
                                  T / n)
            out = model(torch.tensor(x)).detach().numpy()
            np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12, err_msg=f"{n=}, {T=}")


def test_weights_at_breakpoints_match_the_steps(f64):
    for T in HORIZONS:
        for n in (9, 11, 12, 15, 21, 60):
            model = ctdnn.ResNet(2, 2, width=3, n_steps=n, T=T, basis="none")
            _distinct_sets(model, seed=n)
            K, b = model.weights_at(torch.tensor([k * T / n for k in range(n)]))[0]
            K_steps, b_steps = model.step_weights()
            assert torch.equal(K, K_steps) and torch.equal(b, b_steps), (n, T)


def test_per_step_basis_must_match_the_steps():
    with pytest.raises(ValueError, match="n_steps=12"):
        ctdnn.ResNet(2, 1, n_steps=12, basis=ctdnn.PiecewiseConstantBasis(11, 1.0))


@pytest.mark.parametrize("basis", ["legendre", "monomial", "none"])
def test_coefficient_penalty_is_the_matlab_formula(f64, basis):
    """tikhonov="coefficients": 0.5 a_t ||[vec K0; b0; coefficients]||^2 + 0.5 a_W ||W||^2."""
    model = ctdnn.HamiltonianNet(4, 2, width=5, n_steps=6, T=5.0, basis=basis, degree=2)
    _randomise(model, seed=3)
    theta = np.concatenate([model.opening.weight.detach().numpy().ravel(),
                            model.opening.bias.detach().numpy(),
                            model.layer.theta.coefficients.detach().numpy().ravel()])
    W = np.concatenate([model.closing.weight.detach().numpy().ravel(),
                        model.closing.bias.detach().numpy()])
    expect = 0.5 * 0.3 * theta @ theta + 0.5 * 0.7 * W @ W
    got = model.penalty(0.3, 0.7, tikhonov="coefficients").detach()
    assert float(got) == pytest.approx(expect, rel=1e-13)
    # the integral form differs (Gram matrix, opening layer left out) except by accident
    assert float(model.penalty(0.3, 0.7).detach()) != pytest.approx(expect, rel=1e-3)
    with pytest.raises(ValueError, match="tikhonov must be one of"):
        model.penalty(0.3, 0.7, tikhonov="l2")
