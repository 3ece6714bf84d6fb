"""Adaptive ODE solves through torchdiffeq, with per-call solver statistics.

Every right-hand side used with :func:`solve` derives from :class:`Dynamics`, which counts
its own evaluations (forward and, for the adjoint method, backward) and receives
torchdiffeq's accept/reject callbacks. A solve returns its :class:`SolverStats`; a failed
solve raises :class:`SolverError` with a status code naming the cause.
"""

from __future__ import annotations

import dataclasses
import re
import warnings

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

__all__ = ["Dynamics", "SolverStats", "SolverError", "solve", "ADAPTIVE_METHODS"]

ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
FIXED_METHODS = ("euler", "midpoint", "rk4", "explicit_adams", "implicit_adams")


@dataclasses.dataclass
class SolverStats:
    """Counters of one or more solves.

    Attributes:
        nfe_forward: right-hand-side evaluations in the forward solve.
        nfe_backward: evaluations during the backward (adjoint) solve; 0 with direct
            backpropagation through the solver.
        n_accepted, n_rejected: adaptive steps of the forward solve.
        n_accepted_backward, n_rejected_backward: adaptive steps of the adjoint solve.
        n_solves: number of forward solves counted.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    n_accepted_backward: int = 0
    n_rejected_backward: int = 0
    n_solves: int = 0

    @property
    def nfe(self) -> int:
        """Total evaluations, forward plus backward."""
        return self.nfe_forward + self.nfe_backward

    def __iadd__(self, other: "SolverStats") -> "SolverStats":
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["nfe"] = self.nfe
        return d


class SolverError(RuntimeError):
    """A solve that did not finish.

    Attributes:
        status: ``"step_size_underflow"``, ``"too_many_steps"``, ``"non_finite"`` or
            ``"failed"``.
        stats: the counters up to the failure.
    """

    def __init__(self, status: str, message: str, stats: SolverStats | None = None):
        super().__init__(f"ODE solve failed ({status}): {message}")
        self.status = status
        self.stats = stats or SolverStats()


def _classify(exc: BaseException) -> str:
    text = str(exc)
    if re.search(r"underflow in dt", text):
        return "step_size_underflow"
    if "max_num_steps" in text:
        return "too_many_steps"
    if re.search(r"non-finite|nan|inf", text, flags=re.IGNORECASE):
        return "non_finite"
    return "failed"


class Dynamics(nn.Module):
    """Base class of ODE right-hand sides ``du/dt = f(t, u)`` that count their work.

    Subclasses implement :meth:`rhs`. Counting happens in Python integers (no device
    synchronisation). ``current`` holds the counters of the most recent solve: evaluations
    made after that solve returned (the adjoint pass of ``loss.backward()``) are added to
    its backward counters. ``total`` accumulates over all solves until :meth:`reset_stats`.
    """

    def __init__(self):
        super().__init__()
        self.current = SolverStats()
        self.total = SolverStats()
        self._backward = False

    def rhs(self, t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _count(self, field: str) -> None:
        setattr(self.current, field, getattr(self.current, field) + 1)
        setattr(self.total, field, getattr(self.total, field) + 1)

    def forward(self, t, u):
        self._count("nfe_backward" if self._backward else "nfe_forward")
        return self.rhs(t, u)

    # torchdiffeq callbacks (called by adaptive Runge-Kutta solvers)
    def callback_accept_step(self, t0, y0, dt):
        self._count("n_accepted")

    def callback_reject_step(self, t0, y0, dt):
        self._count("n_rejected")

    def callback_accept_step_adjoint(self, t0, y0, dt):
        self._count("n_accepted_backward")

    def callback_reject_step_adjoint(self, t0, y0, dt):
        self._count("n_rejected_backward")

    def begin_solve(self) -> SolverStats:
        self.current = SolverStats(n_solves=1)
        self.total.n_solves += 1
        self._backward = False
        return self.current

    def end_solve(self) -> None:
        self._backward = True

    def reset_stats(self) -> None:
        """Zero the cumulative counters."""
        self.total = SolverStats()


def solve(func: Dynamics, u0: torch.Tensor, t: torch.Tensor, *, method: str = "dopri5",
          rtol: float = 1e-7, atol: float = 1e-9, adjoint: bool = False,
          step_size: float | None = None, max_num_steps: int = 100_000,
          adjoint_params=None, adjoint_norm: str = "default") -> tuple[torch.Tensor, SolverStats]:
    """Solve ``du/dt = func(t, u)`` from ``u(t[0]) = u0`` and report statistics.

    Args:
        func: a :class:`Dynamics`.
        u0: ``(batch, n)`` initial state.
        t: ``(n_times,)`` increasing output times.
        method: a torchdiffeq method; adaptive ones use ``rtol``/``atol``, fixed-step ones
            need ``step_size``.
        rtol, atol: tolerances, always passed explicitly.
        adjoint: gradients by the adjoint method (``odeint_adjoint``) instead of
            backpropagation through the solver.
        step_size: step of fixed-step methods.
        max_num_steps: adaptive step budget before failing with ``"too_many_steps"``.
        adjoint_params: parameters for the adjoint (defaults to ``func.parameters()``).
        adjoint_norm: ``"default"`` (torchdiffeq's: the step control of the backward solve
            also watches the parameter adjoints) or ``"seminorm"`` (only the state and its
            adjoint; typically halves the backward NFE at the same gradient accuracy).

    Returns:
        ``(solution, stats)`` with solution ``(n_times, batch, n)``. ``stats`` holds the
        forward counts at return; the adjoint pass of a later ``backward()`` adds its
        counts to the same object.

    Raises:
        SolverError: step-size underflow, too many steps, or non-finite state.
    """
    if method in FIXED_METHODS:
        if step_size is None:
            raise ValueError(f"fixed-step method {method!r} needs an explicit step_size")
        options = {"step_size": step_size}
    elif method in ADAPTIVE_METHODS:
        options = {"max_num_steps": max_num_steps}
    else:
        raise ValueError(f"unknown ODE method {method!r}; adaptive: {ADAPTIVE_METHODS}, "
                         f"fixed-step: {FIXED_METHODS}")
    if adjoint_norm not in ("default", "seminorm"):
        raise ValueError(f"adjoint_norm must be 'default' or 'seminorm', got {adjoint_norm!r}")
    adjoint_options = dict(options)
    if adjoint_norm == "seminorm" and method in ADAPTIVE_METHODS:
        adjoint_options["norm"] = "seminorm"
    stats = func.begin_solve()
    try:
        if adjoint:
            kwargs = {}
            if adjoint_params is not None:
                kwargs["adjoint_params"] = tuple(adjoint_params)
            sol = odeint_adjoint(func, u0, t, rtol=rtol, atol=atol, method=method,
                                 options=options, adjoint_rtol=rtol, adjoint_atol=atol,
                                 adjoint_options=adjoint_options, **kwargs)
        else:
            with warnings.catch_warnings():
                # Fixed-step solvers take no step callbacks; their counts need none.
                warnings.filterwarnings("ignore", message="Solver .* does not support callbacks")
                sol = odeint(func, u0, t, rtol=rtol, atol=atol, method=method, options=options)
    except SolverError as exc:
        # raised by the right-hand side itself (e.g. an evaluation budget): keep its status
        if exc.stats.nfe == 0:
            exc.stats = stats
        raise
    except (AssertionError, RuntimeError) as exc:
        raise SolverError(_classify(exc), str(exc).splitlines()[0][:200], stats) from None
    finally:
        func.end_solve()
    return sol, stats
