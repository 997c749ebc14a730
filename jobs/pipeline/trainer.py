"""The training loop (docs/ktrdr-semantics.md §9), written to be read top to bottom.

`train_model` keeps the data on the device, draws each epoch's batches by slicing one seeded
permutation, and never waits for the device inside the step: per-batch losses and predictions
stay on the device and are read once per epoch. Unlike KTRDR it honours `optimizer`,
`weight_decay`, `gradient_clip`, `early_stopping` and `lr_scheduler`, and restores the best
weights for real when early stopping is on. On CUDA an MLP trained with Adam takes the static step:
the same computation reading fixed buffers through an on-device batch counter, captured once as a
CUDA graph and replayed (`CapturedStep`), since a small model at batch 32 is otherwise bound by
hundreds of kernel launches a step (`step_mode` chooses; "static" runs it eagerly, for tests).

Sequence models (LSTM/GRU, §8) get their windows as an index tensor: sample i is the rows
`windows[i]` of X (window i pairs X[w_i] with y[i]); the permutation shuffles windows and each batch
gathers its rows, so no window copy of the data is ever made. With `sample_weights` (triple-barrier
uniqueness) each epoch draws n samples with replacement in proportion to the weights
(torch.multinomial, KTRDR's WeightedRandomSampler) instead of permuting. Regression (`task`)
trains one output with Huber(`huber_delta`) or MSE; its accuracy is the share of (pred > 0) ==
(y > 0) (§9).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainhost.jobs.pipeline.errors import TrainingError
from trainhost.jobs.pipeline.model import as_tensor, describe_device, select_device

log = logging.getLogger("trainhost.trainer")
# A captured step's optimizer also runs a few steps uncaptured (warm-up, a last short batch): expected.
warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True", category=UserWarning)

OPTIMIZERS = ("adam", "sgd", "rmsprop")
LOSSES = ("cross_entropy", "focal", "huber", "mse")
TASKS = ("classification", "regression")
VALIDATION_CHUNK = 8192  # windows evaluated at once: bounds the gathered (chunk, L, features) copy
# Per-batch work (batch size x parameters) up to which a run on the CPU uses one intra-op thread: below
# it OpenMP's fork/join costs more than splitting the work saves. v3_multi_indicator's MLP (2,627
# parameters) trained 22 % faster at batch 32 and 25 % faster at batch 256 on 1 thread than on 2 on an
# idle 2-core host, and 18x / 4.4x faster on a busy one, where a descheduled thread stalls every op;
# at batch 4096 (10.7M) 2 threads were 25 % faster on the idle host.
SINGLE_THREAD_WORK = 4_000_000
SCHEDULERS = ("step", "exponential", "reduce_on_plateau")
MONITORS = ("val_loss", "val_accuracy")
STEP_MODES = ("auto", "static", "eager")
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graph requires


@dataclass
class EarlyStopping:
    """Stop after `patience` epochs without `score >= best + min_delta` (score = -val_loss or val_accuracy)."""

    monitor: str = "val_loss"
    patience: int = 10
    min_delta: float = 0.001


@dataclass
class TrainConfig:
    """The `training` section as the loop uses it; defaults are KTRDR's (§1.6, §9).

    `lr_scheduler` is {"type": "step", "step_size", "gamma"}, {"type": "exponential", "gamma"} or
    {"type": "reduce_on_plateau", "factor", "patience"}; missing keys take §9's defaults.
    """

    epochs: int = 100
    batch_size: int = 32
    learning_rate: float = 0.001
    optimizer: str = "adam"
    weight_decay: float = 1e-4
    gradient_clip: float | None = 1.0
    loss: str = "cross_entropy"
    focal_gamma: float = 2.0
    huber_delta: float = 0.01
    task: str = "classification"
    early_stopping: EarlyStopping | None = None
    lr_scheduler: dict | None = None
    seed: int = 42
    device: str = "auto"
    # "auto": on CUDA an MLP's whole step (forward, backward, clip, optimizer) is captured once as a
    # CUDA graph and replayed, since a small model at batch 32 is bound by kernel launches; "static"
    # runs that same step (fixed buffers, on-device batch counter) eagerly elsewhere; "eager": never.
    step_mode: str = "auto"

    def __post_init__(self) -> None:
        # The strategy validator words these for users; here they only guard programming errors.
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.task not in TASKS or (self.task == "regression") != (self.loss in ("huber", "mse")):
            raise ValueError(f"task {self.task!r} cannot train with loss {self.loss!r}")
        if self.lr_scheduler is not None and self.lr_scheduler.get("type") not in SCHEDULERS:
            raise ValueError(f"lr_scheduler.type must be one of {SCHEDULERS}, got {self.lr_scheduler!r}")
        if self.step_mode not in STEP_MODES:
            raise ValueError(f"step_mode must be one of {STEP_MODES}, got {self.step_mode!r}")
        if self.early_stopping is not None and self.early_stopping.monitor not in MONITORS:
            raise ValueError(f"early_stopping.monitor must be one of {MONITORS}")


@dataclass(slots=True)
class BatchProgress:
    """Passed to `on_batch` after every batch: plain ints, nothing read from the device."""

    epoch: int
    total_epochs: int
    batch: int
    total_batches: int
    samples_seen: int


@dataclass
class EpochRecord:
    """One finished epoch, as `on_epoch` receives it and the history stores it (as a dict)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    learning_rate: float
    duration_s: float
    samples_per_second: float
    timestamp: str


@dataclass
class TrainResult:
    """The run's record. `best_*` is the epoch early stopping kept (without it, the lowest val_loss);
    `final_*` is the last epoch's; `samples_per_second` covers this call's epochs only."""

    history: list[dict]
    epochs_trained: int
    stopped: bool
    early_stopped: bool
    best_epoch: int | None
    best_val_loss: float | None
    best_val_accuracy: float | None
    final_train_loss: float | None
    final_train_accuracy: float | None
    final_val_loss: float | None
    final_val_accuracy: float | None
    samples_per_second: float
    training_time_s: float
    device: dict = field(default_factory=dict)


def configure_threads() -> int:
    """Use one torch thread per available physical core unless the environment already chose.

    Containers often see fewer CPUs (affinity) than the machine has; torch's default counts the
    machine's and oversubscribes.
    """
    if any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return torch.get_num_threads()
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or available
    except ImportError:
        physical = available
    torch.set_num_threads(max(1, min(available, physical)))
    return torch.get_num_threads()


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """§9: w_c = (1/n_c)·K / Σ_{present c'} (1/n_c'), 0 for classes absent from `y`; K = `num_classes`."""
    counts = torch.bincount(y, minlength=num_classes).double()
    inverse = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
    return (inverse * num_classes / inverse.sum()).float()


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, gamma: float) -> torch.Tensor:
    """§9: mean_i[-w_{y_i} (1 - p_{y_i})^γ log p_{y_i}], a plain mean (not normalised by Σw)."""
    log_p = F.log_softmax(logits, dim=1).gather(1, target[:, None]).squeeze(1)
    return (-weight[target] * (1 - log_p.exp()).pow(gamma) * log_p).mean()


@contextmanager
def cpu_threads(model: nn.Module, batch_size: int, device: str | torch.device) -> Iterator[int]:
    """Intra-op threads for one training run on the CPU, restored afterwards: one for a small model
    (per-batch work up to SINGLE_THREAD_WORK), else one per physical core (`configure_threads`).
    Other devices, and an explicit OMP_NUM_THREADS / MKL_NUM_THREADS, are left alone."""
    before = torch.get_num_threads()
    chosen = any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    if chosen or select_device(str(device)).type != "cpu":
        yield before
        return
    if batch_size * sum(p.numel() for p in model.parameters()) <= SINGLE_THREAD_WORK:
        torch.set_num_threads(1)
    else:
        configure_threads()
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def _with_cpu_threads(train: Callable[..., TrainResult]) -> Callable[..., TrainResult]:
    @functools.wraps(train)
    def wrapper(model: nn.Module, X_train, y_train, X_val, y_val, config: TrainConfig, **options) -> TrainResult:
        with cpu_threads(model, config.batch_size, config.device):
            return train(model, X_train, y_train, X_val, y_val, config, **options)

    return wrapper


def forward_all(model: nn.Module, X: torch.Tensor, windows: torch.Tensor | None = None) -> torch.Tensor:
    """The model's outputs for every row of X, or for every window (rows X[windows[i]]), in chunks."""
    if windows is None:
        return model(X)
    return torch.cat([model(X[chunk]) for chunk in windows.split(VALIDATION_CHUNK)])


@_with_cpu_threads
def train_model(
    model: nn.Module,
    X_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray | torch.Tensor,
    X_val: np.ndarray | torch.Tensor,
    y_val: np.ndarray | torch.Tensor,
    config: TrainConfig,
    *,
    on_batch: Callable[[BatchProgress], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    train_windows: np.ndarray | torch.Tensor | None = None,
    val_windows: np.ndarray | torch.Tensor | None = None,
    sample_weights: np.ndarray | torch.Tensor | None = None,
    checkpoint_owner: dict | None = None,
    checkpoint_guard: Callable[[], bool] | None = None,
    on_resume: Callable[[list[dict]], None] | None = None,
) -> TrainResult:
    """Train `model` in place (it ends on the device, in eval mode) and return the run's record.

    `on_batch` and `should_stop` run after every batch and must be cheap (the caller throttles
    its own writes); `should_stop()` returning True ends the run after the current batch. With
    `checkpoint_path` a checkpoint is written after every epoch and on stop; `resume=True`
    continues from it at the next epoch, ending at `config.epochs`.
    Sequence models: `train_windows`/`val_windows` (n, L) are the rows of X in each sample's window,
    and y holds one label per window. `sample_weights` (one per training sample) switch shuffling to
    weighted sampling with replacement.
    `checkpoint_owner` ({"request": hash, "attempt": token}) is stored in every checkpoint; a
    checkpoint of another request, or of a later attempt, is not resumed: it is discarded (logged)
    and training starts from scratch. `checkpoint_guard()` runs right before each checkpoint is
    renamed into place: False skips that write, an exception (the attempt was superseded) ends the
    run. `on_resume(history)` is called once, before the first epoch, with the epochs the run
    continues from (empty from scratch).
    Seed torch before building the model too: initial weights come from the global RNG.
    """
    started = time.perf_counter()
    device = select_device(config.device)
    torch.manual_seed(config.seed)  # dropout draws from the global RNG
    generator = torch.Generator().manual_seed(config.seed)  # batch order only
    model.to(device)
    regression = config.task == "regression"

    # Data: moved to the device once; batches are slices of a per-epoch permuted copy (of the rows,
    # or of the window index, whose rows each batch then gathers).
    X_train, X_val = (as_tensor(x, torch.float32).to(device) for x in (X_train, X_val))
    label_type = torch.float32 if regression else torch.int64
    y_train, y_val = (as_tensor(y, label_type).to(device) for y in (y_train, y_val))
    train_windows, val_windows = (None if w is None else as_tensor(w, torch.int64).to(device)
                                  for w in (train_windows, val_windows))
    samples = X_train if train_windows is None else train_windows
    n, batch_size = len(y_train), config.batch_size
    if n == 0 or len(y_val) == 0:
        raise TrainingError(f"cannot train with {n} training and {len(y_val)} validation samples")
    if len(samples) != n or len(y_val) != len(X_val if val_windows is None else val_windows):
        raise TrainingError("each training and validation sample needs exactly one label")
    if sample_weights is not None:
        sample_weights = as_tensor(sample_weights, torch.float64)
        if len(sample_weights) != n or not bool((sample_weights >= 0).all()) or float(sample_weights.sum()) <= 0:
            raise TrainingError(f"sample_weights must be {n} non-negative numbers, not all 0")
    model.eval()
    with torch.no_grad():
        num_classes = forward_all(model, X_val, None if val_windows is None else val_windows[:1]).shape[-1]
    for name, y in (("training", y_train), ("validation", y_val)):
        if regression and not bool(torch.isfinite(y).all()):
            raise TrainingError(f"{name} targets must be finite numbers")
        if not regression and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise TrainingError(f"{name} labels must lie in [0, {num_classes}) for a model with "
                                f"{num_classes} outputs; found {int(y.min())}..{int(y.max())}")

    # Loss, optimizer, schedule. Predictions counted for accuracy: argmax, or (pred > 0) in regression.
    if regression:
        loss_fn = partial(F.huber_loss, delta=config.huber_delta) if config.loss == "huber" else F.mse_loss

        def criterion(outputs, target):
            return loss_fn(outputs[:, 0], target)

        def predict_into(outputs, out):
            return torch.gt(outputs[:, 0], 0, out=out)

        hits_train, hits_val = y_train > 0, y_val > 0  # what predictions are compared with
    else:
        weight = class_weights(y_train.cpu(), num_classes).to(device)  # counted in float64: not on MPS
        if config.loss == "focal":
            criterion = partial(focal_loss, weight=weight, gamma=config.focal_gamma)
        else:
            criterion = nn.CrossEntropyLoss(weight=weight)

        def predict_into(outputs, out):
            return torch.argmax(outputs, dim=1, out=out)

        hits_train, hits_val = y_train, y_val
    # The static step (fixed buffers, batch counter on the device) is what a CUDA graph can replay;
    # sequence models, and optimizers other than Adam, always run eagerly.
    static = train_windows is None and (config.step_mode == "static" or (
        config.step_mode == "auto" and device.type == "cuda" and config.optimizer == "adam"))
    graphed = static and device.type == "cuda"
    optimizer = _make_optimizer(model, config, device, capturable=graphed)
    _place_learning_rate(optimizer, device if graphed else None)
    scheduler = _make_scheduler(optimizer, config.lr_scheduler)
    # bfloat16 autocast for MLP classifiers on CUDA only: recurrent layers and small regression
    # targets (returns of ~1e-3 against Huber δ=0.01) stay in float32. A captured step must cast the
    # weights on every replay, so autocast's weight cache is off there.
    use_amp = device.type == "cuda" and not regression and train_windows is None
    amp = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphed) if use_amp else nullcontext()
    params = [p for p in model.parameters() if p.requires_grad]
    early = config.early_stopping

    # Run state: everything a checkpoint must carry to continue exactly where it left off.
    history: list[dict] = []
    best = {"epoch": None, "score": -math.inf, "val_loss": None, "val_accuracy": None, "wait": 0, "state": None}
    early_stopped = stopped = False
    start_epoch = 1
    checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
    ckpt = None
    if resume and checkpoint_path is not None and checkpoint_path.exists():
        # On the CPU: RNG states must stay there; load_state_dict moves the rest to the device.
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        foreign = _foreign_checkpoint(ckpt, checkpoint_owner)
        if foreign is not None:
            log.warning("checkpoint %s not resumed: %s; training starts from scratch", checkpoint_path, foreign)
            ckpt = None
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise TrainingError(f"checkpoint {checkpoint_path} does not fit this model: {exc}") from exc
        optimizer.load_state_dict(ckpt["optimizer"])
        _place_learning_rate(optimizer, device if graphed else None)
        if scheduler is not None and ckpt["scheduler"] is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        history, best, early_stopped = ckpt["history"], ckpt["best"], ckpt["early_stopped"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        generator.set_state(ckpt["rng"]["generator"])
        if device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], device)
        # An early-stopped run is over: resuming it only restores the best weights below.
        start_epoch = config.epochs + 1 if early_stopped else ckpt["epoch"] + 1
    if on_resume is not None:
        on_resume([dict(record) for record in history])

    def save_checkpoint(epoch: int) -> None:
        if checkpoint_path is None:
            return
        rng = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(device)
        _save_atomic(checkpoint_path, {
            "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "history": history, "best": best, "early_stopped": early_stopped, "rng": rng,
            "owner": checkpoint_owner,
        }, checkpoint_guard)

    # Per-batch statistics live on the device, written into views made once; `.tolist()` once an
    # epoch is the only host sync.
    total_batches = math.ceil(n / batch_size)
    batch_losses = torch.zeros(total_batches, device=device)
    loss_slots = batch_losses.unbind()
    batch_sizes = torch.full((total_batches,), float(batch_size), device=device)
    batch_sizes[-1] = n - batch_size * (total_batches - 1)
    predictions = torch.zeros(n, dtype=hits_train.dtype, device=device)
    prediction_slots = predictions.split(batch_size)
    x_epoch, y_epoch = torch.empty_like(samples), torch.empty_like(y_train)  # this epoch's order
    samples_trained, loop_start = 0, time.perf_counter()

    def update(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, clipping, optimizer: the logits and the loss, nothing read back."""
        if train_windows is not None:
            xb = X_train[xb]  # (batch, L, features): this batch's windows
        with amp:  # autocast keeps log_softmax/cross_entropy in float32
            logits = model(xb)
            loss = criterion(logits, yb)
        for p in params:  # zero_grad(set_to_none=True) without its profiler hooks: 12 µs a batch on CPU
            p.grad = None
        loss.backward()
        if config.gradient_clip is not None:
            _clip_grad_norm(params, config.gradient_clip)
        optimizer.step()
        return logits, loss

    static_step = None
    if static:  # full batches only; a last, shorter batch takes the eager step
        step_offset = torch.zeros((), dtype=torch.int64, device=device)
        step_index = torch.zeros(1, dtype=torch.int64, device=device)
        batch_rows = torch.arange(batch_size, device=device)
        rows = torch.empty_like(batch_rows)
        static_predictions = torch.empty(batch_size, dtype=predictions.dtype, device=device)

        def static_body() -> None:
            torch.add(batch_rows, step_offset, out=rows)
            logits, loss = update(x_epoch.index_select(0, rows), y_epoch.index_select(0, rows))
            batch_losses.index_copy_(0, step_index, loss.detach().reshape(1))
            predictions.index_copy_(0, rows, predict_into(logits, static_predictions))
            step_offset.add_(batch_size)
            step_index.add_(1)

        static_step = CapturedStep(static_body) if graphed else static_body

    for epoch in range(start_epoch, config.epochs + 1):
        epoch_start = time.perf_counter()
        learning_rate = float(optimizer.param_groups[0]["lr"])
        model.train()
        if sample_weights is None:
            perm = torch.randperm(n, generator=generator).to(device)
        else:
            perm = torch.multinomial(sample_weights, n, replacement=True, generator=generator).to(device)
        torch.index_select(samples, 0, perm, out=x_epoch)
        torch.index_select(y_train, 0, perm, out=y_epoch)
        hits_epoch = y_epoch if hits_train is y_train else hits_train[perm]
        if static_step is not None:
            step_offset.zero_()
            step_index.zero_()

        # The step.
        for batch, (xb, yb) in enumerate(zip(x_epoch.split(batch_size), y_epoch.split(batch_size), strict=True)):
            if static_step is not None and len(yb) == batch_size:
                static_step()
            else:
                logits, loss = update(xb, yb)
                loss_slots[batch].copy_(loss.detach())
                predict_into(logits, prediction_slots[batch])
            if on_batch is not None:
                on_batch(BatchProgress(epoch, config.epochs, batch + 1, total_batches,
                                       (epoch - 1) * n + min((batch + 1) * batch_size, n)))
            if should_stop is not None and should_stop():
                stopped = True
                break
        done = batch + 1
        seen = min(done * batch_size, n)
        samples_trained += seen

        # The epoch's numbers: validation, then the only reads from the device.
        model.eval()
        with torch.no_grad(), amp:
            val_logits = forward_all(model, X_val, val_windows)
            val_loss = criterion(val_logits, y_val)
            val_correct = (predict_into(val_logits, torch.empty_like(hits_val)) == hits_val).sum()
        loss_sum, val_loss = torch.stack([torch.dot(batch_losses[:done], batch_sizes[:done]), val_loss]).tolist()
        correct = (predictions[:seen] == hits_epoch[:seen]).sum()
        seen_correct, val_correct = torch.stack([correct, val_correct]).tolist()
        if not math.isfinite(loss_sum):
            bad_batch = int(torch.nonzero(~torch.isfinite(batch_losses[:done]))[0]) + 1
            raise TrainingError(f"loss became NaN at epoch {epoch}, batch {bad_batch}: lower the "
                                "learning rate or check the features for extreme values")
        if done < total_batches:
            # Stopped mid-epoch: keep the weights, record no epoch; a resume re-runs this one.
            save_checkpoint(epoch - 1)
            break
        if not math.isfinite(val_loss):
            raise TrainingError(f"validation loss became NaN at epoch {epoch}: check the validation "
                                "features for extreme values, and that its classes occur in training")

        # Logging, best model, early stopping, schedule, checkpoint.
        duration = time.perf_counter() - epoch_start
        record = EpochRecord(
            epoch=epoch, train_loss=loss_sum / n, train_accuracy=seen_correct / n,
            val_loss=val_loss, val_accuracy=val_correct / len(y_val), learning_rate=learning_rate,
            duration_s=duration, samples_per_second=n / duration,
            timestamp=datetime.now(UTC).isoformat(),
        )
        history.append(asdict(record))
        score = record.val_accuracy if early is not None and early.monitor == "val_accuracy" else -val_loss
        improved = score > best["score"] if early is None else score >= best["score"] + early.min_delta
        if improved:
            best.update(epoch=epoch, score=score, val_loss=val_loss, val_accuracy=record.val_accuracy, wait=0)
            if early is not None:  # a real copy: state_dict() tensors alias the live weights
                best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            best["wait"] += 1
        early_stopped = early is not None and best["wait"] >= early.patience
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        elif scheduler is not None:
            scheduler.step()
        save_checkpoint(epoch)
        if on_epoch is not None:
            on_epoch(record)
        if stopped or early_stopped:
            break

    if early is not None and best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    now = time.perf_counter()
    last = history[-1] if history else {}
    return TrainResult(
        history=history, epochs_trained=len(history), stopped=stopped, early_stopped=early_stopped,
        best_epoch=best["epoch"], best_val_loss=best["val_loss"], best_val_accuracy=best["val_accuracy"],
        final_train_loss=last.get("train_loss"), final_train_accuracy=last.get("train_accuracy"),
        final_val_loss=last.get("val_loss"), final_val_accuracy=last.get("val_accuracy"),
        samples_per_second=samples_trained / (now - loop_start), training_time_s=now - started,
        device=describe_device(device),
    )


def _clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> None:
    """clip_grad_norm_'s formula in a few in-place ops: its foreach path refuses CPU tensors, and its
    per-tensor fallback and Python-scalar arithmetic cost twice the step of a small model."""
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, total.add_(1e-6).reciprocal_().mul_(max_norm).clamp_(max=1.0))


class CapturedStep:
    """A training step that reads and writes only fixed buffers, run as a CUDA graph: the first
    GRAPH_WARMUP_STEPS calls run it eagerly on a side stream (real steps, as capture requires), the
    next captures and replays it, later calls only replay: one launch a step instead of hundreds.
    If capture fails, the step goes on eagerly (the same computation) and says so in the log."""

    def __init__(self, body: Callable[[], None]):
        self.body, self.calls, self.graph, self.eager = body, 0, None, False

    def __call__(self) -> None:
        self.calls += 1
        if self.eager:
            self.body()
        elif self.graph is not None:
            self.graph.replay()
        elif self.calls <= GRAPH_WARMUP_STEPS:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.body()
            torch.cuda.current_stream().wait_stream(side)
        else:
            self._capture()

    def _capture(self) -> None:
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.body()
        except RuntimeError as exc:  # a capture records, it does not run: nothing was changed
            log.warning("CUDA graph capture of the training step failed (%s); training goes on eagerly", exc)
            self.eager = True
            self.body()
            return
        self.graph = graph
        graph.replay()


def _place_learning_rate(optimizer: torch.optim.Optimizer, device: torch.device | None) -> None:
    """A captured optimizer step must read the learning rate from a device tensor (a float would be
    baked into the graph, and the schedule ignored); an eager one takes a float. A checkpoint may
    hold either."""
    for group in optimizer.param_groups:
        rate = float(group["lr"])
        group["lr"] = torch.tensor(rate, device=device) if device is not None else rate


def _make_optimizer(model: nn.Module, config: TrainConfig, device: torch.device,
                    capturable: bool = False) -> torch.optim.Optimizer:
    """Adam (L2 in the gradient, as KTRDR), SGD with momentum 0.9, or RMSprop.

    Fused kernels update all parameters in one call where the device has them; RMSprop has
    none and uses the multi-tensor path torch picks by default. `capturable` (Adam on CUDA) keeps
    the step count on the device, so the step can be captured in a CUDA graph.
    """
    fast = {"fused": True} if device.type in ("cuda", "cpu") else {}
    params, lr, wd = model.parameters(), config.learning_rate, config.weight_decay
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd, **fast)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    return torch.optim.Adam(params, lr=lr, weight_decay=wd, capturable=capturable, **fast)


def _make_scheduler(
    optimizer: torch.optim.Optimizer, spec: dict | None
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """§9's schedules with KTRDR's defaults; stepped once per epoch."""
    if spec is None:
        return None
    sched = torch.optim.lr_scheduler
    if spec["type"] == "step":
        return sched.StepLR(optimizer, step_size=spec.get("step_size", 30), gamma=spec.get("gamma", 0.1))
    if spec["type"] == "exponential":
        return sched.ExponentialLR(optimizer, gamma=spec.get("gamma", 0.95))
    return sched.ReduceLROnPlateau(optimizer, factor=spec.get("factor", 0.5), patience=spec.get("patience", 5))


def _foreign_checkpoint(ckpt: dict, owner: dict | None) -> str | None:
    """Why a checkpoint must not be resumed by `owner`'s run, or None (no owner: any checkpoint)."""
    if owner is None:
        return None
    stored = ckpt.get("owner") or {}
    if stored.get("request") != owner.get("request"):
        return "it belongs to another submission (an earlier session that used this id)"
    if owner.get("attempt") is not None and (stored.get("attempt") or 0) > owner["attempt"]:
        return f"it was written by a later attempt ({stored.get('attempt')}) than this one ({owner['attempt']})"
    return None


def _save_atomic(path: Path, payload: dict, guard: Callable[[], bool] | None = None) -> None:
    """Write to a temporary name beside `path`, then rename: readers never see half a file. `guard`
    is asked right before the rename (the fencing check): False keeps the old file, and so does an
    exception, which propagates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: attempts never share one
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    try:
        if guard is not None and not guard():
            log.warning("checkpoint %s not written this epoch: its attempt could not be checked", path)
            tmp.unlink(missing_ok=True)
            return
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
