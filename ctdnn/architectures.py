"""Continuous-time surrogate networks with time-varying weights.

All three models share the opening layer ``u(0) = tanh(K0 x + b0)`` and the linear closing
layer ``y = W [u(T); 1]``; they differ in how ``u`` evolves on ``[0, T]``:

* :class:`ResNet`: forward Euler, ``u_{k+1} = u_k + h tanh(K(t_k) u_k + b(t_k))``.
* :class:`HamiltonianNet`: the Verlet scheme of Haber and Ruthotto (2017),
  ``z_{k+1} = z_k - h tanh(K_k^T u_k + b_k)``, ``u_{k+1} = u_k + h tanh(K_k z_{k+1} + b_k)``,
  ``z_0 = 0``; each step is exactly invertible.
* :class:`~ctdnn.neural_ode.NeuralODE`: the continuous model solved adaptively.
"""

from __future__ import annotations

import torch
from torch import nn

from .bases import Basis, PiecewiseConstantBasis, make_basis
from .checks import check_int, check_number
from .initialization import check_init, initialize
from .weights import TimeVaryingLinear, stack_coefficients, stacked_sizes

__all__ = ["SurrogateNet", "SteppedNet", "ResNet", "HamiltonianNet", "resolve_basis",
           "weights_at", "TIKHONOV", "WEIGHT_TIMES"]

WEIGHT_TIMES = ("consistent", "paper")
#: What the Tikhonov term on the flow weights measures (see :meth:`SurrogateNet.penalty`).
TIKHONOV = ("integral", "coefficients")


def resolve_basis(basis, degree, T, n_steps=None, normalized=False) -> Basis:
    """A :class:`Basis` from a name (``"monomial"``, ``"legendre"``, ``"none"``) or as is."""
    if isinstance(basis, Basis):
        if abs(basis.T - T) > 1e-12 * max(1.0, T):
            raise ValueError(f"basis is defined on [0, {basis.T:g}] but the model needs [0, {T:g}]")
        return basis
    return make_basis(basis, degree, T=T, n_steps=n_steps, normalized=normalized)


class SurrogateNet(nn.Module):
    """Opening layer, a continuous-time flow (subclasses), closing layer.

    Subclasses implement :meth:`flow` mapping ``u(0): (batch, width)`` to
    ``u(T): (batch, width)`` and keep their time-varying layers in
    ``self.time_varying`` (an ``nn.ModuleList``).
    """

    def __init__(self, n_in: int, n_out: int, width: int, T: float):
        super().__init__()
        self.n_in = check_int("n_in", n_in, minimum=1)
        self.n_out = check_int("n_out", n_out, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.T = check_number("T", T, positive=True)
        self.opening = nn.Linear(self.n_in, self.width)
        self.closing = nn.Linear(self.width, self.n_out)
        self.time_varying = nn.ModuleList()

    #: When :meth:`forward` checks its input for NaN and inf. ``"eval"``: only outside
    #: training mode, because the check costs a host synchronisation and :func:`ctdnn.train`
    #: checks all of its data once at entry; evaluation calls (``model.eval()``) are checked.
    #: ``"always"``: on every call (models whose forward synchronises anyway).
    _finite_input_check = "eval"
    #: Whether a batch of zero samples is allowed (it is for the stepped networks, which
    #: return an empty result; an adaptive ODE solve cannot start from one).
    _empty_input_ok = True

    def _check_input(self, x) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (batch, {self.n_in}), "
                            f"got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"x must have shape (batch, n_in={self.n_in}), got {tuple(x.shape)}")
        if x.shape[0] == 0 and not self._empty_input_ok:
            raise ValueError(f"x is empty (shape {tuple(x.shape)}): {type(self).__name__} needs "
                             "at least one sample")
        if self._finite_input_check == "always" or not self.training:
            finite = torch.isfinite(x).all(dim=1)
            if not bool(finite.all()):
                rows = torch.nonzero(~finite).flatten()
                more = "..." if rows.numel() > 5 else ""
                raise ValueError(f"x contains NaN or inf (rows {rows[:5].tolist()}{more}); clean "
                                 "or drop those samples")

    def flow(self, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``u(T)``, ``(batch, width)``, for inputs ``x: (batch, n_in)``."""
        self._check_input(x)
        return self.flow(torch.tanh(self.opening(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``(batch, n_out)`` for ``x: (batch, n_in)``.

        Raises:
            ValueError: wrong shape; NaN or inf in ``x`` (checked in evaluation mode, and
                always for ODE models); an empty batch for ODE models.
        """
        return self.closing(self.features(x))

    def time_parameters(self):
        """The coefficients of the time-varying weights."""
        return [p for m in self.time_varying for p in m.parameters()]

    def penalty(self, alpha_theta: float = 0.0, alpha_W: float = 0.0,
                tikhonov: str = "integral") -> torch.Tensor:
        """Tikhonov penalty ``R_theta + alpha_W/2 ||W||_F^2`` (``W`` with the closing bias).

        Args:
            alpha_theta: weight of the term on the flow weights.
            alpha_W: weight of the term on the closing layer ``W`` (weight and bias).
            tikhonov: what ``R_theta`` measures.
                ``"integral"`` (ctdnn): ``alpha_theta/2 int_0^T ||theta(t)||^2 dt`` over the
                time-varying weights, exact through each basis' Gram matrix; the opening
                layer is not penalised.
                ``"coefficients"`` (the authors' MATLAB, ``runExperiment_v2.m``:
                ``tikhonovReg(opEye(numel(th0)), alpha1)``, and ``dnnVarProRegressionObjFctn``
                for GNvpro): ``alpha_theta/2 ||theta||^2`` over the whole parameter vector
                before the closing layer, i.e. the opening layer's weight and bias and every
                coefficient of the time-varying weights (their Euclidean norm, whatever the
                basis' Gram matrix).

        Returns:
            A scalar tensor.
        """
        if tikhonov not in TIKHONOV:
            raise ValueError(f"tikhonov must be one of {TIKHONOV}, got {tikhonov!r}")
        total = self.closing.weight.new_zeros(())
        if alpha_theta and tikhonov == "integral":
            total = total + 0.5 * alpha_theta * sum(m.l2_norm_squared() for m in self.time_varying)
        elif alpha_theta:
            params = list(self.opening.parameters()) + self.time_parameters()
            total = total + 0.5 * alpha_theta * sum(q.square().sum() for q in params)
        if alpha_W:
            total = total + 0.5 * alpha_W * (self.closing.weight.square().sum()
                                             + self.closing.bias.square().sum())
        return total

    @property
    def n_time_parameters(self) -> int:
        """Number of trainable coefficients of the time-varying weights."""
        return sum(p.numel() for p in self.time_parameters())

    def weights_at(self, t) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Values ``K(t)``, ``b(t)`` of the time-varying weights at times ``t``.

        One matmul of the basis at ``t`` with the stacked coefficients (the function
        ``ctdnn.weights_at`` documents the details); differentiable in the coefficients.

        Args:
            t: times in ``[0, T]`` on the model's own time axis; a number or a tensor or
                array of shape ``(...)``.

        Returns:
            One ``(K, b)`` pair per time-varying layer, in the order they act:
            ``K: (..., out, in)``, ``b: (..., out)``; for ResNet, HamiltonianNet and a
            NeuralODE without hidden layer one pair with ``out = in = width``, for a
            NeuralODE with ``hidden=m`` the pairs ``(m, width)`` and ``(width, m)``.

        Raises:
            ValueError: a time outside ``[0, T]`` or not finite.
        """
        return weights_at(self, t)


class SteppedNet(SurrogateNet):
    """Shared set-up of the discretize-then-optimize networks (:class:`ResNet`,
    :class:`HamiltonianNet`): ``n_steps`` steps of size ``h = T / n_steps`` with one
    :class:`~ctdnn.weights.TimeVaryingLinear` layer evaluated at the step times."""

    def __init__(self, n_in, n_out, *, width=15, n_steps=12, T=1.0, basis="legendre", degree=3,
                 weight_times="consistent", normalized=False, init="uniform"):
        super().__init__(n_in, n_out, width, T)
        self.n_steps = check_int("n_steps", n_steps, minimum=1)
        if weight_times not in WEIGHT_TIMES:
            raise ValueError(f"weight_times must be one of {WEIGHT_TIMES}, got {weight_times!r}")
        self.init = check_init(init)
        self.weight_times = weight_times
        self.h = self.T / self.n_steps
        self.basis = resolve_basis(basis, degree, self.T, n_steps=self.n_steps,
                                   normalized=normalized)
        if isinstance(self.basis, PiecewiseConstantBasis) and self.basis.n_steps != self.n_steps:
            raise ValueError(f"the per-step basis has {self.basis.n_steps} weight sets but the "
                             f"network takes n_steps={self.n_steps} steps; build it with "
                             f"n_steps={self.n_steps}")
        if weight_times == "consistent":
            # t_k = k h: the weights act at the left end of the Euler step they drive.
            self.step_times = [k * self.h for k in range(self.n_steps)]
        else:
            # The authors' MATLAB grid: linspace(0, T, n_steps), T/(n_steps-1) apart.
            n = self.n_steps
            self.step_times = [self.T * k / (n - 1) if n > 1 else 0.0 for k in range(n)]
        self.layer = TimeVaryingLinear(self.basis, self.width, self.width)
        self.time_varying.append(self.layer)
        self.register_buffer("basis_matrix", self._basis_matrix(torch.get_default_dtype()),
                             persistent=False)
        # "uniform" is what construction drew; drawing again would move the random stream.
        if init != "uniform":
            initialize(self, init)

    def _basis_matrix(self, dtype, device=None) -> torch.Tensor:
        """``(n_steps, n_functions)``: row ``k`` holds the basis values step ``k`` uses."""
        if isinstance(self.basis, PiecewiseConstantBasis):
            # Step k uses weight set k by its index, whatever the weight times: no rounded
            # t_k / h decides (floor(7 * (1/12) / (1/12)) is 6).
            return torch.eye(self.n_steps, dtype=dtype, device=device)
        times = torch.tensor(self.step_times, dtype=torch.float64)
        return self.basis(times).to(dtype=dtype, device=device)

    def _apply(self, fn, recurse=True):
        # Re-evaluate the basis after a dtype change so float64 models get float64 values.
        super()._apply(fn, recurse)
        self.basis_matrix = self._basis_matrix(self.basis_matrix.dtype, self.basis_matrix.device)
        return self

    def step_weights(self):
        """``K: (n_steps, width, width)`` and ``b: (n_steps, width)`` at the step times."""
        return self.layer.weights(self.basis_matrix)

    def extra_repr(self) -> str:
        return (f"basis={self.basis!r}, n_steps={self.n_steps}, T={self.T:g}, "
                f"weight_times={self.weight_times!r}, init={self.init!r}")


class ResNet(SteppedNet):
    """Residual network as the forward-Euler discretisation of a continuous model.

    Args:
        n_in, n_out: input and output sizes.
        width: hidden state size ``w`` (paper: 15).
        n_steps: Euler steps ``n_t`` (paper: 12), ``h = T / n_steps``.
        T: final time.
        basis: ``"legendre"``, ``"monomial"``, ``"none"`` or a :class:`~ctdnn.bases.Basis`.
            With ``"none"`` step ``k`` uses weight set ``k`` (the step basis matrix is the
            identity, whatever ``weight_times``).
        degree: polynomial degree ``d`` (``d + 1`` functions); ignored for ``"none"``.
        weight_times: ``"consistent"`` (weights at ``t_k = k h``, default) or ``"paper"``
            (weights at ``linspace(0, T, n_steps)``, the authors' grid).
        normalized: orthonormal Legendre scaling.
        init: initial weights, one of ``ctdnn.initialization.INIT_SCHEMES``:
            ``"uniform"`` (default), ``"he_normal"`` (the authors' MATLAB) or
            ``"small_normal"`` (see :func:`ctdnn.initialization.initialize`).

    Shapes: ``x: (batch, n_in)`` -> ``(batch, n_out)``.
    """

    def flow(self, u):
        K, b = self.step_weights()
        # unbind once: indexing inside the loop would add a full-size backward node per step
        Kt, bs = K.mT.unbind(0), b.unbind(0)
        for k in range(self.n_steps):  # sequential in time by construction
            u = u + self.h * torch.tanh(torch.addmm(bs[k], u, Kt[k]))
        return u


class HamiltonianNet(SteppedNet):
    """Hamiltonian network (Verlet scheme), same signature as :class:`ResNet`.

    ``z_{k+1} = z_k - h tanh(K_k^T u_k + b_k)``, ``u_{k+1} = u_k + h tanh(K_k z_{k+1} + b_k)``
    with ``z_0 = 0`` and one ``K_k``, ``b_k`` shared by both half-steps; the output is
    ``u_{n_steps}``.
    """

    def flow(self, u, z=None):
        return self.flow_with_momentum(u, z)[0]

    def flow_with_momentum(self, u, z=None):
        """``(u_n, z_n)`` from ``(u_0, z_0)``; ``z_0 = 0`` when omitted. Shapes ``(batch, width)``."""
        K, b = self.step_weights()
        Ks, Kt, bs = K.unbind(0), K.mT.unbind(0), b.unbind(0)
        z = torch.zeros_like(u) if z is None else z
        for k in range(self.n_steps):
            z = z - self.h * torch.tanh(torch.addmm(bs[k], u, Ks[k]))
            u = u + self.h * torch.tanh(torch.addmm(bs[k], z, Kt[k]))
        return u, z

    def inverse_flow(self, u, z):
        """Exact inverse of :meth:`flow_with_momentum`: ``(u_0, z_0)`` from ``(u_n, z_n)``."""
        K, b = self.step_weights()
        for k in reversed(range(self.n_steps)):
            u = u - self.h * torch.tanh(torch.addmm(b[k], z, K[k].mT))
            z = z + self.h * torch.tanh(torch.addmm(b[k], u, K[k]))
        return u, z


def weights_at(model, t) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Values of a model's time-varying weights ``theta(t) = sum_j c_j p_j(t)`` at times ``t``.

    Every layer's ``K(t)`` and ``b(t)`` at every time come from one matmul: the basis
    matrix at ``t`` times all layers' coefficients stacked side by side
    (:func:`~ctdnn.weights.stack_coefficients`). The basis is evaluated in float64 at the
    time the model's flow uses: ``t`` itself for ResNet and HamiltonianNet (whose steps use
    ``t_k``) and ``t / T`` for ODE models with ``time_scaling="rescaled"``. For the per-step
    basis ``"none"`` a time maps to a weight set by
    :meth:`~ctdnn.PiecewiseConstantBasis.interval_index`: ``t = k T / n_steps`` gives set
    ``k``, the set the stepped networks use at step ``k``.
    The result is differentiable in the coefficients (wrap the call in ``torch.no_grad()``
    for plain values).

    Args:
        model: a :class:`~ctdnn.SurrogateNet` (:class:`~ctdnn.ResNet`,
            :class:`~ctdnn.HamiltonianNet`, :class:`~ctdnn.NeuralODE`) or a
            :class:`~ctdnn.TrajectoryODE`.
        t: times in ``[0, model.T]`` (the model's own time axis, as its flow or solver
            sees it), a number or a tensor or array of any shape ``(...)``.

    Returns:
        One ``(K, b)`` pair per time-varying layer, in the order the layers act on the
        state: ``K: (..., out, in)``, ``b: (..., out)`` in the model's dtype and on its
        device. ResNet, HamiltonianNet and a NeuralODE with ``hidden=None``: one pair with
        ``out = in = width``; a NeuralODE with ``hidden=m``: ``(m, width)`` then
        ``(width, m)``; a TrajectoryODE: ``(hidden, dim)`` then ``(dim, hidden)``.

    Raises:
        ValueError: a time outside ``[0, T]`` or not finite.
    """
    layers = [m for m in model.time_varying.modules() if isinstance(m, TimeVaryingLinear)]
    coeffs = layers[0].theta.coefficients
    times = torch.as_tensor(t, dtype=torch.float64).detach().cpu()
    T = float(model.T)
    # the basis is defined on [0, T]; a rounding-level overshoot of an end point is allowed
    slack = 1e-12 * T
    if times.numel() and not (bool(torch.isfinite(times).all())
                              and float(times.min()) >= -slack
                              and float(times.max()) <= T + slack):
        raise ValueError(f"t must lie in [0, T] = [0, {T:g}], got values from "
                         f"{float(times.min()):g} to {float(times.max()):g}")
    scale = float(getattr(getattr(model, "dynamics", None), "time_scale", 1.0))
    B = model.basis(scale * times).to(dtype=coeffs.dtype, device=coeffs.device)
    flat = B.reshape(-1, B.shape[-1]) @ stack_coefficients(layers)
    out = []
    # each block holds one layer's [K(t) | b(t)], out x (in + 1), row-major
    for block, layer in zip(flat.split(stacked_sizes(layers), dim=1), layers):
        W = block.reshape(*times.shape, layer.n_out, layer.n_in + 1)
        out.append((W[..., : layer.n_in], W[..., layer.n_in]))
    return out
