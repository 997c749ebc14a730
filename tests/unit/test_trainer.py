"""The training loop (docs/ktrdr-semantics.md §9): learning, repeatability, stop, resume, early stopping."""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainhost.jobs.pipeline.errors import TrainingError
from trainhost.jobs.pipeline.metrics import evaluate_classification
from trainhost.jobs.pipeline.model import build_mlp
from trainhost.jobs.pipeline.trainer import (
    EpochRecord,
    _make_optimizer,
    _make_scheduler,
    _place_learning_rate,
    class_weights,
    configure_threads,
    focal_loss,
    train_model,
)
from trainhost.jobs.pipeline.training_settings import EarlyStoppingConfig, LRSchedulerConfig, TrainingConfig


def planted(n: int = 4000, seed: int = 0):
    """Labels are the argmax of three fixed linear combinations of six features."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    W = rng.standard_normal((6, 3))
    y = (X @ W).argmax(axis=1)
    a, b = int(0.7 * n), int(0.85 * n)
    return (X[:a], y[:a]), (X[a:b], y[a:b]), (X[b:], y[b:])


def fresh_model(seed: int = 0, hidden=(32, 16), dropout: float = 0.1):
    torch.manual_seed(seed)
    return build_mlp(6, list(hidden), dropout=dropout)


def config(**overrides) -> TrainingConfig:
    return TrainingConfig(**{"epochs": 3, "batch_size": 64, "learning_rate": 0.01, **overrides})


def train(model, X, y, Xv, yv, config: TrainingConfig, **options):
    """train_model on the CPU, whatever the machine has."""
    return train_model(model, X, y, Xv, yv, config, device="cpu", **options)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_timing(history: list[dict]) -> list[dict]:
    drop = ("duration_s", "samples_per_second", "timestamp")
    return [{k: v for k, v in record.items() if k not in drop} for record in history]


def test_learns_a_planted_signal():
    (Xtr, ytr), (Xva, yva), (Xte, yte) = planted()
    model = fresh_model()
    result = train(model, Xtr, ytr, Xva, yva, config(epochs=20))
    metrics = evaluate_classification(model, Xte, yte, 3)
    assert metrics["test_accuracy"] > 0.95
    assert result.epochs_trained == 20 and not result.stopped and not result.early_stopped
    assert result.final_val_accuracy > 0.95
    assert result.device["type"] == "cpu" and result.samples_per_second > 0


def test_epoch_records_and_callbacks():
    (Xtr, ytr), (Xva, yva), _ = planted(1000)
    records: list[EpochRecord] = []
    progress = []
    result = train(fresh_model(), Xtr, ytr, Xva, yva, config(epochs=2, batch_size=100),
                         on_epoch=records.append, on_batch=progress.append)
    assert [r.epoch for r in records] == [1, 2]
    assert result.history == [vars(r) for r in records]
    first = records[0]
    assert 0 <= first.train_accuracy <= 1 and 0 <= first.val_accuracy <= 1
    assert first.learning_rate == 0.01 and first.duration_s > 0 and first.samples_per_second > 0
    assert datetime.fromisoformat(first.timestamp).utcoffset().total_seconds() == 0
    assert len(progress) == 2 * 7  # 700 samples in batches of 100
    assert (progress[-1].epoch, progress[-1].batch, progress[-1].total_batches) == (2, 7, 7)
    assert progress[-1].samples_seen == 1400 and progress[-1].total_epochs == 2


def test_seeded_runs_are_repeatable_to_the_bit():
    (Xtr, ytr), (Xva, yva), _ = planted(1500)
    a, b = fresh_model(), fresh_model()
    ra = train(a, Xtr, ytr, Xva, yva, config())
    rb = train(b, Xtr, ytr, Xva, yva, config())
    assert same_weights(a, b)
    assert without_timing(ra.history) == without_timing(rb.history)


def test_should_stop_ends_after_the_current_batch_and_resume_finishes(tmp_path):
    (Xtr, ytr), (Xva, yva), _ = planted(2000)  # 1400 samples: 22 batches of 64
    ckpt = tmp_path / "ckpt.pt"
    calls = []
    stop = {"now": False}

    def on_batch(p):
        calls.append((p.epoch, p.batch))
        if (p.epoch, p.batch) == (2, 5):
            stop["now"] = True

    model = fresh_model()
    result = train(model, Xtr, ytr, Xva, yva, config(epochs=4), on_batch=on_batch,
                         should_stop=lambda: stop["now"], checkpoint_path=ckpt)
    assert calls[-1] == (2, 5) and len(calls) == 22 + 5  # nothing ran after the flag
    assert result.stopped and result.epochs_trained == 1
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 1 and len(saved["history"]) == 1
    assert all(torch.equal(saved["model"][k], v) for k, v in model.state_dict().items())  # the stop state

    resumed = train(model, Xtr, ytr, Xva, yva, config(epochs=4), checkpoint_path=ckpt, resume=True)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert resumed.epochs_trained == 4 and not resumed.stopped


def test_resume_continues_at_the_next_epoch_exactly(tmp_path):
    (Xtr, ytr), (Xva, yva), _ = planted(1500)
    straight = fresh_model()
    full = train(straight, Xtr, ytr, Xva, yva, config(epochs=4))

    ckpt = tmp_path / "run" / "ckpt.pt"
    model = fresh_model()
    train(model, Xtr, ytr, Xva, yva, config(epochs=2), checkpoint_path=ckpt)
    seen = []
    resumed = train(fresh_model(seed=99), Xtr, ytr, Xva, yva, config(epochs=4),
                          checkpoint_path=ckpt, resume=True, on_epoch=lambda r: seen.append(r.epoch))
    assert seen == [3, 4]
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert without_timing(resumed.history) == without_timing(full.history)
    assert resumed.epochs_trained == 4

    again = fresh_model(seed=7)
    done = train(again, Xtr, ytr, Xva, yva, config(epochs=4), checkpoint_path=ckpt, resume=True)
    assert len(done.history) == 4  # nothing left to run, nothing duplicated
    assert same_weights(again, straight)


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    (Xtr, ytr), (Xva, yva), _ = planted(600)
    result = train(fresh_model(), Xtr, ytr, Xva, yva, config(epochs=1),
                         checkpoint_path=tmp_path / "missing.pt", resume=True)
    assert result.epochs_trained == 1 and (tmp_path / "missing.pt").exists()


def weighted_val_loss(model, Xtr, ytr, Xva, yva) -> float:
    weight = class_weights(torch.as_tensor(ytr), 3)
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(torch.as_tensor(Xva)), torch.as_tensor(yva), weight=weight).item()


def test_early_stopping_restores_the_best_weights():
    # Pure-noise labels on a small training set: validation loss bottoms out early, then rises.
    rng = np.random.default_rng(1)
    Xtr, ytr = rng.standard_normal((200, 6)).astype(np.float32), rng.integers(0, 3, 200)
    Xva, yva = rng.standard_normal((300, 6)).astype(np.float32), rng.integers(0, 3, 300)
    model = fresh_model(hidden=(64, 64), dropout=0.0)
    es = EarlyStoppingConfig(monitor="val_loss", patience=3, min_delta=0.0)
    result = train(model, Xtr, ytr, Xva, yva, config(epochs=60, batch_size=16, early_stopping=es))

    assert result.early_stopped and result.epochs_trained < 60
    assert result.best_epoch == result.epochs_trained - 3
    losses = [r["val_loss"] for r in result.history]
    assert result.best_val_loss == min(losses) != losses[-1]
    assert result.best_val_accuracy == result.history[result.best_epoch - 1]["val_accuracy"]
    assert weighted_val_loss(model, Xtr, ytr, Xva, yva) == pytest.approx(result.best_val_loss, abs=1e-6)


def test_early_stopping_min_delta_and_accuracy_monitor():
    (Xtr, ytr), (Xva, yva), _ = planted(1000)
    es = EarlyStoppingConfig(monitor="val_accuracy", patience=2, min_delta=1.0)  # nothing can improve by 1.0
    result = train(fresh_model(), Xtr, ytr, Xva, yva, config(epochs=10, early_stopping=es))
    assert result.early_stopped and result.epochs_trained == 3 and result.best_epoch == 1


def test_nan_loss_names_epoch_and_batch():
    (Xtr, ytr), (Xva, yva), _ = planted(1000)  # 700 rows
    Xtr = Xtr.copy()
    Xtr[123, 2] = np.nan
    # The run's first permutation decides which batch row 123 falls in.
    position = int((torch.randperm(700, generator=torch.Generator().manual_seed(42)) == 123).nonzero())
    with pytest.raises(TrainingError, match=f"loss became NaN at epoch 1, batch {position // 64 + 1}:"):
        train(fresh_model(), Xtr, ytr, Xva, yva, config())


def test_class_weights_formula():
    # n = [3, 1, 0]: inverse [1/3, 1, 0], sum 4/3, K = 3 -> [0.75, 2.25, 0].
    weights = class_weights(torch.tensor([0, 0, 0, 1]), 3)
    assert torch.allclose(weights, torch.tensor([0.75, 2.25, 0.0]))
    assert torch.allclose(class_weights(torch.tensor([0, 1, 2]), 3), torch.ones(3))


def test_focal_loss_on_a_hand_example():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    target = torch.tensor([0, 2])
    weight = torch.tensor([0.5, 1.0, 2.0])
    p0 = math.exp(2) / (math.exp(2) + 2)  # p of class 0 in row 0
    p1 = 1 / (2 + math.e)  # p of class 2 in row 1
    expected = (-0.5 * (1 - p0) ** 2 * math.log(p0) - 2.0 * (1 - p1) ** 2 * math.log(p1)) / 2
    assert focal_loss(logits, target, weight, 2.0).item() == pytest.approx(expected, rel=1e-6)
    # γ = 0 with unit weights is plain cross-entropy.
    assert focal_loss(logits, target, torch.ones(3), 0.0).item() == pytest.approx(
        F.cross_entropy(logits, target).item(), rel=1e-6)


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop"])
def test_other_optimizers_and_focal_loss_train(optimizer):
    (Xtr, ytr), (Xva, yva), _ = planted(1000)
    result = train(fresh_model(), Xtr, ytr, Xva, yva,
                         config(optimizer=optimizer, loss="focal", gradient_clip=None, weight_decay=0.0))
    assert result.final_val_accuracy > 0.5


def test_lr_schedulers_step_per_epoch():
    (Xtr, ytr), (Xva, yva), _ = planted(600)
    step = train(fresh_model(), Xtr, ytr, Xva, yva,
                       config(lr_scheduler={"type": "step", "params": {"step_size": 1, "gamma": 0.5}}))
    assert [r["learning_rate"] for r in step.history] == pytest.approx([0.01, 0.005, 0.0025])
    exponential = train(fresh_model(), Xtr, ytr, Xva, yva,
                              config(epochs=2, lr_scheduler={"type": "exponential", "params": {"gamma": 0.95}}))
    assert [r["learning_rate"] for r in exponential.history] == pytest.approx([0.01, 0.0095])
    plateau = train(fresh_model(), Xtr, ytr, Xva, yva,
                          config(epochs=2, lr_scheduler={"type": "reduce_on_plateau",
                                                        "params": {"factor": 0.5, "patience": 0}}))
    assert plateau.history[0]["learning_rate"] == 0.01


def test_refuses_bad_labels_and_config():
    (Xtr, ytr), (Xva, yva), _ = planted(300)
    with pytest.raises(TrainingError, match="labels must lie"):
        train(fresh_model(), Xtr, ytr + 3, Xva, yva, config())
    with pytest.raises(TrainingError, match="cannot train"):
        train(fresh_model(), Xtr, ytr, Xva[:0], yva[:0], config())
    with pytest.raises(ValueError, match="optimizer"):
        config(optimizer="adagrad")
    with pytest.raises(ValueError, match="step_mode"):
        train(fresh_model(), Xtr, ytr, Xva, yva, config(), step_mode="fast")


def test_configure_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads() == before
        monkeypatch.delenv("OMP_NUM_THREADS")
        monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
        assert 1 <= configure_threads() <= len(__import__("os").sched_getaffinity(0))
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("overrides", [
    {},  # 1050 samples: 16 full batches of 64 and a last one of 26, which takes the eager step
    {"batch_size": 50, "dropout": 0.3, "lr_scheduler": {"type": "step", "params": {"step_size": 1, "gamma": 0.5}}},
    {"loss": "huber", "huber_delta": 0.5},
])
def test_the_static_step_a_cuda_graph_replays_trains_exactly_like_the_eager_step(overrides):
    """On CUDA the static step is captured once and replayed; here it runs eagerly, so a difference
    from the eager loop is in its buffers and on-device batch counter, which the graph replays as is."""
    (Xtr, ytr), (Xva, yva), _ = planted(1500)
    dropout = overrides.pop("dropout", 0.1)
    if overrides.get("loss") == "huber":
        ytr, yva = (y.astype(np.float32) - 1 for y in (ytr, yva))
    eager, static = fresh_model(dropout=dropout), fresh_model(dropout=dropout)
    by_eager = train(eager, Xtr, ytr, Xva, yva, config(**overrides), step_mode="eager")
    by_static = train(static, Xtr, ytr, Xva, yva, config(**overrides), step_mode="static")
    # Equal up to rounding: a gathered batch and a slice of the epoch's rows may sit at differently
    # aligned addresses, which can change the order of the GEMM's sums.
    for name, weight in static.state_dict().items():
        torch.testing.assert_close(weight, eager.state_dict()[name], rtol=0, atol=1e-5)
    for got, expected in zip(without_timing(by_static.history), without_timing(by_eager.history), strict=True):
        assert got == pytest.approx(expected, rel=1e-5)


def test_a_learning_rate_on_the_device_is_updated_in_place_by_the_schedule():
    """A captured optimizer step reads the rate from one tensor: the schedule must change its value,
    never replace it."""
    model = fresh_model()
    optimizer = _make_optimizer(model, config(), torch.device("cpu"))
    _place_learning_rate(optimizer, torch.device("cpu"))
    rate = optimizer.param_groups[0]["lr"]
    scheduler = _make_scheduler(optimizer, LRSchedulerConfig(type="step", params={"step_size": 1, "gamma": 0.5}))
    model(torch.zeros(4, 6)).sum().backward()
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] is rate and float(rate) == pytest.approx(0.005)
    _place_learning_rate(optimizer, None)  # e.g. a GPU run's checkpoint resumed on the CPU
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)
