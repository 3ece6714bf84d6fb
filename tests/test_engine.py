"""The shared training engine on a toy loop: last good and best state, failures, interruption,
progress, checkpoints and resume."""

import math

import pytest
import torch
from torch import nn

from ctdnn.engine import (BestState, Checkpoint, Clock, Progress, Run, Snapshot, TrainingError,
                          load_checkpoint, new_log)
from ctdnn.solvers import SolverError, SolverStats
from ctdnn.status import Status


def _parts(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 1).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    return model, opt, gen


X = torch.linspace(-1, 1, 24, dtype=torch.float64).reshape(8, 3)
Y = X.sum(1, keepdim=True) ** 2


def _toy_run(tmp_path=None, *, total=6, max_steps=None, fail_at=None, solver_fail_at=None,
             interrupt_at=None, resume=False, seed=0, parts=None):
    """A loop like train's: a step, record, best, commit; faults injected at given steps."""
    model, opt, gen = parts or _parts(seed)
    ck = None
    if tmp_path is not None:
        ck = Checkpoint(tmp_path / "toy.ckpt", "toy", {"total": total}, every=2)
    run = Run(model, opt, gen, label="toy", unit="epoch", total=total,
              logs={"history": new_log(("epoch", "loss", "wall_time"))},
              counters={"work": 0}, checkpoint=ck, progress=False)
    if resume:
        run.resume()
    with run.running(max_steps) as steps:
        for epoch in steps:
            idx = torch.randperm(8, generator=gen)[:4]
            loss = (model(X[idx]) - Y[idx]).square().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.counters["work"] += 1
            if epoch == interrupt_at:
                raise KeyboardInterrupt
            if epoch == solver_fail_at:
                raise SolverError("too_many_steps", "budget spent", SolverStats(nfe_forward=9))
            if epoch == fail_at:
                run.fail(Status.DIVERGED, f"non-finite training loss in epoch {epoch}")
                break
            run.record(epoch=epoch, loss=float(loss.detach()))
            run.offer_best(epoch, float(loss.detach()))
            run.commit(epoch)
    run.finish()
    return run, model


def _same_state(a, b):
    return all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_best_state_keeps_the_lowest_score_and_copies_only_then():
    best, calls = BestState(), []

    def state(tag):
        return lambda: calls.append(tag) or {"tag": tag}

    assert best.offer(1, math.inf, state(1))  # the first state is kept even when inf
    assert best.offer(2, 0.5, state(2)) and not best.offer(3, 0.7, state(3))
    assert not best.offer(4, 0.5, state(4))  # ties keep the earlier state
    assert (best.step, best.score, best.state, calls) == (2, 0.5, {"tag": 2}, [1, 2])


def test_snapshot_restores_model_optimizer_generator_logs_and_counters():
    model, opt, gen = _parts()
    log = {"history": new_log(("a",))}
    counters = {"n": 1}
    snap = Snapshot(model, opt, gen, log, counters)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    draw = torch.rand(3, generator=gen)
    model(X).sum().backward()
    opt.step()
    log["history"]["a"].append(1.0)
    counters["n"] = 5
    snap.restore()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert opt.state_dict()["state"] == {} and torch.equal(torch.rand(3, generator=gen), draw)
    assert log["history"]["a"] == [] and counters == {"n": 1}


def test_clock_and_progress():
    clock = Clock(offset=10.0)
    assert 10.0 <= clock() < 20.0
    bar = Progress(False, 5)
    bar.update(loss="1")  # disabled: nothing to do
    bar.close()
    bar = Progress(True, 5, initial=2, label="x")
    bar.update(loss="1.0e-01")
    assert bar.bar.n == 3
    bar.close()


def test_a_run_records_and_keeps_the_best_state():
    run, model = _toy_run()
    h = run.history
    assert run.status == Status.COMPLETED and run.done == 6 and h["epoch"] == list(range(1, 7))
    assert len(h["wall_time"]) == 6 and h["wall_time"] == sorted(h["wall_time"])
    assert run.best.score == min(h["loss"]) and run.best.step == 1 + h["loss"].index(run.best.score)
    assert run.counters == {"work": 6}
    run.load_best("cpu")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in run.best.state.items())


def test_a_failure_restores_the_last_good_state():
    ref, ref_model = _toy_run(total=2)
    run, model = _toy_run(fail_at=3)
    assert run.status == Status.DIVERGED and run.done == 2 and run.history["epoch"] == [1, 2]
    assert run.message == ("toy: non-finite training loss in epoch 3; stopped and restored the "
                           "state after epoch 2")
    assert run.counters == {"work": 2} and _same_state(model, ref_model)


def test_a_solver_error_ends_the_run_with_its_status():
    run, _ = _toy_run(solver_fail_at=4)
    assert (run.status, run.solver_status, run.done) == (Status.SOLVER_FAILED,
                                                         Status.TOO_MANY_STEPS, 3)
    assert run.message.startswith("toy: in epoch 4, ") and "budget spent" in run.message
    assert run.message.endswith("stopped and restored the state after epoch 3")


def test_max_steps_gives_partial_and_resume_is_bit_identical(tmp_path):
    full, full_model = _toy_run()
    part, _ = _toy_run(tmp_path, max_steps=3)
    assert part.status == Status.PARTIAL and part.message == (
        "toy: stopped after epoch 3 of 6 (max_epochs)")
    assert load_checkpoint(tmp_path / "toy.ckpt", "toy")["epoch"] == 3  # the last step of a call
    rest, model = _toy_run(tmp_path, resume=True, seed=7)
    assert rest.status == Status.COMPLETED and rest.start == 3
    assert rest.history["loss"] == full.history["loss"] and rest.counters == {"work": 6}
    assert rest.history["wall_time"][3] >= rest.history["wall_time"][2]  # continues the clock
    assert _same_state(model, full_model)


def test_an_interruption_restores_saves_and_reraises(tmp_path):
    full, full_model = _toy_run()
    parts = _parts()
    with pytest.raises(KeyboardInterrupt):
        _toy_run(tmp_path, interrupt_at=5, parts=parts)
    ref, ref_model = _toy_run(total=4)
    assert _same_state(parts[0], ref_model)  # the half-done epoch 5 is gone
    saved = load_checkpoint(tmp_path / "toy.ckpt", "toy")
    assert saved["epoch"] == 4 and saved["history"]["epoch"] == [1, 2, 3, 4]
    assert saved["counters"] == {"work": 4} and saved["ended"] is None
    rest, model = _toy_run(tmp_path, resume=True, seed=3)
    assert rest.history["loss"] == full.history["loss"] and _same_state(model, full_model)


def test_a_failed_run_is_checkpointed_and_not_retried(tmp_path):
    first, _ = _toy_run(tmp_path, fail_at=3)
    again, _ = _toy_run(tmp_path, resume=True, seed=4)
    assert (again.status, again.message, again.done) == (first.status, first.message, 2)
    assert again.history == first.history and again.best.step == first.best.step


def test_resume_refuses_another_run_and_incomplete_files(tmp_path):
    _toy_run(tmp_path)
    with pytest.raises(TrainingError, match=r"other settings \(total: checkpoint 6, this run 7\)"):
        _toy_run(tmp_path, total=7, resume=True)
    ck = Checkpoint(tmp_path / "toy.ckpt", "toy", {"total": 6})
    ck.save({"model": {}, "epoch": 1})  # verified, but lacking what a resume needs
    with pytest.raises(TrainingError, match="is incomplete or inconsistent"):
        _toy_run(tmp_path, resume=True)
    assert Checkpoint(tmp_path / "none.ckpt", "toy", {}).load() is None
