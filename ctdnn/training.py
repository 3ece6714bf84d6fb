"""Minibatch training of the surrogate networks with history, checkpoints and resume.

The loop here is the minibatch step (loss, penalty, backward, update) and the per-epoch
evaluation; the state tracking around it (last good and best-on-validation state, restore
after a divergence, a failed solve or an interruption, progress, verified checkpoints and
resume) is the shared engine of :mod:`ctdnn.engine`, whose checkpoint helpers are
re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from . import checks
from .engine import (CHECKPOINT_FORMAT, Checkpoint, Run, TrainingError, check_fingerprint,
                     cpu_state, fingerprint_differences, fingerprint_value, load_checkpoint,
                     model_fingerprint, new_log, save_checkpoint, tensor_digest)
from .solvers import Dynamics, solver_failures
from .status import Status

__all__ = ["train", "TrainResult", "relative_error", "resolve_device", "seed_everything",
           "make_optimizer", "as_splits", "ridge_warm_start", "TrainingError",
           "save_checkpoint", "load_checkpoint", "model_fingerprint", "tensor_digest",
           "check_fingerprint", "fingerprint_differences", "check_seed", "new_history",
           "HISTORY_KEYS", "CHECKPOINT_FORMAT", "check_minibatch_settings", "prepare_splits",
           "train_iterations", "ITERATION_HISTORY_KEYS", "frobenius_relative_error",
           "METRICS", "LOSSES", "step_lr", "metric_function"]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
#: Per-epoch entries of :attr:`TrainResult.history`.
HISTORY_KEYS = ("epoch", "loss", "train_rel_err", "val_rel_err", "nfe", "nfe_forward",
                "nfe_backward", "wall_time")
#: Per-check entries of the history of :func:`train_iterations`.
ITERATION_HISTORY_KEYS = ("iteration",) + HISTORY_KEYS[1:]
#: Minibatch losses of :func:`train_iterations`: ``0.5 / n_b sum_i ||f(x_i) - c_i||^2``
#: (``"squared"``, as :func:`ctdnn.train`) or the mean absolute error over all entries of the
#: batch (``"l1"``, the authors' Python neural ODE).
LOSSES = ("squared", "l1")
#: The relative-error metrics. ``"mean_ratio"`` is the mean of per-sample ratios (the MATLAB
#: metric of the DTO tables); ``"frobenius"`` is one Frobenius ratio over the split (the
#: authors' Python neural-ODE and stationary-ODE tables).
METRICS = ("mean_ratio", "frobenius")

# Former private names, kept for modules that still import them.
_plain = fingerprint_value
_cpu_state = cpu_state


def check_seed(seed, name: str = "seed") -> int:
    """``seed`` as an ``int`` in ``[0, 2**64)``, the range torch's generators accept.

    Raises:
        TrainingError: not an integer, or out of range.
    """
    return checks.check_seed(seed, name, error=TrainingError)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random number generators.

    Raises:
        TrainingError: ``seed`` is not an integer in ``[0, 2**64)``.
    """
    seed = check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; anything else as torch reads it.

    Raises:
        TrainingError: CUDA requested on a machine without it, or an unreadable device.
    """
    return checks.resolve_device(device, error=TrainingError)


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``||pred_i - c_i|| / ||c_i||``; shapes ``(n, n_out)``.

    Zero targets: a row with ``c_i = 0`` has no relative error. It is computed as is, giving
    ``inf`` (``nan`` if ``pred_i`` is exactly zero too), and so is the mean. No epsilon is
    added to the denominator, because any epsilon would make the reported number depend on
    an arbitrary scale and would hide the problem. :func:`ctdnn.train` and
    :func:`~ctdnn.train_ensemble` instead refuse targets with an all-zero row at entry,
    naming the rows: an infinite validation error in every epoch would freeze the
    best-on-validation choice at epoch 1 and silently discard the rest of the training.
    """
    return (torch.linalg.vector_norm(pred - target, dim=-1)
            / torch.linalg.vector_norm(target, dim=-1)).mean()


def frobenius_relative_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """One ratio over the whole split: ``||P - C||_F / ||C||_F``; shapes ``(n, n_out)``.

    The metric of the authors' Python neural-ODE and stationary-ODE tables
    (``relative_error`` in ``python/experiment_runtime.py``), without their ``1e-12`` added
    to the denominator. Unlike :func:`ctdnn.relative_error` it weights samples by the size of
    their targets, so a few large targets dominate it.
    """
    return torch.linalg.vector_norm(pred - target) / torch.linalg.vector_norm(target)


def metric_function(metric: str):
    """The function of a relative-error metric named in :data:`METRICS`.

    Raises:
        TrainingError: an unknown name.
    """
    if metric not in METRICS:
        raise TrainingError(f"unknown metric {metric!r}; choose one of {METRICS}")
    return relative_error if metric == "mean_ratio" else frobenius_relative_error


def step_lr(iteration: int, lr: float, every: int | None, gamma: float) -> float:
    """The learning rate of iteration ``iteration`` (1-based) under a step schedule.

    ``lr * gamma ** ((iteration - 1) // every)``: what ``torch.optim.lr_scheduler.StepLR``
    with ``step_size=every`` gives when it is stepped once after every iteration, as the
    authors' Python code does. ``every=None``: constant ``lr``.
    """
    if not every:
        return lr
    return lr * gamma ** ((iteration - 1) // every)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """``"adam"``, ``"rmsprop"`` or ``"sgd"`` with learning rate ``lr``."""
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    lr = checks.check_number("lr", lr, positive=True, error=TrainingError)
    cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
    return cls[name.lower()](params, lr=lr)


def _check_pair(name, x, y, n_in, n_out):
    for label, t, n in ((f"x_{name}", x, n_in), (f"y_{name}", y, n_out)):
        if not isinstance(t, torch.Tensor):
            raise TrainingError(f"{label} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2 or t.shape[1] != n:
            raise TrainingError(f"{label} must have shape (n_samples, {n}) to match the model, "
                                f"got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            bad = torch.nonzero(~torch.isfinite(t).all(dim=1)).flatten()[:5].tolist()
            raise TrainingError(f"{label} contains NaN or inf (rows {bad}...); clean or drop "
                                "those samples before training")
        if label.startswith("y_"):
            zero = (t == 0).all(dim=1)
            if zero.any():
                bad = torch.nonzero(zero).flatten()
                raise TrainingError(
                    f"{label} has {bad.numel()} all-zero target row(s) (rows "
                    f"{bad[:5].tolist()}{'...' if bad.numel() > 5 else ''}): their relative "
                    "error ||pred - c|| / ||c|| is undefined (inf), so the best-on-validation "
                    "choice could never update; drop those samples, or shift the targets so "
                    "that no row is exactly zero")
    if x.shape[0] != y.shape[0]:
        raise TrainingError(f"x_{name} has {x.shape[0]} samples but y_{name} has {y.shape[0]}")
    if x.shape[0] == 0:
        raise TrainingError(f"x_{name} is empty")


def as_splits(data, n_in: int, n_out: int):
    """``(x_train, y_train, x_val, y_val)`` from a dataset object, tuple or dict.

    Accepted: an object or dict with ``x_train, y_train`` (and optionally ``x_val, y_val``),
    or a tuple ``(x_train, y_train)`` / ``(x_train, y_train, x_val, y_val)``. Validation
    tensors may be absent (``None``).
    """
    if isinstance(data, dict):
        get = data.get
    elif isinstance(data, (tuple, list)):
        if len(data) not in (2, 4):
            raise TrainingError("data as a tuple must be (x_train, y_train) or "
                                f"(x_train, y_train, x_val, y_val); got {len(data)} items")
        items = list(data) + [None] * (4 - len(data))
        get = dict(zip(("x_train", "y_train", "x_val", "y_val"), items)).get
    elif hasattr(data, "x_train"):
        def get(key):
            return getattr(data, key, None)
    else:
        raise TrainingError("data must be a dataset (with x_train, y_train, x_val, y_val), "
                            f"a dict or a tuple of tensors; got {type(data).__name__}")
    xt, yt, xv, yv = (get(k) for k in ("x_train", "y_train", "x_val", "y_val"))
    if xt is None or yt is None:
        raise TrainingError("data needs x_train and y_train")
    _check_pair("train", xt, yt, n_in, n_out)
    if (xv is None) != (yv is None):
        raise TrainingError("give both x_val and y_val, or neither")
    if xv is not None:
        _check_pair("val", xv, yv, n_in, n_out)
    return xt, yt, xv, yv


@torch.no_grad()
def ridge_warm_start(model, x: torch.Tensor, y: torch.Tensor, alpha: float = 1e-6) -> None:
    """Set the closing layer to the ridge-regression fit of ``y`` on ``[u(T); 1]``.

    Solves ``(F^T F + alpha I) W^T = F^T y`` with ``F = [u(T), 1]`` in float64.
    """
    feats = model.features(x).double()
    F = torch.cat([feats, torch.ones_like(feats[:, :1])], dim=1)
    A = F.T @ F + alpha * torch.eye(F.shape[1], dtype=F.dtype, device=F.device)
    Wt = torch.linalg.solve(A, F.T @ y.double())
    model.closing.weight.copy_(Wt[:-1].T.to(model.closing.weight.dtype))
    model.closing.bias.copy_(Wt[-1].to(model.closing.bias.dtype))


@dataclasses.dataclass
class TrainResult:
    """Outcome of :func:`ctdnn.train`.

    Attributes:
        history: per-epoch lists ``epoch``, ``loss`` (mean training objective),
            ``train_rel_err``, ``val_rel_err`` (NaN without validation data), ``nfe``
            (cumulative training NFE, forward + backward; 0 for stepped networks),
            ``nfe_forward`` and ``nfe_backward`` (its two parts: evaluations of the
            forward solves, and of the adjoint solves in ``backward()``; backpropagation
            through the solver adds none), ``wall_time`` (cumulative seconds). Evaluation
            solves (the per-epoch errors) are not counted.
        status: a :class:`~ctdnn.status.Status` (compares equal to its string):
            ``"completed"``, ``"diverged"`` (non-finite loss or relative error; training
            stopped at the last finite epoch's state), ``"solver_failed"`` (an ODE solve,
            forward or adjoint, failed, see :class:`~ctdnn.SolverError`; same restore), or
            ``"partial"`` (``max_epochs``).
        best_epoch, best_val_rel_err, best_state: best-on-validation checkpoint (the last
            epoch's when there is no validation data).
        epochs_completed: finished epochs.
        message: human-readable note on the status.
        solver_status: the :class:`~ctdnn.SolverError` status of a failed solve, else None.
    """

    history: dict
    status: Status
    best_epoch: int
    best_val_rel_err: float
    best_state: dict
    epochs_completed: int
    message: str = ""
    solver_status: Status | None = None
    unit: str = "epoch"
    stopped_early: bool = False

    @property
    def wall_time(self) -> float:
        return self.history["wall_time"][-1] if self.history["wall_time"] else 0.0


def check_minibatch_settings(*, epochs, batch_size, checkpoint_every=1, max_epochs=None,
                             alpha_theta=0.0, alpha_W=0.0) -> None:
    """Refuse bad settings of a minibatch loop (:func:`~ctdnn.train`, :func:`~ctdnn.train_ensemble`).

    Raises:
        TrainingError: ``epochs``, ``batch_size``, ``checkpoint_every`` or ``max_epochs``
            (unless ``None``) not an integer ``>= 1``; ``alpha_theta`` or ``alpha_W`` not a
            non-negative finite number.
    """
    for arg, val in (("epochs", epochs), ("batch_size", batch_size),
                     ("checkpoint_every", checkpoint_every), ("max_epochs", max_epochs)):
        if val is not None or arg != "max_epochs":
            checks.check_int(arg, val, minimum=1, error=TrainingError)
    for arg, val in (("alpha_theta", alpha_theta), ("alpha_W", alpha_W)):
        checks.check_number(arg, val, nonnegative=True, error=TrainingError)


def prepare_splits(data, model, device):
    """:func:`as_splits` for ``model``'s sizes, moved to ``device`` in the model's dtype.

    Returns:
        ``(x_train, y_train, x_val, y_val)``; the validation pair may be ``None``.
    """
    dtype = next(model.parameters()).dtype
    xt, yt, xv, yv = as_splits(data, model.n_in, model.n_out)
    xt, yt = xt.to(device, dtype), yt.to(device, dtype)
    if xv is not None:
        xv, yv = xv.to(device, dtype), yv.to(device, dtype)
    return xt, yt, xv, yv


def new_history() -> dict:
    """An empty ``TrainResult.history``: one list per entry of ``HISTORY_KEYS``."""
    return new_log(HISTORY_KEYS)


def _nfe(model) -> tuple[int, int]:
    """Cumulative ``(forward, backward)`` NFE of an ODE model; ``(0, 0)`` for the others."""
    stats = getattr(model, "total_stats", None)
    return (stats.nfe_forward, stats.nfe_backward) if stats is not None else (0, 0)


@torch.no_grad()
def _evaluate(model, x, y, batch_size=4096, metric="mean_ratio"):
    if metric == "frobenius":
        num = x.new_zeros((), dtype=torch.float64)
        den = x.new_zeros((), dtype=torch.float64)
        for i in range(0, x.shape[0], batch_size):
            pred = model(x[i:i + batch_size])
            num += (pred - y[i:i + batch_size]).double().square().sum()
            den += y[i:i + batch_size].double().square().sum()
        return torch.sqrt(num / den)
    total = x.new_zeros((), dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        pred = model(x[i:i + batch_size])
        total += relative_error(pred, y[i:i + batch_size]).double() * pred.shape[0]
    return total / x.shape[0]


def train(model, data, *, epochs: int, batch_size: int = 32, lr: float = 1e-3,
          optimizer: str = "adam", device="auto", seed: int = 0, alpha_theta: float = 0.0,
          alpha_W: float = 0.0, warm_start: bool = False, warm_start_alpha: float = 1e-6,
          progress: bool = True, checkpoint: str | os.PathLike | None = None,
          checkpoint_every: int = 1, resume: bool = False, name: str | None = None,
          max_epochs: int | None = None, tikhonov: str = "integral") -> TrainResult:
    """Train a surrogate network by minibatch gradient descent.

    The objective per minibatch is ``0.5 / n_b * sum_i ||f(x_i) - c_i||^2`` plus the
    Tikhonov penalty ``model.penalty(alpha_theta, alpha_W)``.

    Args:
        model: a :class:`~ctdnn.architectures.SurrogateNet` (ResNet, HamiltonianNet,
            NeuralODE). Moved to ``device``; left holding the best-on-validation state.
        data: a :class:`ctdnn.data.Dataset`, a dict or a tuple (see :func:`as_splits`);
            ``x: (n, n_in)``, ``y: (n, n_out)``.
        epochs: passes over the training set.
        batch_size: minibatch size (the last batch of an epoch may be smaller).
        lr: learning rate.
        optimizer: ``"adam"``, ``"rmsprop"`` or ``"sgd"``.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ...
        seed: seeds the minibatch order (a private generator; model initialisation is the
            caller's, see :func:`seed_everything`).
        alpha_theta, alpha_W: Tikhonov weights on the time-varying weights (``L2(0, T)``
            norm) and on the closing layer.
        warm_start: initialise the closing layer by ridge regression (weight
            ``warm_start_alpha``) on the training features.
        progress: show a progress bar.
        checkpoint: file for checkpoints (written atomically every ``checkpoint_every``
            epochs, on interruption and when the run fails, verified by a sha256 digest,
            loaded without running code); with ``resume=True`` an existing checkpoint is
            continued, giving a result bit-identical to an uninterrupted run (a run that
            stopped on a divergence or a failed solve is reported again, not retried). It
            is refused, naming the differing fields, unless it was written for the same
            model configuration, data (a digest of the tensors) and training settings.
        name: label for messages and the progress bar.
        max_epochs: stop after this many epochs *in this call* (for staged runs); the
            checkpoint still targets ``epochs``.
        tikhonov: how ``alpha_theta`` measures the time-varying weights: ``"integral"``
            (``int_0^T ||theta(t)||^2 dt`` through the Gram matrix) or ``"coefficients"``
            (the squared coefficients, the authors' MATLAB); see ``model.penalty``.

    Returns:
        :class:`TrainResult`. A failed ODE solve, forward or adjoint (the latter happens in
        ``backward()``), ends the run with status ``"solver_failed"``, the history so far,
        and the model at its state after the last completed epoch before the best state is
        loaded; so does a non-finite loss or relative error, with status ``"diverged"``.

    Raises:
        TrainingError: invalid arguments or data (shapes, non-finite values, all-zero
            target rows), or a checkpoint that is corrupt or from another run.
    """
    check_minibatch_settings(epochs=epochs, batch_size=batch_size,
                             checkpoint_every=checkpoint_every, max_epochs=max_epochs,
                             alpha_theta=alpha_theta, alpha_W=alpha_W)
    _check_tikhonov(tikhonov)
    seed = check_seed(seed)
    label = name or type(model).__name__
    dev = resolve_device(device)
    xt, yt, xv, yv = prepare_splits(data, model, dev)
    model.to(dev)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    ckpt = None
    if checkpoint is not None:
        fingerprint = {
            "model": model_fingerprint(model),
            "data": {"train": tensor_digest(xt, yt), "val": tensor_digest(xv, yv),
                     "n_train": int(xt.shape[0]), "n_val": int(xv.shape[0]) if xv is not None else 0},
            "training": {"epochs": epochs, "batch_size": batch_size, "lr": fingerprint_value(lr),
                         "optimizer": optimizer, "seed": seed,
                         "alpha_theta": fingerprint_value(alpha_theta),
                         "alpha_W": fingerprint_value(alpha_W), "warm_start": bool(warm_start),
                         "tikhonov": tikhonov,
                         "warm_start_alpha": fingerprint_value(warm_start_alpha) if warm_start else None},
        }
        ckpt = Checkpoint(Path(checkpoint), "train", fingerprint, checkpoint_every)
    run = Run(model, opt, gen, label=label, unit="epoch", total=epochs,
              logs={"history": new_history()}, checkpoint=ckpt, progress=progress)
    if not (resume and run.resume()) and warm_start:
        ridge_warm_start(model, xt, yt, warm_start_alpha)
    # The failure of an adjoint solve is raised from backward(); this turns it into a
    # SolverError like a failed forward solve.
    dynamics = getattr(model, "dynamics", None)
    dynamics = dynamics if isinstance(dynamics, Dynamics) else None
    history = run.history
    n = xt.shape[0]
    nfe_fwd = history["nfe_forward"][-1] if history["nfe_forward"] else 0
    nfe_bwd = history["nfe_backward"][-1] if history["nfe_backward"] else 0
    with run.running(max_epochs) as epochs_to_run:
        for epoch in epochs_to_run:
            model.train()
            fwd0, bwd0 = _nfe(model)
            perm = torch.randperm(n, generator=gen).to(dev)
            loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                xb, yb = xt[idx], yt[idx]
                pred = model(xb)
                loss = 0.5 * (pred - yb).square().sum() / xb.shape[0]
                loss = loss + _penalty(model, alpha_theta, alpha_W, tikhonov)
                opt.zero_grad(set_to_none=True)
                with solver_failures(dynamics):
                    loss.backward()
                opt.step()
                loss_sum += loss.detach().double() * xb.shape[0]
            # Training NFE only: the evaluation solves below are not counted.
            fwd1, bwd1 = _nfe(model)
            mean_loss = float(loss_sum) / n  # one host sync per epoch
            if not math.isfinite(mean_loss):
                run.fail(Status.DIVERGED, f"non-finite training loss in epoch {epoch}")
                break
            model.eval()
            train_err = float(_evaluate(model, xt, yt))
            val_err = float(_evaluate(model, xv, yv)) if xv is not None else math.nan
            score = val_err if xv is not None else train_err
            if not math.isfinite(score):
                # The best-on-validation choice cannot use a non-finite error; going on
                # would silently keep an earlier epoch's state.
                which = "validation" if xv is not None else "training"
                run.fail(Status.DIVERGED,
                         f"non-finite {which} relative error ({score}) in epoch {epoch}")
                break
            nfe_fwd, nfe_bwd = nfe_fwd + fwd1 - fwd0, nfe_bwd + bwd1 - bwd0
            run.record(epoch=epoch, loss=mean_loss, train_rel_err=train_err,
                       val_rel_err=val_err, nfe=nfe_fwd + nfe_bwd, nfe_forward=nfe_fwd,
                       nfe_backward=nfe_bwd)
            run.offer_best(epoch, score)
            run.commit(epoch, loss=f"{mean_loss:.3e}", val=f"{val_err:.3e}")
    run.finish()
    run.load_best(dev)
    return TrainResult(history=run.history, status=run.status, best_epoch=run.best.step,
                       best_val_rel_err=run.best.score, best_state=run.best.state,
                       epochs_completed=run.done, message=run.message,
                       solver_status=run.solver_status)


TIKHONOV = ("integral", "coefficients")


def _penalty(model, alpha_theta, alpha_W, tikhonov):
    # The default measure keeps the two-argument call, which every model implements.
    if tikhonov == "integral":
        return model.penalty(alpha_theta, alpha_W)
    return model.penalty(alpha_theta, alpha_W, tikhonov=tikhonov)


def _check_tikhonov(tikhonov):
    if tikhonov not in TIKHONOV:
        raise TrainingError(f"tikhonov must be one of {TIKHONOV}, got {tikhonov!r}")


def train_iterations(model, data, *, iterations: int, batch_size: int = 20, lr: float = 1e-2,
                     optimizer: str = "adam", device="auto", seed: int = 0,
                     loss: str = "squared", clip_grad_norm: float | None = None,
                     lr_step_every: int | None = None, lr_step_gamma: float = 0.5,
                     eval_every: int = 20, patience: int | None = None,
                     metric: str = "mean_ratio", eval_train: bool = False,
                     alpha_theta: float = 0.0, alpha_W: float = 0.0,
                     tikhonov: str = "integral", progress: bool = True,
                     checkpoint: str | os.PathLike | None = None, resume: bool = False,
                     name: str | None = None, max_iterations: int | None = None) -> TrainResult:
    """Train by iterations of minibatches drawn with replacement, with periodic validation.

    The protocol of the authors' Python neural-ODE code, every choice an argument: each
    iteration draws ``batch_size`` training indices uniformly *with replacement* (from the
    run's private generator), takes one optimizer step on ``loss`` (+ the Tikhonov penalty),
    optionally after clipping the gradient's global 2-norm to ``clip_grad_norm``, with the
    learning rate of :func:`step_lr`. Every ``eval_every`` iterations the validation error
    (``metric``) is computed; the best state on it is kept, and with ``patience`` the run
    stops after that many checks in a row without improvement (``TrainResult.stopped_early``;
    the status stays ``"completed"``: stopping is part of the protocol).

    Args:
        model: a :class:`~ctdnn.architectures.SurrogateNet`; left holding the best state.
        data: as for :func:`ctdnn.train`; a validation split is required.
        iterations: optimizer steps requested.
        batch_size: samples per iteration (drawn with replacement; capped at the training
            set size as the authors' code does).
        lr: learning rate (before the schedule).
        optimizer: as for :func:`ctdnn.train`; so are ``device``, ``seed``, ``alpha_theta``,
            ``alpha_W``, ``tikhonov``, ``progress``, ``checkpoint``, ``resume`` and ``name``
            (checkpoints are written at every check).
        loss: one of :data:`LOSSES`.
        clip_grad_norm: clip the gradient's global 2-norm to this value; ``None``: no clipping.
        lr_step_every, lr_step_gamma: step schedule (``None``: constant learning rate).
        eval_every: iterations between validation checks.
        patience: stop after this many checks without a new best; ``None``: never.
        metric: one of :data:`METRICS`, for the checks (and the recorded errors).
        eval_train: also compute the training error at each check (a full-set solve per
            check for ODE models; the authors' code does not); ``nan`` otherwise.
        max_iterations: stop after this many iterations *in this call* (staged runs).

    Returns:
        :class:`TrainResult` with ``unit="iteration"``: one history entry per check
        (``ITERATION_HISTORY_KEYS``; ``loss`` is the mean minibatch loss since the last
        check, NFE are cumulative training counts), ``best_epoch`` the best check's
        iteration and ``epochs_completed`` the iterations run. Failures are reported as by
        :func:`ctdnn.train`.

    Raises:
        TrainingError: invalid arguments or data, or a checkpoint from another run.
    """
    for arg, val in (("iterations", iterations), ("batch_size", batch_size),
                     ("eval_every", eval_every), ("max_iterations", max_iterations),
                     ("patience", patience), ("lr_step_every", lr_step_every)):
        if val is not None or arg in ("iterations", "batch_size", "eval_every"):
            checks.check_int(arg, val, minimum=1, error=TrainingError)
    for arg, val in (("alpha_theta", alpha_theta), ("alpha_W", alpha_W)):
        checks.check_number(arg, val, nonnegative=True, error=TrainingError)
    if clip_grad_norm is not None:
        checks.check_number("clip_grad_norm", clip_grad_norm, positive=True, error=TrainingError)
    checks.check_number("lr_step_gamma", lr_step_gamma, positive=True, error=TrainingError)
    if loss not in LOSSES:
        raise TrainingError(f"loss must be one of {LOSSES}, got {loss!r}")
    metric_function(metric)   # refuses an unknown name before any work
    _check_tikhonov(tikhonov)
    seed = check_seed(seed)
    label = name or type(model).__name__
    dev = resolve_device(device)
    xt, yt, xv, yv = prepare_splits(data, model, dev)
    if xv is None:
        raise TrainingError("train_iterations needs a validation split (x_val, y_val): it "
                            "selects the best state and stops early on it")
    model.to(dev)
    lr = checks.check_number("lr", lr, positive=True, error=TrainingError)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    settings = {"iterations": iterations, "batch_size": batch_size, "lr": fingerprint_value(lr),
                "optimizer": optimizer, "seed": seed, "loss": loss,
                "clip_grad_norm": fingerprint_value(clip_grad_norm),
                "lr_step_every": lr_step_every, "lr_step_gamma": fingerprint_value(lr_step_gamma),
                "eval_every": eval_every, "patience": patience, "metric": metric,
                "eval_train": bool(eval_train), "alpha_theta": fingerprint_value(alpha_theta),
                "alpha_W": fingerprint_value(alpha_W), "tikhonov": tikhonov}
    ckpt = None
    if checkpoint is not None:
        fingerprint = {
            "model": model_fingerprint(model),
            "data": {"train": tensor_digest(xt, yt), "val": tensor_digest(xv, yv),
                     "n_train": int(xt.shape[0]), "n_val": int(xv.shape[0])},
            "training": settings,
        }
        ckpt = Checkpoint(Path(checkpoint), "train_iterations", fingerprint, eval_every)
    counters = {"nfe_forward": 0, "nfe_backward": 0, "stale_checks": 0, "loss_sum": 0.0,
                "loss_count": 0}
    run = Run(model, opt, gen, label=label, unit="iteration", total=iterations,
              logs={"history": new_log(ITERATION_HISTORY_KEYS)}, counters=counters,
              checkpoint=ckpt, progress=progress)
    if resume:
        run.resume()
    c = run.counters
    dynamics = getattr(model, "dynamics", None)
    dynamics = dynamics if isinstance(dynamics, Dynamics) else None
    n = xt.shape[0]
    nb = min(batch_size, n)
    with run.running(max_iterations) as steps:
        for it in steps:
            model.train()
            fwd0, bwd0 = _nfe(model)
            idx = torch.randint(n, (nb,), generator=gen).to(dev)
            xb, yb = xt[idx], yt[idx]
            pred = model(xb)
            if loss == "l1":
                value = (pred - yb).abs().mean()
            else:
                value = 0.5 * (pred - yb).square().sum() / nb
            value = value + _penalty(model, alpha_theta, alpha_W, tikhonov)
            opt.zero_grad(set_to_none=True)
            with solver_failures(dynamics):
                value.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            rate = step_lr(it, lr, lr_step_every, lr_step_gamma)
            for group in opt.param_groups:
                group["lr"] = rate
            opt.step()
            fwd1, bwd1 = _nfe(model)
            c["nfe_forward"] += fwd1 - fwd0
            c["nfe_backward"] += bwd1 - bwd0
            c["loss_sum"] += float(value.detach())
            c["loss_count"] += 1
            if not math.isfinite(c["loss_sum"]):
                run.fail(Status.DIVERGED, f"non-finite training loss in iteration {it}")
                break
            if it % eval_every and it != iterations:
                run.commit(it)
                continue
            model.eval()
            val_err = float(_evaluate(model, xv, yv, metric=metric))
            train_err = float(_evaluate(model, xt, yt, metric=metric)) if eval_train else math.nan
            if not math.isfinite(val_err):
                run.fail(Status.DIVERGED,
                         f"non-finite validation relative error ({val_err}) in iteration {it}")
                break
            run.record(iteration=it, loss=c["loss_sum"] / c["loss_count"],
                       train_rel_err=train_err, val_rel_err=val_err,
                       nfe=c["nfe_forward"] + c["nfe_backward"], nfe_forward=c["nfe_forward"],
                       nfe_backward=c["nfe_backward"])
            c["loss_sum"], c["loss_count"] = 0.0, 0
            if it % eval_every == 0:   # the checks that count, as in the authors' loop
                c["stale_checks"] = 0 if run.offer_best(it, val_err) else c["stale_checks"] + 1
            run.commit(it, val=f"{val_err:.3e}")
            if patience is not None and c["stale_checks"] >= patience:
                run.stop_early(it, f"no better validation error in {patience} checks "
                                   f"(best at iteration {run.best.step})")
                break
    run.finish()
    run.load_best(dev)
    return TrainResult(history=run.history, status=run.status, best_epoch=run.best.step,
                       best_val_rel_err=run.best.score, best_state=run.best.state,
                       epochs_completed=run.done, message=run.message,
                       solver_status=run.solver_status, unit="iteration",
                       stopped_early=run.stopped_early)
