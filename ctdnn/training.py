"""Minibatch training of the surrogate networks with history, checkpoints and resume."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .solvers import SolverError

__all__ = ["train", "TrainResult", "relative_error", "resolve_device", "seed_everything",
           "make_optimizer", "as_splits", "ridge_warm_start", "TrainingError"]

OPTIMIZERS = ("adam", "rmsprop", "sgd")
CHECKPOINT_FORMAT = 1


class TrainingError(ValueError):
    """Invalid training input (names the argument and how to fix it)."""


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) random number generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device="auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; anything else as torch reads it."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"device={str(device)!r} requested but CUDA is not available; "
                            "use device='auto' or 'cpu'")
    return device


def relative_error(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``||pred_i - c_i|| / ||c_i||``; shapes ``(n, n_out)``."""
    return (torch.linalg.vector_norm(pred - target, dim=-1)
            / torch.linalg.vector_norm(target, dim=-1)).mean()


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    """``"adam"``, ``"rmsprop"`` or ``"sgd"`` with learning rate ``lr``."""
    if not isinstance(name, str) or name.lower() not in OPTIMIZERS:
        raise TrainingError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
    if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
        raise TrainingError(f"lr must be a positive number, got {lr!r}")
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
            ``wall_time`` (cumulative seconds).
        status: ``"completed"``, ``"diverged"`` (non-finite loss; the model holds the last
            finite epoch's state), ``"solver_failed"`` (an ODE solve failed, see
            :class:`~ctdnn.SolverError`; same restore), or ``"partial"`` (``max_epochs``).
        best_epoch, best_val_rel_err, best_state: best-on-validation checkpoint (the last
            epoch's when there is no validation data).
        epochs_completed: finished epochs.
        message: human-readable note on the status.
    """

    history: dict
    status: str
    best_epoch: int
    best_val_rel_err: float
    best_state: dict
    epochs_completed: int
    message: str = ""

    @property
    def wall_time(self) -> float:
        return self.history["wall_time"][-1] if self.history["wall_time"] else 0.0


def _new_history():
    return {k: [] for k in ("epoch", "loss", "train_rel_err", "val_rel_err", "nfe", "wall_time")}


def _nfe(model) -> int:
    stats = getattr(model, "total_stats", None)
    return stats.nfe if stats is not None else 0


@torch.no_grad()
def _evaluate(model, x, y, batch_size=4096):
    total = x.new_zeros((), dtype=torch.float64)
    for i in range(0, x.shape[0], batch_size):
        pred = model(x[i:i + batch_size])
        total += relative_error(pred, y[i:i + batch_size]).double() * pred.shape[0]
    return total / x.shape[0]


def _atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cpu_state(state: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


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
            epochs and on interruption); with ``resume=True`` an existing checkpoint is
            continued, giving a result bit-identical to an uninterrupted run.
        name: label for messages and the progress bar.
        max_epochs: stop after this many epochs *in this call* (for staged runs); the
            checkpoint still targets ``epochs``.

    Returns:
        :class:`TrainResult`.

    Raises:
        TrainingError: invalid arguments or data (shapes, non-finite values).
    """
    for arg, val in (("epochs", epochs), ("batch_size", batch_size),
                     ("checkpoint_every", checkpoint_every)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise TrainingError(f"{arg} must be a positive integer, got {val!r}")
    for arg, val in (("alpha_theta", alpha_theta), ("alpha_W", alpha_W)):
        if not (isinstance(val, (int, float)) and val >= 0 and math.isfinite(val)):
            raise TrainingError(f"{arg} must be a non-negative number, got {val!r}")
    label = name or type(model).__name__
    dev = resolve_device(device)
    dtype = next(model.parameters()).dtype
    xt, yt, xv, yv = as_splits(data, model.n_in, model.n_out)
    xt, yt = xt.to(dev, dtype), yt.to(dev, dtype)
    if xv is not None:
        xv, yv = xv.to(dev, dtype), yv.to(dev, dtype)
    model.to(dev)
    opt = make_optimizer(optimizer, model.parameters(), lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    history = _new_history()
    best = {"epoch": 0, "val": math.inf, "state": None}
    start_epoch = 0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None

    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{ckpt_path} is not a ctdnn training checkpoint")
        if ck["config"] != _config(model, epochs, batch_size, lr, optimizer, seed, alpha_theta,
                                   alpha_W, warm_start, xt.shape[0]):
            raise TrainingError(f"checkpoint {ckpt_path} was written with other settings "
                                f"({ck['config']}); delete it or pass resume=False")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        gen.set_state(ck["generator"])
        history, start_epoch = ck["history"], ck["epoch"]
        best = {"epoch": ck["best_epoch"], "val": ck["best_val"], "state": ck["best_state"]}
    elif warm_start:
        ridge_warm_start(model, xt, yt, warm_start_alpha)

    def save(epoch):
        if ckpt_path is None:
            return
        _atomic_save({"format": CHECKPOINT_FORMAT,
                      "config": _config(model, epochs, batch_size, lr, optimizer, seed,
                                        alpha_theta, alpha_W, warm_start, xt.shape[0]),
                      "model": _cpu_state(last_good[0]), "optimizer": last_good[1],
                      "generator": last_good[2], "history": history, "epoch": epoch,
                      "best_epoch": best["epoch"], "best_val": best["val"],
                      "best_state": best["state"]}, ckpt_path)

    n = xt.shape[0]
    wall0 = history["wall_time"][-1] if history["wall_time"] else 0.0
    nfe0 = history["nfe"][-1] if history["nfe"] else 0
    t_start = time.perf_counter()
    status, message = "completed", ""
    # State after the last completed epoch: what a divergence or an interruption restores
    # and what a checkpoint holds (the generator state included, for bit-identical resume).
    last_good = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()), gen.get_state())
    stop_epoch = epochs if max_epochs is None else min(epochs, start_epoch + max_epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, initial=start_epoch, desc=label, leave=False)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch + 1, stop_epoch + 1):
            model.train()
            nfe_before = _nfe(model)
            perm = torch.randperm(n, generator=gen).to(dev)
            loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
            for i in range(0, n, batch_size):
                idx = perm[i:i + batch_size]
                xb, yb = xt[idx], yt[idx]
                pred = model(xb)
                loss = 0.5 * (pred - yb).square().sum() / xb.shape[0]
                loss = loss + model.penalty(alpha_theta, alpha_W)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach().double() * xb.shape[0]
            epoch_nfe = _nfe(model) - nfe_before
            mean_loss = float(loss_sum) / n  # one host sync per epoch
            if not math.isfinite(mean_loss):
                model.load_state_dict(last_good[0])
                opt.load_state_dict(last_good[1])
                gen.set_state(last_good[2])
                status = "diverged"
                message = (f"{label}: non-finite training loss in epoch {epoch}; stopped and "
                           f"restored the state after epoch {epoch - 1}")
                epoch -= 1
                break
            model.eval()
            train_err = float(_evaluate(model, xt, yt))
            val_err = float(_evaluate(model, xv, yv)) if xv is not None else math.nan
            nfe0 += epoch_nfe
            history["epoch"].append(epoch)
            history["loss"].append(mean_loss)
            history["train_rel_err"].append(train_err)
            history["val_rel_err"].append(val_err)
            history["nfe"].append(nfe0)
            history["wall_time"].append(wall0 + time.perf_counter() - t_start)
            score = val_err if xv is not None else train_err
            if score < best["val"] or best["state"] is None:
                best = {"epoch": epoch, "val": score, "state": _cpu_state(model.state_dict())}
            last_good = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()),
                         gen.get_state())
            if epoch % checkpoint_every == 0 or epoch == stop_epoch:
                save(epoch)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean_loss:.3e}", val=f"{val_err:.3e}")
    except SolverError as exc:
        model.load_state_dict(last_good[0])
        opt.load_state_dict(last_good[1])
        gen.set_state(last_good[2])
        status = "solver_failed"
        epoch = history["epoch"][-1] if history["epoch"] else start_epoch
        message = (f"{label}: the ODE solve failed in epoch {epoch + 1} ({exc.status}); "
                   f"stopped and restored the state after epoch {epoch}")
    except KeyboardInterrupt:
        # Keep the last completed epoch; the partial one is discarded.
        model.load_state_dict(last_good[0])
        opt.load_state_dict(last_good[1])
        status = "interrupted"
        message = f"{label}: interrupted after epoch {len(history['epoch'])}"
        epoch = history["epoch"][-1] if history["epoch"] else start_epoch
        save(epoch)
        raise
    finally:
        if bar is not None:
            bar.close()
    if status == "completed" and epoch < epochs:
        status, message = "partial", f"{label}: stopped after epoch {epoch} of {epochs} (max_epochs)"
    if best["state"] is not None:
        model.load_state_dict({k: v.to(dev) for k, v in best["state"].items()})
    return TrainResult(history=history, status=status, best_epoch=best["epoch"],
                       best_val_rel_err=best["val"], best_state=best["state"],
                       epochs_completed=epoch, message=message)


def _config(model, epochs, batch_size, lr, optimizer, seed, alpha_theta, alpha_W, warm_start,
            n_train):
    return {"model": type(model).__name__, "n_parameters": sum(p.numel() for p in model.parameters()),
            "epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
            "seed": seed, "alpha_theta": alpha_theta, "alpha_W": alpha_W,
            "warm_start": warm_start, "n_train": n_train}
