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
           "rollout", "TrajectoryTrainResult", "train_trajectory", "TRAIN_FRAC", "VAL_FRAC"]

SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))
SPIRAL_Y0 = (2.0, 0.0)
TRAIN_FRAC = 0.64
VAL_FRAC = 0.80


def spiral_rhs(y: np.ndarray) -> np.ndarray:
    """Right-hand side ``(y**3) A`` of the spiral; ``y: (..., 2)``."""
    return np.asarray(y) ** 3 @ np.asarray(SPIRAL_A)


# Argument checks of this module raise TrainingError, naming the argument.
_check_int = partial(checks.check_int, error=TrainingError)
_check_number = partial(checks.check_number, error=TrainingError)


def true_trajectory(n_points: int = 1000, T: float = 25.0, *, dtype=torch.float64,
                    rtol: float = 1e-12, atol: float = 1e-12):
    """The spiral sampled at ``t = linspace(0, T, n_points)``.

    Solved by SciPy's ``solve_ivp`` with the 8th-order Dormand-Prince method (``DOP853``) at
    ``rtol = atol = 1e-12`` (dense output at the sample times), in float64; the result is
    accurate to about 1e-11, far below any error a trained model reaches.

    Args:
        n_points: number of sample times (>= 10).
        T: final time.
        dtype: dtype of the returned tensors.
        rtol, atol: tolerances of the reference solve.

    Returns:
        ``(t, y)``: ``t: (n_points,)``, ``y: (n_points, 2)``.
    """
    from scipy.integrate import solve_ivp

    n_points = _check_int("n_points", n_points, minimum=10)
    T = _check_number("T", T, positive=True)
    t = np.linspace(0.0, T, n_points)
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

    def region(self, name: str) -> slice:
        if name not in ("train", "val", "test"):
            raise ValueError(f"region must be 'train', 'val' or 'test', got {name!r}")
        return getattr(self, name)


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
                         dtype=torch.float64) -> TrajectoryData:
    """:func:`true_trajectory` with its :func:`time_split`."""
    t, y = true_trajectory(n_points, T, dtype=dtype)
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
                   generator: torch.Generator) -> torch.Tensor:
    """Start indices ``(batch_size,)`` of windows of ``batch_time`` consecutive samples
    lying entirely in the training region (``start + batch_time <= split.val_start``)."""
    n_starts = split.val_start - batch_time + 1
    if n_starts < 1:
        raise TrainingError(f"batch_time={batch_time} does not fit in the training region "
                            f"({split.val_start} samples)")
    return torch.randint(0, n_starts, (batch_size,), generator=generator)


def rollout(model, data: TrajectoryData, region: str = "test", *, max_nfe: int | None = None):
    """Predict a whole region from the true state at its first sample (no gradients).

    Args:
        model: a :class:`~ctdnn.neural_ode.TrajectoryODE`.
        data: the :class:`TrajectoryData` (on the model's device and dtype).
        region: ``"train"``, ``"val"`` or ``"test"``.
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
    sl = data.split.region(region)
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


def _region_error(model, data, region, max_nfe=None):
    """``(relative error, nfe, status)``; a failed or non-finite rollout gives ``inf``."""
    try:
        pred, stats = rollout(model, data, region, max_nfe=max_nfe)
    except SolverError as exc:
        return math.inf, exc.stats.nfe, exc.status
    err = float(relative_error(pred, data.y[data.split.region(region)]))
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

    def summary(self) -> dict:
        """The scalar fields (JSON-friendly)."""
        skip = {"history", "evaluations", "best_state", "predictions"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in skip}


def _fingerprint(model, data, iterations, batch_time, batch_size, lr, optimizer, seed,
                 eval_every, grad_clip, eval_max_nfe):
    """Everything that determines a run: model, data (digest and split), settings."""
    return {"model": model_fingerprint(model),
            "data": {"digest": tensor_digest(data.t, data.y), "n_points": data.split.n_points,
                     "val_start": data.split.val_start, "test_start": data.split.test_start},
            "training": {"iterations": iterations, "batch_time": batch_time,
                         "batch_size": batch_size, "lr": float(lr), "optimizer": optimizer,
                         "seed": seed, "eval_every": eval_every,
                         "grad_clip": None if grad_clip is None else float(grad_clip),
                         "eval_max_nfe": eval_max_nfe}}


def train_trajectory(model, *, data: TrajectoryData | None = None, iterations: int = 2000,
                     batch_time: int = 10, batch_size: int = 20, lr: float = 1e-3,
                     optimizer: str = "rmsprop", seed: int = 0, eval_every: int = 20,
                     progress: bool = True, device="auto", grad_clip: float | None = None,
                     eval_max_nfe: int | None = None,
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
                                       optimizer, seed, eval_every, grad_clip, eval_max_nfe),
                          checkpoint_every)
    y_all, t_all = data.y, data.t
    tau = t_all[:batch_time] - t_all[0]  # equispaced samples: the same for every window
    steps = torch.arange(batch_time)

    run = Run(model, opt, gen, label=label, unit="iteration", total=iterations,
              logs={"history": new_log(("iteration", "loss", "nfe", "nfe_forward",
                                        "nfe_backward", "wall_time")),
                    "evaluations": new_log(("iteration", "train_rel_err", "val_rel_err", "nfe",
                                            "eval_nfe", "wall_time"))},
              counters={"nfe_forward": 0, "nfe_backward": 0, "eval_nfe": 0},
              checkpoint=ckpt, progress=progress)
    if resume:
        run.resume()
    counts = run.counters  # training NFE (forward, backward) and evaluation NFE so far

    def evaluate(iteration):
        model.eval()
        val_err, nfe_v, _ = _region_error(model, data, "val", eval_max_nfe)
        train_err, nfe_t, _ = _region_error(model, data, "train", eval_max_nfe)
        counts["eval_nfe"] += nfe_v + nfe_t
        run.record("evaluations", iteration=iteration, train_rel_err=train_err,
                   val_rel_err=val_err, nfe=counts["nfe_forward"] + counts["nfe_backward"],
                   eval_nfe=counts["eval_nfe"])
        run.offer_best(iteration, val_err)
        model.train()
        return val_err

    with run.running(max_iterations) as iterations_to_run:
        model.train()
        for it in iterations_to_run:
            s = sample_windows(data.split, batch_time, batch_size, gen)
            idx = (s[None, :] + steps[:, None]).to(dev)  # (batch_time, batch_size)
            s = s.to(dev)
            target = y_all[idx]
            before = dataclasses.replace(model.total_stats)
            failure = None
            try:
                pred = model(y_all[s], tau, offsets=t_all[s])
                loss = (pred - target).abs().mean()
                opt.zero_grad(set_to_none=True)
                # a failed adjoint solve is raised from backward()
                with solver_failures(model.dynamics):
                    loss.backward()
            except SolverError as exc:
                failure = exc
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
            opt.step()
            nfe = counts["nfe_forward"] + counts["nfe_backward"]
            run.record(iteration=it, loss=loss_value, nfe=nfe,
                       nfe_forward=counts["nfe_forward"], nfe_backward=counts["nfe_backward"])
            if it % eval_every == 0 or it == iterations:
                evaluate(it)
            run.commit(it, loss=f"{loss_value:.3e}", nfe=nfe)
    done, evaluations = run.done, run.logs["evaluations"]
    if run.failed and (not evaluations["iteration"] or evaluations["iteration"][-1] != done):
        evaluate(done)  # the last good state is a candidate too
    run.finish()
    if run.best.state is None:
        evaluate(done)
    run.load_best(dev)
    model.eval()

    errors, predictions, rollout_status, test_nfe = {}, {}, {}, 0
    for region in ("train", "val", "test"):
        sl = data.split.region(region)
        try:
            pred, stats = rollout(model, data, region, max_nfe=eval_max_nfe)
            nfe = stats.nfe
            err = float(relative_error(pred, data.y[sl]))
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
        predictions=predictions, rollout_status=rollout_status, wall_time=run.clock())
