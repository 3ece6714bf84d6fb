"""The bookkeeping shared by ctdnn's training loops: state, failures, progress, checkpoints.

:func:`ctdnn.train` (epochs of minibatches), :func:`ctdnn.train_ensemble` (``K`` stacked
networks) and :func:`ctdnn.stationary.train_trajectory` (iterations over trajectory
windows) differ in their inner step: what a step computes, what it records and how it
evaluates. Everything around the step is here, once:

* :class:`Snapshot`: the *last good* state (model, optimizer, sampling generator, lengths
  of the logs, counters) after the last completed step; a divergence, a failed solve or an
  interruption restores it, and checkpoints hold it.
* :class:`BestState`: the best-on-validation state.
* :class:`Progress`: the optional progress bar; :class:`Clock`: cumulative wall time that
  continues across a resume.
* :class:`Checkpoint` with :func:`save_checkpoint` / :func:`load_checkpoint`: verified files
  (below) and the run fingerprint that a resume must match.
* :class:`Run`: a single-model run over numbered steps that combines them: resume, the
  step range (``max_steps`` for staged runs), recording, committing a step, failing with
  a :class:`~ctdnn.status.Status`, the final ``"partial"`` status. :func:`ctdnn.train` and
  the trajectory trainer are :class:`Run` loops. The ensemble trainer uses the blocks
  directly (one snapshot of the stacked networks, one :class:`BestState` per member, one
  checkpoint), because its members fail and stop one by one while the others go on.

Checkpoint files have a short text header (``ctdnn checkpoint``, the format number and the
sha256 digest of the payload) followed by a ``torch.save`` payload that holds only tensors
and plain Python data. Loading verifies the digest before anything is unpickled and then
unpickles with ``torch.load(..., weights_only=True)``, which refuses any other object, so
a crafted file cannot run code. Each checkpoint carries a fingerprint of everything that
determines its run (model configuration, a digest of the data, training settings); resuming
with anything different is refused with the differing fields named.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from .parallel import metered
from .solvers import SolverError
from .status import Status
from .storage import plain_data, write_bytes_atomic

__all__ = ["TrainingError", "CHECKPOINT_FORMAT", "save_checkpoint", "load_checkpoint",
           "tensor_digest", "fingerprint_value", "model_fingerprint", "fingerprint_differences",
           "check_fingerprint", "cpu_state", "new_log", "BestState", "Snapshot", "Progress",
           "Clock", "Checkpoint", "Run"]

CHECKPOINT_FORMAT = 2
_CHECKPOINT_MAGIC = b"ctdnn checkpoint\n"
_CHECKPOINT_HEADER = re.compile(rb"format (\d+) sha256 ([0-9a-f]{64})")
_FIX = "delete it or pass resume=False to start afresh"


class TrainingError(ValueError):
    """Invalid training input (names the argument and how to fix it)."""


# --------------------------------------------------------------------------- checkpoint files

def save_checkpoint(payload: dict, path: str | os.PathLike, kind: str) -> None:
    """Write a verified checkpoint atomically.

    Args:
        payload: tensors and plain data only (dicts, lists, tuples, str, int, float, bool,
            None), so that it loads with ``weights_only=True``.
        path: the file.
        kind: what the checkpoint is for (``"train"``, ``"trajectory"``); checked on load.
    """
    buf = io.BytesIO()
    torch.save({"kind": kind, **payload}, buf)
    data = buf.getvalue()
    header = f"format {CHECKPOINT_FORMAT} sha256 {hashlib.sha256(data).hexdigest()}\n"
    write_bytes_atomic(path, _CHECKPOINT_MAGIC + header.encode() + data)


def load_checkpoint(path: str | os.PathLike, kind: str) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying it first.

    The sha256 digest is checked before anything is unpickled, and the payload is read
    with ``torch.load(..., weights_only=True)``: only tensors and plain data load, never
    code.

    Raises:
        TrainingError: the file is unreadable, empty, not a ctdnn checkpoint, of another
            format or kind, truncated or altered (digest mismatch), or holds other objects;
            the message names the file and says to delete it or pass ``resume=False``.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TrainingError(f"checkpoint {path} cannot be read ({exc.strerror}); {_FIX}") from None
    if not raw:
        raise TrainingError(f"checkpoint {path} is empty (0 bytes); {_FIX}")
    if not raw.startswith(_CHECKPOINT_MAGIC):
        raise TrainingError(f"{path} is not a ctdnn checkpoint (it lacks the ctdnn header: "
                            "written by another program, or by a ctdnn older than format "
                            f"{CHECKPOINT_FORMAT}, which cannot be verified); {_FIX}")
    end = raw.find(b"\n", len(_CHECKPOINT_MAGIC))
    header = _CHECKPOINT_HEADER.fullmatch(raw[len(_CHECKPOINT_MAGIC):end]) if end >= 0 else None
    if header is None:
        raise TrainingError(f"checkpoint {path} has a damaged header (truncated or altered); "
                            f"{_FIX}")
    if int(header.group(1)) != CHECKPOINT_FORMAT:
        raise TrainingError(f"checkpoint {path} has format {int(header.group(1))}, but this "
                            f"version of ctdnn reads format {CHECKPOINT_FORMAT}; {_FIX}")
    data = raw[end + 1:]
    if hashlib.sha256(data).hexdigest() != header.group(2).decode():
        raise TrainingError(f"checkpoint {path} is corrupted: its content does not match the "
                            "sha256 digest written with it (truncated or altered after "
                            f"writing); {_FIX}")
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses anything but tensors and plain data
        raise TrainingError(f"checkpoint {path} holds objects other than tensors and plain "
                            f"data and was not loaded ({type(exc).__name__}); {_FIX}") from None
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        found = obj.get("kind") if isinstance(obj, dict) else type(obj).__name__
        raise TrainingError(f"{path} is a ctdnn checkpoint of kind {found!r}, not {kind!r}; "
                            f"{_FIX}")
    return obj


# --------------------------------------------------------------------------- fingerprints

def tensor_digest(*tensors) -> str | None:
    """sha256 over the dtypes, shapes and bytes of ``tensors`` (``None`` entries allowed).

    Identifies data sets in checkpoint fingerprints. Returns ``None`` for no tensors.
    """
    if all(t is None for t in tensors):
        return None
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none;")
            continue
        t = t.detach().to("cpu").contiguous()
        h.update(f"{t.dtype};{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint_value(value):
    """A setting as plain data for a fingerprint (numbers, strings, lists; others by ``repr``)."""
    return plain_data(value, default=repr)


def model_fingerprint(model) -> dict:
    """Everything about a model that determines a training run, as plain data.

    Class; sizes (``n_in``, ``n_out``, ``width``, ``dim``, ``hidden``); the basis (name,
    degree, interval, normalisation); ``T``, ``n_steps``, weight times and time scaling;
    the opening layer, initialisation and what the basis sees past ``T``;
    for ODE models the solver (method, tolerances, step size, step budget, adjoint and its
    norm); dtype and the name and shape of every parameter.
    """
    fp = {"class": type(model).__name__}
    for attr in ("n_in", "n_out", "width", "dim", "n_steps", "T", "weight_times",
                 "time_scaling", "method", "rtol", "atol", "step_size", "max_num_steps",
                 "adjoint", "adjoint_norm", "time_past_T", "opening_activation", "init"):
        if hasattr(model, attr):
            fp[attr] = fingerprint_value(getattr(model, attr))
    basis = getattr(model, "basis", None)
    if basis is not None:
        fp["basis"] = basis.kind
        fp["degree"] = basis.degree
        fp["basis_interval"] = float(basis.T)
        fp["normalized"] = bool(getattr(basis, "normalized", False))
    dynamics = getattr(model, "dynamics", None)
    if dynamics is not None:
        for attr in ("hidden", "transform", "time_scale"):
            if hasattr(dynamics, attr):
                fp[attr] = fingerprint_value(getattr(dynamics, attr))
    params = list(model.named_parameters())
    fp["dtype"] = str(params[0][1].dtype) if params else None
    fp["parameters"] = {name: list(p.shape) for name, p in params}
    return fp


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def fingerprint_differences(saved: dict, current: dict) -> list[str]:
    """``"field: checkpoint X, this run Y"`` for every field where two fingerprints differ."""
    a, b = _flatten(saved), _flatten(current)
    missing = object()

    def show(v):
        return "(absent)" if v is missing else repr(v)

    diffs = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            diffs.append(f"{key}: checkpoint {show(va)}, this run {show(vb)}")
    return diffs


def check_fingerprint(saved, current: dict, path) -> None:
    """Refuse to resume from ``path`` unless the fingerprints agree; names the fields."""
    if not isinstance(saved, dict):
        raise TrainingError(f"checkpoint {path} has no run fingerprint; delete it or pass "
                            "resume=False")
    diffs = fingerprint_differences(saved, current)
    if diffs:
        shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8 else "")
        raise TrainingError(f"checkpoint {path} was written for a run with other settings "
                            f"({shown}); delete it or pass resume=False")


def cpu_state(state: dict) -> dict:
    """A detached CPU copy of a ``state_dict`` (what best states and checkpoints keep)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


# --------------------------------------------------------------------------- building blocks

def new_log(keys) -> dict:
    """A log: one empty list per key, appended to once per record."""
    return {k: [] for k in keys}


@dataclasses.dataclass
class BestState:
    """The best-on-validation state of a run (or of one ensemble member).

    Attributes:
        step: the epoch or iteration it was taken after (0: none yet).
        score: its validation error (``inf``: none yet).
        state: a CPU ``state_dict`` copy, or ``None``.
    """

    step: int = 0
    score: float = math.inf
    state: dict | None = None

    def offer(self, step: int, score: float, state: Callable[[], dict]) -> bool:
        """Keep ``state()`` if ``score`` is lower than the best so far, or if nothing is kept
        yet; returns whether it was kept. ``state`` is called only then (copies cost)."""
        if self.state is None or score < self.score:
            self.step, self.score, self.state = step, score, state()
            return True
        return False


class Snapshot:
    """The state of a run after its last completed step: what a failure restores.

    Holds deep copies of the model's and the optimizer's ``state_dict``, the state of the
    generator (or of each of a list of generators), the lengths of the logs' lists and a copy
    of the counters; :meth:`restore` puts them back and truncates the logs, so that nothing
    of a half-done step survives.
    """

    def __init__(self, model, optimizer=None, generator=None, logs: dict | None = None,
                 counters: dict | None = None):
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.logs = logs if logs is not None else {}
        self.counters = counters if counters is not None else {}
        self.take()

    def take(self) -> None:
        """Record the current state as the last good one."""
        self.model_state = copy.deepcopy(self.model.state_dict())
        self.optimizer_state = (copy.deepcopy(self.optimizer.state_dict())
                                if self.optimizer is not None else None)
        gen = self.generator
        self.generator_state = (None if gen is None else [g.get_state() for g in gen]
                                if isinstance(gen, (list, tuple)) else gen.get_state())
        self.lengths = {name: {k: len(v) for k, v in log.items()} for name, log in
                        self.logs.items()}
        self.counter_values = copy.deepcopy(self.counters)

    def restore(self) -> None:
        """Put the last good state back (model, optimizer, generator, logs, counters)."""
        self.model.load_state_dict(self.model_state)
        if self.optimizer is not None:
            self.optimizer.load_state_dict(self.optimizer_state)
        if isinstance(self.generator, (list, tuple)):
            for g, state in zip(self.generator, self.generator_state):
                g.set_state(state)
        elif self.generator is not None:
            self.generator.set_state(self.generator_state)
        for name, log in self.logs.items():
            for k, v in log.items():
                del v[self.lengths[name].get(k, 0):]
        self.counters.clear()
        self.counters.update(copy.deepcopy(self.counter_values))


class Progress:
    """A progress bar over a run's steps (``tqdm``), or nothing when disabled."""

    def __init__(self, enabled: bool, total: int, initial: int = 0, label: str = ""):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc=label, leave=False)

    def update(self, **postfix) -> None:
        """One step done; ``postfix`` (already formatted) is shown beside the bar."""
        if self.bar is not None:
            self.bar.update(1)
            if postfix:
                self.bar.set_postfix(**postfix)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Clock:
    """Cumulative wall time in seconds, continuing from ``offset`` (the time before a resume)."""

    def __init__(self, offset: float = 0.0):
        self.offset = float(offset)
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return self.offset + time.perf_counter() - self.start


@dataclasses.dataclass
class Checkpoint:
    """Where and how a run is checkpointed.

    Attributes:
        path: the file.
        kind: the checkpoint kind (``"train"``, ``"trajectory"``), checked on load.
        fingerprint: plain data describing everything that determines the run; a resume
            is refused, naming the fields, unless the file's fingerprint equals it.
        every: write after every ``every``-th step (and after the last step of a call).
    """

    path: Path
    kind: str
    fingerprint: dict
    every: int = 1

    def save(self, payload: dict) -> None:
        save_checkpoint({"fingerprint": self.fingerprint, **payload}, self.path, self.kind)

    def load(self) -> dict | None:
        """The verified payload, or ``None`` when the file does not exist.

        Raises:
            TrainingError: corrupt, of another kind, or written for another run.
        """
        if not Path(self.path).exists():
            return None
        ck = load_checkpoint(self.path, self.kind)
        check_fingerprint(ck.get("fingerprint"), self.fingerprint, self.path)
        return ck

    @contextlib.contextmanager
    def reading(self):
        """Turn a missing or mismatched entry met while restoring into a clear error."""
        try:
            yield
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            if isinstance(exc, TrainingError):
                raise
            raise TrainingError(f"checkpoint {self.path} is incomplete or inconsistent "
                                f"({type(exc).__name__}: {exc}); delete it or pass "
                                "resume=False") from None


# --------------------------------------------------------------------------- the engine

class Run:
    """One training run of one model over numbered steps (epochs or iterations).

    The loop that uses it keeps its own step (sampling, loss, backward, update, its own
    evaluation) and calls, per step: :meth:`record` for the logs, :meth:`offer_best` with
    the validation score, :meth:`commit` once the step is complete, or :meth:`fail` when it
    is not (and then ``break``). The context manager :meth:`running` provides the step
    range and handles what any step may raise: a :class:`~ctdnn.SolverError` ends the run
    with status ``"solver_failed"`` at the last good state; ``KeyboardInterrupt`` restores
    the last good state, writes a checkpoint and is re-raised. After the loop,
    :meth:`finish` sets ``"partial"`` for a run stopped by ``max_steps`` and checkpoints a
    failed run so that a resume reports the failure instead of retrying;
    :meth:`load_best` loads the best-on-validation state.

    Args:
        model, optimizer: the model and its optimizer.
        generator: the run's private sampling generator (minibatch order, windows).
        label: names the run in messages and on the progress bar.
        unit: ``"epoch"`` or ``"iteration"``: the word for a step in messages, and the
            checkpoint keys (``"epoch"``, ``"best_epoch"``, ...).
        total: the number of steps the run targets.
        logs: named logs (``{"history": {...}, ...}``; ``"history"`` is required), each a
            dict of lists; a ``"wall_time"`` list is filled by :meth:`record`.
        counters: plain numbers that belong to the last good state (e.g. NFE totals),
            restored with it and checkpointed.
        checkpoint: a :class:`Checkpoint`, or ``None``.
        progress: show a progress bar.

    Attributes:
        status, message, solver_status: how the run ended (a :class:`~ctdnn.status.Status`,
            a sentence naming the run, the failed solve's status or ``None``).
        start: the step the run (re)started after; ``done``: the last completed step.
        best: the :class:`BestState`.
    """

    def __init__(self, model, optimizer, generator: torch.Generator, *, label: str, unit: str,
                 total: int, logs: dict, counters: dict | None = None,
                 checkpoint: Checkpoint | None = None, progress: bool = True):
        if "history" not in logs:
            raise ValueError("logs needs a 'history' entry")
        self.model, self.optimizer, self.generator = model, optimizer, generator
        self.label, self.unit, self.total = label, unit, total
        self.logs, self.counters = logs, dict(counters or {})
        self.checkpoint, self.progress = checkpoint, progress
        self.best = BestState()
        self.start = self.done = 0
        self.stop = total
        self.status, self.message, self.solver_status = Status.COMPLETED, "", None
        self.stopped_early = False
        self.snapshot: Snapshot | None = None
        self.clock = Clock()

    @property
    def history(self) -> dict:
        return self.logs["history"]

    @property
    def failed(self) -> bool:
        return self.status in (Status.DIVERGED, Status.SOLVER_FAILED)

    # -- resume and checkpoints ------------------------------------------------------------
    def resume(self) -> bool:
        """Continue from the checkpoint file, if there is one; returns whether it did.

        Restores the model, the optimizer, the generator, the logs, the counters, the best
        state, the step reached and, for a run that had stopped on a failure, its status.

        Raises:
            TrainingError: the file is corrupt, written for another run, or incomplete.
        """
        if self.checkpoint is None:
            return False
        ck = self.checkpoint.load()
        if ck is None:
            return False
        with self.checkpoint.reading():
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.generator.set_state(ck["generator"])
            logs = {name: ck[name] for name in self.logs}
            for name, log in logs.items():
                missing = set(self.logs[name]) - set(log)
                if missing:
                    raise KeyError(f"{name} lacks {sorted(missing)}")
            self.logs.clear()
            self.logs.update(logs)
            if self.counters:
                self.counters.update({k: ck["counters"][k] for k in self.counters})
            self.start = self.done = int(ck[self.unit])
            self.best = BestState(ck[f"best_{self.unit}"], ck["best_val"], ck["best_state"])
            self.stopped_early = bool(ck.get("stopped_early", False))
            if self.stopped_early:
                self.message = ck.get("stop_message", "")
            ended = ck.get("ended")
            if ended is not None:  # a run that stopped on a failure is not retried
                self.status, self.message = Status(ended[0]), ended[1]
                self.solver_status = None if ended[2] is None else Status(ended[2])
        wall = self.history.get("wall_time")
        self.clock = Clock(wall[-1] if wall else 0.0)
        return True

    def save(self) -> None:
        """Checkpoint the last good state (no-op without a checkpoint)."""
        if self.checkpoint is None:
            return
        snap = self.snapshot
        # Statuses are stored as their strings: weights_only loading takes plain data only.
        ended = (str(self.status), self.message,
                 None if self.solver_status is None else str(self.solver_status)
                 ) if self.failed else None
        self.checkpoint.save({
            "model": cpu_state(snap.model_state), "optimizer": snap.optimizer_state,
            "generator": snap.generator_state, **self.logs, "counters": self.counters,
            self.unit: self.done, f"best_{self.unit}": self.best.step,
            "best_val": self.best.score, "best_state": self.best.state, "ended": ended,
            "stopped_early": self.stopped_early,
            "stop_message": self.message if self.stopped_early else ""})

    # -- the loop --------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self, max_steps: int | None = None) -> Iterator[Iterator[int]]:
        """The steps to run in this call, ``start + 1 .. stop``, inside the run's handling
        (timed step by step for ``ctdnn run --estimate``: :func:`ctdnn.parallel.metered`).

        Args:
            max_steps: run at most this many steps in this call (a staged run); the run
                still targets ``total``. A run resumed after a failure runs none.
        """
        self.stop = self.total if max_steps is None else min(self.total, self.start + max_steps)
        if self.status != Status.COMPLETED or self.stopped_early:
            self.stop = self.start
        self.snapshot = Snapshot(self.model, self.optimizer, self.generator, self.logs,
                                 self.counters)
        self._bar = Progress(self.progress, self.total, self.start, self.label)
        try:
            yield metered(range(self.start + 1, self.stop + 1))
        except SolverError as exc:
            self.fail(Status.SOLVER_FAILED, f"in {self.unit} {self.done + 1}, {exc}", exc.status)
        except KeyboardInterrupt:
            # Keep the last completed step; the partial one is discarded.
            self.snapshot.restore()
            self.status = Status.INTERRUPTED
            self.message = f"{self.label}: interrupted after {self.unit} {self.done}"
            self.save()
            raise
        finally:
            self._bar.close()

    def record(self, log: str = "history", **values) -> None:
        """Append ``values`` to a log (and the cumulative wall time, if the log keeps one)."""
        entries = self.logs[log]
        for k, v in values.items():
            entries[k].append(v)
        if "wall_time" in entries and "wall_time" not in values:
            entries["wall_time"].append(self.clock())

    def offer_best(self, step: int, score: float) -> bool:
        """Keep the model's state as the best if ``score`` beats it (see :class:`BestState`)."""
        return self.best.offer(step, score, lambda: cpu_state(self.model.state_dict()))

    def commit(self, step: int, **postfix) -> None:
        """Step ``step`` is complete: it becomes the last good state, is checkpointed when
        due, and advances the progress bar (``postfix``: formatted values to show)."""
        self.done = step
        self.snapshot.take()
        if self.checkpoint is not None and (step % self.checkpoint.every == 0
                                            or step == self.stop):
            self.save()
        self._bar.update(**postfix)

    def stop_early(self, step: int, detail: str) -> None:
        """End a run on purpose after the completed step ``step`` (an early-stopping rule).

        The status stays ``"completed"``, :attr:`stopped_early` is set and checkpointed, so a
        resume does not continue it; the message reads ``"<label>: stopped early after
        <unit> <step>: <detail>"``.
        """
        self.stopped_early = True
        self.message = f"{self.label}: stopped early after {self.unit} {step}: {detail}"
        self.save()

    def fail(self, status: Status, detail: str, solver_status: Status | None = None) -> None:
        """End the run at its last good state.

        The message reads ``"<label>: <detail>; stopped and restored the state after
        <unit> <done>"``.
        """
        self.snapshot.restore()
        self.status, self.solver_status = status, solver_status
        self.message = (f"{self.label}: {detail}; stopped and restored the state after "
                        f"{self.unit} {self.done}")

    def finish(self) -> None:
        """Final status: ``"partial"`` for a run stopped before ``total``; a failed run is
        checkpointed with its status, so that a resume reports it instead of retrying."""
        if self.failed:
            self.save()
        elif self.status == Status.COMPLETED and self.done < self.total and not self.stopped_early:
            self.status = Status.PARTIAL
            self.message = (f"{self.label}: stopped after {self.unit} {self.done} of "
                            f"{self.total} (max_{self.unit}s)")

    def load_best(self, device) -> None:
        """Load the best-on-validation state into the model (on ``device``), if there is one."""
        if self.best.state is not None:
            self.model.load_state_dict({k: v.to(device) for k, v in self.best.state.items()})
