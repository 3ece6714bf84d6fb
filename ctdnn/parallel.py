"""Independent units of an experiment, run in-process or on a Dask distributed cluster.

An experiment notebook hands its independent pieces of work (one training run, or one batched
ensemble of configurations) to :func:`map_units`::

    results = map_units(train_one, configs, name="04 ELM")

Where the work runs is decided by the environment, so a notebook reads the same whatever
executes it:

* ``CTDNN_SCHEDULER`` unset (plain papermill, nbval, ``ctdnn run --workers 1``): the units run
  one after another in the calling process.
* ``CTDNN_SCHEDULER=tcp://host:port`` (set by ``ctdnn run`` for the notebooks it executes):
  each unit is submitted to that Dask scheduler; the caller only waits, so notebooks never
  occupy a worker and several notebooks can share one cluster without deadlock.

Results are identical either way: each unit starts from random-number-generator states
derived from ``(name, label)`` alone (units that seed themselves are unaffected), runs with
the caller's torch thread count and default dtype, and the results come back in submission
order. In-process, the caller's generator states are restored after every unit, since on a
cluster the units never touch them.

``ctdnn run`` also sets ``CTDNN_UNIT_DIR`` and ``CTDNN_RUN_KEY``: every finished unit is
stored there under its run key, and a unit whose result exists for the same key is not run
again, so an interrupted run resumes unit by unit. ``CTDNN_PROGRESS_FILE`` receives the
count of finished units (read by the runner's progress display) and ``CTDNN_UNIT_TIMES``,
when set, a line per unit with its wall and CPU time and the CPU time of each step of its
:func:`metered` loops (used by ``ctdnn run --estimate``).
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import hashlib
import io
import json
import os
import pickle
import random
import re
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

from .storage import write_bytes_atomic, write_text_atomic

__all__ = ["map_units", "UnitError", "SCHEDULER_ENV", "UNIT_DIR_ENV", "RUN_KEY_ENV",
           "PROGRESS_ENV", "TIMES_ENV", "read_progress", "unit_seed", "undo_malloc_trim",
           "unit_scope", "concurrently", "on_cluster", "metered"]

SCHEDULER_ENV = "CTDNN_SCHEDULER"
UNIT_DIR_ENV = "CTDNN_UNIT_DIR"
RUN_KEY_ENV = "CTDNN_RUN_KEY"
PROGRESS_ENV = "CTDNN_PROGRESS_FILE"
TIMES_ENV = "CTDNN_UNIT_TIMES"

_MISSING = object()


class UnitError(RuntimeError):
    """One or more units failed; the others finished and their results are kept.

    Attributes:
        name: the ``name`` given to :func:`map_units`.
        failures: ``{label: "ExceptionType: message"}`` of the failed units, in order.
        results: one entry per item; ``None`` where the unit failed.
    """

    def __init__(self, name: str, failures: dict, results: list):
        self.name, self.failures, self.results = name, failures, results
        n_ok = len(results) - len(failures)
        listed = "; ".join(f"unit {label!r}: {msg}" for label, msg in failures.items())
        super().__init__(f"{len(failures)} of {len(results)} units of {name!r} failed "
                         f"({n_ok} finished and kept): {listed}")


def unit_seed(name: str, label: str) -> int:
    """The seed a unit's generators start from: a 32-bit digest of ``name`` and ``label``."""
    digest = hashlib.sha256(f"{name}\x00{label}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextlib.contextmanager
def _unit_state(seed: int, threads: int, dtype: str):
    """Fresh generator states, the caller's threads and dtype; everything restored after."""
    import numpy as np
    import torch

    saved = (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
             torch.get_num_threads(), torch.get_default_dtype())
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    saved_cuda = torch.cuda.get_rng_state_all() if cuda else None
    try:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)   # seeds CUDA generators too
        torch.set_num_threads(threads)
        torch.set_default_dtype(getattr(torch, dtype))
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.random.set_rng_state(saved[2])
        torch.set_num_threads(saved[3])
        torch.set_default_dtype(saved[4])
        if saved_cuda is not None:
            torch.cuda.set_rng_state_all(saved_cuda)


#: glibc's mmap threshold that :func:`undo_malloc_trim` sets (bytes): large enough that a
#: unit's tensors are reused from the heap instead of being mapped anew at every allocation.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: glibc's trim threshold that :func:`undo_malloc_trim` sets (bytes): freed memory up to this
#: much stays with the process instead of going back to the system after every step.
TRIM_THRESHOLD = 64 * 1024 * 1024
_malloc_checked = False


def undo_malloc_trim() -> bool:
    """Raise glibc's mmap and trim thresholds (to :data:`MMAP_THRESHOLD` and
    :data:`TRIM_THRESHOLD`) in a process started with ``MALLOC_TRIM_THRESHOLD_`` in its
    environment; returns whether anything was changed.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``
    (``distributed.nanny.pre-spawn-environ``), which keeps a worker's unmanaged memory low
    but also fixes glibc's mmap threshold at 128 KiB: every tensor above it is mapped on
    allocation and unmapped on release. A training run allocates and frees such tensors at
    every step, so it spends most of its time in page faults (measured: 2.5x the wall time,
    system time 8.4 s against 0.3 s). ``ctdnn run`` starts its own workers without the
    variable; this undoes it on workers that someone else started (a ``--scheduler``
    cluster, dask-jobqueue), once per process, with ``mallopt``.
    """
    global _malloc_checked
    if _malloc_checked:
        return False
    _malloc_checked = True
    if "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # not glibc (e.g. musl): nothing to undo
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


# The loops of the unit being timed (``CTDNN_UNIT_TIMES`` set): one list of step CPU times per
# metered loop; None when no unit is timed.
_meter: contextvars.ContextVar = contextvars.ContextVar("ctdnn_step_meter", default=None)


def metered(steps):
    """Iterate over ``steps`` (an epoch or iteration loop), timing each step where a unit is timed.

    Where ``CTDNN_UNIT_TIMES`` is set (``ctdnn run --estimate``), the CPU time from handing out
    a step to being asked for the next one (the loop's body) is recorded for the unit running
    it, so the estimate can tell the cost per step from the unit's fixed cost; elsewhere this
    is ``iter(steps)``. A loop left early records its last step too.
    """
    loops = _meter.get()
    if loops is None:
        yield from steps
        return
    times: list = []
    loops.append(times)
    for step in steps:
        c0 = time.process_time()
        try:
            yield step
        finally:
            times.append(time.process_time() - c0)


def _loop_summary(times: list) -> dict:
    """``{"steps", "cpu_seconds", "steady_seconds"}`` of one metered loop: the steady cost per
    step leaves out the first step, which pays for warm-up (allocations, caches)."""
    rest = times[1:] or times
    return {"steps": len(times), "cpu_seconds": sum(times),
            "steady_seconds": sum(rest) / len(rest) if rest else 0.0}


def _call_unit(fn, item, seed: int, threads: int, dtype: str):
    """Run one unit (on a worker or in-process).

    Returns:
        ``(result, seconds, warnings)`` with ``seconds = (wall, cpu, loops)`` (the CPU time of
        this process during the unit measures its cost even on a busy machine; ``loops``
        summarises its :func:`metered` loops where ``CTDNN_UNIT_TIMES`` is set, else ``[]``)
        and ``warnings`` the ``(category, message)`` of each warning the unit raised.
    """
    undo_malloc_trim()
    loops = [] if os.environ.get(TIMES_ENV) else None
    token = _meter.set(loops)
    t0, c0 = time.perf_counter(), time.process_time()
    # Warnings come back with the result and are raised again by the caller, so a unit on a
    # worker warns where an in-process one would (the notebook), not on the worker's stderr.
    try:
        with _unit_state(seed, threads, dtype), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = fn(item)
    finally:
        _meter.reset(token)
    raised = [(w.category, str(w.message)) for w in caught]
    summary = [_loop_summary(t) for t in loops or ()]
    return result, (time.perf_counter() - t0, time.process_time() - c0, summary), raised


def _label(item) -> str:
    text = item if isinstance(item, str) else repr(item)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------- unit store

# Only plain data may come back from a stored unit: containers, numbers, strings, numpy arrays
# and ctdnn's enumerations (statuses). Anything else (an object whose class could run code
# when rebuilt) is refused.
_NUMPY_MODULES = {"numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.dtypes",
                  "numpy.core.numeric", "numpy._core.numeric"}
_NUMPY_NAMES = {"_reconstruct", "scalar", "ndarray", "dtype", "_frombuffer"}
_BUILTINS = {"complex", "set", "frozenset", "slice", "range", "bytearray"}


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module == "builtins" and name in _BUILTINS) or (
                module == "collections" and name == "OrderedDict") or (
                module in _NUMPY_MODULES and (name in _NUMPY_NAMES or name.endswith("DType"))):
            return super().find_class(module, name)
        if module == "ctdnn" or module.startswith("ctdnn."):
            obj = super().find_class(module, name)
            if isinstance(obj, type) and issubclass(obj, enum.Enum):
                return obj
        raise pickle.UnpicklingError(f"{module}.{name} is not plain data")


def _plain_loads(data: bytes):
    return _PlainUnpickler(io.BytesIO(data)).load()


class _UnitStore:
    """Finished units of one run: ``<dir>/<digest>.pkl``, each with a sha256 of its bytes."""

    def __init__(self, directory: Path, run_key: str, name: str):
        self.dir, self.run_key, self.name = Path(directory), run_key, name

    def _path(self, label: str) -> Path:
        h = hashlib.sha256(f"{self.run_key}\x00{self.name}\x00{label}".encode()).hexdigest()
        return self.dir / f"{h[:32]}.pkl"

    def get(self, label: str):
        path = self._path(label)
        try:
            blob = path.read_bytes()
            header, payload = blob.split(b"\n", 1)
            meta = json.loads(header)
            if (meta.get("run_key") != self.run_key or meta.get("label") != label
                    or meta.get("sha256") != hashlib.sha256(payload).hexdigest()):
                return _MISSING
            return _plain_loads(payload)
        except (OSError, ValueError, pickle.UnpicklingError, EOFError, AttributeError,
                ImportError, IndexError, TypeError):
            return _MISSING   # absent, foreign or damaged: the unit simply runs again

    def put(self, label: str, result) -> bool:
        """Store ``result``; returns False (nothing stored) if it is not plain data."""
        try:
            payload = pickle.dumps(result, protocol=5)
            _plain_loads(payload)   # refuse now what could not be read back later
        except (pickle.PicklingError, pickle.UnpicklingError, TypeError, AttributeError):
            return False
        meta = {"run_key": self.run_key, "name": self.name, "label": label,
                "sha256": hashlib.sha256(payload).hexdigest()}
        path = self._path(label)
        write_bytes_atomic(path, json.dumps(meta).encode() + b"\n" + payload)
        return True


# ----------------------------------------------------------------------------- progress

_progress_lock = threading.Lock()
_progress = {"done": 0, "total": 0, "current": ""}


def _report(*, add_total: int = 0, add_done: int = 0, current: str | None = None) -> None:
    path = os.environ.get(PROGRESS_ENV)
    with _progress_lock:
        _progress["total"] += add_total
        _progress["done"] += add_done
        if current is not None:
            _progress["current"] = current
        if path:
            try:
                write_text_atomic(Path(path), json.dumps(_progress))
            except OSError:
                pass   # progress is a courtesy; it never fails a run


def read_progress(path) -> dict | None:
    """The progress a run reported (``{"done", "total", "current"}``), or None if none yet."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _record_time(name: str, label: str, seconds: tuple) -> None:
    path = os.environ.get(TIMES_ENV)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"name": name, "label": label, "seconds": seconds[0],
                                 "cpu_seconds": seconds[1], "loops": seconds[2]}) + "\n")


# ----------------------------------------------------------------------------- execution

_clients: dict = {}
_clients_lock = threading.Lock()


def _client(address: str):
    """One Dask client per process and scheduler address, closed at exit."""
    from distributed import Client

    key = (os.getpid(), address)
    with _clients_lock:   # map_units may run in several threads (see concurrently)
        if key not in _clients:
            _clients[key] = Client(address, set_as_default=False, timeout="60s")
        return _clients[key]


_scope: contextvars.ContextVar = contextvars.ContextVar("ctdnn_unit_scope", default=())


@contextlib.contextmanager
def unit_scope(tag: str):
    """Store the units of :func:`map_units` calls inside the block under their own run key
    (the run's key with ``tag`` appended), so that two blocks whose units share names and
    labels (the same experiment on two data sources) never find each other's units.

    The scope belongs to the calling thread (a context variable), so blocks running at once
    under :func:`concurrently` keep their own.
    """
    token = _scope.set(_scope.get() + (str(tag),))
    try:
        yield
    finally:
        _scope.reset(token)


def _run_key() -> str:
    key = os.environ.get(RUN_KEY_ENV, "")
    return ":".join((key, *_scope.get())) if _scope.get() else key


def on_cluster() -> bool:
    """Whether :func:`map_units` sends units to a Dask scheduler (``CTDNN_SCHEDULER`` set)."""
    return bool(os.environ.get(SCHEDULER_ENV, "").strip())


def concurrently(*calls) -> list:
    """``[call() for call in calls]``, the calls at once when units go to a cluster.

    For independent pieces of one experiment that each hand their units to
    :func:`map_units` (one experiment on several data sets, or several kinds of units): on a
    cluster, each call waits for its own units in a thread of its own, so all their units
    are queued together and the workers stay busy; in-process the calls run one after
    another, exactly as written. The results are the same either way (every unit's state
    depends on its name and label only) and come back in the order of ``calls``. If calls
    raise, the first one's exception (in the order of ``calls``) is raised once all have
    ended.
    """
    if len(calls) < 2 or not on_cluster():
        return [call() for call in calls]
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=len(calls)) as pool:
        # each call in a copy of the caller's context, so an enclosing unit_scope holds there
        futures = [pool.submit(contextvars.copy_context().run, call) for call in calls]
        concurrent.futures.wait(futures)
    return [f.result() for f in futures]


def map_units(fn, items, *, name: str, labels=None) -> list:
    """``[fn(item) for item in items]``, each call an independent unit, results in order.

    Args:
        fn: a function of one item. On a cluster it is shipped to the workers with
            cloudpickle (functions defined in a notebook travel by value, with the globals
            they use), so its result must be picklable, and it must not rely on the caller's
            working directory or on changes it makes to global state.
        items: the units' inputs (small descriptors such as ``(basis, seed)``).
        name: what these units are, for messages, the dashboard and the unit store
            (e.g. ``"04_neural_ode_surrogates_ELM training"``).
        labels: one unique string per item naming it in messages and in the unit store
            (default: ``repr(item)``).

    Returns:
        ``[fn(items[0]), fn(items[1]), ...]``.

    Raises:
        UnitError: if any unit raised; it names each failed unit and its exception, and holds
            the others' results (which are also stored for a resumed run).
        ValueError: for an empty ``name``, labels of the wrong number, or repeated labels.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string naming the units, e.g. 'training runs'")
    items = list(items)
    labels = [_label(it) for it in items] if labels is None else [str(lab) for lab in labels]
    if len(labels) != len(items):
        raise ValueError(f"labels has {len(labels)} entries for {len(items)} items")
    repeated = sorted({lab for lab in labels if labels.count(lab) > 1})
    if repeated:
        raise ValueError(f"labels must be unique; repeated: {repeated} (pass labels=...)")

    import torch

    threads = torch.get_num_threads()
    dtype = str(torch.get_default_dtype()).removeprefix("torch.")
    unit_dir, run_key = os.environ.get(UNIT_DIR_ENV), _run_key()
    store = _UnitStore(Path(unit_dir), run_key, name) if unit_dir else None
    results = [_MISSING] * len(items)
    if store is not None:
        for i, lab in enumerate(labels):
            results[i] = store.get(lab)
    todo = [i for i, r in enumerate(results) if r is _MISSING]
    _report(add_total=len(items), add_done=len(items) - len(todo), current=name)
    failures = {}

    raised_by = {}

    def finished(i, result, seconds, raised):
        raised_by[i] = raised
        results[i] = result
        if store is not None:
            store.put(labels[i], result)
        _record_time(name, labels[i], seconds)
        _report(add_done=1)

    def failed(i, exc):
        failures[labels[i]] = f"{type(exc).__name__}: {exc}"
        results[i] = None
        _report(add_done=1)

    address = os.environ.get(SCHEDULER_ENV, "").strip()
    if address and todo:
        _run_on_cluster(address, fn, items, labels, todo, name, threads, dtype, finished, failed)
    else:
        for i in todo:
            try:
                result, seconds, raised = _call_unit(fn, items[i], unit_seed(name, labels[i]),
                                                     threads, dtype)
            except Exception as exc:   # one failed unit must not lose the others
                failed(i, exc)
            else:
                finished(i, result, seconds, raised)
    for i in sorted(raised_by):   # in submission order, whatever order the units ended in
        for category, message in raised_by[i]:
            warnings.warn(f"{labels[i]}: {message}", category, stacklevel=2)
    if failures:
        ordered = {lab: failures[lab] for lab in labels if lab in failures}
        raise UnitError(name, ordered, results)
    return results


def _run_on_cluster(address, fn, items, labels, todo, name, threads, dtype, finished, failed):
    from distributed import as_completed

    client = _client(address)
    # The function (with the data it closes over) travels once per worker, not once per unit.
    [fn_future] = client.scatter([fn], hash=False)
    prefix = re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_") or "unit"
    token = uuid.uuid4().hex[:8]
    futures, index = [], {}
    for i in todo:
        fut = client.submit(_call_unit, fn_future, items[i], unit_seed(name, labels[i]),
                            threads, dtype, key=f"{prefix}-{i}-{token}", pure=False)
        futures.append(fut)
        index[fut.key] = i
    try:
        for fut in as_completed(futures, loop=client.loop):
            i = index[fut.key]
            if fut.status == "error":
                failed(i, fut.exception())
            else:
                try:
                    result, seconds, raised = fut.result()
                except Exception as exc:   # e.g. a result that cannot be unpickled here
                    failed(i, exc)
                else:
                    finished(i, result, seconds, raised)
            fut.release()
    finally:
        fn_future.release()

