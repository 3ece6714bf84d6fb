"""Argument checks: accepted values come back as plain Python types, refused ones name the
argument, the value and the bound; and no module reaches into another's private names."""

import ast
import pathlib

import numpy as np
import pytest
import torch

from ctdnn import checks
from ctdnn.training import TrainingError


def test_check_int_accepts_python_and_numpy_integers():
    assert checks.check_int("n", 3) == 3
    value = checks.check_int("n", np.int64(7), minimum=1)
    assert value == 7 and type(value) is int
    assert checks.check_int("n", -5) == -5  # no bound unless given


@pytest.mark.parametrize("value", [True, np.bool_(True), 2.0, "3", None, torch.tensor(3)])
def test_check_int_refuses_non_integers(value):
    with pytest.raises(TypeError, match=r"width must be an integer, got .* \("):
        checks.check_int("width", value, minimum=1)


def test_check_int_bounds_and_error_class():
    with pytest.raises(ValueError, match="n_steps must be >= 1, got 0"):
        checks.check_int("n_steps", 0, minimum=1)
    assert checks.check_int("degree", 0, minimum=0) == 0
    with pytest.raises(TrainingError, match="epochs must be >= 1, got -2"):
        checks.check_int("epochs", -2, minimum=1, error=TrainingError)
    with pytest.raises(TrainingError, match="epochs must be an integer"):
        checks.check_int("epochs", 1.5, minimum=1, error=TrainingError)


def test_check_number():
    assert checks.check_number("lr", 1) == 1.0 and type(checks.check_number("lr", 1)) is float
    assert checks.check_number("lr", np.float32(0.5), positive=True) == 0.5
    assert checks.check_number("alpha", 0.0, nonnegative=True) == 0.0
    assert checks.check_number("x", -3.5) == -3.5
    with pytest.raises(ValueError, match="lr must be a positive finite number, got 0.0"):
        checks.check_number("lr", 0.0, positive=True)
    with pytest.raises(ValueError, match="alpha must be a non-negative finite number, got -1e-300"):
        checks.check_number("alpha", -1e-300, nonnegative=True)
    for bad in (float("nan"), float("inf"), -float("inf"), np.float64("nan")):
        with pytest.raises(ValueError, match="x must be a finite number"):
            checks.check_number("x", bad)
    for bad in (True, "1.0", None, [1.0]):
        with pytest.raises(TypeError, match="x must be a finite number"):
            checks.check_number("x", bad)
    with pytest.raises(TrainingError, match="T must be a positive finite number"):
        checks.check_number("T", "5", positive=True, error=TrainingError)


def test_check_seed():
    assert checks.check_seed(0) == 0
    assert checks.check_seed(2**64 - 1) == 2**64 - 1
    assert checks.check_seed(np.uint64(2**64 - 1)) == 2**64 - 1
    for bad in (-1, 2**64, 2**70):
        with pytest.raises(ValueError, match=r"seed must lie in \[0, 2\*\*64\).*seed % 2\*\*64"):
            checks.check_seed(bad)
    with pytest.raises(TrainingError, match=r"seeds\[2\] must lie"):
        checks.check_seed(-3, "seeds[2]", error=TrainingError)
    with pytest.raises(TypeError, match="seed must be an integer"):
        checks.check_seed(1.0)
    # torch takes every accepted seed
    torch.Generator().manual_seed(checks.check_seed(2**64 - 1))


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert checks.resolve_device().type == expected
    assert checks.resolve_device(None).type == expected
    assert checks.resolve_device("cpu") == torch.device("cpu")
    assert checks.resolve_device(torch.device("cpu")) == torch.device("cpu")
    with pytest.raises(ValueError, match="'gpu0' is not a device torch knows"):
        checks.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use device='auto'"):
            checks.resolve_device("cuda")
        with pytest.raises(TrainingError, match="CUDA is not available"):
            checks.resolve_device("cuda:0", error=TrainingError)


# -- package structure --------------------------------------------------------------------

PACKAGE = pathlib.Path(checks.__file__).parent

#: Private names still imported across modules, to be replaced by the public ones
#: (ctdnn.checks, ctdnn.storage, ctdnn.engine); none may be added.
KNOWN_PRIVATE_IMPORTS: set = set()


def _private_imports():
    found = set()
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.add((str(path.relative_to(PACKAGE)), node.module or "",
                                   alias.name))
    return found


def test_no_module_imports_another_modules_private_names():
    new = _private_imports() - KNOWN_PRIVATE_IMPORTS
    assert not new, f"private names imported across modules: {sorted(new)}"
