"""Training loop: learning, best-on-validation, divergence, checkpoint/resume, bad input."""

import math

import pytest
import torch

import ctdnn
from ctdnn.training import TrainingError, load_checkpoint


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = torch.stack([torch.sin(x[:, 0]) + x[:, 1] * x[:, 2], torch.tanh(x[:, 3] - x[:, 0])], 1)
    return x[:80], y[:80], x[80:], y[80:]


def _model(seed=0, cls=ctdnn.ResNet, **kw):
    torch.manual_seed(seed)
    return cls(4, 2, width=8, n_steps=6, **kw)


@pytest.mark.parametrize("cls", [ctdnn.ResNet, ctdnn.HamiltonianNet])
def test_training_reduces_loss_and_keeps_best(cls):
    model = _model(cls=cls)
    res = ctdnn.train(model, _data(), epochs=25, batch_size=16, lr=1e-2, progress=False)
    h = res.history
    assert res.status == "completed" and res.epochs_completed == 25
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["train_rel_err"][-1] < h["train_rel_err"][0]
    assert res.best_val_rel_err == min(h["val_rel_err"])
    assert res.best_epoch == 1 + h["val_rel_err"].index(min(h["val_rel_err"]))
    x, y, xv, yv = _data()
    with torch.no_grad():  # the model holds the best state
        assert float(ctdnn.relative_error(model(xv), yv)) == pytest.approx(res.best_val_rel_err, rel=1e-5)
    assert h["nfe"] == [0] * 25 and len(h["wall_time"]) == 25


def test_relative_error_definition():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    target = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    assert float(ctdnn.relative_error(pred, target)) == pytest.approx(0.5)


def test_neural_ode_training_counts_nfe():
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(4, 2, width=5, hidden=6, rtol=1e-5, atol=1e-7)
    res = ctdnn.train(model, _data(), epochs=2, batch_size=40, lr=1e-2, progress=False)
    assert res.history["nfe"][0] > 0 and res.history["nfe"][1] > res.history["nfe"][0]


def test_penalties_and_warm_start():
    model = _model()
    x, y, _, _ = _data()
    ctdnn.ridge_warm_start(model, x, y, alpha=1e-8)
    with torch.no_grad():  # the closing layer is the least-squares fit of y on [u(T), 1]
        F = torch.cat([model.features(x), torch.ones(80, 1)], 1).double()
        W = torch.linalg.lstsq(F, y.double()).solution
        torch.testing.assert_close(model.closing.weight.double(), W[:-1].T, rtol=1e-3, atol=1e-4)
    pen = model.penalty(alpha_theta=2.0, alpha_W=0.0)
    assert float(pen.detach()) == pytest.approx(float(model.layer.l2_norm_squared().detach()), rel=1e-6)
    res = ctdnn.train(_model(), _data(), epochs=3, alpha_theta=1e-5, alpha_W=1e-3,
                      warm_start=True, progress=False)
    assert res.status == "completed"


def _diverging(model, monkeypatch, after_calls=12):
    """``model`` whose penalty is NaN after ``after_calls`` minibatches (5 per epoch with
    batches of 16: the default breaks epoch 3)."""
    calls = {"n": 0}
    original = model.penalty

    def penalty(*a, **k):
        calls["n"] += 1
        return original(*a, **k) + (math.nan if calls["n"] > after_calls else 0.0)

    monkeypatch.setattr(model, "penalty", penalty)
    return model


def test_divergence_stops_and_keeps_last_good_state(monkeypatch):
    model = _diverging(_model(), monkeypatch)
    res = ctdnn.train(model, _data(), epochs=10, batch_size=16, progress=False, name="diverging run")
    assert res.status == "diverged" and res.epochs_completed == 2
    assert "diverging run" in res.message and "epoch 3" in res.message
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(res.history["loss"]) == 2


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resume_is_bit_identical(tmp_path):
    full = _model()
    ref = ctdnn.train(full, _data(), epochs=6, batch_size=16, progress=False)
    ck = tmp_path / "run.ckpt"
    part = _model()
    first = ctdnn.train(part, _data(), epochs=6, batch_size=16, progress=False, checkpoint=ck,
                        max_epochs=3)
    assert first.status == "partial" and ck.exists()
    resumed_model = _model(seed=123)  # a different init: everything must come from the checkpoint
    res = ctdnn.train(resumed_model, _data(), epochs=6, batch_size=16, progress=False,
                      checkpoint=ck, resume=True)
    assert res.status == "completed"
    for k, v in _state(full).items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    for key in ("loss", "train_rel_err", "val_rel_err", "epoch"):
        assert res.history[key] == ref.history[key]


def test_interrupt_saves_and_resume_is_bit_identical(tmp_path, monkeypatch):
    ref_model = _model()
    ctdnn.train(ref_model, _data(), epochs=5, batch_size=16, progress=False)
    ck = tmp_path / "run.ckpt"
    model = _model()
    calls = {"n": 0}
    original = model.penalty

    def penalty(*a, **k):
        calls["n"] += 1
        if calls["n"] == 17:  # mid-epoch 4
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(model, "penalty", penalty)
    with pytest.raises(KeyboardInterrupt):
        ctdnn.train(model, _data(), epochs=5, batch_size=16, progress=False, checkpoint=ck,
                    checkpoint_every=100)
    saved = load_checkpoint(ck, "train")
    assert saved["epoch"] == 3
    assert not list(tmp_path.glob("*.tmp"))
    fresh = _model(seed=9)
    ctdnn.train(fresh, _data(), epochs=5, batch_size=16, progress=False, checkpoint=ck, resume=True)
    for k, v in ref_model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k


def test_resume_refuses_other_settings(tmp_path):
    ck = tmp_path / "run.ckpt"
    ctdnn.train(_model(), _data(), epochs=2, progress=False, checkpoint=ck)
    with pytest.raises(TrainingError, match=r"other settings \(training\.lr: checkpoint 0\.001, "
                                            r"this run 0\.5\)"):
        ctdnn.train(_model(), _data(), epochs=2, lr=0.5, progress=False, checkpoint=ck, resume=True)


@pytest.mark.parametrize("mutate,match", [
    (lambda d: (d[0][:, :3], d[1], d[2], d[3]), r"x_train must have shape \(n_samples, 4\)"),
    (lambda d: (d[0], d[1][:50], d[2], d[3]), "x_train has 80 samples but y_train has 50"),
    (lambda d: (d[0].index_put((torch.tensor([3]),), torch.tensor(float("nan"))), d[1], d[2], d[3]),
     r"x_train contains NaN or inf \(rows \[3\]"),
    (lambda d: (d[0], d[1], d[2], None), "give both x_val and y_val"),
    (lambda d: (d[0],), "data as a tuple must be"),
])
def test_bad_data(mutate, match):
    with pytest.raises(TrainingError, match=match):
        ctdnn.train(_model(), mutate(_data()), epochs=1, progress=False)


@pytest.mark.parametrize("kwargs,match", [
    ({"epochs": 0}, "epochs must be >= 1, got 0"),
    ({"epochs": 1, "batch_size": 2.5}, r"batch_size must be an integer, got 2.5 \(float\)"),
    ({"epochs": 1, "max_epochs": 0}, "max_epochs must be >= 1"),
    ({"epochs": 1, "optimizer": "lbfgs"}, "unknown optimizer 'lbfgs'"),
    ({"epochs": 1, "lr": -1.0}, "lr must be a positive finite number, got -1.0"),
    ({"epochs": 1, "lr": float("inf")}, "lr must be a positive finite number, got inf"),
    ({"epochs": 1, "alpha_theta": -1.0}, "alpha_theta must be a non-negative"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(TrainingError, match=match):
        ctdnn.train(_model(), _data(), progress=False, **kwargs)


def test_device_resolution():
    assert ctdnn.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(TrainingError, match="CUDA is not available"):
            ctdnn.resolve_device("cuda")


def test_rmsprop_and_dict_data():
    x, y, xv, yv = _data()
    res = ctdnn.train(_model(), {"x_train": x, "y_train": y}, epochs=3, optimizer="rmsprop",
                      progress=False)
    assert res.status == "completed" and math.isnan(res.history["val_rel_err"][0])


def test_solver_failure_stops_with_status():
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(4, 2, width=5, rtol=1e-6, atol=1e-8, adjoint=False)
    res = ctdnn.train(model, _data(), epochs=1, batch_size=80, lr=1e-3, progress=False)
    assert res.status == "completed"
    model.max_num_steps = 2  # the next solve cannot finish
    res = ctdnn.train(model, _data(), epochs=3, batch_size=80, progress=False, name="tight budget")
    assert res.status == "solver_failed" and "too_many_steps" in res.message
    assert "tight budget" in res.message and res.epochs_completed == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("adjoint", [True, False])
def test_history_splits_forward_and_backward_nfe(adjoint):
    torch.manual_seed(0)
    model = ctdnn.NeuralODE(4, 2, width=5, rtol=1e-5, atol=1e-7, adjoint=adjoint)
    per_solve = []  # every training solve's stats (backward counts fill in during backward())
    hook = model.register_forward_hook(
        lambda m, args, out: per_solve.append(m.stats) if m.training else None)
    try:
        res = ctdnn.train(model, _data(), epochs=3, batch_size=40, lr=1e-2, progress=False)
    finally:
        hook.remove()
    h = res.history
    assert len(per_solve) == 3 * 2  # 80 samples, batches of 40
    # cumulative per epoch, summed independently from the per-solve counters
    fwd = [sum(s.nfe_forward for s in per_solve[:2 * e]) for e in (1, 2, 3)]
    bwd = [sum(s.nfe_backward for s in per_solve[:2 * e]) for e in (1, 2, 3)]
    assert h["nfe_forward"] == fwd and h["nfe_backward"] == bwd
    assert h["nfe"] == [f + b for f, b in zip(fwd, bwd)]
    assert fwd[0] > 0 and (bwd[0] > 0) == adjoint  # backpropagation adds no evaluations


def test_nfe_history_resumes_bit_identically(tmp_path):
    def node():
        torch.manual_seed(0)
        return ctdnn.NeuralODE(4, 2, width=5, rtol=1e-4, atol=1e-6, adjoint=True)

    ref = ctdnn.train(node(), _data(), epochs=4, batch_size=40, lr=1e-2, progress=False)
    ck = tmp_path / "node.ckpt"
    ctdnn.train(node(), _data(), epochs=4, batch_size=40, lr=1e-2, progress=False,
                checkpoint=ck, max_epochs=2)
    res = ctdnn.train(node(), _data(), epochs=4, batch_size=40, lr=1e-2, progress=False,
                      checkpoint=ck, resume=True)
    for key in ("loss", "val_rel_err", "nfe", "nfe_forward", "nfe_backward"):
        assert res.history[key] == ref.history[key], key


def test_a_diverged_run_is_checkpointed_and_reported_again_on_resume(tmp_path, monkeypatch):
    ck = tmp_path / "run.ckpt"
    res = ctdnn.train(_diverging(_model(), monkeypatch), _data(), epochs=10, batch_size=16, progress=False,
                      checkpoint=ck, checkpoint_every=100)
    assert res.status == "diverged" and load_checkpoint(ck, "train")["epoch"] == 2
    again_model = _model(seed=5)
    again = ctdnn.train(again_model, _data(), epochs=10, batch_size=16, progress=False,
                        checkpoint=ck, resume=True)
    assert (again.status, again.message, again.epochs_completed) == (res.status, res.message, 2)
    assert again.history == res.history
    for k, v in res.best_state.items():  # the model holds the same best state
        assert torch.equal(v, again_model.state_dict()[k]), k


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_resume_continues_the_run(tmp_path):
    ref_model = _model()
    ctdnn.train(ref_model, _data(), epochs=4, batch_size=16, progress=False, device="cuda")
    ck = tmp_path / "run.ckpt"
    ctdnn.train(_model(), _data(), epochs=4, batch_size=16, progress=False, device="cuda",
                checkpoint=ck, max_epochs=2)
    model = _model(seed=3)
    res = ctdnn.train(model, _data(), epochs=4, batch_size=16, progress=False, device="cuda",
                      checkpoint=ck, resume=True)
    assert res.status == "completed" and next(model.parameters()).is_cuda
    for k, v in ref_model.state_dict().items():  # GPU kernels need not be bit-reproducible
        torch.testing.assert_close(model.state_dict()[k], v, rtol=1e-5, atol=1e-6)
