"""``python -m ctdnn data ...``: fetch the paper files, run simulators, inspect caches.

Expected failures (missing data, bad files, bad arguments) print one line to
stderr and give exit status 1; nothing prints a traceback for them.
"""

from __future__ import annotations

import functools
import os
import sys

from . import sources
from .cache import cache_dir, is_temporary, read_meta, simulated_cache_dir
from .dataset import DATASETS, simulate
from .sources import DataError, DataIntegrityError


def register(subparsers) -> None:
    """Add the ``data`` command to the top-level subparsers."""
    data = subparsers.add_parser("data", help="obtain and inspect the data sets",
                                 description=__doc__.splitlines()[0])
    actions = data.add_subparsers(dest="action", metavar="ACTION", required=True)
    names = ", ".join(DATASETS)

    fetch = actions.add_parser("fetch", help="download and verify paper files",
                               description="Obtain a paper file (CTDNN_DATA_DIR, cache, or "
                               "a pinned download checked against its sha256).")
    fetch.add_argument("name", metavar="NAME", help=f"{names} or all")
    fetch.add_argument("--force", action="store_true", help="download again into the cache")
    fetch.add_argument("--no-progress", dest="progress", action="store_false")
    fetch.set_defaults(func=_fetch)

    sim = actions.add_parser("simulate", help="run a simulator and cache its output",
                             description="Generate simulated data (cached on disk).")
    sim.add_argument("name", metavar="NAME", help=f"{names} or all")
    sim.add_argument("--n-samples", type=int, default=None,
                     help="number of samples (default: the paper's count)")
    sim.add_argument("--seed", type=int, default=0, help="simulator seed (default 0)")
    sim.add_argument("--force", action="store_true", help="simulate even if cached")
    sim.add_argument("--no-progress", dest="progress", action="store_false")
    sim.set_defaults(func=_simulate)

    info = actions.add_parser("info", help="show cached and local data files",
                              description="Show where data files are and whether they are valid.")
    info.add_argument("name", metavar="NAME", nargs="?", default="all", help=f"{names} or all")
    info.set_defaults(func=_info)


def _reports_errors(func):
    @functools.wraps(func)
    def wrapper(args) -> int:
        try:
            return func(args)
        except (DataError, ValueError, ImportError) as err:
            _error(err)
            return 1
    return wrapper


def _error(err: BaseException) -> None:
    text = " ".join(str(err).split())  # always a single line
    print(f"ctdnn data: error: {text}", file=sys.stderr)


def _names(name: str) -> list[str]:
    if name.lower() == "all":
        return list(DATASETS)
    key = name.upper()
    if key not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid names are "
                         f"{', '.join(DATASETS)}, all")
    return [key]


@_reports_errors
def _fetch(args) -> int:
    status = 0
    for name in _names(args.name):
        try:
            found = sources.fetch(name, force=args.force, progress=args.progress)
        except DataError as err:
            _error(err)
            status = 1
            continue
        print(f"{name}: {found.path} ({found.location}, sha256 {found.sha256})")
    return status


@_reports_errors
def _simulate(args) -> int:
    for name in _names(args.name):
        sim = simulate(name, n_samples=args.n_samples, seed=args.seed,
                       progress=args.progress, force=args.force)
        state = "cached" if sim.cache_hit else "simulated"
        print(f"{name}: {state}, x {sim.x.shape}, y {sim.y.shape} -> {sim.path}")
    return 0


@_reports_errors
def _info(args) -> int:
    names = _names(args.name)
    env_cache = os.environ.get("CTDNN_CACHE_DIR", "").strip()
    folder = sources.data_dir()
    print(f"cache directory: {cache_dir()}"
          f" ({'CTDNN_CACHE_DIR' if env_cache else 'default; set CTDNN_CACHE_DIR to change'})")
    print(f"CTDNN_DATA_DIR: {folder if folder else 'not set'}")
    print(f"downloads: {'disabled (CTDNN_OFFLINE=1)' if sources.is_offline() else 'enabled'}")
    for name in names:
        spec = sources.paper_file(name)
        print(f"\n{name}: {spec.filename}  <{spec.url}>")
        if folder is not None:
            print(f"  CTDNN_DATA_DIR: {_describe(spec, folder / spec.filename)}")
        print(f"  cache:          {_describe(spec, sources.cache_path(spec))}")
        _list_simulated(name)
    return 0


def _describe(spec, path) -> str:
    if not path.is_file():
        return f"missing ({path})"
    try:
        digest = sources.verify(spec, path)
    except DataIntegrityError as err:
        return f"INVALID, {path.stat().st_size} bytes: {err}"
    return f"valid, {path} ({_size(path.stat().st_size)}, sha256 {digest})"


def _list_simulated(name: str) -> None:
    folder = simulated_cache_dir()
    files = sorted(folder.glob(f"{name}-*.npz")) if folder.is_dir() else []
    leftovers = sorted(p for p in folder.glob(f".tmp-{name}-*")) if folder.is_dir() else []
    print(f"  simulated:      {len(files)} cached file(s) in {folder}")
    for path in files:
        try:
            meta = read_meta(path)
            detail = (f"n_samples={meta.get('n_samples')}, seed={meta.get('seed')}, "
                      f"overrides={meta.get('overrides') or {}}")
        except Exception as err:  # a damaged file is reported, not fatal
            detail = f"unreadable ({type(err).__name__})"
        print(f"    {path.name}  {_size(path.stat().st_size)}  {detail}")
    for path in leftovers:
        if is_temporary(path):
            print(f"    {path.name}  (leftover of an interrupted write; safe to delete)")


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit in ("KB", "MB", "GB"):
        n /= 1024
        if n < 1024 or unit == "GB":
            break
    return f"{n:.1f} {unit}"

