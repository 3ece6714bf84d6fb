"""ctdnn: continuous-time deep neural networks with time-varying polynomial weights.

A reproducible companion to Rosso, Ruthotto, Sargsyan, "Weight-Parameterization in
Continuous Time Deep Neural Networks for Surrogate Modeling" (arXiv:2507.22045).

Public API:
    make_basis, Basis             bases of time functions (monomial, Legendre, per-step,
                                  Chebyshev, Fourier, piecewise-linear hats)
    TimeVaryingParameter,
    TimeVaryingLinear             weights theta(t) = sum_j c_j p_j(t)
    ResNet, HamiltonianNet        discretize-then-optimize networks
    initialize, INIT_SCHEMES      initial weights: ctdnn's, the authors' MATLAB and Python ones
    weights_at                    weight values K(t), b(t) at given times (also a method)
    NeuralODE, TrajectoryODE      optimize-then-discretize networks (torchdiffeq)
    solve, SolverStats, SolverError, solver_failures
    Status                        one status vocabulary for solves, training runs, rollouts
    train, TrainResult, relative_error, seed_everything
    train_ensemble, StackedNet    many configurations trained as one batched computation
    train_gnvpro                  trust-region Gauss-Newton with variable projection (DTO nets)
    data                          the ELM, CDR and DCR data sets (paper files or simulators)
    stationary                    the stationary-ODE task (torchdiffeq's spiral), NFE study
"""

from . import data, stationary
from .architectures import HamiltonianNet, ResNet, SurrogateNet, weights_at
from .ensemble import StackedNet, train_ensemble
from .gnvpro import train_gnvpro
from .initialization import INIT_SCHEMES, initialize
from .bases import (Basis, ChebyshevBasis, FourierBasis, HatBasis, LegendreBasis, MonomialBasis,
                    PiecewiseConstantBasis, make_basis)
from .neural_ode import NeuralODE, TimeVaryingMLP, TrajectoryODE
from .solvers import Dynamics, SolverError, SolverStats, solve, solver_failures
from .status import Status
from .training import (TrainingError, TrainResult, relative_error, resolve_device,
                       ridge_warm_start, seed_everything, train)
from .weights import TimeVaryingLinear, TimeVaryingParameter

__version__ = "0.1.0"

__all__ = [
    "data",
    "stationary",
    "Basis", "LegendreBasis", "MonomialBasis", "PiecewiseConstantBasis", "make_basis",
    "ChebyshevBasis", "FourierBasis", "HatBasis",
    "TimeVaryingParameter", "TimeVaryingLinear",
    "SurrogateNet", "ResNet", "HamiltonianNet", "weights_at", "initialize", "INIT_SCHEMES",
    "NeuralODE", "TrajectoryODE", "TimeVaryingMLP",
    "Dynamics", "solve", "SolverStats", "SolverError", "solver_failures", "Status",
    "train", "train_ensemble", "StackedNet", "TrainResult", "TrainingError", "relative_error", "resolve_device",
    "ridge_warm_start", "seed_everything",
    "train_gnvpro",
]
