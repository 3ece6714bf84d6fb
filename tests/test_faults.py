"""Fault injection: failed solves, unsafe or corrupt checkpoints, mismatched resumes, zero
targets and bad constructor arguments each end in a clear error or a documented status."""

import inspect
import io
import math
import os
import pickle

import numpy as np
import pytest
import torch
import torchdiffeq

import ctdnn
from ctdnn.solvers import Dynamics, SolverError, _classify, solve
from ctdnn.stationary import make_trajectory_data, spiral_init_, train_trajectory
from ctdnn.status import Status
from ctdnn.training import TrainingError, load_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.stack([torch.sin(x[:, 0]) + x[:, 1] * x[:, 2], torch.tanh(x[:, 3] - x[:, 0])], 1)
    return x[:80], y[:80], x[80:], y[80:]


def _resnet(seed=0, **kw):
    torch.manual_seed(seed)
    return ctdnn.ResNet(4, 2, **{"width": 8, "n_steps": 6, **kw})


def _node(seed=0, **kw):
    torch.manual_seed(seed)
    return ctdnn.NeuralODE(4, 2, **{"width": 5, "hidden": 6, "rtol": 1e-6, "atol": 1e-8, **kw})


def _trajectory_model(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {"hidden": 12, "degree": 2, "rtol": 1e-3, "atol": 1e-5, **kw}
    model = ctdnn.TrajectoryODE(**kw).double()
    return spiral_init_(model, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def spiral():
    return make_trajectory_data(400, 25.0)


def _train_trajectory(model, data, **kw):
    kw = {"iterations": 6, "batch_time": 6, "batch_size": 8, "lr": 3e-3, "eval_every": 3,
          "progress": False, "device": "cpu", **kw}
    return train_trajectory(model, data=data, **kw)


# -- 1a: a failed adjoint (backward) solve ends the run cleanly ------------------------

def _starve_adjoint(monkeypatch, budget=2):
    """From now on, give torchdiffeq's adjoint (backward) solve a budget of ``budget``
    steps; the forward solve keeps the model's. The failure is torchdiffeq's own."""
    real = ctdnn.solvers.odeint_adjoint

    def starved(*args, adjoint_options=None, **kwargs):
        return real(*args, adjoint_options={**adjoint_options, "max_num_steps": budget},
                    **kwargs)

    monkeypatch.setattr(ctdnn.solvers, "odeint_adjoint", starved)


def test_adjoint_budget_overflow_ends_in_a_train_result_with_the_last_good_state(monkeypatch):
    ref = _node()
    ctdnn.train(ref, _data(), epochs=2, batch_size=40, lr=1e-2, progress=False)
    model = _node()
    assert model.adjoint
    epochs_started = {"n": 0}
    train_mode = model.train

    def starve_from_epoch_3(mode=True):
        if mode:  # train() calls model.train() at the start of every epoch
            epochs_started["n"] += 1
            if epochs_started["n"] == 3:
                _starve_adjoint(monkeypatch)
        return train_mode(mode)

    model.train = starve_from_epoch_3
    res = ctdnn.train(model, _data(), epochs=5, batch_size=40, lr=1e-2, progress=False,
                      name="adjoint run")
    assert isinstance(res, ctdnn.TrainResult)
    assert res.status == Status.SOLVER_FAILED == "solver_failed"
    assert res.solver_status == "too_many_steps"
    assert res.epochs_completed == 2 and res.history["epoch"] == [1, 2]
    assert len(res.history["loss"]) == 2 and res.history["nfe"][1] > res.history["nfe"][0] > 0
    msg = res.message
    assert "adjoint run" in msg and "epoch 3" in msg and "adjoint (backward) solve" in msg
    assert "max_num_steps exceeded (2>=2)" in msg and "backward evaluations" in msg
    # the model holds the best state of the two good epochs, exactly as the reference
    for k, v in ref.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_solver_failures_turns_a_raw_adjoint_failure_into_a_solver_error():
    # Forward: 4 adaptive steps, adjoint: 8 (default norm), for this model and batch.
    model = _node(max_num_steps=6)
    x, y, _, _ = _data()
    loss = (model(x[:40]) - y[:40]).square().mean()
    with pytest.raises(SolverError) as info:
        with ctdnn.solver_failures(model.dynamics):
            loss.backward()
    err = info.value
    assert err.status == Status.TOO_MANY_STEPS
    assert err.stats.nfe_forward > 0 and err.stats.nfe_backward > 0
    assert f"after {err.stats.nfe_forward} forward and {err.stats.nfe_backward} backward" in str(err)
    assert "max_num_steps=6 per output interval" in str(err)


def test_trajectory_trainer_reports_a_failed_adjoint_solve(spiral, monkeypatch):
    # Windows are short and the tolerances loose: one adjoint step per output interval
    # would do for some, so the budget is 1 step at tight tolerances.
    model = _trajectory_model(adjoint=True, rtol=1e-8, atol=1e-10)
    _starve_adjoint(monkeypatch, budget=1)
    res = _train_trajectory(model, spiral)
    assert res.status == "solver_failed" and res.solver_status == "too_many_steps"
    assert "adjoint (backward) solve" in res.message and "iteration 1 failed" in res.message
    assert res.iterations_completed == 0 and math.isfinite(res.test_rel_err)


# -- 1b: a fixed-step solver that blows up --------------------------------------------

class Blowup(Dynamics):
    def rhs(self, t, u):
        return u ** 2  # u = 1 / (1 - t): infinite at t = 1


def test_fixed_step_blow_up_is_a_solver_error_not_nan():
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    u0 = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(SolverError) as info:
        solve(Blowup(), u0, t, method="rk4", step_size=0.25)
    err = info.value
    assert err.status == Status.NON_FINITE
    assert "rk4, step_size=0.25" in str(err) and "NaN or inf" in str(err)
    assert err.stats.nfe_forward > 0 and f"after {err.stats.nfe_forward} forward" in str(err)


def test_adaptive_failures_name_the_budget_and_the_evaluations():
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)
    u0 = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(SolverError) as info:
        solve(Blowup(), u0, t, rtol=1e-7, atol=1e-9, max_num_steps=10_000)
    assert info.value.status in (Status.STEP_SIZE_UNDERFLOW, Status.NON_FINITE,
                                 Status.TOO_MANY_STEPS)
    assert "max_num_steps=10000" in str(info.value) and "forward solve" in str(info.value)


# -- 1c: the classifier matches torchdiffeq's messages, nothing else ---------------------

@pytest.mark.parametrize("exc, status", [
    (AssertionError("underflow in dt 1.2e-17"), Status.STEP_SIZE_UNDERFLOW),
    (AssertionError("underflow in dt nan"), Status.NON_FINITE),
    (AssertionError("max_num_steps exceeded (6>=6)"), Status.TOO_MANY_STEPS),
    (AssertionError("non-finite values in state `y`: tensor([nan])"), Status.NON_FINITE),
    (RuntimeError("Reached maximum number of iterations 4."), Status.FAILED),
    (RuntimeError("not enough information to infer the shape"), None),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied (Inf rows)"), None),
    (AssertionError("NaN handling is not implemented"), None),
    (ValueError("underflow in dt 0.0"), None),
])
def test_classifier(exc, status):
    assert _classify(exc) == status


def test_classifier_patterns_are_torchdiffeq_messages():
    # Guards against a torchdiffeq upgrade rewording the messages the classifier reads.
    rk = inspect.getsource(torchdiffeq._impl.rk_common)
    assert "'underflow in dt {}'" in rk and "'max_num_steps exceeded ({}>={})'" in rk
    assert "'non-finite values in state `y`: {}'" in rk
    assert 'f"Reached maximum number of iterations {max_itrs}."' in inspect.getsource(
        torchdiffeq._impl.solvers)


class ShapeBug(Dynamics):
    def rhs(self, t, u):
        raise RuntimeError("shape mismatch while gathering information")


def test_a_bug_in_the_right_hand_side_is_not_disguised_as_a_solver_failure():
    with pytest.raises(RuntimeError, match="gathering information") as info:
        solve(ShapeBug(), torch.ones(1, 1), torch.tensor([0.0, 1.0]))
    assert not isinstance(info.value, SolverError)


# -- 1d: NaN input and empty batches ---------------------------------------------------

def test_nan_and_empty_inputs_name_the_input():
    model = _node()
    x = torch.randn(3, 4)
    x[1, 2] = math.nan
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(rows \[1\]"):
        model(x)
    with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 4\)\)"):
        model(torch.zeros(0, 4))
    traj = _trajectory_model()
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="y0 contains NaN"):
        traj(torch.tensor([[math.nan, 0.0]], dtype=torch.float64), t)
    with pytest.raises(ValueError, match="y0 is empty"):
        traj(torch.zeros(0, 2, dtype=torch.float64), t)
    with pytest.raises(ValueError, match="u0 is empty"):
        solve(Blowup(), torch.zeros(0, 1), torch.tensor([0.0, 1.0]))
    with pytest.raises(SolverError, match="initial state u0 contains NaN") as info:
        solve(Blowup(), torch.full((1, 1), math.nan), torch.tensor([0.0, 1.0]))
    assert info.value.status == Status.NON_FINITE


@pytest.mark.parametrize("cls", [ctdnn.ResNet, ctdnn.HamiltonianNet])
def test_stepped_networks_refuse_nan_in_evaluation_mode(cls):
    torch.manual_seed(0)
    model = cls(4, 2, width=8, n_steps=6)
    x = torch.randn(5, 4)
    x[3, 0] = math.inf
    with pytest.raises(ValueError, match=r"x contains NaN or inf \(rows \[3\]"):
        model.eval()(x)
    # an empty batch is fine for a stepped network: an empty result
    assert model(torch.zeros(0, 4)).shape == (0, 2)


# -- 2: checkpoints are verified and loaded without running code ----------------------

class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def _good_checkpoint(tmp_path):
    ck = tmp_path / "run.ckpt"
    ctdnn.train(_resnet(), _data(), epochs=2, batch_size=16, progress=False, checkpoint=ck)
    return ck


def _resume(ck, **kw):
    return ctdnn.train(_resnet(), _data(), epochs=2, batch_size=16, progress=False,
                       checkpoint=ck, resume=True, **kw)


def test_a_crafted_pickle_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    ck = tmp_path / "run.ckpt"
    ck.write_bytes(pickle.dumps({"format": 1, "model": _Exploit(marker)}))
    with pytest.raises(TrainingError, match="is not a ctdnn checkpoint"):
        _resume(ck)
    assert not marker.exists()


def test_a_crafted_payload_with_a_valid_header_and_digest_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    ck = tmp_path / "run.ckpt"
    save_checkpoint({"fingerprint": {}, "model": _Exploit(marker)}, ck, "train")
    with pytest.raises(TrainingError, match="objects other than tensors and plain data"):
        _resume(ck)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    raw = ck.read_bytes()
    payload = raw[raw.index(b"\n", len(b"ctdnn checkpoint\n")) + 1:]
    torch.load(io.BytesIO(payload), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("damage, match", [
    (lambda b: b[: len(b) // 2] + b"\0" * 64 + b[len(b) // 2 + 64:], "is corrupted"),
    (lambda b: b[: len(b) - 200], "is corrupted"),
    (lambda b: b[:30], "damaged header"),
    (lambda b: b"", r"is empty \(0 bytes\)"),
    (lambda b: b'{"epoch": 3}\n', "is not a ctdnn checkpoint"),
    (lambda b: b.replace(b"format 2 ", b"format 9 ", 1), "has format 9"),
])
def test_damaged_checkpoints_are_refused(tmp_path, damage, match):
    ck = _good_checkpoint(tmp_path)
    ck.write_bytes(damage(ck.read_bytes()))
    with pytest.raises(TrainingError, match=match) as info:
        _resume(ck)
    assert str(ck) in str(info.value) and "delete it or pass resume=False" in str(info.value)


def test_a_checkpoint_of_the_old_unverified_format_is_refused(tmp_path):
    ck = tmp_path / "run.ckpt"
    torch.save({"format": 1, "config": {}, "model": {}}, ck)
    with pytest.raises(TrainingError, match="is not a ctdnn checkpoint"):
        _resume(ck)


def test_checkpoint_kinds_do_not_mix(tmp_path, spiral):
    ck = _good_checkpoint(tmp_path)
    with pytest.raises(TrainingError, match="of kind 'train', not 'trajectory'"):
        _train_trajectory(_trajectory_model(), spiral, checkpoint=ck, resume=True)


def test_a_corrupted_trajectory_checkpoint_is_refused(tmp_path, spiral):
    ck = tmp_path / "traj.ckpt"
    _train_trajectory(_trajectory_model(), spiral, checkpoint=ck, max_iterations=3)
    raw = bytearray(ck.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = bytes(64)
    ck.write_bytes(bytes(raw))
    with pytest.raises(TrainingError, match="is corrupted"):
        _train_trajectory(_trajectory_model(), spiral, checkpoint=ck, resume=True)


def test_load_checkpoint_round_trip(tmp_path):
    ck = tmp_path / "x.ckpt"
    payload = {"a": torch.arange(3), "b": [1.5, math.inf], "c": ("text", None)}
    save_checkpoint(payload, ck, "train")
    out = load_checkpoint(ck, "train")
    assert torch.equal(out["a"], payload["a"]) and out["b"] == payload["b"]
    assert out["c"] == payload["c"]


# -- 3: the fingerprint refuses another configuration or other data -------------------

def test_a_checkpoint_from_another_model_configuration_is_refused(tmp_path):
    ck = tmp_path / "run.ckpt"
    ctdnn.train(_resnet(basis="legendre", T=1.0), _data(), epochs=2, progress=False,
                checkpoint=ck)
    other = _resnet(basis="monomial", T=10.0)  # same parameter count
    with pytest.raises(TrainingError) as info:
        ctdnn.train(other, _data(), epochs=2, progress=False, checkpoint=ck, resume=True)
    msg = str(info.value)
    assert "model.basis: checkpoint 'legendre', this run 'monomial'" in msg
    assert "model.T: checkpoint 1.0, this run 10.0" in msg
    assert "delete it or pass resume=False" in msg
    for kw, field in [({"weight_times": "paper"}, "model.weight_times"),
                      ({"degree": 4}, "model.degree"), ({"n_steps": 5}, "model.n_steps")]:
        with pytest.raises(TrainingError, match=field):
            ctdnn.train(_resnet(**kw), _data(), epochs=2, progress=False, checkpoint=ck,
                        resume=True)


def test_a_checkpoint_for_other_data_is_refused(tmp_path):
    ck = tmp_path / "run.ckpt"
    ctdnn.train(_resnet(), _data(), epochs=2, progress=False, checkpoint=ck)
    x, y, xv, yv = _data()
    y = y.clone()
    y[7, 1] += 1e-3
    with pytest.raises(TrainingError, match=r"data\.train: checkpoint '[0-9a-f]{64}'"):
        ctdnn.train(_resnet(), (x, y, xv, yv), epochs=2, progress=False, checkpoint=ck,
                    resume=True)
    with pytest.raises(TrainingError, match=r"data\.val"):
        ctdnn.train(_resnet(), _data()[:2], epochs=2, progress=False, checkpoint=ck,
                    resume=True)


def test_ode_settings_are_part_of_the_fingerprint(tmp_path):
    ck = tmp_path / "node.ckpt"
    ctdnn.train(_node(adjoint=False), _data(), epochs=1, batch_size=80, progress=False,
                checkpoint=ck)
    with pytest.raises(TrainingError, match=r"model\.rtol: checkpoint 1e-06, this run 1e-05"):
        ctdnn.train(_node(adjoint=False, rtol=1e-5), _data(), epochs=1, batch_size=80,
                    progress=False, checkpoint=ck, resume=True)
    with pytest.raises(TrainingError, match=r"model\.time_scaling"):
        ctdnn.train(_node(adjoint=False, time_scaling="unscaled"), _data(), epochs=1,
                    batch_size=80, progress=False, checkpoint=ck, resume=True)


def test_trajectory_fingerprint_names_the_time_scaling(tmp_path, spiral):
    ck = tmp_path / "traj.ckpt"
    _train_trajectory(_trajectory_model(basis="monomial"), spiral, checkpoint=ck,
                      max_iterations=3)
    with pytest.raises(TrainingError, match=r"model\.time_scaling: checkpoint 'rescaled', "
                                            r"this run 'unscaled'"):
        _train_trajectory(_trajectory_model(basis="monomial", time_scaling="unscaled"), spiral,
                          checkpoint=ck, resume=True)
    other = make_trajectory_data(300, 25.0)
    with pytest.raises(TrainingError, match=r"data\.digest"):
        _train_trajectory(_trajectory_model(basis="monomial"), other, checkpoint=ck,
                          resume=True)


# -- 4: zero targets -------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "val"])
def test_all_zero_target_rows_are_refused_at_entry(split):
    x, y, xv, yv = _data()
    if split == "val":
        yv = yv.clone()
        yv[[4, 9]] = 0.0
    else:
        y = y.clone()
        y[2] = 0.0
    match = (r"y_val has 2 all-zero target row\(s\) \(rows \[4, 9\]\)" if split == "val"
             else r"y_train has 1 all-zero target row\(s\) \(rows \[2\]\)")
    with pytest.raises(TrainingError, match=match):
        ctdnn.train(_resnet(), (x, y, xv, yv), epochs=3, progress=False)
    with pytest.raises(TrainingError, match=match):
        ctdnn.train_ensemble([_resnet(), _resnet(1)], (x, y, xv, yv), epochs=3, progress=False)


def test_relative_error_of_a_zero_target_is_infinite_by_definition():
    target = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    pred = torch.tensor([[1.0, 0.0], [0.5, 0.0]])
    assert math.isinf(float(ctdnn.relative_error(pred, target)))


def test_a_non_finite_validation_error_stops_instead_of_freezing_the_best_state():
    model = _resnet()
    forward = model.forward
    epoch = {"n": 0}

    def broken_eval(x):
        out = forward(x)
        if not model.training and epoch["n"] >= 4:  # 2 evaluations per epoch: epoch 3 on
            return out * math.inf
        if not model.training:
            epoch["n"] += 1
        return out

    model.forward = broken_eval
    res = ctdnn.train(model, _data(), epochs=6, batch_size=16, progress=False)
    assert res.status == "diverged" and res.epochs_completed == 2
    assert "non-finite validation relative error" in res.message and "epoch 3" in res.message
    assert res.best_epoch in (1, 2)


# -- 7: construction-time checks, seeds, permissions -----------------------------------

@pytest.mark.parametrize("cls", [ctdnn.NeuralODE, ctdnn.TrajectoryODE])
@pytest.mark.parametrize("kw, match", [
    ({"method": "nonexistent"}, "unknown ODE method 'nonexistent'"),
    ({"adjoint_norm": "l2"}, "adjoint_norm must be 'default' or 'seminorm'"),
    ({"method": "rk4"}, "fixed-step method 'rk4' needs an explicit step_size"),
    ({"method": "rk4", "step_size": 0.0}, "step_size must be a positive finite number"),
    ({"rtol": math.inf}, "rtol must be a positive finite number, got inf"),
    ({"atol": math.nan}, "atol must be a positive finite number"),
    ({"max_num_steps": 0}, "max_num_steps must be a positive integer"),
])
def test_solver_settings_fail_at_construction(cls, kw, match):
    args = (4, 2) if cls is ctdnn.NeuralODE else (2,)
    with pytest.raises(ValueError, match=match):
        cls(*args, **kw)


def test_numpy_tolerances_are_accepted():
    model = ctdnn.NeuralODE(4, 2, width=3, rtol=np.float64(1e-7), atol=np.float32(1e-9))
    assert model.rtol == 1e-7 and isinstance(model.rtol, float)
    assert ctdnn.TrajectoryODE(2, rtol=np.float64(1e-6)).rtol == 1e-6


def test_out_of_range_seeds_get_a_clear_message(spiral):
    big = 2**70
    with pytest.raises(TrainingError, match=r"seed must lie in \[0, 2\*\*64\)"):
        ctdnn.train(_resnet(), _data(), epochs=1, seed=big, progress=False)
    with pytest.raises(TrainingError, match=r"seeds\[1\] must lie in \[0, 2\*\*64\)"):
        ctdnn.train_ensemble([_resnet(), _resnet(1)], _data(), epochs=1, seeds=[0, big],
                             progress=False)
    with pytest.raises(TrainingError, match=r"seed must lie"):
        _train_trajectory(_trajectory_model(), spiral, seed=big)
    with pytest.raises(TrainingError, match=r"seed must lie"):
        ctdnn.seed_everything(-1)
    ctdnn.train(_resnet(), _data(), epochs=1, seed=2**64 - 1, progress=False)  # the top works


def test_checkpoints_respect_the_umask(tmp_path, spiral):
    old = os.umask(0o022)
    try:
        ck = tmp_path / "run.ckpt"
        ctdnn.train(_resnet(), _data(), epochs=1, progress=False, checkpoint=ck)
        assert ck.stat().st_mode & 0o777 == 0o644
        tk = tmp_path / "traj.ckpt"
        _train_trajectory(_trajectory_model(), spiral, checkpoint=tk, max_iterations=3)
        assert tk.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        ctdnn.train(_resnet(), _data(), epochs=1, progress=False, checkpoint=ck)
        assert ck.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert not list(tmp_path.glob("*.tmp"))


def test_status_is_one_string_vocabulary():
    assert Status("diverged") is Status.DIVERGED and f"{Status.DIVERGED}" == "diverged"
    err = SolverError("too_many_steps", "x")
    assert err.status is Status.TOO_MANY_STEPS and "(too_many_steps)" in str(err)
    with pytest.raises(ValueError):
        SolverError("exploded", "x")
