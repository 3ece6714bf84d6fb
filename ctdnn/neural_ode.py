"""Neural ODEs with time-varying weights (optimize-then-discretize), solved by torchdiffeq."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from .architectures import SurrogateNet, resolve_basis, weights_at
from .checks import check_horizon, check_int
from .solvers import Dynamics, SolverStats, check_solver_options, solve
from .weights import TimeVaryingLinear, stack_coefficients, stacked_sizes

__all__ = ["TimeVaryingMLP", "NeuralODE", "TrajectoryODE", "TIME_SCALINGS", "TIME_PAST_T",
           "OPENINGS"]

#: How solver time ``t`` in ``[0, T]`` reaches the basis (see :func:`_basis_interval`).
TIME_SCALINGS = ("rescaled", "unscaled", "absolute")
#: What the basis sees when an adaptive solver's stage times step past the interval's end.
TIME_PAST_T = ("extrapolate", "clamp")
#: The opening layer of :class:`NeuralODE`: ``tanh(K0 x + b0)`` or the linear ``K0 x + b0``.
OPENINGS = ("tanh", "linear")


class TimeVaryingMLP(Dynamics):
    """Right-hand side with time-varying weights.

    ``hidden=None``: ``f(t, u) = tanh(K(s) u + b(s))``, the model the ResNet discretises.
    ``hidden=m``: ``f(t, u) = K2(s) tanh(K1(s) v + b1(s)) + b2(s)`` (width -> m -> width, the
    authors' surrogate dynamics), with ``v = u`` or ``v = u**3`` (``transform="cube"``, the
    stationary-ODE task). Both layers are time-parameterised.

    The basis is evaluated at ``s = time_scale * (t + offset)``: ``offset`` (``(batch,)``,
    optional) lets every sample of a batch start at its own absolute time while sharing
    one adaptive solve. With ``clamp=(lo, hi)`` the basis sees ``min(max(s, lo), hi)``:
    the stages of an adaptive step that overshoot the end of the basis interval (dopri5's
    last stages can lie past ``T``) then take the end value instead of an extrapolation,
    as the authors' Python code does; the clamped time has zero derivative outside
    ``[lo, hi]``.

    One evaluation costs one basis row, one matmul of that row with all layers'
    coefficients stacked side by side (:func:`~ctdnn.weights.stack_coefficients`), and one
    ``addmm`` per layer; on CPU (with ``offset=None``) all of it is one autograd node with a
    hand-written backward (``fused``). Inside :meth:`fixed_coefficients` (the models wrap
    their forward solves in it) the stacking happens once per solve instead of once per
    evaluation.
    """

    #: On CPU, evaluate as one autograd node with a hand-written backward (the same numbers,
    #: bit for bit, at about three quarters of the cost); ``False`` builds the graph op by op,
    #: as on an accelerator.
    fused = True

    def __init__(self, basis, width: int, hidden: int | None = None, *, time_scale: float = 1.0,
                 transform: str | None = None, clamp: tuple[float, float] | None = None):
        super().__init__()
        if transform not in (None, "cube"):
            raise ValueError(f"transform must be None or 'cube', got {transform!r}")
        self.basis = basis
        self.time_scale = float(time_scale)
        self.clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))
        self.transform = transform
        self.hidden = hidden
        if hidden is None:
            self.layers = nn.ModuleList([TimeVaryingLinear(basis, width, width)])
        else:
            self.layers = nn.ModuleList([TimeVaryingLinear(basis, width, hidden),
                                         TimeVaryingLinear(basis, hidden, width)])
        self.offset = None
        self._sizes = stacked_sizes(self.layers)
        offsets = [sum(self._sizes[:i]) for i in range(len(self._sizes))]
        self._layout = tuple((layer.n_in, layer.n_out, off)
                             for layer, off in zip(self.layers, offsets))
        self._stacked = None

    @contextlib.contextmanager
    def fixed_coefficients(self):
        """Stack the coefficients once for the evaluations inside the block.

        For a solve in which the parameters do not change: the stacked tensor is built in
        the caller's grad mode, so gradients still flow to every layer's coefficients, and
        it is dropped on leaving the block. Evaluations outside any block (the adjoint
        method's backward solve, direct calls) stack on every call.
        """
        previous = self._stacked
        self._stacked = stack_coefficients(self.layers)
        try:
            yield
        finally:
            self._stacked = previous

    def rhs(self, t, u):
        v = u ** 3 if self.transform == "cube" else u
        S = self._stacked if self._stacked is not None else stack_coefficients(self.layers)
        if self.offset is None:
            if not isinstance(t, torch.Tensor):
                t = torch.tensor(t, dtype=S.dtype, device=S.device)
            if self.clamp is not None:
                t = torch.clamp(t, self.clamp[0] / self.time_scale, self.clamp[1] / self.time_scale)
            if t.device.type == "cpu":
                if self.fused:
                    # One autograd node for the whole evaluation (_TimeVaryingMLPEval): the
                    # arithmetic of the lines below, bit for bit.
                    return _TimeVaryingMLPEval.apply(t, v, S, self.basis, self.time_scale,
                                                     self._layout)
                # The basis row from Python floats: one small autograd node where the
                # tensor recurrence takes a dozen (the solver's times carry gradients).
                B = self.basis.scalar_row(t, self.time_scale)
            else:
                # On an accelerator the tensor recurrence avoids a host sync per call.
                B = self.basis(self.time_scale * t).reshape(1, -1)
            blocks = torch.mm(B, S).view(-1).split(self._sizes)
            for i, (layer, block) in enumerate(zip(self.layers, blocks)):
                # [K | b] as TimeVaryingLinear.weights lays it out, so that the products
                # round exactly as there.
                K, b = block.view(layer.n_out, layer.n_in + 1).split((layer.n_in, 1), dim=1)
                v = torch.addmm(b.view(-1), v, K.mT)
                if i == 0:
                    v = torch.tanh(v)
            return v
        s_basis = self.time_scale * (t + self.offset)
        if self.clamp is not None:
            s_basis = torch.clamp(s_basis, *self.clamp)
        B = self.basis(s_basis)  # (batch, n_functions)
        blocks = torch.mm(B, S).split(self._sizes, dim=1)
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            W = block.view(-1, layer.n_out, layer.n_in + 1)
            v = torch.baddbmm(W[..., layer.n_in].unsqueeze(-1), W[..., : layer.n_in],
                              v.unsqueeze(-1)).squeeze(-1)
            if i == 0:
                v = torch.tanh(v)
        return v

    def l2_norm_squared(self) -> torch.Tensor:
        return sum(layer.l2_norm_squared() for layer in self.layers)


class _TimeVaryingMLPEval(torch.autograd.Function):
    """One CPU evaluation of :class:`TimeVaryingMLP` at a 0-d time ``t``, as one autograd node.

    Forward: the basis row at ``scale * t`` from Python floats (``basis.row``), every layer's
    ``[K | b]`` from one ``mm`` with the stacked coefficients ``S``, then ``addmm`` per layer
    with ``tanh`` after the first: the operations of the generic path of
    :meth:`TimeVaryingMLP.rhs` in the same order. Backward: the products autograd would form
    for those operations (``AddmmBackward``, ``TanhBackward``, ``MmBackward`` and the basis
    row's derivative ``basis.row_derivative``), written out, so the results are the same
    bit for bit while the graph holds one node per evaluation instead of about fifteen.
    Gradients reach ``t`` (the adaptive solver's stage times carry gradients), the layer
    input ``v`` and ``S``; the backward is not itself differentiable.

    ``layout``: ``(n_in, n_out, offset)`` of each layer's block of ``S``'s columns.
    """

    @staticmethod
    def forward(ctx, t, v, S, basis, scale, layout):
        x = scale * t.item()
        ctx.basis_time = (basis, scale, x)
        B = torch.tensor([basis.row(x)], dtype=S.dtype, device=S.device)
        W = torch.mm(B, S).view(-1)
        inputs = []
        h = None
        for i, (n_in, n_out, off) in enumerate(layout):
            block = W[off:off + n_out * (n_in + 1)].view(n_out, n_in + 1)
            inputs.append(v)
            v = torch.addmm(block[:, n_in], v, block[:, :n_in].mT)
            if i == 0:
                v = h = torch.tanh(v)
        ctx.layout = layout
        ctx.save_for_backward(B, S, W, h, *inputs)
        return v

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        B, S, W, h, *inputs = ctx.saved_tensors
        need_t, need_v, need_S = ctx.needs_input_grad[:3]
        gW = torch.empty_like(W)
        for i in reversed(range(len(ctx.layout))):
            n_in, n_out, off = ctx.layout[i]
            if i == 0:
                grad = torch.ops.aten.tanh_backward(grad, h)
            size = n_out * (n_in + 1)
            g_block = gW[off:off + size].view(n_out, n_in + 1)
            g_block[:, :n_in].copy_(torch.mm(inputs[i].t(), grad).t())
            torch.sum(grad, 0, out=g_block[:, n_in])
            if i > 0 or need_v:
                grad = torch.mm(grad, W[off:off + size].view(n_out, n_in + 1)[:, :n_in])
        gW = gW.view(1, -1)
        g_t = None
        if need_t:
            basis, scale, x = ctx.basis_time
            slopes = torch.tensor([scale * d for d in basis.row_derivative(x)], dtype=gW.dtype,
                                  device=gW.device)
            g_t = torch.dot(torch.mm(gW, S.t()).view(-1), slopes)
        return (g_t, grad if need_v else None, torch.mm(B.t(), gW) if need_S else None,
                None, None, None)


def _initialize(model, init: str) -> None:
    """Apply an initialisation scheme; ``"uniform"`` is what the layers already hold."""
    from .initialization import check_init, initialize

    if check_init(init) != "uniform":   # a second uniform draw would move the random stream
        initialize(model, init)


class _SolverOptions:
    """Validation shared by the ODE models."""

    @staticmethod
    def check(method, rtol, atol, time_scaling, step_size, max_num_steps, adjoint_norm,
              time_past_T="extrapolate"):
        """At construction, so that a bad setting fails before the first forward pass."""
        if time_scaling not in TIME_SCALINGS:
            raise ValueError(f"time_scaling must be one of {TIME_SCALINGS}, got {time_scaling!r}")
        if time_past_T not in TIME_PAST_T:
            raise ValueError(f"time_past_T must be one of {TIME_PAST_T}, got {time_past_T!r}")
        check_solver_options(method, rtol, atol, step_size=step_size,
                             max_num_steps=max_num_steps, adjoint_norm=adjoint_norm)


def _basis_interval(T: float, time_scaling: str):
    """Basis interval and the factor mapping solver time to basis time.

    ``"rescaled"``: the basis lives on [0, 1] and is evaluated at ``t / T``.
    ``"unscaled"``: the basis lives on [0, T] and is evaluated at the absolute time ``t``;
    for monomials this is ``t**j`` with ``t`` up to ``T``, for Legendre it coincides with
    the rescaled basis (``P_j(2 t / T - 1)``).
    ``"absolute"``: the basis is defined on [0, 1] but evaluated at the absolute time
    ``t`` in [0, T], as the authors' earlier code did for both bases: monomials ``t**j``
    and Legendre ``P_j(2 t - 1)``, which grows like ``(4 t)**j`` too (at ``t = 20``:
    1, 39, 2.28e3, 1.48e5). For ``T = 1`` all three settings coincide.
    """
    if time_scaling == "rescaled":
        return 1.0, 1.0 / T
    if time_scaling == "absolute":
        return 1.0, 1.0
    return T, 1.0


def _clamp_range(T: float, time_scaling: str, time_past_T: str):
    """The basis-time interval that ``time_past_T="clamp"`` keeps solver stages inside."""
    if time_past_T == "extrapolate":
        return None
    interval, scale = _basis_interval(T, time_scaling)
    # "absolute" evaluates a [0, 1] basis on [0, T]: clamp to the solve's own span
    return (0.0, T * scale) if time_scaling == "absolute" else (0.0, interval)


class NeuralODE(SurrogateNet):
    """Surrogate neural ODE: ``u(0) = tanh(K0 x + b0)``, ``du/dt = f(t, u)``, ``y = W [u(T); 1]``.

    Args:
        n_in, n_out: input and output sizes.
        width: state size (paper: 15).
        hidden: ``None`` for ``f = tanh(K(t) u + b(t))``; an integer for the authors'
            two-layer dynamics (paper: 50).
        T: final time.
        basis, degree: the weight basis (``degree=d`` means ``d + 1`` functions).
        method, rtol, atol: torchdiffeq solver and tolerances (paper: dopri5, 1e-7, 1e-9).
        adjoint: gradients by the adjoint method; otherwise backpropagation through the
            solver.
        time_scaling: ``"rescaled"`` (basis on [0, 1] at ``t / T``), ``"unscaled"`` (basis on
            [0, T] at ``t``) or ``"absolute"`` (basis on [0, 1] at ``t``, the authors' earlier
            code); the same for ``T = 1``.
        n_steps: intervals of the piecewise-constant ``"none"`` basis.
        step_size: step of fixed-step methods.
        max_num_steps: adaptive step budget.
        adjoint_norm: ``"default"`` or ``"seminorm"`` step control of the adjoint solve
            (see :func:`~ctdnn.solve`).
        time_past_T: ``"extrapolate"`` (the basis polynomial continues past ``T`` when a
            solver stage overshoots it) or ``"clamp"`` (the basis time is clamped to its
            interval, as the authors' Python code does).
        opening: ``"tanh"`` (``u(0) = tanh(K0 x + b0)``, as the DTO networks) or ``"linear"``
            (``u(0) = K0 x + b0``, the authors' Python neural ODE).
        init: initialisation scheme of :func:`ctdnn.initialization.initialize`:
            ``"uniform"`` (torch's default), ``"he_normal"`` or ``"small_normal"`` (the
            authors' Python neural ODE: dynamics weights N(0, 0.1^2), zero biases).

    After each forward pass, :attr:`stats` holds that solve's :class:`SolverStats` (its
    backward counters fill in during ``backward()``) and :attr:`total_stats` the cumulative
    counts since :meth:`reset_stats`.

    An input with NaN or inf, or an empty batch, raises ``ValueError`` naming ``x`` (checked
    on every call: the adaptive solve synchronises with the host at every step anyway).
    """

    _finite_input_check = "always"
    _empty_input_ok = False

    def __init__(self, n_in, n_out, *, width=15, hidden=None, T=1.0, basis="legendre", degree=3,
                 method="dopri5", rtol=1e-7, atol=1e-9, adjoint=True, time_scaling="rescaled",
                 n_steps=None, step_size=None, max_num_steps=100_000, normalized=False,
                 adjoint_norm="default", time_past_T="extrapolate", opening="tanh",
                 init="uniform"):
        super().__init__(n_in, n_out, width, T)
        self.adjoint_norm = adjoint_norm
        _SolverOptions.check(method, rtol, atol, time_scaling, step_size, max_num_steps,
                             adjoint_norm, time_past_T)
        if opening not in OPENINGS:
            raise ValueError(f"opening must be one of {OPENINGS}, got {opening!r}")
        if hidden is not None:
            hidden = check_int("hidden", hidden, minimum=1)
        interval, scale = _basis_interval(self.T, time_scaling)
        self.basis = resolve_basis(basis, degree, interval, n_steps=n_steps, normalized=normalized)
        self.dynamics = TimeVaryingMLP(self.basis, self.width, hidden, time_scale=scale,
                                       clamp=_clamp_range(self.T, time_scaling, time_past_T))
        self.time_varying.append(self.dynamics)
        self.method, self.rtol, self.atol, self.adjoint = method, float(rtol), float(atol), adjoint
        self.time_scaling, self.step_size, self.max_num_steps = time_scaling, step_size, max_num_steps
        self.time_past_T, self.opening_activation, self.init = time_past_T, opening, init
        _initialize(self, init)

    def features(self, x):
        """``u(T)``, ``(batch, width)``; ``u(0)`` from the opening layer (see ``opening``)."""
        if self.opening_activation == "tanh":
            return super().features(x)
        self._check_input(x)
        return self.flow(self.opening(x))

    def flow(self, u):
        t = torch.tensor([0.0, self.T], dtype=u.dtype, device=u.device)
        with self.dynamics.fixed_coefficients():
            sol, _ = solve(self.dynamics, u, t, method=self.method, rtol=self.rtol,
                           atol=self.atol, adjoint=self.adjoint, step_size=self.step_size,
                           max_num_steps=self.max_num_steps, adjoint_norm=self.adjoint_norm,
                           adjoint_params=tuple(self.dynamics.parameters()))
        return sol[-1]

    @property
    def stats(self) -> SolverStats:
        return self.dynamics.current

    @property
    def total_stats(self) -> SolverStats:
        return self.dynamics.total

    def reset_stats(self) -> None:
        self.dynamics.reset_stats()

    def extra_repr(self) -> str:
        return (f"basis={self.basis!r}, T={self.T:g}, method={self.method!r}, rtol={self.rtol:g}, "
                f"atol={self.atol:g}, adjoint={self.adjoint}, time_scaling={self.time_scaling!r}, "
                f"time_past_T={self.time_past_T!r}, opening={self.opening_activation!r}, "
                f"init={self.init!r}")


class TrajectoryODE(nn.Module):
    """A neural ODE that models a trajectory directly (the stationary-ODE task).

    ``dy/dt = f(t, y)`` with :class:`TimeVaryingMLP` dynamics (``dim -> hidden -> dim``,
    applied to ``y**3`` when ``transform="cube"``, as in the torchdiffeq spiral example).

    Args:
        dim: state size.
        hidden: hidden units (paper: 50).
        T: length of the absolute time span the basis must cover (paper: 25).

    The other arguments (``basis``, ``degree``, ``method``, ``rtol``, ``atol``, ``adjoint``,
    ``time_scaling``, ``n_steps``, ``step_size``, ``max_num_steps``, ``normalized``,
    ``adjoint_norm``, ``time_past_T``, ``init``) are as for :class:`NeuralODE`.
    """

    def __init__(self, dim=2, *, hidden=50, T=25.0, basis="legendre", degree=3, transform="cube",
                 method="dopri5", rtol=1e-7, atol=1e-9, adjoint=False, time_scaling="rescaled",
                 n_steps=None, step_size=None, max_num_steps=100_000, normalized=False,
                 adjoint_norm="default", time_past_T="extrapolate", init="uniform"):
        super().__init__()
        self.adjoint_norm = adjoint_norm
        self.dim = check_int("dim", dim, minimum=1)
        self.T = check_horizon(T)
        _SolverOptions.check(method, rtol, atol, time_scaling, step_size, max_num_steps,
                             adjoint_norm, time_past_T)
        interval, scale = _basis_interval(self.T, time_scaling)
        self.basis = resolve_basis(basis, degree, interval, n_steps=n_steps, normalized=normalized)
        self.dynamics = TimeVaryingMLP(self.basis, self.dim, hidden, time_scale=scale,
                                       transform=transform,
                                       clamp=_clamp_range(self.T, time_scaling, time_past_T))
        self.time_varying = nn.ModuleList([self.dynamics])
        self.method, self.rtol, self.atol, self.adjoint = method, float(rtol), float(atol), adjoint
        self.time_scaling, self.step_size, self.max_num_steps = time_scaling, step_size, max_num_steps
        self.time_past_T, self.init = time_past_T, init
        _initialize(self, init)

    def forward(self, y0: torch.Tensor, t: torch.Tensor, offsets: torch.Tensor | None = None):
        """Trajectories from ``y0: (batch, dim)`` at times ``t: (n_times,)``.

        Args:
            offsets: ``(batch,)`` absolute start times; sample ``i`` is solved at
                ``offsets[i] + t`` (so ``t`` should start at 0). ``None``: ``t`` is absolute.
        Returns:
            ``(n_times, batch, dim)``.
        """
        if y0.ndim != 2 or y0.shape[1] != self.dim:
            raise ValueError(f"y0 must have shape (batch, dim={self.dim}), got {tuple(y0.shape)}")
        if y0.shape[0] == 0:
            raise ValueError("y0 is empty (a batch of 0 samples); give at least one start state")
        # One host sync per solve; the adaptive solver syncs at every step anyway.
        if not bool(torch.isfinite(y0).all()):
            raise ValueError("y0 contains NaN or inf; give finite start states")
        if offsets is not None and offsets.shape != (y0.shape[0],):
            raise ValueError(f"offsets must have shape (batch,) = ({y0.shape[0]},), "
                             f"got {tuple(offsets.shape)}")
        self.dynamics.offset = offsets
        try:
            with self.dynamics.fixed_coefficients():
                sol, _ = solve(self.dynamics, y0, t, method=self.method, rtol=self.rtol,
                               atol=self.atol, adjoint=self.adjoint, step_size=self.step_size,
                               max_num_steps=self.max_num_steps,
                               adjoint_norm=self.adjoint_norm,
                               adjoint_params=tuple(self.dynamics.parameters()))
        finally:
            if not self.adjoint:
                self.dynamics.offset = None
        return sol

    def time_parameters(self):
        return list(self.dynamics.parameters())

    def penalty(self, alpha_theta: float = 0.0, alpha_W: float = 0.0) -> torch.Tensor:
        if not alpha_theta:
            return self.dynamics.layers[0].theta.coefficients.new_zeros(())
        return 0.5 * alpha_theta * self.dynamics.l2_norm_squared()

    @property
    def n_time_parameters(self) -> int:
        return sum(p.numel() for p in self.time_parameters())

    def weights_at(self, t) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The dynamics' weights at absolute times ``t`` in ``[0, T]``: ``[(K1, b1), (K2, b2)]``
        with ``K1: (..., hidden, dim)``, ``b1: (..., hidden)``, ``K2: (..., dim, hidden)``,
        ``b2: (..., dim)`` (one matmul; the function ``ctdnn.weights_at`` documents the
        details)."""
        return weights_at(self, t)

    @property
    def stats(self) -> SolverStats:
        return self.dynamics.current

    @property
    def total_stats(self) -> SolverStats:
        return self.dynamics.total

    def reset_stats(self) -> None:
        self.dynamics.reset_stats()
