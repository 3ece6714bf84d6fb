"""Files written whole or not at all, and conversion of results to plain (JSON) data.

Atomic writes: the content goes to a temporary file next to the target, is flushed to disk
(``fsync``) and moved onto the target with ``os.replace``, so a reader (or a process that
resumes after a crash) sees either the previous complete file or the new one, never a half
written one. The file gets the permissions a plain ``open`` would give (``0o666`` less the
umask), not the owner-only mode of ``tempfile.mkstemp``.

Plain data: :func:`plain_data` turns tensors, NumPy arrays and scalars, paths and tuples into
Python lists, numbers and strings; :func:`json_data` further writes non-finite floats as
``null`` (NaN) and ``"inf"``/``"-inf"``, which JSON cannot hold.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = ["atomic_write", "write_bytes_atomic", "write_text_atomic", "write_json",
           "normal_permissions", "current_umask", "plain_data", "json_data", "TMP_SUFFIX"]

#: Suffix of the temporary files of :func:`atomic_write` (left behind only by a crash).
TMP_SUFFIX = ".tmp"


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only portable way is to set it and put it back at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def normal_permissions(path: str | os.PathLike) -> None:
    """Give ``path`` the mode of an ordinary new file: ``0o666`` less the umask."""
    os.chmod(path, 0o666 & ~current_umask())


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, prefix: str = "",
                 suffix: str = TMP_SUFFIX) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    The block writes the temporary file by any means (``write_bytes``, ``np.savez``, ...).
    If it raises, the temporary file is removed and ``path`` is left as it was (absent, or
    the previous complete version). Parent folders are created. The temporary file is named
    ``prefix + path.name + "." + <random> + suffix``.

    Example:
        >>> with atomic_write(target) as tmp:          # doctest: +SKIP
        ...     tmp.write_bytes(payload)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=prefix + path.name + ".", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # fsync before the rename: a crash right after it must not expose an empty file.
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        normal_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`); returns the path."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`); returns the path."""
    return write_bytes_atomic(path, text.encode(encoding))


def plain_data(obj, *, default=None):
    """``obj`` with every value converted to plain Python data.

    Dicts (keys become strings), lists and tuples (both become lists) are converted
    recursively; tensors and NumPy arrays become (nested) lists, their scalars Python
    numbers; paths become strings; ``str``, ``int``, ``float``, ``bool`` and ``None`` stay.
    Non-finite floats are kept (see :func:`json_data`).

    Args:
        obj: the value.
        default: called on any other object to convert it (e.g. ``repr``); ``None``: such
            an object raises ``TypeError``.

    Raises:
        TypeError: an object of another type and no ``default``.
    """
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, dict):
        return {str(k): plain_data(v, default=default) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_data(v, default=default) for v in obj]
    if isinstance(obj, (torch.Tensor, np.ndarray, np.generic)):
        # tolist() gives Python scalars for 0-d values and nested lists otherwise
        value = obj.detach().cpu().tolist() if isinstance(obj, torch.Tensor) else obj.tolist()
        return plain_data(value, default=default)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if default is not None:
        return default(obj)
    raise TypeError(f"cannot convert an object of type {type(obj).__name__} to plain data")


def _json_float(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_float(v) for v in value]
    return value


def json_data(obj, *, default=None):
    """:func:`plain_data` of ``obj`` with NaN as ``None`` and infinities as ``"inf"``/``"-inf"``.

    The result holds only what strict JSON can (``json.dumps(..., allow_nan=False)``).
    """
    return _json_float(plain_data(obj, default=default))


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 1,
               sort_keys: bool = False) -> Path:
    """Write :func:`json_data` of ``obj`` as JSON, atomically; returns the path.

    Raises:
        TypeError: ``obj`` holds an object that has no plain-data form; nothing is written.
    """
    text = json.dumps(json_data(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)
    return write_text_atomic(path, text)
