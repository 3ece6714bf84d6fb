"""Adaptive ODE solves through torchdiffeq, with per-call solver statistics.

Every right-hand side used with :func:`solve` derives from :class:`Dynamics`, which counts
its own evaluations (forward and, for the adjoint method, backward) and receives
torchdiffeq's accept/reject callbacks. A solve returns its :class:`SolverStats`; a failed
solve raises :class:`SolverError` with a status code naming the cause.

Failures of the adjoint (backward) solve happen inside ``loss.backward()``, after
:func:`solve` has returned; :func:`solver_failures` turns them into the same
:class:`SolverError` (``with solver_failures(model.dynamics): loss.backward()``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import re
import warnings

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from .status import Status

__all__ = ["Dynamics", "SolverStats", "SolverError", "solve", "solver_failures",
           "check_solver_options", "ADAPTIVE_METHODS", "FIXED_METHODS"]

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
        status: a :class:`~ctdnn.status.Status`: ``STEP_SIZE_UNDERFLOW``,
            ``TOO_MANY_STEPS``, ``NON_FINITE`` or ``FAILED`` (equal to the strings
            ``"step_size_underflow"``, ...).
        stats: the counters up to the failure.
    """

    def __init__(self, status: str, message: str, stats: SolverStats | None = None):
        status = Status(status)
        super().__init__(f"ODE solve failed ({status}): {message}")
        self.status = status
        self.stats = stats or SolverStats()


# torchdiffeq's own failure messages (torchdiffeq/_impl/rk_common.py and solvers.py). Only
# these count as solver failures; any other exception is a bug and propagates unchanged.
_UNDERFLOW = re.compile(r"^underflow in dt (?P<dt>\S+)")
_MAX_STEPS = re.compile(r"^max_num_steps exceeded \((?P<n>\d+)>=(?P<max>\d+)\)")
_NON_FINITE = re.compile(r"^non-finite values in state `y`")
_MAX_ITERATIONS = re.compile(r"^Reached maximum number of iterations (?P<max>\d+)")


def _classify(exc: BaseException) -> Status | None:
    """The :class:`Status` of a torchdiffeq failure, or ``None`` if ``exc`` is not one."""
    if not isinstance(exc, (AssertionError, RuntimeError)):
        return None
    text = str(exc)
    m = _UNDERFLOW.match(text)
    if m:
        # A NaN step size means the error estimate was NaN: the state or the right-hand
        # side became non-finite, which is not an underflow.
        try:
            dt = float(m.group("dt"))
        except ValueError:
            dt = math.nan
        return Status.STEP_SIZE_UNDERFLOW if math.isfinite(dt) else Status.NON_FINITE
    if _MAX_STEPS.match(text):
        return Status.TOO_MANY_STEPS
    if _NON_FINITE.match(text):
        return Status.NON_FINITE
    if _MAX_ITERATIONS.match(text):
        return Status.FAILED
    return None


@dataclasses.dataclass(frozen=True)
class _SolveSettings:
    method: str
    rtol: float
    atol: float
    step_size: float | None
    max_num_steps: int
    adjoint: bool

    def describe(self) -> str:
        if self.method in FIXED_METHODS:
            return f"{self.method}, step_size={self.step_size:g}"
        return (f"{self.method}, rtol={self.rtol:g}, atol={self.atol:g}, step budget "
                f"max_num_steps={self.max_num_steps} per output interval")


def _failure_message(status: Status, detail: str, phase: str, settings: _SolveSettings | None,
                     stats: SolverStats) -> str:
    what = {Status.STEP_SIZE_UNDERFLOW: "the step size underflowed",
            Status.TOO_MANY_STEPS: "the step budget was exceeded",
            Status.NON_FINITE: "the state became NaN or inf",
            Status.FAILED: "the solver failed"}[status]
    how = f" ({settings.describe()})" if settings is not None else ""
    return (f"{what} in the {phase} solve{how} after {stats.nfe_forward} forward and "
            f"{stats.nfe_backward} backward evaluations [{detail}]")


@contextlib.contextmanager
def solver_failures(func: "Dynamics | None" = None, *, phase: str = "adjoint (backward)"):
    """Turn a torchdiffeq failure raised inside the block into a :class:`SolverError`.

    Use it around ``loss.backward()`` of a model solved with the adjoint method: the
    backward solve runs there, after :func:`solve` has returned. Exceptions that are not
    solver failures propagate unchanged.

    Args:
        func: the :class:`Dynamics` of the solve (its counters and settings go into the
            message); ``None`` for models without one (the block is then passed through).
        phase: how the message names the solve.

    Raises:
        SolverError: with the status of the failure, the step budget and the evaluation
            counts in its message.
    """
    try:
        yield
    except SolverError:
        raise
    except (AssertionError, RuntimeError) as exc:
        status = _classify(exc)
        if status is None or func is None:
            raise
        stats = func.current
        detail = str(exc).splitlines()[0][:200]
        raise SolverError(status, _failure_message(status, detail, phase,
                                                   getattr(func, "solve_settings", None), stats),
                          stats) from None


def check_solver_options(method, rtol, atol, *, step_size=None, max_num_steps=100_000,
                         adjoint_norm="default") -> dict:
    """Validate solver settings; returns them normalised (floats, ints).

    Raises:
        ValueError: naming the setting and what is allowed.
    """
    if method in FIXED_METHODS:
        if step_size is None:
            raise ValueError(f"fixed-step method {method!r} needs an explicit step_size")
    elif method not in ADAPTIVE_METHODS:
        raise ValueError(f"unknown ODE method {method!r}; adaptive: {ADAPTIVE_METHODS}, "
                         f"fixed-step: {FIXED_METHODS}")
    checked = {}
    for name, value in (("rtol", rtol), ("atol", atol), ("step_size", step_size)):
        if name == "step_size" and value is None:
            checked[name] = None
            continue
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(value) or value <= 0):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        checked[name] = float(value)
    if (isinstance(max_num_steps, bool) or not isinstance(max_num_steps, numbers.Integral)
            or max_num_steps < 1):
        raise ValueError(f"max_num_steps must be a positive integer, got {max_num_steps!r}")
    if adjoint_norm not in ("default", "seminorm"):
        raise ValueError(f"adjoint_norm must be 'default' or 'seminorm', got {adjoint_norm!r}")
    return {"method": method, **checked, "max_num_steps": int(max_num_steps),
            "adjoint_norm": adjoint_norm}


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

    # Plain attribute increments: the counters run on every evaluation, so they avoid
    # getattr/setattr by name and never touch a tensor.
    def forward(self, t, u):
        if self._backward:
            self.current.nfe_backward += 1
            self.total.nfe_backward += 1
        else:
            self.current.nfe_forward += 1
            self.total.nfe_forward += 1
        return self.rhs(t, u)

    # torchdiffeq callbacks (called by adaptive Runge-Kutta solvers)
    def callback_accept_step(self, t0, y0, dt):
        self.current.n_accepted += 1
        self.total.n_accepted += 1

    def callback_reject_step(self, t0, y0, dt):
        self.current.n_rejected += 1
        self.total.n_rejected += 1

    def callback_accept_step_adjoint(self, t0, y0, dt):
        self.current.n_accepted_backward += 1
        self.total.n_accepted_backward += 1

    def callback_reject_step_adjoint(self, t0, y0, dt):
        self.current.n_rejected_backward += 1
        self.total.n_rejected_backward += 1

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

    Every failure, in any solver, ends as a :class:`SolverError` whose message names the
    method, the step budget (or step size) and the evaluations made: torchdiffeq's own
    failures, a fixed-step solve that produced NaN or inf (checked on the result, since
    fixed-step solvers do not check), and a non-finite initial state. A failure of the
    adjoint solve surfaces in the later ``backward()``; wrap it in
    :func:`solver_failures` to get the same error.

    Raises:
        ValueError: invalid settings or an empty batch (``u0`` with no samples).
        SolverError: step-size underflow, too many steps, non-finite state.
    """
    opts = check_solver_options(method, rtol, atol, step_size=step_size,
                                max_num_steps=max_num_steps, adjoint_norm=adjoint_norm)
    if method in FIXED_METHODS:
        options = {"step_size": opts["step_size"]}
    else:
        options = {"max_num_steps": opts["max_num_steps"]}
    if u0.numel() == 0:
        raise ValueError(f"u0 is empty (shape {tuple(u0.shape)}): an ODE solve needs at least "
                         "one sample in the batch")
    adjoint_options = dict(options)
    if adjoint_norm == "seminorm" and method in ADAPTIVE_METHODS:
        adjoint_options["norm"] = "seminorm"
    # Kept on the right-hand side so that a failure of the later adjoint solve, raised from
    # backward(), can be reported with the same settings (see solver_failures).
    func.solve_settings = _SolveSettings(method, opts["rtol"], opts["atol"], opts["step_size"],
                                         opts["max_num_steps"], bool(adjoint))
    stats = func.begin_solve()
    try:
        # One host sync per solve (adaptive solvers sync at every step anyway): a NaN start
        # would otherwise be reported by torchdiffeq as a step-size underflow.
        if not bool(torch.isfinite(u0).all()):
            raise SolverError(Status.NON_FINITE, _failure_message(
                Status.NON_FINITE, "the initial state u0 contains NaN or inf", "forward",
                func.solve_settings, stats), stats)
        with solver_failures(func, phase="forward"), warnings.catch_warnings():
            # Fixed-step solvers take no step callbacks; their counts need none.
            warnings.filterwarnings("ignore", message="Solver .* does not support callbacks")
            if adjoint:
                kwargs = {}
                if adjoint_params is not None:
                    kwargs["adjoint_params"] = tuple(adjoint_params)
                sol = odeint_adjoint(func, u0, t, rtol=opts["rtol"], atol=opts["atol"],
                                     method=method, options=options, adjoint_rtol=opts["rtol"],
                                     adjoint_atol=opts["atol"], adjoint_options=adjoint_options,
                                     **kwargs)
            else:
                sol = odeint(func, u0, t, rtol=opts["rtol"], atol=opts["atol"], method=method,
                             options=options)
        # Fixed-step solvers never check the state, and adaptive ones check it only at the
        # start of each step, so the returned values are checked here.
        if not bool(torch.isfinite(sol).all()):
            raise SolverError(Status.NON_FINITE, _failure_message(
                Status.NON_FINITE, "the solution contains NaN or inf", "forward",
                func.solve_settings, stats), stats)
    except SolverError as exc:
        # raised by the right-hand side itself (e.g. an evaluation budget): keep its status
        if exc.stats.nfe == 0:
            exc.stats = stats
        raise
    finally:
        func.end_solve()
    return sol, stats
