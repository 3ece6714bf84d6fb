"""Trust-region Gauss-Newton with variable projection (GNvpro) for the stepped networks.

The closing layer ``W`` of a :class:`~ctdnn.ResNet` or :class:`~ctdnn.HamiltonianNet`
enters the objective linearly, so for given flow weights ``theta`` (opening layer and the
coefficients of the time-varying weights) it is eliminated by a ridge solve (variable
projection; Newman, Ruthotto, Hart, van Bloemen Waanders, "Train like a (Var)Pro", SIMODS
2021)::

    W(theta) = argmin_W  0.5/n ||W [Z(theta); 1] - C||_F^2 + 0.5 alpha_W ||W||_F^2
    Phi(theta) = 0.5/n ||W(theta) [Z(theta); 1] - C||_F^2 + 0.5 alpha_W ||W(theta)||_F^2
                 + R(theta)

with ``Z(theta)`` the features ``u(T)`` of the ``n`` training samples and ``R`` the
Tikhonov term on ``theta``. ``Phi = 0.5 ||r(theta)||^2 + R(theta)`` with the residual
``r = [(W Z~ - C)/sqrt(n); sqrt(alpha_W) W]`` (``Z~ = [Z; 1]``), and the optimizer is the
one of the authors' MATLAB (Meganet's ``trnewton`` with ``GMRES`` as inner solver, used by
``runExperiment_v2.m``):

* Gauss-Newton curvature ``J^T J + R''`` of the reduced residual, where ``J`` is the full
  Jacobian of ``r`` including the dependence of ``W`` on ``theta`` (Golub-Pereyra, as in
  ``dnnVarProRegressionObjFctn.m``), applied matrix-free on the whole training set,
  through the network *and* the Cholesky solve of the projection: ``J^T u`` by reverse
  mode (``torch.func.vjp``), ``J v`` as the transpose of that linear map (a ``vjp`` of the
  ``vjp``, recorded with the gradient) or optionally by forward mode (``torch.func.jvp``).
* The reduced gradient ``J^T r + R'(theta)`` by reverse mode through the projection. (By
  the envelope theorem the terms through ``dW/dtheta`` vanish at the ridge solution; the
  autograd gradient includes them, so it is exact also where the solve is inexact.)
* Inner solver: GMRES on ``(J^T J + R'') s = -g`` with a single Krylov cycle of at most
  ``krylov_dim = 20`` vectors and relative tolerance ``1e-2`` (Meganet's ``GMRES('m', 20,
  'tol', 1e-2)``: no restart), then the trust-region step inside that Krylov space by the
  regularised least-squares problem ``min ||H_bar z - beta e1||^2 + lambda^2 ||z||^2`` with
  ``lambda`` chosen so that ``||z|| = Delta``. Optionally CG-Steihaug (``inner="cg"``):
  the Gauss-Newton matrix is symmetric positive semi-definite, so CG minimises the
  quadratic model itself over the same Krylov space (GMRES minimises the residual of the
  Newton system, which is not the model), costs the same one product per iteration, and
  Steihaug's truncation at the boundary gives the trust-region step without a
  sub-problem solve. CG runs to its tolerance once per point and its path is kept, so a
  rejection or an expansion cuts the same path at the new radius without new products
  (as GMRES's Krylov space is reused); the step equals Steihaug's for that radius.
* Trust-region update (Kelley's ``trtest`` as in ``trnewton.m``), with ratio
  ``rho = (actual decrease) / (predicted decrease)``: ``rho < rho0``: reject, radius
  ``min(shrink Delta, shrink ||s||)``; ``rho0 <= rho < rhoL``: accept, radius
  ``shrink Delta``; ``rhoL <= rho <= rhoH``: accept, radius kept; ``rho > rhoH`` with the
  step on the boundary and ``Delta <= C ||g||``: do *not* move, radius ``grow Delta`` and
  try again; otherwise accept, radius kept. The first radius is the norm of the first
  inner solution. Defaults ``rho0 = 1e-4``, ``rhoL = 0.1``, ``rhoH = 0.75``, ``shrink =
  0.5``, ``grow = 1.5``, ``C = 1e4``.

Work units (Meganet's accounting, per pass over the whole training set): a forward pass
(objective at a point, including the projection) counts 1, a backward pass (gradient) 1,
and each Gauss-Newton product ``J^T (J v)`` 2 (one linearised forward pass, one backward
pass). Two differences from ``trnewton.m``, both counted as done here: the MATLAB code
counts a product for GMRES's initial residual ``b - A x0`` even though ``x0 = 0`` (not
computed here), and after an accepted step it evaluates objective and gradient afresh
(3 units with the trial evaluation) where this code reuses the trial's forward pass
(2 units). After a rejected step or a radius expansion the point has not moved, so the
Krylov space is reused (the MATLAB code recomputes it after an expansion, with the same
result). A linearised pass ``J v`` runs through the recorded backward graph (default) or,
with ``jvp="forward"``, re-evaluates the network alongside the tangent; either way it is
one unit, and the difference shows in the wall time only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import brentq

from . import checks
from .engine import cpu_state, fingerprint_value
from .parallel import metered
from .status import Status
from .training import (TrainingError, TrainResult, check_fingerprint, check_seed,
                       load_checkpoint, model_fingerprint, prepare_splits, relative_error,
                       resolve_device, save_checkpoint, tensor_digest)

__all__ = ["train_gnvpro", "gmres", "cg_steihaug_path", "trust_region_update",
           "TrustRegionParams", "ResidualProblem", "VarProProblem", "TrustRegionGaussNewton",
           "ridge_projection", "Point", "KrylovGMRES", "CGPath"]

INNER_SOLVERS = ("gmres", "cg")
THETA_PENALTIES = ("model", "euclidean")

# Trust-region flags, numbered as trnewton.m's trFlag.
REJECTED, EXPANDED, KEPT, ACCEPTED_SHRINK, ACCEPTED_GOOD = -2, -3, 0, 1, 2


# --------------------------------------------------------------------------- trust region
@dataclasses.dataclass(frozen=True)
class TrustRegionParams:
    """Parameters of the trust-region update (defaults: Meganet's ``trnewton``).

    Attributes:
        rho0: below this ratio a step is rejected.
        rhoL, rhoH: ratios below ``rhoL`` shrink the radius; above ``rhoH`` (step on the
            boundary) grow it.
        shrink, grow: radius factors (``wdown``, ``wup``).
        max_radius_factor: the radius grows only while ``Delta <= C ||g||`` (``C``).
        boundary_rtol: a step lies on the boundary when ``|‖s‖ - Delta| / Delta`` is below this.
    """

    rho0: float = 1e-4
    rhoL: float = 0.1
    rhoH: float = 0.75
    shrink: float = 0.5
    grow: float = 1.5
    max_radius_factor: float = 1e4
    boundary_rtol: float = 1e-5

    def __post_init__(self):
        for name in ("rho0", "rhoL", "rhoH", "shrink", "grow", "max_radius_factor",
                     "boundary_rtol"):
            checks.check_number(name, getattr(self, name), error=TrainingError)
        if not 0 <= self.rho0 <= self.rhoL <= self.rhoH:
            raise TrainingError("trust-region ratios must satisfy 0 <= rho0 <= rhoL <= rhoH, got "
                                f"rho0={self.rho0}, rhoL={self.rhoL}, rhoH={self.rhoH}")
        if not 0 < self.shrink < 1:
            raise TrainingError(f"shrink must lie in (0, 1), got {self.shrink}")
        if not self.grow > 1:
            raise TrainingError(f"grow must be > 1, got {self.grow}")
        if not (self.max_radius_factor > 0 and self.boundary_rtol > 0):
            raise TrainingError("max_radius_factor and boundary_rtol must be positive")


def trust_region_update(ratio: float, step_norm: float, radius: float, grad_norm: float,
                        params: TrustRegionParams = TrustRegionParams()):
    """Decide on a trial step and the next radius (Kelley's ``trtest``, as in ``trnewton.m``).

    Args:
        ratio: actual over predicted decrease (NaN or ``-inf`` for a failed evaluation).
        step_norm: ``||s||``.
        radius: the radius the step was computed for.
        grad_norm: ``||g||`` at the current point.
        params: :class:`TrustRegionParams`.

    Returns:
        ``(accept, new_radius, flag)``; ``flag`` is ``-2`` rejected, ``-3`` radius grown
        without moving (a very good step on the boundary is tried again further out),
        ``1`` accepted and shrunk, ``0`` accepted, radius kept, ``2`` accepted (very good,
        inside the region), radius kept.
    """
    p = params
    if not math.isfinite(ratio) or ratio < p.rho0:
        return False, min(p.shrink * radius, p.shrink * step_norm), REJECTED
    if ratio < p.rhoL:
        return True, p.shrink * radius, ACCEPTED_SHRINK
    if ratio <= p.rhoH:
        return True, radius, KEPT
    on_boundary = abs(step_norm - radius) / radius < p.boundary_rtol
    if on_boundary and radius <= p.max_radius_factor * grad_norm:
        return False, p.grow * radius, EXPANDED
    return True, radius, ACCEPTED_GOOD


# --------------------------------------------------------------------------- inner solvers
def _givens(a: float, b: float):
    """``(c, s)`` with ``[c s; -s c] [a; b] = [r; 0]`` (Choi 2006, Table 2.9)."""
    if b == 0.0:
        return (1.0 if a == 0.0 else math.copysign(1.0, a)), 0.0
    if a == 0.0:
        return 0.0, math.copysign(1.0, b)
    if abs(b) > abs(a):
        tau = a / b
        s = math.copysign(1.0, b) / math.sqrt(1.0 + tau * tau)
        return s * tau, s
    tau = b / a
    c = math.copysign(1.0, a) / math.sqrt(1.0 + tau * tau)
    return c, c * tau


@dataclasses.dataclass
class KrylovGMRES:
    """A GMRES run kept for trust-region steps in its Krylov space.

    Attributes:
        V: ``(n, k+1)`` orthonormal Arnoldi basis (``V[:, 0] = b / beta``).
        H: ``(k+1, k)`` upper Hessenberg matrix, ``A V[:, :k] = V H``.
        beta: ``||b||``.
        z: ``(k,)`` GMRES coefficients, ``x = V[:, :k] z``.
        iterations: ``k`` (products with ``A``).
        rel_residual: ``||b - A x|| / ||b||`` estimated by the Givens recursion.
    """

    V: torch.Tensor
    H: np.ndarray
    beta: float
    z: np.ndarray
    iterations: int
    rel_residual: float

    @property
    def x(self) -> torch.Tensor:
        return self.V[:, : self.iterations] @ torch.as_tensor(self.z, dtype=self.V.dtype,
                                                             device=self.V.device)

    @property
    def full_norm(self) -> float:
        """``||x||`` (``V`` is orthonormal, so ``||x|| = ||z||``)."""
        return float(np.linalg.norm(self.z))

    def trust_step(self, radius: float):
        """The step of norm at most ``radius`` in the Krylov space and its predicted decrease.

        Inside the region: the GMRES solution. Otherwise ``z`` minimises
        ``||H z - beta e1||^2 + lambda^2 ||z||^2`` with ``lambda > 0`` such that
        ``||z|| = radius`` (``trnewton.m``). For the Newton system ``A s = -g``
        (``b = -g``), the predicted decrease ``-g^T s - 0.5 s^T A s`` is
        ``beta z_1 - 0.5 z^T H[:k] z``.

        Returns:
            ``(s: (n,), predicted_decrease, ||s||)``.
        """
        k = self.iterations
        z = self.z
        if np.linalg.norm(z) > radius:
            U, sv, Vh = np.linalg.svd(self.H, full_matrices=False)
            rhs = U[0, :] * self.beta  # U^T (beta e1)

            def z_of(lam):
                d = sv**2 + lam**2
                # zero singular values contribute nothing (the minimum-norm limit)
                return Vh.T @ np.divide(sv * rhs, d, out=np.zeros_like(d), where=d > 0)

            def norm_minus_radius(lam):
                return np.linalg.norm(z_of(lam)) - radius

            if norm_minus_radius(0.0) > 0:
                # ||z(lambda)|| <= ||rhs|| / (2 lambda) <= beta / (2 lambda), so the root
                # lies below beta / radius.
                lam = brentq(norm_minus_radius, 0.0, self.beta / radius, xtol=1e-14, rtol=1e-12)
            else:  # the minimum-norm solution is inside (rounding made ||z|| differ)
                lam = 0.0
            z = z_of(lam)
        pred = self.beta * z[0] - 0.5 * z @ (self.H[:k, :] @ z)
        s = self.V[:, :k] @ torch.as_tensor(z, dtype=self.V.dtype, device=self.V.device)
        return s, float(pred), float(np.linalg.norm(z))

    def state(self) -> dict:
        return {"V": self.V.detach().cpu(), "H": torch.from_numpy(self.H.copy()),
                "beta": self.beta, "z": torch.from_numpy(self.z.copy()),
                "iterations": self.iterations, "rel_residual": self.rel_residual}

    @classmethod
    def from_state(cls, st: dict, device) -> "KrylovGMRES":
        return cls(V=st["V"].to(device), H=st["H"].numpy(), beta=st["beta"], z=st["z"].numpy(),
                   iterations=st["iterations"], rel_residual=st["rel_residual"])


def gmres(matvec, b: torch.Tensor, *, max_dim: int = 20, tol: float = 1e-2) -> KrylovGMRES:
    """GMRES from ``x0 = 0`` with one cycle of at most ``max_dim`` Arnoldi vectors.

    As Meganet's ``GMRES`` (Saad 2003): modified Gram-Schmidt Arnoldi, Givens rotations for
    the residual estimate, stop when ``||b - A x_k|| / ||b|| < tol`` or after ``max_dim``
    products; no restart.

    Args:
        matvec: ``v -> A v`` for ``v: (n,)`` (any square ``A``).
        b: ``(n,)`` right-hand side, nonzero.
        max_dim: most Arnoldi vectors (products with ``A``).
        tol: relative residual tolerance.

    Returns:
        :class:`KrylovGMRES`; ``.x`` is the iterate minimising ``||b - A x||`` over the
        Krylov space ``span{b, A b, ..., A^(k-1) b}``.
    """
    n = b.numel()
    m = min(int(max_dim), n)
    beta = float(torch.linalg.vector_norm(b))
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"gmres needs a finite nonzero right-hand side, got ||b|| = {beta}")
    V = torch.zeros(n, m + 1, dtype=b.dtype, device=b.device)
    H = np.zeros((m + 1, m))
    R = np.zeros((m + 1, m))  # H rotated to upper triangular
    cs, sn = np.zeros(m), np.zeros(m)
    g = np.zeros(m + 1)
    g[0] = beta
    V[:, 0] = b / beta
    k, err = 0, 1.0
    for j in range(m):
        w = matvec(V[:, j])
        coeffs = []
        for i in range(j + 1):  # modified Gram-Schmidt, as Meganet's GMRES
            hij = torch.dot(V[:, i], w)
            w = w - hij * V[:, i]
            coeffs.append(hij)
        coeffs.append(torch.linalg.vector_norm(w))
        # one host transfer per Arnoldi step
        H[: j + 2, j] = torch.stack(coeffs).cpu().numpy()
        R[: j + 2, j] = H[: j + 2, j]
        for i in range(j):
            R[i, j], R[i + 1, j] = (cs[i] * R[i, j] + sn[i] * R[i + 1, j],
                                    -sn[i] * R[i, j] + cs[i] * R[i + 1, j])
        cs[j], sn[j] = _givens(R[j, j], R[j + 1, j])
        R[j, j] = cs[j] * R[j, j] + sn[j] * R[j + 1, j]
        R[j + 1, j] = 0.0
        g[j + 1] = -sn[j] * g[j]
        g[j] = cs[j] * g[j]
        k = j + 1
        err = abs(g[j + 1]) / beta
        breakdown = H[j + 1, j] <= 1e-14 * max(1.0, np.abs(H[: j + 1, j]).max())
        if not breakdown:
            V[:, j + 1] = w / H[j + 1, j]
        if err < tol or breakdown:
            break
    z = np.linalg.solve(np.triu(R[:k, :k]), g[:k])
    return KrylovGMRES(V=V[:, : k + 1].clone(), H=H[: k + 1, :k].copy(), beta=beta, z=z,
                       iterations=k, rel_residual=float(err))


@dataclasses.dataclass
class CGPath:
    """The iterates of a CG run from zero, kept for Steihaug steps at any radius.

    Attributes:
        S: ``(k+1, n)`` iterates ``s_0 = 0, ..., s_k``; ``AS``: ``A s_i``.
        P: ``(k+1, n)`` search directions (``P[k]``: the direction past the last iterate,
            zero when CG converged); ``AP``: ``A p_i``.
        alphas: ``(k+1,)`` step lengths along ``P``; ``inf`` for a direction of
            non-positive curvature (followed to the boundary).
        b: ``(n,)`` right-hand side (``-g``).
        iterations: products with ``A``.
        rel_residual: ``||b - A s_k|| / ||b||``.
    """

    S: torch.Tensor
    AS: torch.Tensor
    P: torch.Tensor
    AP: torch.Tensor
    alphas: np.ndarray
    b: torch.Tensor
    iterations: int
    rel_residual: float

    @property
    def x(self) -> torch.Tensor:
        return self.S[-1]

    @property
    def full_norm(self) -> float:
        """Norm of the unconstrained CG solution (``inf`` after non-positive curvature)."""
        if math.isinf(self.alphas[-1]):
            return math.inf
        return float(torch.linalg.vector_norm(self.S[-1]))

    def trust_step(self, radius: float):
        """Steihaug's step for ``radius``: the CG path cut where it leaves the region.

        CG iterates from zero grow monotonically in norm for a positive definite matrix, so
        the first segment ``s_i + t p_i`` (``0 <= t <= alpha_i``) that reaches ``radius``
        is cut there; a direction of non-positive curvature is followed to the boundary.
        The predicted decrease is ``b^T s - 0.5 s^T A s`` (``b = -g``).

        Returns:
            ``(s: (n,), predicted_decrease, ||s||)``.
        """
        k = len(self.alphas) - 1
        for i in range(k + 1):
            s, p, a = self.S[i], self.P[i], float(self.alphas[i])
            if a == 0.0:
                break
            end_norm = math.inf if math.isinf(a) else float(torch.linalg.vector_norm(s + a * p))
            if end_norm >= radius:
                ss, sp, pp = float(s @ s), float(s @ p), float(p @ p)
                tau = (-sp + math.sqrt(max(sp * sp + pp * (radius**2 - ss), 0.0))) / pp
                step, Astep = s + tau * p, self.AS[i] + tau * self.AP[i]
                pred = float(self.b @ step - 0.5 * (step @ Astep))
                return step, pred, float(torch.linalg.vector_norm(step))
        step, Astep = self.S[-1], self.AS[-1]
        pred = float(self.b @ step - 0.5 * (step @ Astep))
        return step, pred, float(torch.linalg.vector_norm(step))

    def state(self) -> dict:
        return {"S": self.S.cpu(), "AS": self.AS.cpu(), "P": self.P.cpu(), "AP": self.AP.cpu(),
                "alphas": torch.from_numpy(self.alphas.copy()), "b": self.b.cpu(),
                "iterations": self.iterations, "rel_residual": self.rel_residual}

    @classmethod
    def from_state(cls, st: dict, device) -> "CGPath":
        return cls(S=st["S"].to(device), AS=st["AS"].to(device), P=st["P"].to(device),
                   AP=st["AP"].to(device), alphas=st["alphas"].numpy(), b=st["b"].to(device),
                   iterations=st["iterations"], rel_residual=st["rel_residual"])


def cg_steihaug_path(matvec, b: torch.Tensor, *, max_iter: int = 20, tol: float = 1e-2) -> CGPath:
    """Conjugate gradients on ``A s = b`` from ``s = 0`` for symmetric ``A``, path recorded.

    Stops at ``||b - A s|| / ||b|| < tol``, after ``max_iter`` products, or at a direction
    of non-positive curvature ``p^T A p <= 0`` (recorded with ``alpha = inf``).

    Args:
        matvec: ``v -> A v`` for ``v: (n,)``.
        b: ``(n,)`` nonzero right-hand side.
        max_iter: most products with ``A``.
        tol: relative residual tolerance.
    """
    beta = float(torch.linalg.vector_norm(b))
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"cg needs a finite nonzero right-hand side, got ||b|| = {beta}")
    s, As = torch.zeros_like(b), torch.zeros_like(b)
    r, p = b.clone(), b.clone()
    rr = float(r @ r)
    S, AS, P, AP, alphas = [], [], [], [], []
    k, err = 0, 1.0
    for _ in range(int(max_iter)):
        Ap = matvec(p)
        k += 1
        curv = float(p @ Ap)
        S.append(s), AS.append(As), P.append(p), AP.append(Ap)
        if curv <= 0.0:
            alphas.append(math.inf)
            break
        alpha = rr / curv
        alphas.append(alpha)
        s, As = s + alpha * p, As + alpha * Ap
        r = r - alpha * Ap
        rr_new = float(r @ r)
        err = math.sqrt(rr_new) / beta
        p = r + (rr_new / rr) * p
        rr = rr_new
        if err < tol:
            break
    if not alphas or not math.isinf(alphas[-1]):
        # The last iterate ends the path: a zero-length segment from it.
        S.append(s), AS.append(As), P.append(torch.zeros_like(b)), AP.append(torch.zeros_like(b))
        alphas.append(0.0)
    return CGPath(S=torch.stack(S), AS=torch.stack(AS), P=torch.stack(P), AP=torch.stack(AP),
                  alphas=np.asarray(alphas, dtype=float), b=b.clone(), iterations=k,
                  rel_residual=float(err))


# --------------------------------------------------------------------------- problems
@dataclasses.dataclass
class Point:
    """An evaluated point: ``theta``, residual, objective and the linearisation for ``J^T``
    (``vjp_fn``) and, once the gradient is known, for ``J`` (``jvp_fn``)."""

    theta: torch.Tensor
    residual: torch.Tensor
    objective: float
    aux: object
    vjp_fn: object
    gradient: torch.Tensor | None = None
    jvp_fn: object = None


JVP_MODES = ("reverse", "forward")


class ResidualProblem:
    """``Phi(theta) = 0.5 ||r(theta)||^2 + P(theta)`` with ``P`` a quadratic form.

    Args:
        residual: ``theta: (p,) -> (r: (m,), aux)``, differentiable by ``torch.func``; it
            may return a non-finite ``r`` (the point is then infeasible).
        penalty: ``theta -> 0.5 theta^T A theta`` (homogeneous quadratic, ``A`` symmetric
            positive semi-definite) or ``None``. Its gradient is ``A theta`` and its
            Hessian product ``A v`` is that gradient at ``v``.
        jvp: how ``J v`` is applied. ``"reverse"`` (default): the backward pass that gives
            the gradient, ``u -> J^T u``, is linear in ``u``; it is recorded once per point
            (``torch.func.vjp`` of the ``vjp``) and its transpose is ``J``, so each ``J v`` is
            one pass through the recorded backward graph. ``"forward"``:
            ``torch.func.jvp``, forward mode, which re-evaluates the network alongside the
            tangent (about three times slower here). Both give the same products.
    """

    def __init__(self, residual, penalty=None, jvp: str = "reverse"):
        if jvp not in JVP_MODES:
            raise ValueError(f"jvp must be one of {JVP_MODES}, got {jvp!r}")
        self.residual = residual
        self.penalty = penalty
        self.jvp = jvp
        self._penalty_grad = torch.func.grad(penalty) if penalty is not None else None

    def evaluate(self, theta: torch.Tensor) -> Point:
        """Residual and objective at ``theta``: one forward pass (graph kept for ``J^T``)."""
        r, vjp_fn, aux = torch.func.vjp(self.residual, theta, has_aux=True)
        obj = 0.5 * torch.dot(r, r)
        if self.penalty is not None:
            obj = obj + self.penalty(theta).to(obj.dtype)
        value = float(obj)
        return Point(theta=theta, residual=r, objective=value if math.isfinite(value) else math.inf,
                     aux=aux, vjp_fn=vjp_fn)

    def gradient(self, point: Point) -> torch.Tensor:
        """``J^T r + A theta`` in float64: one backward pass."""
        if point.gradient is None:
            if self.jvp == "reverse":
                # The backward pass u -> J^T u at u = r, recorded so that its transpose
                # v -> J v is available for the Gauss-Newton products.
                (g,), transpose = torch.func.vjp(point.vjp_fn, point.residual)
                point.jvp_fn = lambda v: transpose((v,))[0]
            else:
                g = point.vjp_fn(point.residual)[0]
            if self._penalty_grad is not None:
                g = g + self._penalty_grad(point.theta)
            point.gradient = g.double()
        return point.gradient

    def gn_product(self, point: Point, v: torch.Tensor) -> torch.Tensor:
        """``(J^T J + A) v`` in float64: one linearised pass (``J v``) and one backward pass.

        Needs :meth:`gradient` at ``point`` first (it records the linearisation).
        """
        v = v.to(point.theta.dtype)
        if self.jvp == "reverse":
            if point.jvp_fn is None:
                raise RuntimeError("gn_product needs gradient(point) first")
            Jv = point.jvp_fn(v)
        else:
            _, Jv, _ = torch.func.jvp(self.residual, (point.theta,), (v,), has_aux=True)
        out = point.vjp_fn(Jv.to(point.residual.dtype))[0]
        if self._penalty_grad is not None:
            out = out + self._penalty_grad(v)
        return out.double()


@contextlib.contextmanager
def _parameters_replaced(model, names, tensors):
    """Run ``model`` with the parameters ``names`` replaced by ``tensors`` (restored after).

    ``torch.func.functional_call`` is not used: the stepped networks register their
    time-varying layer under two names (``layer`` and ``time_varying.0``), and on such tied
    modules torch 2.13 restores a plain tensor in place of the ``Parameter``.
    """
    # An instance attribute shadows the entry in ``_parameters`` (``nn.Module`` looks there
    # only when normal lookup fails), so the registration and its order stay untouched.
    shadowed = []
    try:
        for name, t in zip(names, tensors):
            path, _, attr = name.rpartition(".")
            mod = model.get_submodule(path) if path else model
            object.__setattr__(mod, attr, t)
            shadowed.append((mod, attr))
        yield
    finally:
        for mod, attr in shadowed:
            object.__delattr__(mod, attr)


def ridge_projection(Z: torch.Tensor, C: torch.Tensor, alpha_W: float):
    """The closing layer of the projection, in float64, differentiable in ``Z``.

    Solves ``min_W 0.5/n ||[Z, 1] W^T - C||^2 + 0.5 alpha_W ||W||^2`` by a Cholesky
    factorisation of the ``(width+1)``-square normal matrix.

    Args:
        Z: ``(n, width)`` features; C: ``(n, n_out)`` targets; alpha_W: ridge weight.

    Returns:
        ``(WT: (width+1, n_out), F: (n, width+1), info)``: ``W^T`` (last row: the bias),
        the scaled features ``[Z, 1] / sqrt(n)``, and the Cholesky status (nonzero: the
        normal matrix is not positive definite).
    """
    n = Z.shape[0]
    Zd = Z.to(torch.float64)
    F = torch.cat([Zd, torch.ones_like(Zd[:, :1])], dim=1) / math.sqrt(n)
    A = F.mT @ F + alpha_W * torch.eye(F.shape[1], dtype=F.dtype, device=F.device)
    L, info = torch.linalg.cholesky_ex(A)
    WT = torch.cholesky_solve(F.mT @ (C.to(torch.float64) / math.sqrt(n)), L)
    return WT, F, info


class VarProProblem(ResidualProblem):
    """The reduced problem of a stepped network: ``theta`` = every parameter but the closing layer.

    Args:
        model: a :class:`~ctdnn.ResNet` or :class:`~ctdnn.HamiltonianNet`.
        x: ``(n, n_in)`` training inputs; y: ``(n, n_out)`` targets.
        alpha_theta: Tikhonov weight on ``theta``.
        alpha_W: ridge weight on the closing layer (its bias included).
        theta_penalty: ``"model"``: ``model.penalty(alpha_theta)``, i.e.
            ``alpha_theta/2 int_0^T ||theta(t)||^2 dt`` over the time-varying weights
            through each basis' Gram matrix, the term :func:`ctdnn.train` adds (the opening
            layer is not penalised); ``"euclidean"``: ``alpha_theta/2 ||theta||^2`` over
            every flow parameter, opening layer included (``dnnVarProRegressionObjFctn.m``).
        jvp: ``"reverse"`` or ``"forward"``, see :class:`ResidualProblem`.
    """

    def __init__(self, model, x, y, *, alpha_theta: float, alpha_W: float,
                 theta_penalty: str = "model", jvp: str = "reverse"):
        self.model = model
        self.names = [k for k, _ in model.named_parameters() if not k.startswith("closing.")]
        params = dict(model.named_parameters())
        self.shapes = [params[k].shape for k in self.names]
        self.sizes = [params[k].numel() for k in self.names]
        self.x, self.y = x, y
        self.y64 = y.to(torch.float64)
        self.alpha_W = float(alpha_W)
        sqrt_aW = math.sqrt(self.alpha_W)

        def residual(theta):
            with self._replaced(theta):
                Z = model.features(self.x)
            WT, F, info = ridge_projection(Z, self.y64, self.alpha_W)
            R = F @ WT - self.y64 / math.sqrt(self.x.shape[0])
            r = torch.cat([R.reshape(-1), sqrt_aW * WT.reshape(-1)])
            return r, (WT, R, info)

        penalty = None
        if alpha_theta > 0:
            if theta_penalty == "model":
                def penalty(theta):
                    with self._replaced(theta):
                        return model.penalty(float(alpha_theta), 0.0)
            else:
                def penalty(theta):
                    return 0.5 * alpha_theta * torch.dot(theta, theta)
        super().__init__(residual, penalty, jvp)

    def _replaced(self, theta):
        views = [t.view(s) for t, s in zip(torch.split(theta, self.sizes), self.shapes)]
        return _parameters_replaced(self.model, self.names, views)

    def theta_of(self, model) -> torch.Tensor:
        """The flat ``theta`` of ``model``: ``(p,)``."""
        params = dict(model.named_parameters())
        return torch.cat([params[k].detach().reshape(-1) for k in self.names])

    @torch.no_grad()
    def write(self, model, theta: torch.Tensor, WT: torch.Tensor) -> None:
        """Set ``model``'s flow parameters to ``theta`` and its closing layer to ``W``."""
        params = dict(model.named_parameters())
        for k, t, s in zip(self.names, torch.split(theta, self.sizes), self.shapes):
            params[k].copy_(t.view(s))
        model.closing.weight.copy_(WT[:-1].mT.to(model.closing.weight.dtype))
        model.closing.bias.copy_(WT[-1].to(model.closing.bias.dtype))

    def train_relative_error(self, point: Point) -> float:
        """Mean per-sample relative error on the training set, from the residual (free)."""
        R = point.aux[1] * math.sqrt(self.x.shape[0])
        return float((torch.linalg.vector_norm(R, dim=1)
                      / torch.linalg.vector_norm(self.y64, dim=1)).mean())

    def evaluate(self, theta):
        point = super().evaluate(theta)
        if int(point.aux[2]) != 0:  # the normal matrix lost definiteness: infeasible
            point.objective = math.inf
        return point


# --------------------------------------------------------------------------- the iteration
class TrustRegionGaussNewton:
    """The trust-region Gauss-Newton iteration of ``trnewton.m`` on a :class:`ResidualProblem`.

    One call of :meth:`step` is one iteration: build the Krylov space at the current point
    unless it is still valid (after a rejection or expansion the point has not moved),
    take the trust-region step in it, evaluate the trial point and decide.

    Args:
        problem: the :class:`ResidualProblem`.
        theta0: ``(p,)`` starting point.
        inner: ``"gmres"`` or ``"cg"`` (Steihaug).
        krylov_dim: most inner iterations (GMRES vectors, CG products).
        inner_tol: relative residual tolerance of the inner solver.
        params: :class:`TrustRegionParams`.
        radius: initial radius; ``None``: the norm of the first inner solution.
    """

    def __init__(self, problem: ResidualProblem, theta0: torch.Tensor, *, inner: str = "gmres",
                 krylov_dim: int = 20, inner_tol: float = 1e-2,
                 params: TrustRegionParams = TrustRegionParams(), radius: float | None = None,
                 _count_start: bool = True):
        if inner not in INNER_SOLVERS:
            raise ValueError(f"inner must be one of {INNER_SOLVERS}, got {inner!r}")
        self.problem = problem
        self.inner, self.krylov_dim, self.inner_tol = inner, int(krylov_dim), float(inner_tol)
        self.params = params
        self.radius = radius
        self.point = problem.evaluate(theta0)
        problem.gradient(self.point)
        self.work_units = 2 if _count_start else 0
        self.grad_norm0 = self.grad_norm
        self.krylov = None
        self.iteration = 0

    @property
    def grad_norm(self) -> float:
        return float(torch.linalg.vector_norm(self.point.gradient))

    def _solve_inner(self):
        g = self.point.gradient

        def matvec(v):
            return self.problem.gn_product(self.point, v)

        solver = gmres if self.inner == "gmres" else cg_steihaug_path
        key = "max_dim" if self.inner == "gmres" else "max_iter"
        result = solver(matvec, -g, **{key: self.krylov_dim, "tol": self.inner_tol})
        self.work_units += 2 * result.iterations
        return result

    def step(self) -> dict:
        """One iteration. Returns a record: ``flag``, ``accepted``, ``ratio``, ``step_norm``,
        ``radius`` (for the next iteration), ``inner_iterations`` (0 when the Krylov space
        was reused), ``trial`` (the evaluated trial :class:`Point`)."""
        self.iteration += 1
        inner_its = 0
        if self.krylov is None:
            self.krylov = self._solve_inner()
            inner_its = self.krylov.iterations
            if self.radius is None:
                full = self.krylov.full_norm
                # CG along a direction of zero curvature has no finite full step
                self.radius = full if math.isfinite(full) else self.grad_norm
        s, pred, s_norm = self.krylov.trust_step(self.radius)
        theta_t = self.point.theta + s.to(self.point.theta.dtype)
        trial = self.problem.evaluate(theta_t)
        self.work_units += 1
        ared = self.point.objective - trial.objective
        ratio = ared / pred if pred > 0 else -math.inf
        if not math.isfinite(trial.objective):
            ratio = -math.inf
        accept, new_radius, flag = trust_region_update(ratio, s_norm, self.radius, self.grad_norm,
                                                       self.params)
        self.radius = new_radius
        if accept:
            self.point = trial
            self.problem.gradient(trial)
            self.work_units += 1
            self.krylov = None
        return {"flag": flag, "accepted": accept, "ratio": ratio, "step_norm": s_norm,
                "radius": self.radius, "inner_iterations": inner_its, "trial": trial}

    def state(self) -> dict:
        """Plain data and tensors that, with the problem, restore the iteration exactly."""
        return {"theta": self.point.theta.detach().cpu(), "radius": self.radius,
                "work_units": self.work_units, "grad_norm0": self.grad_norm0,
                "iteration": self.iteration, "inner": self.inner,
                "krylov": None if self.krylov is None else self.krylov.state()}

    @classmethod
    def from_state(cls, problem, st: dict, device, **kwargs) -> "TrustRegionGaussNewton":
        """Rebuild from :meth:`state`: re-evaluates the current point (not counted: a
        resumed run's counts equal an uninterrupted run's)."""
        it = cls(problem, st["theta"].to(device), radius=st["radius"], _count_start=False,
                 **kwargs)
        it.work_units, it.grad_norm0 = st["work_units"], st["grad_norm0"]
        it.iteration = st["iteration"]
        if st["krylov"] is not None:
            kind = KrylovGMRES if st["inner"] == "gmres" else CGPath
            it.krylov = kind.from_state(st["krylov"], device)
        return it


# --------------------------------------------------------------------------- training
def _new_history():
    return {k: [] for k in ("iteration", "loss", "misfit", "train_rel_err", "val_rel_err",
                            "work_units", "trust_radius", "inner_iterations", "step_norm",
                            "ratio", "tr_flag", "accepted", "grad_norm", "nfe", "nfe_forward",
                            "nfe_backward", "wall_time")}


def train_gnvpro(model, data, *, max_work_units: int = 4000, alpha_theta: float = 1e-5,
                 alpha_W: float = 1e-3, theta_penalty: str = "model", inner: str = "gmres",
                 krylov_dim: int = 20, inner_tol: float = 1e-2, rho0: float = 1e-4,
                 rhoL: float = 0.1, rhoH: float = 0.75, shrink: float = 0.5, grow: float = 1.5,
                 max_radius_factor: float = 1e4, initial_radius: float | None = None,
                 jvp: str = "reverse",
                 atol: float = 1e-16, rtol: float = 1e-16, min_radius: float = 1e-14,
                 device="auto", seed: int = 0, progress: bool = True,
                 checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 1,
                 resume: bool = False, name: str | None = None,
                 max_iterations: int | None = None) -> TrainResult:
    """Train a stepped network by trust-region Gauss-Newton with variable projection.

    Full batch. Each iteration solves the Gauss-Newton system of the reduced objective
    (module docstring) with GMRES (or CG-Steihaug), takes a trust-region step and keeps it
    or not; the closing layer is always the ridge solution for the current flow weights.
    Defaults are those of the authors' ``runExperiment_v2.m`` (``'GNvpro'``): 4000 work
    units, ``alpha_theta = 1e-5``, ``alpha_W = 1e-3``, GMRES with 20 vectors and tolerance
    ``1e-2``, gradient tolerances ``1e-16`` (in effect off).

    Args:
        model: a :class:`~ctdnn.ResNet` or :class:`~ctdnn.HamiltonianNet` (any basis). Its
            flow weights are the starting point (the closing layer's are not used); moved
            to ``device``; left holding the best-on-validation iterate, whose closing layer
            is the projection's ``W`` at that iterate.
        data: as for :func:`ctdnn.train`: a dataset, dict or tuple (see
            :func:`~ctdnn.training.as_splits`).
        max_work_units: budget in work units (module docstring); an iteration starts only
            while the count is below it, so the last one may overshoot by its own cost
            (at most ``2 krylov_dim + 2``).
        alpha_theta, alpha_W: Tikhonov weights on the flow weights and the closing layer.
        theta_penalty: ``"model"`` (``model.penalty``: the ``L2(0, T)`` norm of the
            time-varying weights, as :func:`ctdnn.train` uses) or ``"euclidean"`` (the
            coefficient vector including the opening layer, as the authors' MATLAB).
        inner: ``"gmres"`` (the authors') or ``"cg"`` (Steihaug).
        krylov_dim: most inner iterations per outer iteration.
        inner_tol: relative residual tolerance of the inner solver.
        rho0, rhoL, rhoH, shrink, grow, max_radius_factor: trust-region update
            (``ctdnn.gnvpro.trust_region_update``).
        initial_radius: first trust radius; ``None``: the norm of the first inner solution.
        jvp: ``"reverse"`` (default) or ``"forward"``: how the Jacobian products ``J v``
            are applied (``ctdnn.gnvpro.ResidualProblem``); same products, different speed.
        atol, rtol: stop when ``||g|| < atol`` or ``||g|| / ||g_0|| < rtol``.
        min_radius: stop when the radius falls below this (rejections cannot help).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        seed: checked and recorded in the checkpoint fingerprint, for a call like
            :func:`ctdnn.train`'s; the iteration itself is deterministic (full batch).
        progress: show a progress bar (over work units).
        checkpoint, checkpoint_every, resume: as :func:`ctdnn.train`, per iteration; a
            resumed run is bit-identical to an uninterrupted one (wall times aside).
        name: label for messages and the progress bar.
        max_iterations: stop after this many iterations *in this call* (status
            ``"partial"``; for staged runs); the budget still targets ``max_work_units``.

    Returns:
        :class:`~ctdnn.TrainResult`. ``history`` has one entry per iteration, iteration 0
        being the starting point: ``iteration``, ``loss`` (the reduced objective, penalties
        included), ``misfit`` (``0.5/n ||W Z~ - C||^2``), ``train_rel_err``,
        ``val_rel_err`` (of the current iterate; NaN without validation data),
        ``work_units`` (cumulative), ``trust_radius`` (for the next iteration),
        ``inner_iterations`` (0 when the Krylov space was reused), ``step_norm``,
        ``ratio``, ``tr_flag`` (``ctdnn.gnvpro.trust_region_update``), ``accepted``,
        ``grad_norm``, ``nfe``, ``nfe_forward``, ``nfe_backward`` (0: stepped networks;
        the keys of :func:`ctdnn.train`'s history), ``wall_time`` (cumulative seconds).
        ``best_epoch`` and ``epochs_completed`` count iterations. Status ``"completed"``
        (budget spent, a tolerance met, or the radius below ``min_radius``; ``message``
        says which), ``"partial"`` (``max_iterations``), ``"diverged"`` (a non-finite
        gradient). A ``KeyboardInterrupt`` is re-raised after the state of the last
        completed iteration is checkpointed.

    Raises:
        TrainingError: invalid arguments or data, a model that is not a stepped network,
            a singular projection at the start (use ``alpha_W > 0``), or a checkpoint that
            is corrupt or from another run.
    """
    from .architectures import HamiltonianNet, ResNet

    if not isinstance(model, (ResNet, HamiltonianNet)):
        raise TrainingError("train_gnvpro needs a discretize-then-optimize network (ctdnn.ResNet "
                            f"or ctdnn.HamiltonianNet), got {type(model).__name__}; train ODE "
                            "models with ctdnn.train")
    for arg, val in (("max_work_units", max_work_units), ("krylov_dim", krylov_dim),
                     ("checkpoint_every", checkpoint_every), ("max_iterations", max_iterations)):
        if val is not None or arg != "max_iterations":
            checks.check_int(arg, val, minimum=1, error=TrainingError)
    for arg, val in (("alpha_theta", alpha_theta), ("alpha_W", alpha_W), ("atol", atol),
                     ("rtol", rtol), ("min_radius", min_radius)):
        checks.check_number(arg, val, nonnegative=True, error=TrainingError)
    checks.check_number("inner_tol", inner_tol, positive=True, error=TrainingError)
    if initial_radius is not None:
        checks.check_number("initial_radius", initial_radius, positive=True, error=TrainingError)
    if inner not in INNER_SOLVERS:
        raise TrainingError(f"inner must be one of {INNER_SOLVERS}, got {inner!r}")
    if jvp not in JVP_MODES:
        raise TrainingError(f"jvp must be one of {JVP_MODES}, got {jvp!r}")
    if theta_penalty not in THETA_PENALTIES:
        raise TrainingError(f"theta_penalty must be one of {THETA_PENALTIES}, got "
                            f"{theta_penalty!r}")
    params = TrustRegionParams(rho0=rho0, rhoL=rhoL, rhoH=rhoH, shrink=shrink, grow=grow,
                               max_radius_factor=max_radius_factor)
    seed = check_seed(seed)
    label = name or type(model).__name__
    dev = resolve_device(device)
    xt, yt, xv, yv = prepare_splits(data, model, dev)
    model.to(dev)
    n_features = model.closing.in_features + 1
    if alpha_W == 0 and xt.shape[0] < n_features:
        # [Y; 1] has rank at most n_train < width + 1: the unregularised normal matrix is
        # singular whatever the rounding (a Cholesky may still succeed on noise).
        raise TrainingError(f"{label}: the normal matrix of the projection is singular with "
                            f"{xt.shape[0]} training samples and {n_features} features "
                            "(width + 1); use alpha_W > 0 or more samples")
    model.train()  # inputs were checked once above; no per-call checks inside the iteration
    problem = VarProProblem(model, xt, yt, alpha_theta=alpha_theta, alpha_W=alpha_W,
                            theta_penalty=theta_penalty, jvp=jvp)
    settings = fingerprint_value({
        "jvp": jvp, "max_work_units": max_work_units, "alpha_theta": alpha_theta,
        "alpha_W": alpha_W, "theta_penalty": theta_penalty, "inner": inner,
        "krylov_dim": krylov_dim, "inner_tol": inner_tol,
        "trust_region": dataclasses.asdict(params), "initial_radius": initial_radius,
        "atol": atol, "rtol": rtol, "min_radius": min_radius, "seed": seed})
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    fingerprint = None
    if ckpt_path is not None:
        fingerprint = {
            "model": model_fingerprint(model),
            "data": {"train": tensor_digest(xt, yt), "val": tensor_digest(xv, yv),
                     "n_train": int(xt.shape[0]),
                     "n_val": int(xv.shape[0]) if xv is not None else 0},
            "training": {"optimizer": "gnvpro", **settings},
        }
    solver_kw = {"inner": inner, "krylov_dim": krylov_dim, "inner_tol": inner_tol,
                 "params": params}

    def validation_error():
        if xv is None:
            return math.nan
        model.eval()
        with torch.no_grad():
            err = float(relative_error(model(xv), yv))
        model.train()
        return err

    history = _new_history()
    best = {"iteration": 0, "val": math.inf, "state": None}
    wall0 = 0.0
    ck = None
    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, "gnvpro")
        check_fingerprint(ck.get("fingerprint"), fingerprint, ckpt_path)
        try:
            it = TrustRegionGaussNewton.from_state(problem, ck["solver"], dev, **solver_kw)
            history = ck["history"]
            best = {"iteration": ck["best_iteration"], "val": ck["best_val"],
                    "state": ck["best_state"]}
            wall0 = history["wall_time"][-1] if history["wall_time"] else 0.0
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise TrainingError(f"checkpoint {ckpt_path} is incomplete or inconsistent "
                                f"({type(exc).__name__}: {exc}); delete it or pass "
                                "resume=False") from None
    else:
        theta0 = problem.theta_of(model)
        it = TrustRegionGaussNewton(problem, theta0, radius=initial_radius, **solver_kw)
        if not math.isfinite(it.point.objective):
            reason = ("the normal matrix of the projection is singular; use alpha_W > 0"
                      if int(it.point.aux[2]) != 0 else "the starting point gives a non-finite "
                      "objective; check the model's weights and the data scale")
            raise TrainingError(f"{label}: {reason}")
    t_start = time.perf_counter()

    def record(info):
        pt = it.point
        problem.write(model, pt.theta, pt.aux[0])
        val = history["val_rel_err"][-1] if (info is not None and not info["accepted"]) \
            else validation_error()
        misfit = 0.5 * float(pt.aux[1].square().sum())
        history["iteration"].append(it.iteration)
        history["loss"].append(pt.objective)
        history["misfit"].append(misfit)
        history["train_rel_err"].append(problem.train_relative_error(pt))
        history["val_rel_err"].append(val)
        history["work_units"].append(it.work_units)
        history["trust_radius"].append(math.nan if it.radius is None else float(it.radius))
        history["inner_iterations"].append(0 if info is None else info["inner_iterations"])
        history["step_norm"].append(0.0 if info is None else info["step_norm"])
        history["ratio"].append(math.nan if info is None else float(info["ratio"]))
        history["tr_flag"].append(0 if info is None else info["flag"])
        history["accepted"].append(True if info is None else bool(info["accepted"]))
        history["grad_norm"].append(it.grad_norm)
        for key in ("nfe", "nfe_forward", "nfe_backward"):  # as train's; no ODE solves here
            history[key].append(0)
        history["wall_time"].append(wall0 + time.perf_counter() - t_start)
        score = val if xv is not None else history["train_rel_err"][-1]
        if math.isfinite(score) and (score < best["val"] or best["state"] is None):
            best.update(iteration=it.iteration, val=score, state=cpu_state(model.state_dict()))

    # The state after the last completed iteration: what a checkpoint holds, so that an
    # interruption in the middle of an iteration saves a consistent state.
    snapshot = {}

    def take_snapshot():
        snapshot.update(solver=it.state(), n=len(history["iteration"]), best=dict(best))

    def save():
        if ckpt_path is None:
            return
        n, b = snapshot["n"], snapshot["best"]
        save_checkpoint({"fingerprint": fingerprint, "solver": snapshot["solver"],
                         "history": {k: v[:n] for k, v in history.items()},
                         "best_iteration": b["iteration"], "best_val": b["val"],
                         "best_state": b["state"]}, ckpt_path, "gnvpro")

    if ck is None:
        record(None)
    take_snapshot()
    if ck is None:
        save()
    status, message = Status.COMPLETED, ""
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=int(max_work_units), initial=min(it.work_units, int(max_work_units)),
                   desc=label, leave=False, unit="wu")
    done_here = 0
    try:
        for _ in metered(itertools.count()):
            gn = it.grad_norm
            if not math.isfinite(gn):
                status = Status.DIVERGED
                message = (f"{label}: non-finite gradient at iteration {it.iteration}; stopped "
                           "there")
                break
            if gn < atol or gn < rtol * it.grad_norm0:
                message = f"{label}: gradient tolerance met at iteration {it.iteration}"
                break
            if it.work_units >= max_work_units:
                message = f"{label}: budget of {max_work_units} work units spent"
                break
            if it.radius is not None and it.radius < min_radius:
                message = (f"{label}: trust radius {it.radius:.3g} below min_radius at iteration "
                           f"{it.iteration}")
                break
            if max_iterations is not None and done_here >= max_iterations:
                status = Status.PARTIAL
                message = f"{label}: stopped after iteration {it.iteration} (max_iterations)"
                break
            before = it.work_units
            info = it.step()
            done_here += 1
            record(info)
            take_snapshot()
            if it.iteration % checkpoint_every == 0:
                save()
            if bar is not None:
                cap = int(max_work_units)
                bar.update(max(0, min(it.work_units, cap) - min(before, cap)))
                bar.set_postfix(loss=f"{history['loss'][-1]:.3e}",
                                val=f"{history['val_rel_err'][-1]:.3e}")
    except KeyboardInterrupt:
        save()
        raise
    finally:
        if bar is not None:
            bar.close()
    if history["iteration"] and history["iteration"][-1] % checkpoint_every != 0:
        save()
    model.eval()
    if best["state"] is not None:
        model.load_state_dict({k: v.to(dev) for k, v in best["state"].items()})
    return TrainResult(history=history, status=status, best_epoch=best["iteration"],
                       best_val_rel_err=best["val"], best_state=best["state"],
                       epochs_completed=it.iteration, message=message)
