"""Validation of arguments: integers, finite numbers, seeds and compute devices.

Every check returns the value converted to a plain Python type (so NumPy integers and
floats are accepted) and raises an error that names the argument, the value received and
what would be accepted. The exception class is the caller's choice (``error``), so that a
layer with its own error type (:class:`~ctdnn.TrainingError`) gets it; by default
a value of the wrong type raises ``TypeError`` and a value out of range ``ValueError``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["check_int", "check_number", "check_horizon", "check_seed", "resolve_device",
           "SEED_LIMIT"]

#: Seeds lie in ``[0, SEED_LIMIT)``: torch's generators take 64-bit seeds.
SEED_LIMIT = 2**64


def _is_integer(value) -> bool:
    return (not isinstance(value, (bool, np.bool_))
            and isinstance(value, (numbers.Integral, np.integer)))


def check_int(name: str, value, *, minimum: int | None = None, error=None) -> int:
    """``value`` as an ``int``, refused unless it is an integer ``>= minimum``.

    Args:
        name: the argument's name, for the message.
        value: the value to check; ``bool`` is refused (``True`` is not a count).
        minimum: the smallest accepted value (``None``: no bound).
        error: exception class for every failure; default ``TypeError`` for a non-integer
            and ``ValueError`` for a value below ``minimum``.

    Raises:
        TypeError: not an integer (``error`` instead, if given).
        ValueError: below ``minimum`` (``error`` instead, if given).
    """
    if not _is_integer(value):
        raise (error or TypeError)(f"{name} must be an integer, got {value!r} "
                                   f"({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise (error or ValueError)(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_number(name: str, value, *, positive: bool = False, nonnegative: bool = False,
                 error=None) -> float:
    """``value`` as a finite ``float``, optionally refused unless ``> 0`` or ``>= 0``.

    Args:
        name: the argument's name, for the message.
        value: a real number (Python or NumPy; ``bool`` is refused).
        positive: require ``value > 0``.
        nonnegative: require ``value >= 0``.
        error: exception class for every failure; default ``TypeError`` for a non-number
            and ``ValueError`` for NaN, infinity or a value out of range.

    Raises:
        TypeError: not a real number (``error`` instead, if given).
        ValueError: NaN, infinite or out of range (``error`` instead, if given); for
            example "lr must be a positive finite number, got -1.0".
    """
    kind = ("a positive finite number" if positive else
            "a non-negative finite number" if nonnegative else "a finite number")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating,
                                                                     np.integer)):
        raise (error or TypeError)(f"{name} must be {kind}, got {value!r} "
                                   f"({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0) or (nonnegative and value < 0):
        raise (error or ValueError)(f"{name} must be {kind}, got {value!r}")
    return value


def check_horizon(T) -> float:
    """The time horizon ``T`` as a positive finite ``float``.

    Raises:
        TypeError: ``T`` is not a number.
        ValueError: ``T`` is not positive and finite.
    """
    try:
        T = float(T)
    except (TypeError, ValueError):
        raise TypeError(f"T must be a positive number, got {T!r}") from None
    if not math.isfinite(T) or T <= 0:
        raise ValueError(f"T must be a positive finite number, got {T}")
    return T


def check_seed(seed, name: str = "seed", *, error=None) -> int:
    """``seed`` as an ``int`` in ``[0, 2**64)``, the range torch's generators accept.

    Raises:
        TypeError: not an integer (``error`` instead, if given).
        ValueError: outside ``[0, 2**64)``; the message says how to bring it into range
            (``error`` instead, if given).
    """
    seed = check_int(name, seed, error=error)
    if not 0 <= seed < SEED_LIMIT:
        raise (error or ValueError)(
            f"{name} must lie in [0, 2**64) (torch seeds are 64-bit), got {seed}; reduce "
            f"it, e.g. {name} % 2**64")
    return seed


def resolve_device(device="auto", *, error=None) -> torch.device:
    """The compute device an argument names.

    Args:
        device: ``"auto"`` or ``None`` (CUDA when present, else the CPU), or anything
            ``torch.device`` reads (``"cpu"``, ``"cuda:1"``, a ``torch.device``).
        error: exception class for a refused device (default ``ValueError``).

    Raises:
        ValueError: an unreadable device string, or CUDA requested on a machine without
            it (``error`` instead, if given).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise (error or ValueError)(f"device={device!r} is not a device torch knows "
                                    f"({exc}); use 'auto', 'cpu' or 'cuda'") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise (error or ValueError)(f"device={str(dev)!r} requested but CUDA is not "
                                    "available; use device='auto' or 'cpu'")
    return dev
