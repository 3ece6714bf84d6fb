"""Where data live on disk, and how they are written there.

Layout of the cache directory (``CTDNN_CACHE_DIR`` if set, else the user cache
``pooch.os_cache("ctdnn")``)::

    <cache>/paper/<file>.mat                      downloaded paper files
    <cache>/simulated/<NAME>-n<N>-seed<S>-<key>.npz   simulator outputs

Paper files are downloaded by pooch (:func:`ctdnn.data.sources.registry`),
which writes to a temporary name and moves the checked file into place.
Simulated data are written through :func:`atomic_write`: the bytes go to a
temporary file in the destination directory, which is flushed, synced and then
moved into place with ``os.replace``. A process killed mid-write therefore
leaves at most a hidden ``.tmp-*`` file, never a truncated file under the final
name. Files get the permissions of an ordinary new file (``0666`` less the
umask, e.g. ``0644``), not the private ``0600`` of temporary files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .. import storage
from ..storage import normal_permissions

#: Bump when the layout or contents of simulated ``.npz`` files change, so
#: that files written by older code are no longer found.
CACHE_FORMAT_VERSION = 1

_TMP_PREFIX = ".tmp-"


def cache_dir() -> Path:
    """Root of the user cache: ``$CTDNN_CACHE_DIR`` or ``pooch.os_cache("ctdnn")``.

    The directory is not created here; writers create what they need.
    """
    env = os.environ.get("CTDNN_CACHE_DIR", "").strip()
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("ctdnn"))


def paper_cache_dir() -> Path:
    """Directory holding downloaded paper files."""
    return cache_dir() / "paper"


def simulated_cache_dir() -> Path:
    """Directory holding cached simulator outputs."""
    return cache_dir() / "simulated"


def atomic_write(path: str | os.PathLike):
    """``ctdnn.storage.atomic_write`` with the cache's hidden temporary names: a context
    manager yielding a temporary path next to ``path``, moved onto it if the block succeeds.

    The temporary file is ``.tmp-<name>.<random>.part`` in the destination folder, which
    ``is_temporary`` recognises (``ctdnn data info`` lists such leftovers).

    Example:
        >>> with atomic_write(target) as tmp:          # doctest: +SKIP
        ...     tmp.write_bytes(payload)
    """
    return storage.atomic_write(path, prefix=_TMP_PREFIX, suffix=".part")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is a leftover of an interrupted :func:`atomic_write`."""
    return path.name.startswith(_TMP_PREFIX)


def settings_key(payload: dict[str, Any]) -> str:
    """Short hex digest of a JSON-serialisable request plus the format version."""
    text = json.dumps(
        {"cache_format": CACHE_FORMAT_VERSION, **payload},
        sort_keys=True,
        separators=(",", ":"),
        default=_json_default,
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable")


def to_json(obj: Any) -> str:
    """JSON text of ``obj``; numpy arrays and scalars become lists and numbers."""
    return json.dumps(obj, sort_keys=True, default=_json_default)


def save_arrays(path: str | os.PathLike, meta: dict[str, Any], **arrays: np.ndarray) -> Path:
    """Atomically write ``arrays`` and a JSON ``meta`` record to an ``.npz`` file.

    The metadata is stored as a 0-d unicode array so that :func:`load_arrays`
    never needs ``allow_pickle``.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        # Write through a handle: given a name, numpy would append ".npz".
        with open(tmp, "wb") as handle:
            np.savez(handle, __meta__=np.array(to_json(meta)), **arrays)
    return path


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a file written by :func:`save_arrays`: ``(arrays, meta)``."""
    with np.load(Path(path), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "__meta__"}
        meta = json.loads(str(npz["__meta__"])) if "__meta__" in npz.files else {}
    return arrays, meta


def read_meta(path: str | os.PathLike) -> dict[str, Any]:
    """Only the metadata record of an ``.npz`` written by :func:`save_arrays`."""
    with np.load(Path(path), allow_pickle=False) as npz:
        return json.loads(str(npz["__meta__"])) if "__meta__" in npz.files else {}
