"""Initial weights: ctdnn's default and the two schemes of the authors' code.

A model's parameters are drawn when it is built; :func:`initialize` draws them again by a
named scheme. It works on any module holding :class:`~ctdnn.weights.TimeVaryingLinear`
layers (the flow) and ``torch.nn.Linear`` layers (opening and closing layers): ResNet,
HamiltonianNet, NeuralODE, TrajectoryODE. Time-varying weights always start constant in
time (only the coefficient along the basis' constant direction is non-zero), as in the
paper and in both codes of the authors.

Schemes (``INIT_SCHEMES``), ``n_in`` being a layer's number of inputs:

``"uniform"`` (ctdnn's default)
    Every weight and bias uniform in ``+-1/sqrt(n_in)``: ``torch.nn.Linear``'s own
    initialisation, and the same bounds for ``[K | b]`` of each time-varying layer. This is
    what construction draws, so the constructors do not call :func:`initialize` for it (a
    second draw would move the random stream); calling it redraws every layer.
``"he_normal"`` (the authors' MATLAB, ``matlab/meganet/dense.m``)
    ``dense.initTheta`` draws ``sqrt(2 / n_in) * randn``: weights ``N(0, 2 / n_in)``, and
    ``singleLayer``/``HamiltonianNN`` set every bias to 0. ``runExperiment_v2.m`` builds the
    opening layer and the time-varying layer from ``dense``, so both get it; ``ResNN`` and
    ``HamiltonianNN`` make the draw constant in time (``repmat(theta0) / A``, one draw for
    every step of the per-step baseline too). The closing layer ``W`` is never drawn there
    (a ridge solve sets it: the warm start with Adam, variable projection with GNvpro), so
    it is left as it is; the ``"authors"`` protocol of the DTO experiments always warm-starts it.
``"small_normal"`` (the authors' Python neural ODE, ``python/surrogate/train_surrogate_node.py``)
    ``ODEFunc`` draws its dynamics layers' weights ``N(0, 0.1**2)`` (standard deviation 0.1)
    and sets their biases to 0; the embedding and readout layers keep ``torch.nn.Linear``'s
    default. Here: the time-varying layers get that draw; the ``nn.Linear`` layers are left as
    they are (they were drawn by ``nn.Linear`` at construction).

Every draw uses torch's global random generator, so :func:`ctdnn.seed_everything` before
building and initialising a model makes it reproducible. Layers are drawn in the order of
``model.named_modules()``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .weights import TimeVaryingLinear

__all__ = ["initialize", "INIT_SCHEMES", "check_init"]

INIT_SCHEMES = ("uniform", "he_normal", "small_normal")

#: Standard deviation of the weights of the authors' Python ODEFunc.
SMALL_NORMAL_STD = 0.1


def check_init(scheme) -> str:
    """``scheme`` if it names an initialisation, else a ``ValueError`` listing the choices."""
    if not isinstance(scheme, str) or scheme not in INIT_SCHEMES:
        raise ValueError(f"init must be one of {INIT_SCHEMES}, got {scheme!r} ('uniform': "
                         "ctdnn's default; 'he_normal': the authors' MATLAB; 'small_normal': "
                         "the authors' Python neural ODE)")
    return scheme


def _time_varying(layer: TimeVaryingLinear, scheme: str) -> None:
    dtype = layer.theta.coefficients.dtype
    shape = (layer.n_out, layer.n_in)
    if scheme == "uniform":
        bound = 1.0 / math.sqrt(layer.n_in)
        W = torch.empty(layer.n_out, layer.n_in + 1, dtype=dtype).uniform_(-bound, bound)
        layer.theta.set_constant(W)
        return
    std = math.sqrt(2.0 / layer.n_in) if scheme == "he_normal" else SMALL_NORMAL_STD
    K = torch.empty(shape, dtype=dtype).normal_(0.0, std)
    layer.set_constant(K, torch.zeros(layer.n_out, dtype=dtype))


def _linear(name: str, layer: nn.Linear, scheme: str) -> None:
    if scheme == "uniform":
        layer.reset_parameters()
    elif scheme == "he_normal" and name != "closing":
        nn.init.normal_(layer.weight, mean=0.0, std=math.sqrt(2.0 / layer.in_features))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    # "small_normal", and the closing layer under "he_normal": left as drawn at construction.


@torch.no_grad()
def initialize(model: nn.Module, scheme: str) -> nn.Module:
    """Draw the model's weights again by ``scheme``, in place (see the module docstring).

    Args:
        model: a module holding :class:`~ctdnn.weights.TimeVaryingLinear` and/or
            ``torch.nn.Linear`` layers; an ``nn.Linear`` registered as ``closing`` (the
            surrogate networks' output layer) is the closing layer.
        scheme: one of ``INIT_SCHEMES``.

    Returns:
        ``model`` (for chaining).

    Raises:
        ValueError: an unknown scheme, or a module without any such layer.
    """
    check_init(scheme)
    found = False
    for name, module in model.named_modules():
        if isinstance(module, TimeVaryingLinear):
            _time_varying(module, scheme)
            found = True
        elif isinstance(module, nn.Linear):
            _linear(name, module, scheme)
            found = True
    if not found:
        raise ValueError(f"{type(model).__name__} holds no TimeVaryingLinear or nn.Linear layer "
                         "to initialise")
    return model
