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
           "HISTORY_KEYS", "CHECKPOINT_FORMAT", "check_minibatch_settings", "prepare_splits"]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
#: Per-epoch entries of :attr:`TrainResult.history`.
HISTORY_KEYS = ("epoch", "loss", "train_rel_err", "val_rel_err", "nfe", "nfe_forward",
                "nfe_backward", "wall_time")

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
    an arbitrary scale and would hide the problem. :func:`train` and
    :func:`~ctdnn.train_ensemble` instead refuse targets with an all-zero row at entry,
    naming the rows: an infinite validation error in every epoch would freeze the
    best-on-validation choice at epoch 1 and silently discard the rest of the training.
    """
    return (torch.linalg.vector_norm(pred - target, dim=-1)
            / torch.linalg.vector_norm(target, dim=-1)).mean()


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
    """Outcome of :func:`train`.

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
def _evaluate(model, x, y, batch_size=4096):
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
          max_epochs: int | None = None) -> TrainResult:
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
                loss = loss + model.penalty(alpha_theta, alpha_W)
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
