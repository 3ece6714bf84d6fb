"""The three surrogate-modelling data sets: loading, splitting and normalisation.

:func:`~ctdnn.data.load` returns a :class:`~ctdnn.data.Dataset` holding normalised train/validation/test
tensors plus the affine maps that produced them. The data come either from the
paper's files (:mod:`ctdnn.data.sources`) or from this package's simulators,
whose outputs are cached on disk (:func:`~ctdnn.data.simulate`).

Splits. ELM paper data use the file's own 1-based ``idtrain/idval/idtest``.
Everything else uses ``numpy.random.default_rng(seed).permutation(n)``: the
first ``n_train`` permuted indices are the training set, the next ``n_val``
the validation set, the rest the test set. The same ``seed`` gives the same
split; ``seed`` affects only the split, never the simulated samples (those are
set by ``simulator_seed``). Sizes for ``n`` samples:

* ELM: 1740/497/249 at n = 2486, otherwise in those proportions.
* CDR: 400/200/200 at n = 800, otherwise in those proportions (1/2, 1/4, 1/4).
* DCR: 400/200/(n - 600) for n >= 700; below that 4:2:1, which is what the
  paper's 400/200/100 would be at n = 700, so sizes do not jump at the switch.

The paper's DCR file serves any ``n_samples`` from 700 to 10000: the split is
the one of all 10000 samples (400/200/9400), and the test set keeps its first
``n_samples - 600`` indices, so training and validation data are the paper's
whatever the count. ``meta["split"]["test_subsample"]`` and
:meth:`ctdnn.data.Dataset.summary` say so.

Rounded proportions keep at least one sample in every part; n must be >= 3.

Normalisation (``normalize=``; fitted on the training part only where
statistics are needed; every map is ``(raw - shift) / scale`` per feature):

* ELM ``"range"`` (default): inputs ``2 (x - mid) / (hi - lo)`` with the
  parameter ranges (``paramrange`` of the file, or the simulator's ranges),
  so inputs lie in [-1, 1]; outputs min-max to [0, 1] with train min and max.
* CDR ``"zscore"`` (default, as the authors' Python): inputs z-scored with the
  train mean and population std (ddof = 0); outputs unchanged. ``"none"`` is
  the authors' MATLAB setting.
* DCR ``"center"`` (default): outputs minus their train mean; inputs unchanged.
  ``"center_zscore"``: the same outputs, and inputs z-scored with the train mean and
  population std (the authors' Python neural-ODE code, ``load_DCR``).
* ``"none"`` for every set: raw values.

A feature that is constant over the training part gets scale 1 instead of 0.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from ..checks import resolve_device
from . import sources
from .cache import load_arrays, save_arrays, settings_key, simulated_cache_dir
from .sources import DataUnavailableError, Located

logger = logging.getLogger("ctdnn.data")

DATASETS = ("ELM", "CDR", "DCR")
SOURCES = ("auto", "paper", "simulated")

#: Sample counts of the paper's data sets (also the simulators' defaults here).
PAPER_N_SAMPLES = {"ELM": 2486, "CDR": 800, "DCR": 10000}

#: Numbers of inputs and outputs of the paper's data sets, which the simulators
#: reproduce with their default settings.
PAPER_FEATURES = {"ELM": (15, 10), "CDR": (55, 72), "DCR": (3, 882)}

#: Fewest DCR samples the paper file can serve: its 400/200 train/validation
#: split and at least 100 test samples.
DCR_MIN_PAPER_SAMPLES = 700

#: Allowed ``normalize`` modes per data set; the first is the default.
NORMALIZATIONS = {"ELM": ("range", "none"), "CDR": ("zscore", "none"),
                  "DCR": ("center", "center_zscore", "none")}

_SIMULATORS = {
    "ELM": ("ctdnn.data.dalec", "simulate_dalec"),
    "CDR": ("ctdnn.data.cdr", "simulate_cdr"),
    "DCR": ("ctdnn.data.dcr", "simulate_dcr"),
}


class DataSourceWarning(UserWarning):
    """``source="auto"`` used the simulator instead of the paper file."""


# ---------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class AffineMap:
    """Per-feature affine normalisation ``normalised = (raw - shift) / scale``.

    Attributes:
        shift: (n_features,) float64.
        scale: (n_features,) float64, nonzero.
        description: human-readable formula.
    """

    shift: np.ndarray
    scale: np.ndarray
    description: str

    @classmethod
    def identity(cls, n: int) -> AffineMap:
        return cls(np.zeros(n), np.ones(n), "unchanged")

    def apply(self, a):
        """Normalise ``a``: (batch, n_features) tensor or array -> same type."""
        shift, scale = self._params_like(a)
        return (a - shift) / scale

    def invert(self, a):
        """Undo :meth:`apply`: (batch, n_features) tensor or array -> same type."""
        shift, scale = self._params_like(a)
        return a * scale + shift

    def _params_like(self, a):
        if isinstance(a, torch.Tensor):
            kw = {"dtype": a.dtype if a.is_floating_point() else torch.get_default_dtype(),
                  "device": a.device}
            return torch.as_tensor(self.shift, **kw), torch.as_tensor(self.scale, **kw)
        return self.shift, self.scale

    def as_dict(self) -> dict[str, Any]:
        return {"description": self.description, "shift": self.shift.tolist(),
                "scale": self.scale.tolist()}


def _safe_scale(scale: np.ndarray) -> np.ndarray:
    scale = np.asarray(scale, dtype=np.float64).copy()
    scale[~(np.abs(scale) > 0)] = 1.0
    return scale


def _fit_maps(name: str, mode: str, x_train: np.ndarray, y_train: np.ndarray,
              x_range: np.ndarray | None) -> tuple[AffineMap, AffineMap]:
    n_in, n_out = x_train.shape[1], y_train.shape[1]
    if mode == "none":
        return AffineMap.identity(n_in), AffineMap.identity(n_out)
    if mode == "range":
        lo, hi = x_range[:, 0], x_range[:, 1]
        x_map = AffineMap((lo + hi) / 2.0, _safe_scale((hi - lo) / 2.0),
                          "2 (x - mid) / (hi - lo) with the parameter ranges, into [-1, 1]")
        y_min, y_max = y_train.min(axis=0), y_train.max(axis=0)
        y_map = AffineMap(y_min, _safe_scale(y_max - y_min),
                          "(y - min) / (max - min) with train min and max, into [0, 1]")
        return x_map, y_map
    if mode == "zscore":
        x_map = AffineMap(x_train.mean(axis=0), _safe_scale(x_train.std(axis=0)),
                          "(x - mean) / std with train mean and std (ddof=0)")
        return x_map, AffineMap.identity(n_out)
    if mode in ("center", "center_zscore"):
        y_map = AffineMap(y_train.mean(axis=0), np.ones(n_out), "y - mean with train mean")
        if mode == "center":
            return AffineMap.identity(n_in), y_map
        x_map = AffineMap(x_train.mean(axis=0), _safe_scale(x_train.std(axis=0)),
                          "(x - mean) / std with train mean and std (ddof=0)")
        return x_map, y_map
    raise AssertionError(mode)  # modes are validated in load()


# ---------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------


def _proportional(n: int, weights: tuple[int, int, int]) -> tuple[int, int, int]:
    total = sum(weights)
    n_train = max(1, int(round(n * weights[0] / total)))
    n_val = max(1, int(round(n * weights[1] / total)))
    n_test = n - n_train - n_val
    if n_test < 1:
        raise ValueError(f"n_samples={n} is too small for a train/val/test split")
    return n_train, n_val, n_test


def split_sizes(name: str, n: int) -> tuple[int, int, int]:
    """Train/validation/test sizes for ``n`` samples of data set ``name``.

    See the module docstring for the rule of each data set.
    """
    name = _check_name(name)
    if n < 3:
        raise ValueError(f"n_samples={n} is too small for a train/val/test split (need >= 3)")
    if name == "ELM":
        return _proportional(n, (1740, 497, 249))
    if name == "CDR":
        return _proportional(n, (400, 200, 200))
    if n >= 700:
        return 400, 200, n - 600
    return _proportional(n, (4, 2, 1))


#: Random-split rules: ``"default"`` draws the permutation from
#: ``numpy.random.default_rng(seed)``; ``"authors"`` from the legacy
#: ``numpy.random.RandomState(seed)``, as the authors' Python code does
#: (``_random_split`` in ``python/surrogate/train_surrogate_node.py``, which passes the
#: training seed as the split seed). The paper's ELM file brings its own split either way.
SPLIT_RULES = ("default", "authors")


def random_split(n: int, sizes: tuple[int, int, int], seed: int, rule: str = "default"):
    """Index arrays (train, val, test) from a seeded permutation of ``range(n)``.

    Args:
        n: number of samples.
        sizes: ``(n_train, n_val, n_test)``; train takes the first ``n_train`` entries of
            the permutation, validation the next ``n_val``, test the rest.
        seed: the permutation's seed.
        rule: one of ``SPLIT_RULES``.
    """
    if rule not in SPLIT_RULES:
        raise ValueError(f"split rule must be one of {SPLIT_RULES}, got {rule!r}")
    if rule == "authors":
        perm = np.random.RandomState(seed).permutation(n)
    else:
        perm = np.random.default_rng(seed).permutation(n)
    n_train, n_val, _ = sizes
    return perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]


def _split_method(seed: int, rule: str) -> str:
    return (f"numpy.random.RandomState({seed}).permutation (the authors' rule)"
            if rule == "authors" else f"numpy.random.default_rng({seed}).permutation")


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------


class Dataset:
    """Normalised train/validation/test tensors of one data set.

    Attributes:
        name: ``"ELM"``, ``"CDR"`` or ``"DCR"``.
        source: ``"paper"`` or ``"simulated"``.
        x_train, x_val, x_test: (n_split, n_in) normalised inputs.
        y_train, y_val, y_test: (n_split, n_out) normalised outputs.
        x_map, y_map: the :class:`~ctdnn.data.AffineMap` applied to raw inputs / outputs.
        meta: JSON-serialisable record of origin (file path and sha256, or
            simulator settings), split, seed and normalisation statistics.
    """

    _SPLITS = ("train", "val", "test")

    def __init__(self, *, name: str, source: str, tensors: dict[str, torch.Tensor],
                 x_map: AffineMap, y_map: AffineMap, meta: dict[str, Any]):
        self.name = name
        self.source = source
        for key in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            setattr(self, key, tensors[key])
        self.x_map = x_map
        self.y_map = y_map
        self.meta = meta

    @property
    def n_in(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_out(self) -> int:
        return int(self.y_train.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        return self.x_train.dtype

    @property
    def device(self) -> torch.device:
        return self.x_train.device

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_train, y_train)``."""
        return self.x_train, self.y_train

    @property
    def val(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_val, y_val)``."""
        return self.x_val, self.y_val

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_test, y_test)``."""
        return self.x_test, self.y_test

    @property
    def sizes(self) -> tuple[int, int, int]:
        """Number of samples in (train, val, test)."""
        return tuple(int(getattr(self, f"x_{s}").shape[0]) for s in self._SPLITS)

    def normalize_x(self, x):
        """Raw inputs (batch, n_in) -> normalised, as the stored ``x_*``."""
        return self.x_map.apply(x)

    def denormalize_x(self, x):
        """Normalised inputs (batch, n_in) -> raw; inverse of :meth:`normalize_x`."""
        return self.x_map.invert(x)

    def normalize_y(self, y):
        """Raw outputs (batch, n_out) -> normalised, as the stored ``y_*``."""
        return self.y_map.apply(y)

    def denormalize_y(self, y):
        """Normalised outputs (batch, n_out), e.g. predictions -> raw units."""
        return self.y_map.invert(y)

    def to(self, device=None, dtype: torch.dtype | None = None) -> Dataset:
        """A new Dataset with every tensor moved/cast; ``self`` is unchanged."""
        device = resolve_device(device) if device is not None else self.device
        dtype = dtype if dtype is not None else self.dtype
        tensors = {
            f"{v}_{s}": getattr(self, f"{v}_{s}").to(device=device, dtype=dtype)
            for v in ("x", "y") for s in self._SPLITS
        }
        meta = copy.deepcopy(self.meta)
        meta["dtype"] = _dtype_name(dtype)
        meta["device"] = str(torch.device(device))
        return Dataset(name=self.name, source=self.source, tensors=tensors,
                       x_map=self.x_map, y_map=self.y_map, meta=meta)

    def _origin(self) -> str:
        if self.source == "paper":
            sub = self.meta["split"].get("test_subsample")
            kept = (f" (test set: {sub['kept']} of its {sub['of']} test samples)"
                    if sub else "")
            return f"paper file {self.meta['file']['filename']}{kept}"
        sim = self.meta["simulator"]
        return f"simulated by {sim['function']} (seed {sim['seed']})"

    def _one_line(self) -> str:
        tr, va, te = self.sizes
        return (f"{self.name}: {self._origin()}, {self.n_in} -> {self.n_out}, "
                f"train/val/test = {tr}/{va}/{te}, {_dtype_name(self.dtype)} on {self.device}")

    def summary(self) -> str:
        """Two lines: the data set, its source and split sizes; then normalisation."""
        norm = self.meta["normalization"]
        return (f"{self._one_line()}\n"
                f"  split: {self.meta['split']['method']}; normalisation '{norm['mode']}': "
                f"inputs {self.x_map.description}; outputs {self.y_map.description}")

    def __repr__(self) -> str:
        return f"<Dataset {self._one_line()}>"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


# ---------------------------------------------------------------------------
# Simulated data and their cache
# ---------------------------------------------------------------------------


class Simulated(NamedTuple):
    """Raw simulator output as returned by :func:`~ctdnn.data.simulate`.

    Attributes:
        x: (n, n_in) float64 inputs.
        y: (n, n_out) float64 outputs.
        x_range: (n_in, 2) parameter ranges (ELM only, else ``None``).
        settings: the simulator's settings record.
        path: the cache file.
        cache_hit: whether it was read from the cache rather than simulated.
        key: the cache key.
        function: dotted name of the simulator.
    """

    x: np.ndarray
    y: np.ndarray
    x_range: np.ndarray | None
    settings: dict
    path: Path
    cache_hit: bool
    key: str
    function: str


def _simulator(name: str):
    module_name, func_name = _SIMULATORS[name]
    try:
        module = importlib.import_module(module_name)
        return module, getattr(module, func_name)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"the {name} simulator {module_name}.{func_name} is not available: {err}"
        ) from err


def _source_digest(func) -> str:
    """Digest of the file defining ``func``, so edits to a simulator invalidate its cache."""
    try:
        source_file = inspect.getsourcefile(func)
        return hashlib.sha256(Path(source_file).read_bytes()).hexdigest()[:16]
    except (TypeError, OSError):
        return "unknown"


def simulated_cache_file(name: str, n_samples: int, seed: int, key: str) -> Path:
    """Cache path of one simulated data set."""
    return simulated_cache_dir() / f"{name}-n{n_samples}-seed{seed}-{key}.npz"


def simulate(name: str, *, n_samples: int | None = None, seed: int = 0, progress: bool = True,
             force: bool = False, **overrides) -> Simulated:
    """Simulated raw data for ``name``, from the disk cache or a fresh simulation.

    The cache key hashes the request (data set, simulator, ``n_samples``,
    ``seed``, ``overrides``), a digest of the simulator's source file and the
    cache format version. A fresh result is written atomically, so an
    interrupted simulation leaves no partial file. An unreadable cache file is
    replaced.

    Args:
        name: data set name (case-insensitive).
        n_samples: number of samples; default the paper's count.
        seed: simulator seed.
        progress: show the simulator's progress bar.
        force: simulate even if a cached result exists.
        **overrides: simulator settings (see the simulator's docstring).
    """
    name = _check_name(name)
    n_samples = PAPER_N_SAMPLES[name] if n_samples is None else int(n_samples)
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    module, func = _simulator(name)
    function = f"{_SIMULATORS[name][0]}.{_SIMULATORS[name][1]}"
    key = settings_key({
        "name": name, "function": function, "n_samples": n_samples, "seed": int(seed),
        "overrides": overrides, "source": _source_digest(func),
    })
    path = simulated_cache_file(name, n_samples, int(seed), key)
    features = None if overrides else PAPER_FEATURES[name]
    if path.is_file() and not force:
        try:
            arrays, meta = load_arrays(path)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
            # Empty, truncated or not an .npz written here: simulate again.
            problem = f"it cannot be read ({type(err).__name__}: {err})"
        else:
            problem = _cache_problem(name, arrays, meta, n_samples, key, features)
        if problem is None:
            return Simulated(arrays["x"], arrays["y"], arrays.get("x_range"),
                             meta.get("settings", {}), path, True, key, function)
        warnings.warn(f"regenerating the simulated {name} data: the cache file {path} "
                      f"is not valid: {problem}", stacklevel=2)
        path.unlink(missing_ok=True)
    x, y, settings = func(n_samples=n_samples, seed=int(seed), progress=progress, **overrides)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    problem = _array_problem(x, y, n_samples, features)
    if problem:
        raise RuntimeError(f"the {name} simulator returned {problem}")
    arrays = {"x": x, "y": y}
    x_range = None
    if name == "ELM":
        x_range = np.asarray(module.dalec_parameter_ranges(), dtype=np.float64)
        arrays["x_range"] = x_range
    save_arrays(path, {"name": name, "function": function, "n_samples": n_samples,
                       "seed": int(seed), "overrides": overrides, "key": key,
                       "settings": settings}, **arrays)
    return Simulated(x, y, x_range, settings, path, False, key, function)


def _array_problem(x: np.ndarray, y: np.ndarray, n_samples: int,
                   features: tuple[int, int] | None) -> str | None:
    """What is wrong with simulated ``x``, ``y`` (None if nothing).

    ``features``: the expected ``(n_in, n_out)``, or None where simulator
    settings may change them (then only the sample count is checked).
    """
    n_in, n_out = features if features else ("n_in", "n_out")
    expected = f"expected x ({n_samples}, {n_in}) and y ({n_samples}, {n_out})"
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != n_samples or y.shape[0] != n_samples:
        return f"x {x.shape} and y {y.shape}; {expected}"
    if features and (x.shape[1], y.shape[1]) != tuple(features):
        return f"x {x.shape} and y {y.shape}; {expected}"
    for label, a in (("x", x), ("y", y)):
        if not np.issubdtype(a.dtype, np.floating):
            return f"{label} of dtype {a.dtype}; expected floating-point values"
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            return f"{bad} non-finite value(s) (NaN or inf) in {label}"
    return None


def _cache_problem(name: str, arrays: dict, meta: dict, n_samples: int, key: str,
                   features: tuple[int, int] | None) -> str | None:
    """What is wrong with the contents of a simulated-data cache file (None if nothing)."""
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        return f"array(s) {', '.join(missing)} missing"
    if meta.get("key") != key:
        return f"it records the request key {meta.get('key')!r}, expected {key!r}"
    problem = _array_problem(arrays["x"], arrays["y"], n_samples, features)
    if problem:
        return f"it holds {problem}"
    if name == "ELM":
        x_range = arrays.get("x_range")
        n_in = arrays["x"].shape[1]
        if x_range is None or x_range.shape != (n_in, 2) or not np.all(np.isfinite(x_range)):
            return f"x_range is missing, not ({n_in}, 2), or not finite"
    return None


# ---------------------------------------------------------------------------
# load()
# ---------------------------------------------------------------------------


def _check_name(name: str) -> str:
    key = str(name).upper()
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names are {', '.join(DATASETS)}")
    return key


def _check_source(source: str) -> str:
    key = str(source).lower()
    if key not in SOURCES:
        raise ValueError(f"unknown source {source!r}; valid sources are {', '.join(SOURCES)}")
    return key


def _check_normalize(name: str, normalize: str | None) -> str:
    allowed = NORMALIZATIONS[name]
    if normalize is None:
        return allowed[0]
    mode = str(normalize).lower()
    if mode not in allowed:
        raise ValueError(f"normalize={normalize!r} is not available for {name}; "
                         f"choose one of {', '.join(allowed)} (default {allowed[0]})")
    return mode


def _paper_incompatibility(name: str, n_samples: int | None, overrides: dict) -> str | None:
    """Why a request cannot be served by the paper file (None if it can)."""
    total = PAPER_N_SAMPLES[name]
    if name == "DCR" and n_samples is not None and int(n_samples) != total:
        if not DCR_MIN_PAPER_SAMPLES <= int(n_samples) <= total:
            return (f"n_samples={n_samples} was requested and the paper file serves "
                    f"{DCR_MIN_PAPER_SAMPLES} to {total} (its 400/200 train/validation "
                    f"split and a subsample of its test set)")
    elif n_samples is not None and int(n_samples) != total:
        return f"n_samples={n_samples} was requested and the paper file has {total}"
    if overrides:
        return f"simulator settings were given ({', '.join(sorted(overrides))})"
    return None


class _Raw(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    splits: tuple[np.ndarray, np.ndarray, np.ndarray]
    split_method: str
    x_range: np.ndarray | None
    origin: dict


def _raw_from_paper(name: str, located: Located, seed: int,
                    n_samples: int | None = None, split: str = "default") -> _Raw:
    spec = sources.paper_file(name)
    mat = sources.read_paper(name, located.path)
    origin = {"file": {"filename": spec.filename, "path": str(located.path),
                       "location": located.location, "sha256": located.sha256,
                       "url": spec.url}}
    if name == "ELM":
        x = np.asarray(mat["xall"], dtype=np.float64)
        y = np.asarray(mat["yall"], dtype=np.float64)
        splits = tuple(np.asarray(mat[k], dtype=np.int64).ravel() - 1
                       for k in ("idtrain", "idval", "idtest"))
        return _Raw(x, y, splits, "file indices idtrain/idval/idtest (1-based)",
                    np.asarray(mat["paramrange"], dtype=np.float64), origin)
    # CDR and DCR store one sample per column.
    x = np.asarray(mat["Y"], dtype=np.float64).T
    y = np.asarray(mat["C"], dtype=np.float64).T
    n_file = x.shape[0]
    i_train, i_val, i_test = random_split(n_file, split_sizes(name, n_file), seed, split)
    method = _split_method(seed, split)
    if n_samples is not None and int(n_samples) < n_file:
        # Only the test set shrinks: training and validation stay the paper's.
        kept = int(n_samples) - len(i_train) - len(i_val)
        origin["test_subsample"] = {"kept": kept, "of": len(i_test), "n_samples_file": n_file}
        i_test = i_test[:kept]
        method += (f"; n_samples={int(n_samples)}: test set subsampled to its first {kept} "
                   f"of {n_file - len(i_train) - len(i_val)} indices")
    return _Raw(x, y, (i_train, i_val, i_test), method, None, origin)


def _raw_from_simulator(name: str, n_samples: int | None, simulator_seed: int, seed: int,
                        progress: bool, overrides: dict, split: str = "default") -> _Raw:
    sim = simulate(name, n_samples=n_samples, seed=simulator_seed, progress=progress,
                   **overrides)
    n = sim.x.shape[0]
    origin = {"simulator": {"function": sim.function, "seed": int(simulator_seed),
                            "n_samples": n, "overrides": overrides,
                            "settings": sim.settings, "cache_file": str(sim.path),
                            "cache_key": sim.key, "cache_hit": sim.cache_hit}}
    return _Raw(sim.x, sim.y, random_split(n, split_sizes(name, n), seed, split),
                _split_method(seed, split), sim.x_range, origin)


def load(name: str, *, source: str = "auto", seed: int = 0, dtype: torch.dtype = torch.float32,
         device="cpu", n_samples: int | None = None, progress: bool = True,
         normalize: str | None = None, simulator_seed: int = 0, split: str = "default",
         **simulator_overrides) -> Dataset:
    """Load a data set of the paper, split and normalised.

    Args:
        name: ``"ELM"``, ``"CDR"`` or ``"DCR"`` (case-insensitive).
        source: ``"paper"`` (the published file: ``CTDNN_DATA_DIR``, cache, or
            download), ``"simulated"`` (this package's simulator, cached), or
            ``"auto"`` (the paper file when it can be had and the request
            fits it, otherwise the simulator; a :class:`~ctdnn.data.DataSourceWarning`
            says so and ``meta["source_reason"]`` records why).
        seed: seed of the random split (ELM paper data use the file's split).
        dtype: dtype of the returned tensors.
        device: device of the returned tensors (``"auto"``: CUDA if present).
        n_samples: number of samples (default: the paper's count). Simulated
            data have exactly this many. The paper's ELM and CDR files serve
            only their own count; the DCR file serves 700 to 10000 samples by
            keeping its train/validation split and subsampling its test set
            (see the module docstring), so every preset uses the paper's DCR
            data where the file is present.
        progress: show download / simulation progress bars.
        normalize: normalisation mode (see the module docstring); ``None``
            selects the data set's default.
        simulator_seed: seed passed to the simulator; the simulated samples
            depend on it, the split does not.
        split: the random-split rule, one of ``SPLIT_RULES`` (the ELM file's own
            split is used with either).
        **simulator_overrides: settings passed to the simulator.

    Returns:
        A :class:`~ctdnn.data.Dataset`.

    Raises:
        ValueError: unknown name, source or normalisation, or a paper request
            with ``n_samples``/overrides the file cannot satisfy.
        DataUnavailableError: ``source="paper"`` and the file cannot be had.
        DataIntegrityError: the file in ``CTDNN_DATA_DIR`` fails its check
            (also with ``source="auto"``: a bad local file is never skipped
            silently).
    """
    name = _check_name(name)
    requested = _check_source(source)
    mode = _check_normalize(name, normalize)
    if split not in SPLIT_RULES:
        raise ValueError(f"split={split!r} is not a split rule; choose one of {SPLIT_RULES}")
    device = resolve_device(device)
    spec = sources.paper_file(name)
    incompatible = _paper_incompatibility(name, n_samples, simulator_overrides)

    raw = None
    if requested == "paper":
        if incompatible:
            raise ValueError(f"source='paper' cannot serve this request: {incompatible}; "
                             f"use source='simulated'")
        raw = _raw_from_paper(name, sources.fetch(name, progress=progress), seed, n_samples,
                              split)
        reason = "source='paper' was requested"
    elif requested == "simulated":
        reason = "source='simulated' was requested"
    else:
        if incompatible:
            reason = incompatible
        else:
            try:
                located = sources.fetch(name, progress=progress)
            except DataUnavailableError as err:
                reason = err.reason
            else:
                raw = _raw_from_paper(name, located, seed, n_samples, split)
                reason = f"{spec.filename} found ({located.location}: {located.path})"
                logger.info("%s: using the paper file: %s", name, reason)
        if raw is None:
            warnings.warn(f"{name}: using simulated data because {reason}",
                          DataSourceWarning, stacklevel=2)
    used = "paper" if raw is not None else "simulated"
    if raw is None:
        try:
            raw = _raw_from_simulator(name, n_samples, simulator_seed, seed, progress,
                                      simulator_overrides, split)
        except ImportError as err:
            if requested == "simulated":
                raise
            raise DataUnavailableError(f"{name}: {reason}, and {err}", reason=reason) from err
    return _assemble(name, used, requested, reason, mode, seed, raw, dtype, device)


def _assemble(name, used, requested, reason, mode, seed, raw: _Raw, dtype, device) -> Dataset:
    i_train, i_val, i_test = raw.splits
    origin = dict(raw.origin)
    subsample = origin.pop("test_subsample", None)
    split = {"method": raw.split_method, "train": int(len(i_train)), "val": int(len(i_val)),
             "test": int(len(i_test))}
    if subsample is not None:
        split["test_subsample"] = subsample
        reason += (f"; n_samples={len(i_train) + len(i_val) + len(i_test)}: the paper's "
                   f"train/validation split with {subsample['kept']} of its "
                   f"{subsample['of']} test samples")
    x_map, y_map = _fit_maps(name, mode, raw.x[i_train], raw.y[i_train], raw.x_range)
    tensors = {}
    for part, idx in zip(Dataset._SPLITS, raw.splits):
        tensors[f"x_{part}"] = torch.as_tensor(x_map.apply(raw.x[idx]), dtype=dtype,
                                               device=device)
        tensors[f"y_{part}"] = torch.as_tensor(y_map.apply(raw.y[idx]), dtype=dtype,
                                               device=device)
    meta = {
        "name": name,
        "source": used,
        "requested_source": requested,
        "source_reason": reason,
        **origin,
        "n_samples": int(len(i_train) + len(i_val) + len(i_test)),
        "n_in": int(raw.x.shape[1]),
        "n_out": int(raw.y.shape[1]),
        "seed": int(seed),
        "split": split,
        "normalization": {"mode": mode, "x": x_map.as_dict(), "y": y_map.as_dict()},
        "dtype": _dtype_name(dtype),
        "device": str(device),
    }
    return Dataset(name=name, source=used, tensors=tensors, x_map=x_map, y_map=y_map, meta=meta)
