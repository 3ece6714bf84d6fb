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
on.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from .architectures import HamiltonianNet, ResNet, _SteppedNet
from .training import (TrainingError, TrainResult, _new_history, as_splits, make_optimizer,
                       relative_error, resolve_device, ridge_warm_start)

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
        if not isinstance(first, _SteppedNet):
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

    def penalty(self, alpha_theta=0.0, alpha_W=0.0):
        """Per-member Tikhonov penalties, ``(K,)`` (as :meth:`SurrogateNet.penalty`)."""
        out = self.h.new_zeros(self.K)
        if alpha_theta:
            C = self.theta.flatten(2)  # (K, nf, w*(w+1))
            out = out + 0.5 * alpha_theta * torch.einsum("kfi,kfg,kgi->k", C, self.gram, C)
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
                   alpha_W: float = 0.0, warm_start: bool = False,
                   warm_start_alpha: float = 1e-6, progress: bool = True,
                   name: str | None = None) -> list[TrainResult]:
    """Train ``K`` networks together; the same results as ``K`` calls of :func:`ctdnn.train`.

    Args:
        models: ResNets (or HamiltonianNets) sharing ``n_in, n_out, width, n_steps``; they may
            differ in basis, degree and ``T``. Each is left holding its best-on-validation
            state, on ``device``.
        data: as for :func:`ctdnn.train` (shared by all members).
        seeds: one seed per member (list) or an int used for every member; seed ``k`` drives
            member ``k``'s minibatch order exactly as ``train(..., seed=seeds[k])`` does.
        epochs, batch_size, lr, optimizer, device, alpha_theta, alpha_W, warm_start,
        warm_start_alpha, progress, name: as for :func:`ctdnn.train`.

    Returns:
        One :class:`TrainResult` per member (history ``nfe`` is 0: stepped networks).
    """
    models = list(models)
    for arg, val in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise TrainingError(f"{arg} must be a positive integer, got {val!r}")
    if isinstance(seeds, int):
        seeds = [seeds] * len(models)
    seeds = list(seeds)
    if len(seeds) != len(models):
        raise TrainingError(f"seeds has {len(seeds)} entries for {len(models)} models")
    if not models:
        raise TrainingError("models is empty: give at least one network")
    label = name or f"ensemble of {len(models)}"
    dev = resolve_device(device)
    dtype = next(models[0].parameters()).dtype
    xt, yt, xv, yv = as_splits(data, models[0].n_in, models[0].n_out)
    xt, yt = xt.to(dev, dtype), yt.to(dev, dtype)
    if xv is not None:
        xv, yv = xv.to(dev, dtype), yv.to(dev, dtype)
    for m in models:
        m.to(dev)
        if warm_start:
            ridge_warm_start(m, xt, yt, warm_start_alpha)
    net = StackedNet(models).to(dev)
    K = net.K
    opt = make_optimizer(optimizer, net.parameters(), lr)
    gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
    histories = [_new_history() for _ in range(K)]
    best = [{"epoch": 0, "val": math.inf, "state": None} for _ in range(K)]
    active = torch.ones(K, dtype=torch.bool)
    status = ["completed"] * K
    messages = [""] * K
    done = [0] * K
    n = xt.shape[0]
    last_good = copy.deepcopy(net.state_dict())
    frozen = {}  # member -> {parameter name: its slice at the last good epoch}
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=epochs, desc=label, leave=False)
    try:
        for epoch in range(1, epochs + 1):
            perm = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(dev)
            mask = active.to(dev)
            loss_sum = torch.zeros(K, dtype=torch.float64, device=dev)
            for i in range(0, n, batch_size):
                idx = perm[:, i:i + batch_size]          # (K, b)
                xb, yb = xt[idx], yt[idx]                # (K, b, n_in), (K, b, n_out)
                pred = net(xb)
                losses = 0.5 * (pred - yb).square().sum((1, 2)) / idx.shape[1]
                losses = losses + net.penalty(alpha_theta, alpha_W)
                opt.zero_grad(set_to_none=True)
                torch.where(mask, losses, 0.0).sum().backward()
                opt.step()
                if frozen:
                    _restore(net, frozen)
                loss_sum += losses.detach().double() * idx.shape[1]
            mean_loss = (loss_sum / n).tolist()  # one host sync per epoch
            train_err = _evaluate(net, xt, yt).tolist()
            val_err = _evaluate(net, xv, yv).tolist() if xv is not None else [math.nan] * K
            elapsed = time.perf_counter() - t0
            newly_bad = [k for k in range(K) if active[k] and not math.isfinite(mean_loss[k])]
            for k in range(K):
                if not active[k] or k in newly_bad:
                    continue
                h = histories[k]
                h["epoch"].append(epoch)
                h["loss"].append(mean_loss[k])
                h["train_rel_err"].append(train_err[k])
                h["val_rel_err"].append(val_err[k])
                h["nfe"].append(0)
                h["wall_time"].append(elapsed)
                done[k] = epoch
                score = val_err[k] if xv is not None else train_err[k]
                if score < best[k]["val"] or best[k]["state"] is None:
                    best[k] = {"epoch": epoch, "val": score, "state": net.member_state(k)}
            for k in newly_bad:
                active[k] = False
                status[k] = "diverged"
                messages[k] = (f"{label}[{k}]: non-finite training loss in epoch {epoch}; "
                               f"frozen at the state after epoch {epoch - 1}")
                frozen[k] = {pname: last_good[pname][k].clone()
                             for pname, _ in net.named_parameters()}
            if newly_bad:
                _restore(net, frozen)
            last_good = copy.deepcopy(net.state_dict())
            if bar is not None:
                bar.update(1)
            if not bool(active.any()):
                break
    finally:
        if bar is not None:
            bar.close()
    results = []
    for k, m in enumerate(models):
        state = best[k]["state"] if best[k]["state"] is not None else net.member_state(k)
        m.load_state_dict({**m.state_dict(), **{key: v.to(dev) for key, v in state.items()}})
        results.append(TrainResult(history=histories[k], status=status[k],
                                   best_epoch=best[k]["epoch"], best_val_rel_err=best[k]["val"],
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
