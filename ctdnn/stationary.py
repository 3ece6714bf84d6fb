"""The stationary-ODE task: learning the torchdiffeq spiral with time-varying weights.

The data come from the autonomous system of the torchdiffeq example (Chen et al. 2018)

    dy/dt = (y**3) A,    A = [[-0.1, 2], [-2, -0.1]],    y(0) = [2, 0],    t in [0, 25]

(row-vector form, ``y**3`` elementwise), sampled at ``n_points`` equispaced times. The time
axis is split into contiguous regions: train ``[0, 0.64 T)``, validation ``[0.64 T, 0.8 T)``
and test ``[0.8 T, T]`` (``[0, 16)``, ``[16, 20)``, ``[20, 25]`` for ``T = 25``).

A :class:`~ctdnn.neural_ode.TrajectoryODE` is fitted to short windows of the training
region (:func:`train_trajectory`); validation, test (and training) accuracy is measured by a
rollout over a whole region from the true state at its first point. Since the true system
is time-invariant, any time variation of the learned weights is something the model invents;
the task isolates how the weight basis (and the scaling of time inside it) drives the cost
of the adaptive solver, counted in right-hand-side evaluations (NFE).

Two protocols (:data:`PROTOCOLS`, resolved by :func:`protocol_options`) fix every option of
the task that the authors' script ``python/stationary_ode/ode_demo_NEW.py`` (run by
``run_experiment.sh``) sets differently from ctdnn; each remains an explicit argument of
:func:`make_trajectory_data`, :func:`train_trajectory` or the model.
"""

from __future__ import annotations

import dataclasses
import math
import os
from functools import partial
from pathlib import Path

import numpy as np
import torch

from . import checks
from .engine import Checkpoint, Run, TrainingError, model_fingerprint, new_log, tensor_digest
from .solvers import SolverError, solver_failures
from .status import Status
from .training import check_seed, make_optimizer, relative_error, resolve_device

__all__ = ["SPIRAL_A", "SPIRAL_Y0", "spiral_rhs", "true_trajectory", "TimeSplit", "time_split",
           "TrajectoryData", "make_trajectory_data", "spiral_init_", "sample_windows",
           "rollout", "TrajectoryTrainResult", "train_trajectory", "TRAIN_FRAC", "VAL_FRAC",
           "PROTOCOLS", "PROTOCOL_NOTES", "protocol_options", "DEGREE_SEMANTICS",
           "basis_degree", "region_error", "lr_at", "REFERENCES", "ERROR_METRICS"]

SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))
#: How the true trajectory is computed (:func:`true_trajectory`).
REFERENCES = ("dop853", "rk4_grid")
#: Relative error of a rollout over a region (``region_error``).
ERROR_METRICS = ("per_sample", "frobenius")
#: What the integer ``degree`` of a model means (:func:`basis_degree`).
DEGREE_SEMANTICS = ("degree", "functions")

#: The two protocols of the stationary-ODE task: every option whose value differs. An option
#: left at ``None`` by a caller takes the protocol's value; an explicit value overrides it.
#: ``"authors"`` follows ``ode_demo_NEW.py`` as ``run_experiment.sh`` calls it (commit 218b73f).
PROTOCOLS = {
    "ctdnn": {
        "n_points": 1000, "reference": "dop853", "batch_size": 20, "batch_time": 10,
        "iterations": 2000, "lr": 1e-3, "optimizer": "rmsprop", "eval_every": 20,
        "grad_clip": None, "lr_decay_every": None, "lr_decay_gamma": 0.5,
        "early_stop_patience": None, "error_metric": "per_sample",
        "include_last_window": True, "closed_regions": False, "rtol": 1e-7, "atol": 1e-9,
        "dtype": "float64", "degree_semantics": "degree", "time_scaling": "rescaled",
        "time_past_T": "extrapolate"},
    "authors": {
        "n_points": 500, "reference": "rk4_grid", "batch_size": 1, "batch_time": 10,
        "iterations": 2000, "lr": 1e-3, "optimizer": "rmsprop", "eval_every": 100,
        "grad_clip": 1.0, "lr_decay_every": 500, "lr_decay_gamma": 0.5,
        "early_stop_patience": 5, "error_metric": "frobenius",
        "include_last_window": False, "closed_regions": True, "rtol": 1e-7, "atol": 1e-9,
        "dtype": "float32", "degree_semantics": "degree", "time_scaling": "rescaled",
        "time_past_T": "clamp"},
}

#: Where each value of the ``"authors"`` protocol comes from.
PROTOCOL_NOTES = {
    "n_points": "DATA_SIZE=500 in run_experiment.sh (script default 1000)",
    "reference": "odeint(Lambda(), true_y0, t, method='rk4'): torchdiffeq's 3/8-rule RK4 with "
                 "one step per sample interval",
    "batch_size": "get_batch() draws one window per iteration (--batch_size is parsed but "
                  "unused)",
    "batch_time": "BATCH_TIME=10",
    "iterations": "--niters default 2000",
    "lr": "RMSprop(lr=1e-3)", "optimizer": "RMSprop",
    "eval_every": "TEST_FREQ=100: one validation rollout every 100 iterations",
    "grad_clip": "GRAD_CLIP=1.0 (clip_grad_norm_)",
    "lr_decay_every": "LR_DECAY_EVERY=500: StepLR stepped once per iteration",
    "lr_decay_gamma": "LR_DECAY_GAMMA=0.5",
    "early_stop_patience": "EARLY_STOP_PATIENCE=5 validation checks without improvement",
    "error_metric": "experiment_runtime.relative_error: ||P - C||_F / ||C||_F over the region",
    "include_last_window": "np.random.randint(0, train_end_idx - batch_time): the last "
                           "possible window start is never drawn",
    "closed_regions": "train t[:train_end_idx + 1], validation t[train_end_idx:val_end_idx + 1]: "
                      "each region keeps the next region's first sample",
    "rtol": "--rtol default 1e-7", "atol": "--atol default 1e-9",
    "dtype": "torch's default float32 (data, model and solves)",
    "degree_semantics": "TimeParameterizedNet(d=args.degree + 1) after the degree fix; the "
                        "earlier script passed d=args.degree (k functions)",
    "time_scaling": "time normalised by tspan=[0, 25] after the time fix; the earlier script "
                    "evaluated both bases at absolute t",
    "time_past_T": "_normalize_time clamps t/25 to [0, 1]",
    "loss": "mean absolute error over the window (both protocols)",
    "nfe": "the script counts only evaluation NFE (validation, train and test rollouts); "
           "ctdnn also counts the training solves",
}


def protocol_options(protocol: str = "ctdnn", **explicit) -> dict:
    """The options of a protocol, with every explicit non-``None`` value overriding it.

    Args:
        protocol: ``"ctdnn"`` or ``"authors"`` (:data:`PROTOCOLS`).
        **explicit: options given by the caller; ``None`` means "the protocol's value".

    Returns:
        ``{option: value}`` with every key of :data:`PROTOCOLS` (and any extra keys given).

    Raises:
        ValueError: unknown protocol.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {tuple(PROTOCOLS)}, got {protocol!r}")
    out = dict(PROTOCOLS[protocol])
    out.update({k: v for k, v in explicit.items() if v is not None})
    return out


def basis_degree(degree: int, semantics: str = "degree") -> int:
    """Polynomial degree of the basis that an integer ``degree`` asks for.

    ``"degree"``: ``degree`` is the polynomial degree (``degree + 1`` functions, ctdnn and
    the authors' current stationary-ODE script). ``"functions"``: ``degree`` counts the basis
    functions, as the authors' Python scripts pass ``--degree k`` to ``TimeParameterizedNet(d=k)``
    (``k`` functions, polynomial degree ``k - 1``).

    Raises:
        ValueError: unknown semantics, or ``degree < 1`` with ``"functions"``.
    """
    if semantics not in DEGREE_SEMANTICS:
        raise ValueError(f"degree_semantics must be one of {DEGREE_SEMANTICS}, got {semantics!r}")
    degree = _check_int("degree", degree, minimum=0)
    if semantics == "degree":
        return degree
    if degree < 1:
        raise ValueError("degree_semantics='functions' needs degree >= 1 (the number of basis "
                         "functions); the constant model is degree=1")
    return degree - 1
SPIRAL_Y0 = (2.0, 0.0)
TRAIN_FRAC = 0.64
VAL_FRAC = 0.80


def spiral_rhs(y: np.ndarray) -> np.ndarray:
    """Right-hand side ``(y**3) A`` of the spiral; ``y: (..., 2)``."""
    return np.asarray(y) ** 3 @ np.asarray(SPIRAL_A)


# Argument checks of this module raise TrainingError, naming the argument.
_check_int = partial(checks.check_int, error=TrainingError)
_check_number = partial(checks.check_number, error=TrainingError)


def _rk4_grid(t: np.ndarray) -> np.ndarray:
    """The spiral by the 3/8-rule RK4 (torchdiffeq's ``"rk4"``), one step per interval."""
    y = np.empty((t.size, 2))
    y[0] = SPIRAL_Y0
    for i in range(t.size - 1):
        h, y0 = t[i + 1] - t[i], y[i]
        k1 = spiral_rhs(y0)
        k2 = spiral_rhs(y0 + h * k1 / 3.0)
        k3 = spiral_rhs(y0 + h * (k2 - k1 / 3.0))
        k4 = spiral_rhs(y0 + h * (k1 - k2 + k3))
        y[i + 1] = y0 + h * (k1 + 3.0 * (k2 + k3) + k4) / 8.0
    return y


def true_trajectory(n_points: int = 1000, T: float = 25.0, *, dtype=torch.float64,
                    rtol: float = 1e-12, atol: float = 1e-12, reference: str = "dop853"):
    """The spiral sampled at ``t = linspace(0, T, n_points)``.

    ``reference="dop853"``: SciPy's ``solve_ivp`` with the 8th-order Dormand-Prince method
    at ``rtol = atol = 1e-12`` (dense output at the sample times), in float64; accurate to
    about 1e-11, far below any error a trained model reaches. ``reference="rk4_grid"``: the
    authors' data, one step of the 3/8-rule RK4 (torchdiffeq's ``method="rk4"``) per sample
    interval (in float64 here; the authors' float32 adds rounding of about 1e-7); its error
    against the exact trajectory is up to about 5e-3 at 500 samples on [0, 25] (2e-4 at 1000).

    Args:
        n_points: number of sample times (>= 10).
        T: final time.
        dtype: dtype of the returned tensors.
        rtol, atol: tolerances of the DOP853 solve.
        reference: ``"dop853"`` or ``"rk4_grid"``.

    Returns:
        ``(t, y)``: ``t: (n_points,)``, ``y: (n_points, 2)``.
    """
    from scipy.integrate import solve_ivp

    n_points = _check_int("n_points", n_points, minimum=10)
    T = _check_number("T", T, positive=True)
    if reference not in REFERENCES:
        raise TrainingError(f"reference must be one of {REFERENCES}, got {reference!r}")
    t = np.linspace(0.0, T, n_points)
    if reference == "rk4_grid":
        return torch.as_tensor(t, dtype=dtype), torch.as_tensor(_rk4_grid(t), dtype=dtype)
    sol = solve_ivp(lambda _t, y: spiral_rhs(y), (0.0, T), np.asarray(SPIRAL_Y0, dtype=float),
                    method="DOP853", t_eval=t, rtol=rtol, atol=atol)
    if not sol.success:  # pragma: no cover - the system is smooth and bounded
        raise RuntimeError(f"reference solve of the spiral failed: {sol.message}")
    return torch.as_tensor(t, dtype=dtype), torch.as_tensor(sol.y.T.copy(), dtype=dtype)


@dataclasses.dataclass(frozen=True)
class TimeSplit:
    """Contiguous train / validation / test regions of a sampled time axis.

    Regions are index ranges: train ``[0, val_start)``, validation ``[val_start, test_start)``,
    test ``[test_start, n_points)``; ``val_start`` is the first sample with
    ``t >= 0.64 T`` and ``test_start`` the first with ``t >= 0.8 T``. Every region's rollout
    starts from the true state at its first index.
    """

    n_points: int
    val_start: int
    test_start: int

    @property
    def train(self) -> slice:
        return slice(0, self.val_start)

    @property
    def val(self) -> slice:
        return slice(self.val_start, self.test_start)

    @property
    def test(self) -> slice:
        return slice(self.test_start, self.n_points)

    def region(self, name: str, closed: bool = False) -> slice:
        """The index range of ``name``; ``closed=True`` extends train and validation by the
        next region's first sample, as the authors' script does."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"region must be 'train', 'val' or 'test', got {name!r}")
        sl = getattr(self, name)
        return slice(sl.start, sl.stop + 1) if closed and name != "test" else sl


def time_split(t: torch.Tensor, train_frac: float = TRAIN_FRAC,
               val_frac: float = VAL_FRAC) -> TimeSplit:
    """:class:`TimeSplit` of ``t: (n_points,)`` (increasing, from 0) at ``train_frac * T``
    and ``val_frac * T`` with ``T = t[-1]``."""
    if not 0 < train_frac < val_frac < 1:
        raise TrainingError(f"need 0 < train_frac < val_frac < 1, got train_frac={train_frac}, "
                            f"val_frac={val_frac}")
    t = torch.as_tensor(t, dtype=torch.float64).cpu()
    T = float(t[-1])
    # A tiny slack so that a sample time equal to the boundary up to rounding counts as
    # the boundary (it then starts the next region).
    eps = 1e-12 * T
    v = int(torch.searchsorted(t, torch.tensor(train_frac * T - eps, dtype=torch.float64)))
    s = int(torch.searchsorted(t, torch.tensor(val_frac * T - eps, dtype=torch.float64)))
    if not 2 <= v < s < t.numel():
        raise TrainingError(f"n_points={t.numel()} is too small for a train/val/test split")
    return TimeSplit(t.numel(), v, s)


@dataclasses.dataclass
class TrajectoryData:
    """A sampled true trajectory and its split.

    Attributes:
        t: ``(n_points,)`` sample times.
        y: ``(n_points, 2)`` true states.
        split: the :class:`TimeSplit`.
    """

    t: torch.Tensor
    y: torch.Tensor
    split: TimeSplit

    @property
    def T(self) -> float:
        return float(self.t[-1])

    def to(self, device=None, dtype=None) -> "TrajectoryData":
        return TrajectoryData(self.t.to(device, dtype), self.y.to(device, dtype), self.split)


def make_trajectory_data(n_points: int = 1000, T: float = 25.0, *,
                         train_frac: float = TRAIN_FRAC, val_frac: float = VAL_FRAC,
                         dtype=torch.float64, reference: str = "dop853") -> TrajectoryData:
    """:func:`true_trajectory` (``reference`` as there) with its :func:`time_split`."""
    t, y = true_trajectory(n_points, T, dtype=dtype, reference=reference)
    return TrajectoryData(t, y, time_split(t, train_frac, val_frac))


@torch.no_grad()
def spiral_init_(model, std: float = 0.1, generator: torch.Generator | None = None):
    """Initialise a :class:`~ctdnn.neural_ode.TrajectoryODE` as the torchdiffeq example does.

    Weights ``N(0, std**2)``, biases zero, constant in time (only the coefficient of the
    basis' constant direction is non-zero). Returns the model.
    """
    for layer in model.dynamics.layers:
        coeffs = layer.theta.coefficients
        n_out, n_in1 = coeffs.shape[1:]
        w = torch.randn(n_out, n_in1, generator=generator, dtype=torch.float64) * std
        w[:, -1] = 0.0
        const = layer.theta.basis.constant_coefficients(dtype=torch.float64)
        coeffs.copy_((const[:, None, None] * w[None]).to(coeffs))
    return model


def sample_windows(split: TimeSplit, batch_time: int, batch_size: int,
                   generator: torch.Generator, include_last: bool = True) -> torch.Tensor:
    """Start indices ``(batch_size,)`` of windows of ``batch_time`` consecutive samples
    lying entirely in the training region (``start + batch_time <= split.val_start``),
    uniform over the allowed starts; ``include_last=False`` never draws the last one
    (``start + batch_time < split.val_start``, the authors' ``randint(0, end - batch_time)``)."""
    n_starts = split.val_start - batch_time + (1 if include_last else 0)
    if n_starts < 1:
        raise TrainingError(f"batch_time={batch_time} does not fit in the training region "
                            f"({split.val_start} samples)")
    return torch.randint(0, n_starts, (batch_size,), generator=generator)


def rollout(model, data: TrajectoryData, region: str = "test", *, max_nfe: int | None = None,
            closed: bool = False):
    """Predict a whole region from the true state at its first sample (no gradients).

    Args:
        model: a :class:`~ctdnn.neural_ode.TrajectoryODE`.
        data: the :class:`TrajectoryData` (on the model's device and dtype).
        region: ``"train"``, ``"val"`` or ``"test"``.
        closed: extend train and validation by the next region's first sample
            (``TimeSplit.region``).
        max_nfe: budget of right-hand-side evaluations for this solve (``None``: none). The
            model's ``max_num_steps`` does not bound a rollout: torchdiffeq applies it to
            each interval between two output times, and a rollout has hundreds of them.

    Returns:
        ``(pred, stats)``: ``pred: (n_region, 2)`` on the model's device and ``stats`` the
        :class:`~ctdnn.solvers.SolverStats` of that solve.

    Raises:
        SolverError: the solve failed or spent its budget (status ``"too_many_steps"``);
            its ``stats`` hold the counts so far.
    """
    sl = data.split.region(region, closed)
    t, y = data.t[sl], data.y[sl]
    handle = None
    if max_nfe is not None:
        dyn = model.dynamics

        def guard(module, args):
            if dyn.current.nfe_forward >= max_nfe:
                # solve() re-raises this as SolverError; "max_num_steps" in the message makes
                # its status "too_many_steps".
                raise SolverError("too_many_steps", f"the rollout spent its budget of {max_nfe} "
                                  "evaluations (an NFE analogue of max_num_steps)")

        handle = dyn.register_forward_pre_hook(guard)
    try:
        with torch.no_grad():
            pred = model(y[:1], t)
    finally:
        if handle is not None:
            handle.remove()
    return pred[:, 0], model.stats


def region_error(pred: torch.Tensor, target: torch.Tensor, metric: str = "per_sample"):
    """Relative error of a rollout ``pred: (n, dim)`` against ``target: (n, dim)``.

    ``"per_sample"``: the mean over samples of ``||p_i - c_i|| / ||c_i||`` (ctdnn).
    ``"frobenius"``: ``||P - C||_F / ||C||_F`` over the whole region (the authors'
    ``experiment_runtime.relative_error``; its ``1e-12`` added to the denominator is left
    out, it cannot matter for a trajectory of norm about 1).
    """
    if metric == "per_sample":
        return relative_error(pred, target)
    if metric == "frobenius":
        return torch.linalg.vector_norm(pred - target) / torch.linalg.vector_norm(target)
    raise TrainingError(f"error_metric must be one of {ERROR_METRICS}, got {metric!r}")


def _region_error(model, data, region, max_nfe=None, metric="per_sample", closed=False):
    """``(relative error, nfe, status)``; a failed or non-finite rollout gives ``inf``."""
    try:
        pred, stats = rollout(model, data, region, max_nfe=max_nfe, closed=closed)
    except SolverError as exc:
        return math.inf, exc.stats.nfe, exc.status
    err = float(region_error(pred, data.y[data.split.region(region, closed)], metric))
    if not math.isfinite(err):
        return math.inf, stats.nfe, Status.NON_FINITE
    return err, stats.nfe, Status.OK


@dataclasses.dataclass
class TrajectoryTrainResult:
    """Outcome of :func:`train_trajectory`.

    Attributes:
        status: a :class:`~ctdnn.status.Status` (equal to its string): ``"completed"``,
            ``"partial"`` (stopped by ``max_iterations``), ``"diverged"`` (non-finite loss)
            or ``"solver_failed"`` (a training solve, forward or adjoint, did not finish;
            ``solver_status`` says why).
        message: human-readable note on the status.
        solver_status: the :class:`~ctdnn.solvers.SolverError` status of a failed solve.
        iterations_completed: iterations whose update was applied.
        history: per iteration: ``iteration``, ``loss`` (L1 window loss), ``nfe``
            (cumulative training NFE, forward + backward), ``nfe_forward``,
            ``nfe_backward``, ``wall_time`` (cumulative seconds, evaluations included).
        evaluations: per evaluation: ``iteration``, ``train_rel_err``, ``val_rel_err``
            (rollouts; ``inf`` if they failed), ``nfe`` (training NFE so far),
            ``eval_nfe`` (cumulative evaluation NFE), ``wall_time``.
        best_iteration, best_val_rel_err, best_state: best-on-validation state (CPU).
        train_rel_err, val_rel_err, test_rel_err: errors of the best state on the three
            regions; ``test_nfe``: NFE of the test rollout.
        train_nfe: total training NFE (forward + backward); ``eval_nfe``: total NFE of the
            evaluations (final rollouts included).
        n_time_parameters: trainable coefficients of the time-varying weights.
        predictions: best-state rollouts per region, ``{"train"|"val"|"test": (n, 2)}``
            (CPU float64; NaN where a rollout failed).
        rollout_status: per region ``"ok"``, ``"non_finite"`` or the
            :class:`~ctdnn.solvers.SolverError` status of a failed rollout (the test NFE of a
            rollout that spent its budget is a lower bound).
        wall_time: seconds.
        early_stopped_at: the iteration after which early stopping ended the run, or
            ``None`` (status ``"completed"`` either way).
        budget_spent: whether the run stopped because its training NFE reached
            ``max_train_nfe`` (status ``"solver_failed"``, ``solver_status``
            ``"too_many_steps"``; ``train_nfe`` is then a lower bound of the full run's).
    """

    status: Status
    message: str
    solver_status: Status | None
    iterations_completed: int
    history: dict
    evaluations: dict
    best_iteration: int
    best_val_rel_err: float
    best_state: dict
    train_rel_err: float
    val_rel_err: float
    test_rel_err: float
    test_nfe: int
    train_nfe: int
    eval_nfe: int
    n_time_parameters: int
    predictions: dict
    rollout_status: dict
    wall_time: float
    early_stopped_at: int | None = None
    budget_spent: bool = False

    def summary(self) -> dict:
        """The scalar fields (JSON-friendly)."""
        skip = {"history", "evaluations", "best_state", "predictions"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip}


def lr_at(lr: float, iteration: int, every: int | None, gamma: float) -> float:
    """Learning rate of (1-based) ``iteration`` under a step decay: ``lr * gamma**k`` with
    ``k = (iteration - 1) // every``, what ``torch.optim.lr_scheduler.StepLR(step_size=every)``
    gives when stepped once after every iteration; ``every=None``: constant ``lr``."""
    return lr if not every else lr * gamma ** ((iteration - 1) // every)


def _fingerprint(model, data, iterations, batch_time, batch_size, lr, optimizer, seed,
                 eval_every, grad_clip, eval_max_nfe, extra):
    """Everything that determines a run: model, data (digest and split), settings."""
    return {"model": model_fingerprint(model),
            "data": {"digest": tensor_digest(data.t, data.y), "n_points": data.split.n_points,
                     "val_start": data.split.val_start, "test_start": data.split.test_start},
            "training": {"iterations": iterations, "batch_time": batch_time,
                         "batch_size": batch_size, "lr": float(lr), "optimizer": optimizer,
                         "seed": seed, "eval_every": eval_every,
                         "grad_clip": None if grad_clip is None else float(grad_clip),
                         "eval_max_nfe": eval_max_nfe, **extra}}


def train_trajectory(model, *, data: TrajectoryData | None = None, iterations: int = 2000,
                     batch_time: int = 10, batch_size: int = 20, lr: float = 1e-3,
                     optimizer: str = "rmsprop", seed: int = 0, eval_every: int = 20,
                     progress: bool = True, device="auto", grad_clip: float | None = None,
                     eval_max_nfe: int | None = None,
                     lr_decay_every: int | None = None, lr_decay_gamma: float = 0.5,
                     early_stop_patience: int | None = None,
                     error_metric: str = "per_sample", include_last_window: bool = True,
                     closed_regions: bool = False, max_train_nfe: int | None = None,
                     checkpoint: str | os.PathLike | None = None,
                     checkpoint_every: int | None = None, resume: bool = False,
                     max_iterations: int | None = None,
                     name: str | None = None) -> TrajectoryTrainResult:
    """Fit a :class:`~ctdnn.neural_ode.TrajectoryODE` to windows of the true trajectory.

    Each iteration draws ``batch_size`` windows of ``batch_time`` consecutive samples inside
    the training region (a private generator seeded by ``seed``) and solves them all in one
    call, ``model(y_start, tau, offsets=t_start)``, where ``tau`` are the window's times
    relative to its start; each window's weights are evaluated at its absolute times. The
    loss is the mean absolute error over windows, times and components. Every
    ``eval_every`` iterations (and after the last) the model is rolled out over the
    validation region from the true state at its first sample and over the training region
    from ``y(0)``; the state with the lowest validation error is kept. At the end the best
    state is loaded and rolled out over the three regions.

    NFE: ``history["nfe"]`` counts right-hand-side evaluations of the training solves only,
    ``history["nfe_forward"]`` and ``history["nfe_backward"]`` its two parts (the forward
    solves, and the adjoint solves with ``model.adjoint``; backpropagation through the
    solver replays the recorded graph without new evaluations). Evaluation NFE are kept
    separately.

    Args:
        model: a :class:`~ctdnn.neural_ode.TrajectoryODE` (its dtype sets the computation's).
        data: a :class:`TrajectoryData`; default ``make_trajectory_data(1000, model.T)``.
        iterations: optimisation steps.
        batch_time: samples per window (>= 2).
        batch_size: windows per iteration.
        lr: learning rate.
        optimizer: ``"rmsprop"`` (as in the torchdiffeq example), ``"adam"`` or ``"sgd"``.
        seed: seeds the window sampling (model initialisation is the caller's).
        eval_every: iterations between validation rollouts.
        progress: show a progress bar.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ...
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        lr_decay_every, lr_decay_gamma: step decay of the learning rate, ``lr *
            gamma**((iteration - 1) // every)`` (``lr_at``, the authors' ``StepLR``);
            ``None``: constant.
        early_stop_patience: stop after this many consecutive evaluations whose
            validation error does not improve on the best (``None``: never).
        error_metric: ``"per_sample"`` or ``"frobenius"`` (``region_error``), for the
            validation choice and the reported errors.
        include_last_window: whether the window ending at the last training sample can be
            drawn (``sample_windows``).
        closed_regions: rollouts over train and validation also cover the next region's
            first sample (``TimeSplit.region``).
        max_train_nfe: budget of training NFE for the whole run; the solve that reaches it
            is stopped, the run ends with status ``"solver_failed"`` (``"too_many_steps"``)
            at its last completed iteration, and ``train_nfe`` is a lower bound.
        eval_max_nfe: budget of evaluations of each evaluation rollout (validation, training
            and test regions); a rollout that spends it counts as failed (error ``inf``).
            ``None``: no budget.
        checkpoint: file for checkpoints (atomic writes every ``checkpoint_every``
            iterations, default ``eval_every``, at the end, on interruption and when the
            run fails); with ``resume=True`` an existing checkpoint written with the same
            settings is continued, bit-identically (a run that stopped on a failed solve or
            a divergence is not retried).
        max_iterations: stop after this many iterations *in this call* (staged runs).
        name: label for messages.

    Returns:
        :class:`TrajectoryTrainResult`; the model holds the best-on-validation state.

    Raises:
        TrainingError: invalid arguments, naming the argument.
    """
    iterations = _check_int("iterations", iterations, minimum=1)
    batch_time = _check_int("batch_time", batch_time, minimum=2)
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    eval_every = _check_int("eval_every", eval_every, minimum=1)
    checkpoint_every = eval_every if checkpoint_every is None else _check_int(
        "checkpoint_every", checkpoint_every, minimum=1)
    if max_iterations is not None:
        max_iterations = _check_int("max_iterations", max_iterations, minimum=1)
    seed = check_seed(seed)
    if eval_max_nfe is not None:
        eval_max_nfe = _check_int("eval_max_nfe", eval_max_nfe, minimum=1)
    if grad_clip is not None:
        grad_clip = _check_number("grad_clip", grad_clip, positive=True)
    if lr_decay_every is not None:
        lr_decay_every = _check_int("lr_decay_every", lr_decay_every, minimum=1)
    lr_decay_gamma = _check_number("lr_decay_gamma", lr_decay_gamma, positive=True)
    if early_stop_patience is not None:
        early_stop_patience = _check_int("early_stop_patience", early_stop_patience, minimum=1)
    if max_train_nfe is not None:
        max_train_nfe = _check_int("max_train_nfe", max_train_nfe, minimum=1)
    if error_metric not in ERROR_METRICS:
        raise TrainingError(f"error_metric must be one of {ERROR_METRICS}, got {error_metric!r}")
    if not hasattr(model, "time_scaling") or not hasattr(model, "dim"):
        raise TrainingError(f"model must be a ctdnn.TrajectoryODE, got {type(model).__name__}")
    label = name or f"{model.basis.kind} d={model.basis.degree} {model.time_scaling}"
    dev = resolve_device(device)
    model.to(dev)
    dtype = next(model.parameters()).dtype
    if data is None:
        data = make_trajectory_data(1000, model.T)
    if not isinstance(data, TrajectoryData):
        raise TrainingError(f"data must be a TrajectoryData, got {type(data).__name__}")
    if abs(data.T - model.T) > 1e-9 * model.T:
        raise TrainingError(f"data spans [0, {data.T:g}] but the model's basis covers "
                            f"[0, {model.T:g}]; build the model with T={data.T:g}")
    dt = torch.diff(data.t.double())
    if (dt - dt[0]).abs().max() > 1e-9 * data.T:
        raise TrainingError("data.t must be equispaced (windows share their relative times)")
    if batch_time > data.split.val_start:
        raise TrainingError(f"batch_time={batch_time} is longer than the training region "
                            f"({data.split.val_start} samples)")
    data = data.to(dev, dtype)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ckpt = None
    if checkpoint is not None:
        ckpt = Checkpoint(Path(checkpoint), "trajectory",
                          _fingerprint(model, data, iterations, batch_time, batch_size, lr,
                                       optimizer, seed, eval_every, grad_clip, eval_max_nfe,
                                       {"lr_decay_every": lr_decay_every,
                                        "lr_decay_gamma": float(lr_decay_gamma),
                                        "early_stop_patience": early_stop_patience,
                                        "error_metric": error_metric,
                                        "include_last_window": bool(include_last_window),
                                        "closed_regions": bool(closed_regions),
                                        "max_train_nfe": max_train_nfe}),
                          checkpoint_every)
    y_all, t_all = data.y, data.t
    tau = t_all[:batch_time] - t_all[0]  # equispaced samples: the same for every window
    steps = torch.arange(batch_time)

    run = Run(model, opt, gen, label=label, unit="iteration", total=iterations,
              logs={"history": new_log(("iteration", "loss", "nfe", "nfe_forward",
                                        "nfe_backward", "wall_time")),
                    "evaluations": new_log(("iteration", "train_rel_err", "val_rel_err", "nfe",
                                            "eval_nfe", "wall_time"))},
              counters={"nfe_forward": 0, "nfe_backward": 0, "eval_nfe": 0,
                        "stale_checks": 0, "early_stopped_at": 0},
              checkpoint=ckpt, progress=progress)
    if resume:
        run.resume()
    counts = run.counters  # training NFE (forward, backward) and evaluation NFE so far

    def evaluate(iteration):
        model.eval()
        val_err, nfe_v, _ = _region_error(model, data, "val", eval_max_nfe, error_metric,
                                          closed_regions)
        train_err, nfe_t, _ = _region_error(model, data, "train", eval_max_nfe, error_metric,
                                            closed_regions)
        counts["eval_nfe"] += nfe_v + nfe_t
        run.record("evaluations", iteration=iteration, train_rel_err=train_err,
                   val_rel_err=val_err, nfe=counts["nfe_forward"] + counts["nfe_backward"],
                   eval_nfe=counts["eval_nfe"])
        # A check counts as an improvement exactly when it becomes the best state (the
        # authors' `val_relerr < best_val_relerr`).
        counts["stale_checks"] = 0 if run.offer_best(iteration, val_err) else (
            counts["stale_checks"] + 1)
        model.train()
        return val_err

    dyn = model.dynamics

    def budget_guard(module, args):
        if counts["nfe_forward"] + counts["nfe_backward"] + dyn.current.nfe_forward \
                + dyn.current.nfe_backward >= max_train_nfe:
            raise SolverError("too_many_steps", f"the training spent its budget of "
                              f"{max_train_nfe} evaluations (max_train_nfe)")

    with run.running(max_iterations) as iterations_to_run:
        model.train()
        for it in iterations_to_run:
            if counts["early_stopped_at"]:
                break  # a resumed run that had already stopped early
            s = sample_windows(data.split, batch_time, batch_size, gen, include_last_window)
            idx = (s[None, :] + steps[:, None]).to(dev)  # (batch_time, batch_size)
            s = s.to(dev)
            target = y_all[idx]
            before = dataclasses.replace(model.total_stats)
            failure = None
            guard = (dyn.register_forward_pre_hook(budget_guard) if max_train_nfe is not None
                     else None)
            try:
                pred = model(y_all[s], tau, offsets=t_all[s])
                loss = (pred - target).abs().mean()
                opt.zero_grad(set_to_none=True)
                # a failed adjoint solve is raised from backward()
                with solver_failures(model.dynamics):
                    loss.backward()
            except SolverError as exc:
                failure = exc
            finally:
                if guard is not None:
                    guard.remove()
            after = model.total_stats
            spent = (after.nfe_forward - before.nfe_forward,
                     after.nfe_backward - before.nfe_backward)
            if failure is not None:
                run.fail(Status.SOLVER_FAILED, f"the training solve of iteration {it} failed "
                         f"({failure})", failure.status)
            elif not math.isfinite(loss_value := float(loss.detach())):
                run.fail(Status.DIVERGED, f"non-finite loss in iteration {it}")
            # The evaluations of this iteration were spent, whether or not it completed.
            counts["nfe_forward"] += spent[0]
            counts["nfe_backward"] += spent[1]
            if run.failed:
                break
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            for group in opt.param_groups:
                group["lr"] = lr_at(lr, it, lr_decay_every, lr_decay_gamma)
            opt.step()
            nfe = counts["nfe_forward"] + counts["nfe_backward"]
            run.record(iteration=it, loss=loss_value, nfe=nfe,
                       nfe_forward=counts["nfe_forward"], nfe_backward=counts["nfe_backward"])
            if it % eval_every == 0 or it == iterations:
                evaluate(it)
                if (early_stop_patience is not None
                        and counts["stale_checks"] >= early_stop_patience):
                    counts["early_stopped_at"] = it
            run.commit(it, loss=f"{loss_value:.3e}", nfe=nfe)
            if counts["early_stopped_at"]:
                break
    done, evaluations = run.done, run.logs["evaluations"]
    if run.failed and (not evaluations["iteration"] or evaluations["iteration"][-1] != done):
        evaluate(done)  # the last good state is a candidate too
    run.finish()
    stopped_at = counts["early_stopped_at"] or None
    if stopped_at and run.status == Status.PARTIAL:
        run.status = Status.COMPLETED
        run.message = (f"{label}: early stop after iteration {stopped_at} "
                       f"({early_stop_patience} validation checks without improvement)")
    budget_spent = (run.status == Status.SOLVER_FAILED and max_train_nfe is not None
                    and "max_train_nfe" in run.message)
    if run.best.state is None:
        evaluate(done)
    run.load_best(dev)
    model.eval()

    errors, predictions, rollout_status, test_nfe = {}, {}, {}, 0
    for region in ("train", "val", "test"):
        sl = data.split.region(region, closed_regions)
        try:
            pred, stats = rollout(model, data, region, max_nfe=eval_max_nfe,
                                  closed=closed_regions)
            nfe = stats.nfe
            err = float(region_error(pred, data.y[sl], error_metric))
            errors[region] = err if math.isfinite(err) else math.inf
            rollout_status[region] = Status.OK if math.isfinite(err) else Status.NON_FINITE
            predictions[region] = pred.detach().to("cpu", torch.float64)
        except SolverError as exc:
            nfe, errors[region], rollout_status[region] = exc.stats.nfe, math.inf, exc.status
            predictions[region] = torch.full((sl.stop - sl.start, data.y.shape[1]), math.nan,
                                             dtype=torch.float64)
        counts["eval_nfe"] += nfe
        if region == "test":
            test_nfe = nfe
    return TrajectoryTrainResult(
        status=run.status, message=run.message, solver_status=run.solver_status,
        iterations_completed=done, history=run.history, evaluations=evaluations,
        best_iteration=run.best.step, best_val_rel_err=run.best.score,
        best_state=run.best.state, train_rel_err=errors["train"], val_rel_err=errors["val"],
        test_rel_err=errors["test"], test_nfe=test_nfe,
        train_nfe=counts["nfe_forward"] + counts["nfe_backward"],
        eval_nfe=counts["eval_nfe"], n_time_parameters=model.n_time_parameters,
        predictions=predictions, rollout_status=rollout_status, wall_time=run.clock(),
        early_stopped_at=stopped_at, budget_spent=budget_spent)
