"""Packed training (packed_trainer.py): K models trained in one vectorised step end as K separate
`train_model` runs with the same seeds end, whatever each model's own settings, data and fate."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from trainhost.jobs.pipeline.errors import TrainingError
from trainhost.jobs.pipeline.model import build_mlp
from trainhost.jobs.pipeline.packed_trainer import PackMember, _StackedOptimizer, train_packed
from trainhost.jobs.pipeline.trainer import TrainResult, train_model
from trainhost.jobs.pipeline.training_settings import EarlyStoppingConfig, TrainingConfig

COMPARED = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate")
STEP_LR = {"type": "step", "params": {"step_size": 1, "gamma": 0.5}}
PLATEAU_LR = {"type": "reduce_on_plateau", "params": {"factor": 0.5, "patience": 0}}
# Rates each optimizer trains well and stably with (a chaotic run would amplify float32 rounding).
RATES = {"adam": 0.01, "sgd": 0.05, "rmsprop": 0.003}


def planted(n: int = 2000, seed: int = 0, regression: bool = False):
    """Three fixed linear combinations of six features: the label is their argmax, or in regression
    the first one's value (a return-like target around 0)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 6)).astype(np.float32)
    scores = X @ rng.standard_normal((6, 3))
    y = (0.1 * scores[:, 0]).astype(np.float32) if regression else scores.argmax(axis=1)
    a = int(0.7 * n)
    return (X[:a], y[:a]), (X[a:], y[a:])


def variant(seed: int, dropout: float = 0.1, n_train: int | None = None, n_val: int | None = None,
            weighted: bool = False, regression: bool = False, **overrides) -> dict:
    """One model of a pack: its seed, dropout, rows (the first n_train / n_val), and settings."""
    (X, y), (Xv, yv) = planted(regression=regression)
    X, y, Xv, yv = X[:n_train], y[:n_train], Xv[:n_val], yv[:n_val]
    weights = np.random.default_rng(seed).random(len(y)) if weighted else None
    config = TrainingConfig(**{"epochs": 2, "batch_size": 64, "seed": seed, **overrides})
    return {"data": (X, y, Xv, yv), "config": config, "dropout": dropout, "weights": weights,
            "outputs": 1 if regression else 3}


def fresh_model(v: dict):
    torch.manual_seed(v["config"].seed)
    return build_mlp(6, [32, 16], dropout=v["dropout"], output_size=v["outputs"])


def alone(v: dict, **callbacks):
    """The variant trained by train_model: (model, result or the TrainingError it raised)."""
    model = fresh_model(v)
    try:
        return model, train_model(model, *v["data"], v["config"], device="cpu", sample_weights=v["weights"],
                                  **callbacks)
    except TrainingError as exc:
        return model, exc


def packed(variants: list[dict], callbacks: list[dict] | None = None, device: str = "cpu", **options):
    """The variants trained together: [(model, result or TrainingError)]."""
    models = [fresh_model(v) for v in variants]
    members = [PackMember(*v["data"], v["config"], sample_weights=v["weights"], **extra)
               for v, extra in zip(variants, callbacks or [{}] * len(variants), strict=True)]
    return list(zip(models, train_packed(models, members, device=device, **options), strict=True))


def assert_same_training(got, expected) -> None:
    """Same weights (every state_dict tensor), history and result, up to float32 rounding."""
    (model, result), (alone_model, alone_result) = got, expected
    assert isinstance(result, TrainResult), result
    for name, weight in alone_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], weight, rtol=1e-4, atol=1e-5, msg=name)
    assert len(result.history) == len(alone_result.history)
    for record, alone_record in zip(result.history, alone_result.history, strict=True):
        assert {k: record[k] for k in COMPARED} == pytest.approx({k: alone_record[k] for k in COMPARED},
                                                                 rel=1e-4, abs=1e-6)
    for field in ("epochs_trained", "stopped", "early_stopped", "best_epoch"):
        assert getattr(result, field) == getattr(alone_result, field), field
    assert result.best_val_loss == pytest.approx(alone_result.best_val_loss, rel=1e-4)
    assert not model.training and result.device["type"] == "cpu" and result.samples_per_second > 0


def assert_pack_trains_as_alone(variants: list[dict], **options) -> list:
    together = packed(variants, **options)
    for got, v in zip(together, variants, strict=True):
        assert_same_training(got, alone(v))
    return together


def four_variants(optimizer: str, **shared) -> list[dict]:
    """Four models that differ in everything a pack lets them differ in."""
    lr = RATES[optimizer]
    common = {"optimizer": optimizer, **shared}
    return [
        variant(1, **common, learning_rate=lr),
        variant(2, dropout=0.3, n_train=900, n_val=200, **common, learning_rate=lr / 3, weight_decay=0.0,
                gradient_clip=None),
        variant(3, dropout=0.0, n_train=1000, weighted=True, **common, learning_rate=lr * 1.5, weight_decay=1e-3,
                gradient_clip=0.5, **({} if "epochs" in shared else {"epochs": 1})),
        variant(4, dropout=0.2, n_train=1300, n_val=450, **common, learning_rate=lr, lr_scheduler=STEP_LR),
    ]


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_a_pack_trains_each_model_as_it_trains_alone(optimizer):
    together = assert_pack_trains_as_alone(four_variants(optimizer))
    assert [result.epochs_trained for _, result in together] == [2, 2, 1, 2]
    assert [r["learning_rate"] for r in together[3][1].history] == pytest.approx([RATES[optimizer]] * 1 +
                                                                                 [RATES[optimizer] / 2])


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_early_stopping_restores_each_models_best_epoch(optimizer):
    # Nothing improves on epoch 1 by 10: every model stops after epoch 2 with epoch 1's weights.
    es = EarlyStoppingConfig(monitor="val_loss", patience=1, min_delta=10.0)
    together = assert_pack_trains_as_alone(four_variants(optimizer, early_stopping=es, epochs=5))
    assert all(result.early_stopped and result.best_epoch == 1 and result.epochs_trained == 2
               for _, result in together)


def test_early_stopping_ends_some_models_and_not_others():
    never = EarlyStoppingConfig(monitor="val_accuracy", patience=1, min_delta=1.0)  # stops after epoch 2
    patient = EarlyStoppingConfig(monitor="val_loss", patience=2, min_delta=0.0)  # still learning: runs on
    variants = [
        variant(1, epochs=6, early_stopping=never),
        variant(2, epochs=6, early_stopping=patient, n_train=700),
        variant(3, epochs=4, learning_rate=0.02, lr_scheduler=PLATEAU_LR),  # epoch 2 is worse: the rate halves
        variant(4, epochs=6, learning_rate=0.05, early_stopping=EarlyStoppingConfig(patience=1, min_delta=0.0),
                dropout=0.3),
    ]
    together = assert_pack_trains_as_alone(variants)
    assert [(r.epochs_trained, r.early_stopped, r.best_epoch) for _, r in together] == [
        (2, True, 1), (6, False, 6), (4, False, 3), (3, True, 2)]
    assert [r["learning_rate"] for r in together[2][1].history] == pytest.approx([0.02, 0.02, 0.01, 0.01])


@pytest.mark.parametrize("loss", ["focal", "huber", "mse"])
def test_focal_and_regression_packs(loss):
    regression = loss != "focal"
    own = "focal_gamma" if loss == "focal" else "huber_delta"
    # Each its own focal γ or Huber δ (MSE has none).
    values = (2.0, 1.0, 0.05) if loss != "mse" else (None, None, None)
    variants = [variant(seed, regression=regression, loss=loss, n_train=n, learning_rate=lr,
                        **({own: value} if value is not None else {}))
                for seed, n, lr, value in zip((1, 2, 3), (None, 800, 1000), (0.01, 0.005, 0.01), values, strict=True)]
    assert_pack_trains_as_alone(variants)


def stop_at_call(calls: int):
    """should_stop that turns true at its `calls`-th call (train_model and a pack ask after every batch)."""
    count = itertools.count(1)
    return lambda: next(count) >= calls


def test_stopping_a_model_mid_epoch_ends_it_alone():
    es = EarlyStoppingConfig(patience=5, min_delta=0.0)
    variants = [variant(1, epochs=3), variant(2, epochs=3, early_stopping=es), variant(3, epochs=3, n_train=900)]
    # 1400 rows make 22 batches: model 0 stops at epoch 2, batch 8 (its weights then), model 1 at batch 3
    # (early stopping's best, epoch 1, restored).
    stops = {0: 30, 1: 25}
    batches: list[list] = [[], [], []]
    callbacks = [{"on_batch": batches[i].append} for i in range(3)]
    for i, calls in stops.items():
        callbacks[i]["should_stop"] = stop_at_call(calls)
    together = packed(variants, callbacks)
    for i, v in enumerate(variants):
        assert_same_training(together[i], alone(v, **({"should_stop": stop_at_call(stops[i])} if i in stops else {})))
    assert [(r.stopped, r.epochs_trained, r.best_epoch) for _, r in together] == [(True, 1, 1), (True, 1, 1),
                                                                                (False, 3, 3)]
    assert [(p.epoch, p.batch) for p in batches[0]][-1] <= (2, 8)
    # on_batch is throttled, but comes at every epoch's last batch.
    assert [(p.epoch, p.batch, p.samples_seen) for p in batches[2] if p.batch == p.total_batches] == [
        (1, 15, 900), (2, 15, 1800), (3, 15, 2700)]


def test_a_member_that_fails_fails_alone_with_its_own_message():
    bad_labels = variant(2)
    X, y, Xv, yv = bad_labels["data"]
    bad_labels["data"] = (X, y + 3, Xv, yv)
    nan_rows = variant(3)
    X, y, Xv, yv = nan_rows["data"]
    X = X.copy()
    X[123, 2] = np.nan
    nan_rows["data"] = (X, y, Xv, yv)
    variants = [variant(1), bad_labels, nan_rows, variant(4, n_train=1000)]
    together = packed(variants)
    for i in (1, 2):
        _, expected = alone(variants[i])
        assert isinstance(expected, TrainingError) and isinstance(together[i][1], TrainingError)
        assert str(together[i][1]) == str(expected)
    assert "labels must lie" in str(together[1][1]) and "loss became NaN at epoch 1, batch" in str(together[2][1])
    for i in (0, 3):
        assert_same_training(together[i], alone(variants[i]))


def test_the_static_step_trains_like_the_eager_one():
    """The body a CUDA graph replays (fixed buffers, on-device step counter), run eagerly on the CPU: it
    draws dropout from each model's generator as the eager step does, so dropout stays on here."""
    variants = four_variants("adam")
    eager, static = packed(variants, step_mode="eager"), packed(variants, step_mode="static")
    for (model, result), (static_model, static_result) in zip(eager, static, strict=True):
        for name, weight in model.state_dict().items():
            torch.testing.assert_close(static_model.state_dict()[name], weight, rtol=0, atol=1e-5)
        assert [r["val_loss"] for r in static_result.history] == pytest.approx(
            [r["val_loss"] for r in result.history], rel=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "rmsprop"])
def test_the_stacked_optimizers_update_each_row_as_torchs_optimizer_does(optimizer):
    """To the bit on the CPU (train_model's fused Adam and SGD, single-tensor RMSprop) for a parameter
    whose size is a multiple of the SIMD width; a row that sits a step out (row 1 on odd steps) keeps
    its parameters and state, its step count included."""
    torch.manual_seed(0)
    rates, decays = [0.01, 0.003, 0.1], [1e-4, 0.0, 1e-2]
    start, grads = torch.randn(3, 512), [torch.randn(3, 512) for _ in range(5)]
    theta = start.clone().requires_grad_()
    stacked = _StackedOptimizer(optimizer, theta, rates, decays, torch.float64)
    with torch.no_grad():
        for i, grad in enumerate(grads):
            stacked.step(grad, torch.tensor([True, i % 2 == 0, True]))
    for row, (lr, wd) in enumerate(zip(rates, decays, strict=True)):
        p = torch.nn.Parameter(start[row].clone())
        kind = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop}[optimizer]
        extra = {"adam": {"fused": True}, "sgd": {"momentum": 0.9, "fused": True}, "rmsprop": {}}[optimizer]
        alone = kind([p], lr=lr, weight_decay=wd, **extra)
        for i, grad in enumerate(grads):
            if row != 1 or i % 2 == 0:
                p.grad = grad[row].clone()
                alone.step()
        assert torch.equal(theta[row].detach(), p.detach()), row


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_captured_step_trains_like_the_eager_one():
    """The static step replayed as a CUDA graph (bf16 autocast; dropout off: its one draw for all K is no
    single run's) against the eager step on the same GPU. (Device memory after a pack: bench/gpu.py.)"""
    variants = [variant(seed, dropout=0.0, n_train=n) for seed, n in ((1, None), (2, 900), (3, 1000))]
    graphed = packed(variants, device="cuda", step_mode="auto")
    eager = packed(variants, device="cuda", step_mode="eager")
    for (model, result), (eager_model, _) in zip(graphed, eager, strict=True):
        assert isinstance(result, TrainResult) and next(model.parameters()).is_cuda and not model.training
        for name, weight in eager_model.state_dict().items():
            torch.testing.assert_close(model.state_dict()[name], weight, rtol=1e-3, atol=1e-3)


def test_epoch_callbacks_and_the_models_left_behind():
    records: list[list] = [[], []]
    variants = [variant(1, epochs=3), variant(2, epochs=2, n_train=500)]
    together = packed(variants, [{"on_epoch": records[i].append} for i in range(2)])
    for (model, result), seen in zip(together, records, strict=True):
        assert result.history == [vars(r) for r in seen]
        assert not model.training
        for p in model.parameters():  # its own weights, not a view of the pack's
            assert p.untyped_storage().nbytes() == p.numel() * p.element_size()
    assert [r.epoch for r in records[0]] == [1, 2, 3] and [r.epoch for r in records[1]] == [1, 2]


def test_what_cannot_be_packed_is_refused():
    a, b = variant(1), variant(2)
    member = PackMember(*a["data"], a["config"])
    torch.manual_seed(0)
    with pytest.raises(TrainingError, match="same layers"):
        train_packed([build_mlp(6, [32, 16]), build_mlp(6, [32, 8])], [member, member], device="cpu")
    with pytest.raises(TrainingError, match="share their optimizer"):
        other = PackMember(*b["data"], b["config"].model_copy(update={"optimizer": "sgd"}))
        train_packed([fresh_model(a), fresh_model(b)], [member, other], device="cpu")
    with pytest.raises(TrainingError, match="one model per member"):
        train_packed([fresh_model(a)], [member, member], device="cpu")
    with pytest.raises(ValueError, match="step_mode"):
        train_packed([fresh_model(a)], [member], device="cpu", step_mode="fast")
    assert train_packed([], [], device="cpu") == []


def test_each_model_is_told_its_end_as_soon_as_it_leaves_the_pack():
    """on_end runs once per model, when its own training ends, with its final weights in its model,
    while the others still train (what lets a session be saved before its pack is done)."""
    variants = [variant(1, epochs=3), variant(2, epochs=1), variant(3, epochs=2)]
    models = [fresh_model(v) for v in variants]
    ended: list[tuple] = []
    epochs_seen = [0]

    def on_epoch(record) -> None:
        epochs_seen[0] = max(epochs_seen[0], record.epoch)

    def on_end(k: int):
        def told(outcome) -> None:
            state = {name: w.clone() for name, w in models[k].state_dict().items()}
            ended.append((k, epochs_seen[0], state, outcome))
        return told

    members = [PackMember(*v["data"], v["config"], on_epoch=on_epoch, on_end=on_end(k))
               for k, v in enumerate(variants)]
    results = train_packed(models, members, device="cpu")
    assert [k for k, *_ in ended] == [1, 2, 0]  # in the order their trainings end
    assert [when for _, when, *_ in ended] == [1, 2, 3]  # the pack's epoch when each was told
    for k, _, state, outcome in ended:
        assert outcome is results[k]
        for name, weight in models[k].state_dict().items():
            assert torch.equal(state[name], weight)  # nothing moved it after it was told
