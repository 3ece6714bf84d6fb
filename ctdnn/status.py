"""One status vocabulary for ODE solves, training runs and rollouts.

:class:`Status` is a string enumeration: a member compares equal to its value
(``Status.DIVERGED == "diverged"``), prints as its value and is written to JSON as a plain
string, so results stored as text read back unchanged.
"""

from __future__ import annotations

import enum

__all__ = ["Status", "SOLVE_FAILURES", "RUN_FAILURES"]


class Status(enum.StrEnum):
    """How a solve, a training run or a rollout ended.

    Training runs:
        ``COMPLETED``: every requested epoch or iteration ran.
        ``PARTIAL``: stopped early on purpose (``max_epochs`` / ``max_iterations``).
        ``DIVERGED``: a non-finite loss or error; the model holds the last finite state.
        ``SOLVER_FAILED``: an ODE solve (forward or adjoint) failed; same restore.
        ``INTERRUPTED``: stopped by the user (``KeyboardInterrupt``).

    ODE solves (:class:`~ctdnn.SolverError` ``.status``) and rollouts:
        ``OK``: a rollout that finished with finite values.
        ``STEP_SIZE_UNDERFLOW``: the adaptive step size fell below what the time can resolve.
        ``TOO_MANY_STEPS``: the step (or evaluation) budget was spent.
        ``NON_FINITE``: the state became NaN or inf (or started so).
        ``FAILED``: any other solver failure (e.g. an implicit method's iteration that did
        not converge).
    """

    COMPLETED = "completed"
    PARTIAL = "partial"
    DIVERGED = "diverged"
    SOLVER_FAILED = "solver_failed"
    INTERRUPTED = "interrupted"
    OK = "ok"
    STEP_SIZE_UNDERFLOW = "step_size_underflow"
    TOO_MANY_STEPS = "too_many_steps"
    NON_FINITE = "non_finite"
    FAILED = "failed"

    def __repr__(self) -> str:
        # Shown like the string it equals, so printed records (a dict of rollout statuses,
        # a results table) read exactly as they did when statuses were plain strings.
        return repr(self.value)


#: Statuses a failed ODE solve can carry.
SOLVE_FAILURES = frozenset({Status.STEP_SIZE_UNDERFLOW, Status.TOO_MANY_STEPS,
                            Status.NON_FINITE, Status.FAILED})
#: Statuses of a training run that did not reach its end normally.
RUN_FAILURES = frozenset({Status.DIVERGED, Status.SOLVER_FAILED, Status.INTERRUPTED})
