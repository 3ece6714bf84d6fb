"""Train many discretize-then-optimize networks at once as one batched computation.

The paper's protocol is many small trainings (data sets x bases x degrees x T x seeds). For
networks this small, Python overhead, not arithmetic, decides the cost; stacking ``K``
configurations that share a data set and an architecture into batched matmuls makes one
optimisation step cost little more than a single configuration's.

Members may differ in seed (initialisation and minibatch order), basis, degree (the
coefficients are zero-padded to the largest number of basis functions; padded entries get
zero gradients and stay zero under Adam/RMSprop/SGD) and final time ``T``. Each member has
its own optimiser state (the optimisers are elementwise, so one optimiser over the stacked
tensors equals ``K`` separate ones), its own history and its own best-on-validation state;
a member whose loss becomes non-finite is frozen at its last good epoch while the others go
on. The bookkeeping (last good state, best states, progress, verified checkpoints and
resume) comes from :mod:`ctdnn.engine`, shared with :func:`ctdnn.train`.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path

import torch
from torch import nn

from .architectures import TIKHONOV, HamiltonianNet, SteppedNet
from .engine import (BestState, Checkpoint, Clock, Progress, Snapshot, cpu_state,
                     fingerprint_value, model_fingerprint, tensor_digest)
from .parallel import metered
from .status import Status
from .training import (TrainingError, TrainResult, check_minibatch_settings, check_seed,
                       make_optimizer, new_history, prepare_splits, resolve_device,
                       ridge_warm_start)

__all__ = ["StackedNet", "train_ensemble"]


class StackedNet(nn.Module):
    """``K`` ResNets or HamiltonianNets of equal sizes as one module.

    Args:
        models: list of :class:`~ctdnn.ResNet` (or all :class:`~ctdnn.HamiltonianNet`) with
            equal ``n_in``, ``n_out``, ``width`` and ``n_steps``.

    Shapes: ``x: (K, batch, n_in)`` -> ``(K, batch, n_out)``.
    """

    def __init__(self, models):
        super().__init__()
        models = list(models)
        if not models:
            raise TrainingError("models is empty: give at least one network")
        first = models[0]
        if not isinstance(first, SteppedNet):
            raise TrainingError("ensembles take ResNet or HamiltonianNet models, got "
                                f"{type(first).__name__}")
        for i, m in enumerate(models):
            if type(m) is not type(first):
                raise TrainingError(f"models[{i}] is a {type(m).__name__} but models[0] is a "
                                    f"{type(first).__name__}; an ensemble has one architecture")
            for attr in ("n_in", "n_out", "width", "n_steps"):
                if getattr(m, attr) != getattr(first, attr):
                    raise TrainingError(f"models[{i}].{attr} = {getattr(m, attr)} differs from "
                                        f"models[0].{attr} = {getattr(first, attr)}")
        self.kind = "hamiltonian" if isinstance(first, HamiltonianNet) else "resnet"
        self.K = len(models)
        self.n_in, self.n_out, self.width, self.n_steps = (first.n_in, first.n_out, first.width,
                                                           first.n_steps)
        self.n_functions = [m.basis.n_functions for m in models]
        nf = max(self.n_functions)
        ref = first.opening.weight

        def pad(c):
            out = c.new_zeros((nf, *c.shape[1:]))
            out[: c.shape[0]] = c
            return out

        with torch.no_grad():
            self.opening_weight = nn.Parameter(torch.stack([m.opening.weight for m in models]).clone())
            self.opening_bias = nn.Parameter(torch.stack([m.opening.bias for m in models]).clone())
            self.theta = nn.Parameter(torch.stack([pad(m.layer.theta.coefficients) for m in models]))
            self.closing_weight = nn.Parameter(torch.stack([m.closing.weight for m in models]).clone())
            self.closing_bias = nn.Parameter(torch.stack([m.closing.bias for m in models]).clone())
            bm = torch.zeros(self.K, self.n_steps, nf, dtype=ref.dtype, device=ref.device)
            gram = torch.zeros(self.K, nf, nf, dtype=ref.dtype, device=ref.device)
            for k, m in enumerate(models):
                bm[k, :, : m.basis.n_functions] = m.basis_matrix
                gram[k, : m.basis.n_functions, : m.basis.n_functions] = m.basis.gram_matrix()
        self.register_buffer("basis_matrix", bm)
        self.register_buffer("gram", gram)
        self.register_buffer("h", torch.tensor([m.h for m in models], dtype=ref.dtype,
                                               device=ref.device))

    def step_weights(self):
        """``K: (K, n_steps, width, width)`` and ``b: (K, n_steps, width)``."""
        W = torch.einsum("ksf,kfij->ksij", self.basis_matrix, self.theta)
        return W[..., : self.width], W[..., self.width]

    def features(self, x):
        u = torch.tanh(torch.baddbmm(self.opening_bias.unsqueeze(1), x, self.opening_weight.mT))
        Kw, b = self.step_weights()
        h = self.h.view(-1, 1, 1)
        # unbind once along time: per-step indexing would add full-size backward nodes
        Ks, Kt, bs = Kw.unbind(1), Kw.mT.unbind(1), b.unsqueeze(2).unbind(1)
        if self.kind == "resnet":
            for k in range(self.n_steps):
                u = u + h * torch.tanh(torch.baddbmm(bs[k], u, Kt[k]))
        else:
            z = torch.zeros_like(u)
            for k in range(self.n_steps):
                z = z - h * torch.tanh(torch.baddbmm(bs[k], u, Ks[k]))
                u = u + h * torch.tanh(torch.baddbmm(bs[k], z, Kt[k]))
        return u

    def forward(self, x):
        """``x: (K, batch, n_in)`` -> ``(K, batch, n_out)``."""
        return torch.baddbmm(self.closing_bias.unsqueeze(1), self.features(x), self.closing_weight.mT)

    def penalty(self, alpha_theta=0.0, alpha_W=0.0, tikhonov="integral"):
        """Per-member Tikhonov penalties, ``(K,)`` (as :meth:`SurrogateNet.penalty`, with
        the same ``tikhonov`` choices: ``"integral"`` or ``"coefficients"``)."""
        if tikhonov not in TIKHONOV:
            raise ValueError(f"tikhonov must be one of {TIKHONOV}, got {tikhonov!r}")
        out = self.h.new_zeros(self.K)
        if alpha_theta and tikhonov == "integral":
            C = self.theta.flatten(2)  # (K, nf, w*(w+1))
            out = out + 0.5 * alpha_theta * torch.einsum("kfi,kfg,kgi->k", C, self.gram, C)
        elif alpha_theta:
            # padded coefficients are zero, so they add nothing
            out = out + 0.5 * alpha_theta * (self.opening_weight.square().sum((1, 2))
                                             + self.opening_bias.square().sum(1)
                                             + self.theta.square().sum((1, 2, 3)))
        if alpha_W:
            out = out + 0.5 * alpha_W * (self.closing_weight.square().sum((1, 2))
                                         + self.closing_bias.square().sum(1))
        return out

    def member_state(self, k: int) -> dict:
        """The ``state_dict`` of member ``k`` as its own model would have it."""
        nf = self.n_functions[k]
        return {"opening.weight": self.opening_weight[k].detach().clone(),
                "opening.bias": self.opening_bias[k].detach().clone(),
                "layer.theta.coefficients": self.theta[k, :nf].detach().clone(),
                "closing.weight": self.closing_weight[k].detach().clone(),
                "closing.bias": self.closing_bias[k].detach().clone()}


@torch.no_grad()
def _evaluate(net, x, y, chunk=4096):
    """Per-member relative error, ``(K,)`` float64."""
    total = torch.zeros(net.K, dtype=torch.float64, device=x.device)
    for i in range(0, x.shape[0], chunk):
        xb, yb = x[i:i + chunk], y[i:i + chunk]
        pred = net(xb.unsqueeze(0).expand(net.K, -1, -1))
        err = (torch.linalg.vector_norm(pred - yb, dim=-1) / torch.linalg.vector_norm(yb, dim=-1))
        total += err.double().sum(1)
    return total / x.shape[0]


def train_ensemble(models, data, *, epochs: int, batch_size: int = 32, lr: float = 1e-3,
                   optimizer: str = "adam", device="auto", seeds=0, alpha_theta: float = 0.0,
                   alpha_W: float = 0.0, tikhonov: str = "integral", warm_start: bool = False,
                   warm_start_alpha: float = 1e-6, progress: bool = True,
                   checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 1,
                   resume: bool = False, name: str | None = None,
                   max_epochs: int | None = None) -> list[TrainResult]:
    """Train ``K`` networks together; the same results as ``K`` calls of :func:`ctdnn.train`.

    Args:
        models: ResNets (or HamiltonianNets) sharing ``n_in, n_out, width, n_steps``; they may
            differ in basis, degree and ``T``. Each is left holding its best-on-validation
            state, on ``device``.
        data: as for :func:`ctdnn.train` (shared by all members).
        seeds: one seed per member (list) or an int used for every member; seed ``k`` drives
            member ``k``'s minibatch order exactly as ``train(..., seed=seeds[k])`` does.
        checkpoint, checkpoint_every, resume, max_epochs: as for :func:`ctdnn.train`: one
            verified checkpoint of the whole ensemble (every member's state, optimizer
            state, minibatch generator, history, best state and status), written every
            ``checkpoint_every`` epochs, at the end of a call and on interruption, and
            continued bit-identically with ``resume=True``; refused unless written for the
            same member configurations, data and settings.
        epochs, batch_size, lr, optimizer, device: as for :func:`ctdnn.train`.
        alpha_theta, alpha_W, warm_start, warm_start_alpha: as for :func:`ctdnn.train`.
        tikhonov: what the term on the flow weights measures, ``"integral"`` or
            ``"coefficients"`` (see :meth:`ctdnn.SurrogateNet.penalty`).
        progress, name: as for :func:`ctdnn.train`.

    Returns:
        One :class:`TrainResult` per member (history ``nfe`` is 0: stepped networks). A
        member whose loss or best-on-validation error becomes non-finite gets status
        ``"diverged"`` and is frozen at its last good epoch; members still training when
        ``max_epochs`` stops the call get ``"partial"``.

    Raises:
        TrainingError: invalid arguments or data (as for :func:`ctdnn.train`, including
            all-zero target rows), or a checkpoint that is corrupt or from another run.
    """
    models = list(models)
    if tikhonov not in TIKHONOV:
        raise TrainingError(f"tikhonov must be one of {TIKHONOV}, got {tikhonov!r}")
    check_minibatch_settings(epochs=epochs, batch_size=batch_size,
                             checkpoint_every=checkpoint_every, max_epochs=max_epochs,
                             alpha_theta=alpha_theta, alpha_W=alpha_W)
    if isinstance(seeds, numbers.Integral):
        seeds = [seeds] * len(models)
    seeds = [check_seed(s, f"seeds[{k}]") for k, s in enumerate(seeds)]
    if len(seeds) != len(models):
        raise TrainingError(f"seeds has {len(seeds)} entries for {len(models)} models")
    if not models:
        raise TrainingError("models is empty: give at least one network")
    label = name or f"ensemble of {len(models)}"
    dev = resolve_device(device)
    xt, yt, xv, yv = prepare_splits(data, models[0], dev)
    ckpt = None
    if checkpoint is not None:
        fingerprint = {
            "models": {str(k): model_fingerprint(m) for k, m in enumerate(models)},
            "data": {"train": tensor_digest(xt, yt), "val": tensor_digest(xv, yv)},
            "training": {"epochs": epochs, "batch_size": batch_size,
                         "lr": fingerprint_value(lr), "optimizer": optimizer, "seeds": seeds,
                         "alpha_theta": fingerprint_value(alpha_theta),
                         "alpha_W": fingerprint_value(alpha_W), "warm_start": bool(warm_start),
                         # named only off its default, so older checkpoints stay valid
                         **({"tikhonov": tikhonov} if tikhonov != "integral" else {}),
                         "warm_start_alpha": fingerprint_value(warm_start_alpha) if warm_start else None},
        }
        ckpt = Checkpoint(Path(checkpoint), "ensemble", fingerprint, checkpoint_every)
    saved = ckpt.load() if ckpt is not None and resume else None
    for m in models:
        m.to(dev)
        if warm_start and saved is None:
            ridge_warm_start(m, xt, yt, warm_start_alpha)
    net = StackedNet(models).to(dev)
    K = net.K
    opt = make_optimizer(optimizer, net.parameters(), lr)
    gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    histories = [new_history() for _ in range(K)]
    best = [BestState() for _ in range(K)]
    active = [True] * K
    status = [Status.COMPLETED] * K
    messages = [""] * K
    done = [0] * K
    frozen = {}  # member -> {parameter name: its slice at the last good epoch}
    start = 0
    if saved is not None:
        with ckpt.reading():
            net.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            for g, state in zip(gens, saved["generators"], strict=True):
                g.set_state(state)
            histories, start = saved["histories"], int(saved["epoch"])
            best = [BestState(*b) for b in saved["best"]]
            active, done, messages = saved["active"], saved["done"], saved["messages"]
            status = [Status(v) for v in saved["status"]]
            frozen = {int(k): {p: v.to(dev) for p, v in d.items()}
                      for k, d in saved["frozen"].items()}
            if not len(histories) == len(best) == len(active) == len(status) == K:
                raise ValueError(f"the checkpoint holds another number of members than {K}")
    n = xt.shape[0]
    stop = epochs if max_epochs is None else min(epochs, start + max_epochs)
    # The stacked state after the last epoch: an interruption restores it, and a member
    # that fails is frozen at its slice of it while the others go on.
    last_good = Snapshot(net, opt, gens, {str(k): h for k, h in enumerate(histories)})
    completed = start

    def save():
        if ckpt is None:
            return
        ckpt.save({"model": cpu_state(last_good.model_state),
                   "optimizer": last_good.optimizer_state, "generators": last_good.generator_state,
                   "histories": histories, "epoch": completed,
                   "best": [(b.step, b.score, b.state) for b in best], "active": active,
                   "status": [str(v) for v in status], "messages": messages, "done": done,
                   "frozen": {str(k): cpu_state(d) for k, d in frozen.items()}})

    walls = [h["wall_time"][-1] for h in histories if h["wall_time"]]
    clock = Clock(max(walls, default=0.0))
    bar = Progress(progress, epochs, start, label)
    try:
        for epoch in metered(range(start + 1, stop + 1)):
            if not any(active):
                break
            perm = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)
            mask = torch.tensor(active, device=dev)
            loss_sum = torch.zeros(K, dtype=torch.float64, device=dev)
            for i in range(0, n, batch_size):
                idx = perm[:, i:i + batch_size]          # (K, b)
                xb, yb = xt[idx], yt[idx]                # (K, b, n_in), (K, b, n_out)
                pred = net(xb)
                losses = 0.5 * (pred - yb).square().sum((1, 2)) / idx.shape[1]
                losses = losses + net.penalty(alpha_theta, alpha_W, tikhonov)
                opt.zero_grad(set_to_none=True)
                torch.where(mask, losses, 0.0).sum().backward()
                opt.step()
                if frozen:
                    _restore(net, frozen)
                loss_sum += losses.detach().double() * idx.shape[1]
            mean_loss = (loss_sum / n).tolist()  # one host sync per epoch
            train_err = _evaluate(net, xt, yt).tolist()
            val_err = _evaluate(net, xv, yv).tolist() if xv is not None else [math.nan] * K
            elapsed = clock()
            scores = val_err if xv is not None else train_err
            # A non-finite error would leave the best-on-validation choice stuck on an
            # earlier epoch without notice, so it stops the member like a non-finite loss.
            newly_bad = [k for k in range(K) if active[k] and not (
                math.isfinite(mean_loss[k]) and math.isfinite(scores[k]))]
            for k in range(K):
                if not active[k] or k in newly_bad:
                    continue
                for key, value in (("epoch", epoch), ("loss", mean_loss[k]),
                                   ("train_rel_err", train_err[k]), ("val_rel_err", val_err[k]),
                                   ("nfe", 0), ("nfe_forward", 0), ("nfe_backward", 0),
                                   ("wall_time", elapsed)):
                    histories[k][key].append(value)
                done[k] = epoch
                best[k].offer(epoch, scores[k], lambda k=k: net.member_state(k))
            for k in newly_bad:
                active[k] = False
                status[k] = Status.DIVERGED
                what = ("training loss" if not math.isfinite(mean_loss[k]) else
                        "validation relative error" if xv is not None else
                        "training relative error")
                messages[k] = (f"{label}[{k}]: non-finite {what} in epoch {epoch}; "
                               f"frozen at the state after epoch {epoch - 1}")
                frozen[k] = {pname: last_good.model_state[pname][k].clone()
                             for pname, _ in net.named_parameters()}
            if newly_bad:
                _restore(net, frozen)
            last_good.take()
            completed = epoch
            if epoch % checkpoint_every == 0 or epoch == stop or not any(active):
                save()
            bar.update()
    except KeyboardInterrupt:
        # Keep the last completed epoch; the partial one is discarded.
        last_good.restore()
        save()
        raise
    finally:
        bar.close()
    results = []
    for k, m in enumerate(models):
        if status[k] == Status.COMPLETED and done[k] < epochs:
            status[k] = Status.PARTIAL
            messages[k] = (f"{label}[{k}]: stopped after epoch {done[k]} of {epochs} "
                           "(max_epochs)")
        state = best[k].state if best[k].state is not None else net.member_state(k)
        m.load_state_dict({**m.state_dict(), **{key: v.to(dev) for key, v in state.items()}})
        results.append(TrainResult(history=histories[k], status=status[k],
                                   best_epoch=best[k].step, best_val_rel_err=best[k].score,
                                   best_state={kk: v.cpu() for kk, v in m.state_dict().items()},
                                   epochs_completed=done[k], message=messages[k]))
    return results


@torch.no_grad()
def _restore(net, frozen):
    """Put frozen (diverged) members back to their last good parameters."""
    params = dict(net.named_parameters())
    for k, slices in frozen.items():
        for pname, value in slices.items():
            params[pname][k] = value
