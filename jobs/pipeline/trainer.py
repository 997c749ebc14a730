"""The training loop (docs/ktrdr-semantics.md §9), written to be read top to bottom.

`train_model` keeps the data on the device, draws each epoch's batches by slicing one seeded
permutation, and never waits for the device inside the step: per-batch losses and predictions
stay on the device and are read once per epoch. Unlike KTRDR it honours `optimizer`,
`weight_decay`, `gradient_clip`, `early_stopping` and `lr_scheduler`, and restores the best
weights for real when early stopping is on. On CUDA an MLP trained with Adam takes the static step:
the same computation reading fixed buffers through an on-device batch counter, captured once as a
CUDA graph and replayed (`CapturedStep`), since a small model at batch 32 is otherwise bound by
hundreds of kernel launches a step (`step_mode` chooses; "static" runs it eagerly, for tests).
The settings are the strategy's `TrainingConfig` (training_settings.py), as the parser resolved them.

Sequence models (LSTM/GRU, §8) get their windows as an index tensor: sample i is the rows
`windows[i]` of X (window i pairs X[w_i] with y[i]); the permutation shuffles windows and each batch
gathers its rows, so no window copy of the data is ever made. With `sample_weights` (triple-barrier
uniqueness) each epoch draws n samples with replacement in proportion to the weights
(torch.multinomial, KTRDR's WeightedRandomSampler) instead of permuting. Regression (a Huber or
MSE `loss`) trains one output with Huber(`huber_delta`) or MSE; its accuracy is the share of (pred > 0) ==
(y > 0) (§9).
"""

from __future__ import annotations

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

from trainhost.jobs.pipeline.artifacts import write_atomic
from trainhost.jobs.pipeline.errors import TrainingError
from trainhost.jobs.pipeline.metrics import forward_in_chunks
from trainhost.jobs.pipeline.model import as_tensor, describe_device, select_device
from trainhost.jobs.pipeline.training_settings import EarlyStoppingConfig, LRSchedulerConfig, TrainingConfig

log = logging.getLogger("trainhost.trainer")
# A captured step's optimizer also runs a few steps uncaptured (warm-up, a last short batch): expected.
warnings.filterwarnings("ignore", message="This instance was constructed with capturable=True", category=UserWarning)

VALIDATION_CHUNK = 8192  # windows evaluated at once: bounds the gathered (chunk, L, features) copy
# Per-batch work (batch size x parameters) up to which a run on the CPU uses one intra-op thread: below
# it OpenMP's fork/join costs more than splitting the work saves, and on a busy host a descheduled
# thread stalls every op (measured: bench/RESULTS.md, "Numbers moved out of code comments").
SINGLE_THREAD_WORK = 4_000_000
STEP_MODES = ("auto", "static", "eager")
GRAPH_WARMUP_STEPS = 3  # eager steps on a side stream before capture, as torch.cuda.graph requires


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
def cpu_threads(model: nn.Module, batch_size: int, device: str | torch.device, copies: int = 1) -> Iterator[int]:
    """Intra-op threads for one training run on the CPU, restored afterwards: one for a small model
    (per-batch work up to SINGLE_THREAD_WORK), else one per physical core (`configure_threads`).
    `copies`: models of this shape trained together in one step (a pack), whose work adds up.
    Other devices, and an explicit OMP_NUM_THREADS / MKL_NUM_THREADS, are left alone."""
    before = torch.get_num_threads()
    chosen = any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"))
    if chosen or select_device(str(device)).type != "cpu":
        yield before
        return
    if copies * batch_size * sum(p.numel() for p in model.parameters()) <= SINGLE_THREAD_WORK:
        torch.set_num_threads(1)
    else:
        configure_threads()
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def train_model(
    model: nn.Module,
    X_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray | torch.Tensor,
    X_val: np.ndarray | torch.Tensor,
    y_val: np.ndarray | torch.Tensor,
    config: TrainingConfig,
    *,
    device: str = "auto",
    step_mode: str = "auto",
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

    `step_mode`: "auto" takes the static step on CUDA for an MLP trained with Adam and replays it as
    a CUDA graph; "static" runs that same step (fixed buffers, on-device batch counter) eagerly on any
    device; "eager": never.
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
    if step_mode not in STEP_MODES:
        raise ValueError(f"step_mode must be one of {STEP_MODES}, got {step_mode!r}")
    with cpu_threads(model, config.batch_size, device):
        started = time.perf_counter()
        chosen = select_device(device)
        torch.manual_seed(config.seed)  # dropout draws from the global RNG
        model.to(chosen)
        data = _Data.on_device(chosen, config.task == "regression", X_train, y_train, X_val, y_val,
                               train_windows, val_windows, sample_weights)
        checkpoints = _Checkpoints(None if checkpoint_path is None else Path(checkpoint_path), checkpoint_owner,
                                   checkpoint_guard)
        run = _Run(model, config, data, chosen, step_mode, checkpoints)
        if resume:
            run.restore()
        if on_resume is not None:
            on_resume([dict(record) for record in run.history])
        loop_start = time.perf_counter()
        for epoch in range(run.start_epoch, config.epochs + 1):
            epoch_start, learning_rate = time.perf_counter(), run.learning_rate
            done = run.train_epoch(epoch, on_batch, should_stop)
            record = run.finish_epoch(epoch, done, epoch_start, learning_rate)
            if record is None:
                # Stopped mid-epoch: keep the weights, record no epoch; a resume re-runs this one.
                run.checkpoint(epoch - 1)
                break
            run.checkpoint(epoch)
            if on_epoch is not None:
                on_epoch(record)
            if run.stopped or run.early_stopped:
                break
        return run.result(started, loop_start)


@dataclass
class _Data:
    """A run's samples on the device. Each epoch permutes `samples`: the rows of X, or for sequence
    models the window index (the rows of X in each sample's window). `hits_*` are what predictions
    are compared with for accuracy: the labels, or (y > 0) in regression."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    train_windows: torch.Tensor | None
    val_windows: torch.Tensor | None
    sample_weights: torch.Tensor | None
    hits_train: torch.Tensor
    hits_val: torch.Tensor

    @property
    def samples(self) -> torch.Tensor:
        return self.X_train if self.train_windows is None else self.train_windows

    @property
    def n(self) -> int:
        return len(self.y_train)

    @classmethod
    def on_device(cls, device: torch.device, regression: bool, X_train, y_train, X_val, y_val, train_windows,
                  val_windows, sample_weights) -> _Data:
        """The arrays moved to the device once (sample weights stay on the host: the sampler's
        generator is there), their sizes checked."""
        X_train, X_val = (as_tensor(x, torch.float32).to(device) for x in (X_train, X_val))
        label_type = torch.float32 if regression else torch.int64
        y_train, y_val = (as_tensor(y, label_type).to(device) for y in (y_train, y_val))
        train_windows, val_windows = (None if w is None else as_tensor(w, torch.int64).to(device)
                                      for w in (train_windows, val_windows))
        n = len(y_train)
        if n == 0 or len(y_val) == 0:
            raise TrainingError(f"cannot train with {n} training and {len(y_val)} validation samples")
        if (len(X_train if train_windows is None else train_windows) != n
                or len(y_val) != len(X_val if val_windows is None else val_windows)):
            raise TrainingError("each training and validation sample needs exactly one label")
        if sample_weights is not None:
            sample_weights = as_tensor(sample_weights, torch.float64)
            if len(sample_weights) != n or not bool((sample_weights >= 0).all()) or float(sample_weights.sum()) <= 0:
                raise TrainingError(f"sample_weights must be {n} non-negative numbers, not all 0")
        hits_train, hits_val = (y_train > 0, y_val > 0) if regression else (y_train, y_val)
        return cls(X_train, y_train, X_val, y_val, train_windows, val_windows, sample_weights, hits_train, hits_val)

    def check_targets(self, model: nn.Module, regression: bool) -> int:
        """The model's number of outputs, once the targets are checked against it."""
        model.eval()
        with torch.no_grad():
            first = self.X_val[:1] if self.val_windows is None else self.X_val[self.val_windows[:1]]
            num_classes = model(first).shape[-1]
        for name, y in (("training", self.y_train), ("validation", self.y_val)):
            if regression and not bool(torch.isfinite(y).all()):
                raise TrainingError(f"{name} targets must be finite numbers")
            if not regression and (int(y.min()) < 0 or int(y.max()) >= num_classes):
                raise TrainingError(f"{name} labels must lie in [0, {num_classes}) for a model with "
                                    f"{num_classes} outputs; found {int(y.min())}..{int(y.max())}")
        return num_classes


@dataclass
class _Checkpoints:
    """Where a run's checkpoints go, whose they are (`owner`), and the check each write must pass
    right before its rename (`guard`, see `train_model`)."""

    path: Path | None
    owner: dict | None = None
    guard: Callable[[], bool] | None = None

    def load(self) -> dict | None:
        """The checkpoint this run may resume; None when there is none or it is not the owner's (logged)."""
        if self.path is None or not self.path.exists():
            return None
        # On the CPU: RNG states must stay there; load_state_dict moves the rest to the device.
        ckpt = torch.load(self.path, map_location="cpu", weights_only=True)
        foreign = _foreign_checkpoint(ckpt, self.owner)
        if foreign is not None:
            log.warning("checkpoint %s not resumed: %s; training starts from scratch", self.path, foreign)
            return None
        return ckpt

    def save(self, payload: dict) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not write_atomic(self.path, partial(torch.save, {**payload, "owner": self.owner}), self.guard):
            log.warning("checkpoint %s not written this epoch: its attempt could not be checked", self.path)


class _Run:
    """One call of `train_model`: the model and its data on the device, the objective, optimizer and
    schedule, the per-epoch buffers on the device, and the state a checkpoint carries (history,
    best, early_stopped, the RNGs). The methods are the loop's steps, in the order they run."""

    def __init__(self, model: nn.Module, config: TrainingConfig, data: _Data, device: torch.device,
                 step_mode: str, checkpoints: _Checkpoints):
        self.model, self.config, self.data, self.device, self.checkpoints = model, config, data, device, checkpoints
        regression = config.task == "regression"
        self.generator = torch.Generator().manual_seed(config.seed)  # batch order only
        self.criterion, self.predict_into = _objective(config, data, data.check_targets(model, regression), device)
        # The static step (fixed buffers, batch counter on the device) is what a CUDA graph can replay;
        # sequence models, and optimizers other than Adam, always run eagerly.
        static = data.train_windows is None and (step_mode == "static" or (
            step_mode == "auto" and device.type == "cuda" and config.optimizer == "adam"))
        self.graphed = static and device.type == "cuda"
        self.optimizer = _make_optimizer(model, config, device, capturable=self.graphed)
        _place_learning_rate(self.optimizer, device if self.graphed else None)
        self.scheduler = _make_scheduler(self.optimizer, config.lr_scheduler)
        # bfloat16 autocast for MLP classifiers on CUDA only: recurrent layers and small regression
        # targets (returns of ~1e-3 against Huber δ=0.01) stay in float32. A captured step must cast the
        # weights on every replay, so autocast's weight cache is off there.
        use_amp = device.type == "cuda" and not regression and data.train_windows is None
        self.amp = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not self.graphed) if use_amp \
            else nullcontext()
        self.params = [p for p in model.parameters() if p.requires_grad]
        # Run state: everything a checkpoint must carry to continue exactly where it left off.
        self.history: list[dict] = []
        self.best = _empty_best()
        self.early_stopped = self.stopped = False
        self.start_epoch, self.samples_trained = 1, 0
        self._allocate_buffers()
        self.static_step = self._static_step() if static else None

    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _allocate_buffers(self) -> None:
        """Per-batch statistics live on the device, written into views made once; `.tolist()` once an
        epoch is the only host sync. `x_epoch`/`y_epoch` hold this epoch's order of the samples."""
        n, batch_size, device = self.data.n, self.config.batch_size, self.device
        self.total_batches = math.ceil(n / batch_size)
        self.batch_losses = torch.zeros(self.total_batches, device=device)
        self.loss_slots = self.batch_losses.unbind()
        self.batch_sizes = torch.full((self.total_batches,), float(batch_size), device=device)
        self.batch_sizes[-1] = n - batch_size * (self.total_batches - 1)
        self.predictions = torch.zeros(n, dtype=self.data.hits_train.dtype, device=device)
        self.prediction_slots = self.predictions.split(batch_size)
        self.x_epoch, self.y_epoch = torch.empty_like(self.data.samples), torch.empty_like(self.data.y_train)

    def _static_step(self) -> Callable[[], None]:
        """The step on fixed buffers, full batches only (a last, shorter batch takes the eager step),
        as a CUDA graph on CUDA."""
        batch_size, device = self.config.batch_size, self.device
        self.step_offset = torch.zeros((), dtype=torch.int64, device=device)
        self.step_index = torch.zeros(1, dtype=torch.int64, device=device)
        self.batch_rows = torch.arange(batch_size, device=device)
        self.rows = torch.empty_like(self.batch_rows)
        self.static_predictions = torch.empty(batch_size, dtype=self.predictions.dtype, device=device)
        return CapturedStep(self._static_body) if self.graphed else self._static_body

    def restore(self) -> None:
        """Continue from the checkpoint, if there is one this run may resume."""
        ckpt = self.checkpoints.load()
        if ckpt is None:
            return
        try:
            self.model.load_state_dict(ckpt["model"])
        except RuntimeError as exc:
            raise TrainingError(f"checkpoint {self.checkpoints.path} does not fit this model: {exc}") from exc
        self.optimizer.load_state_dict(ckpt["optimizer"])
        _place_learning_rate(self.optimizer, self.device if self.graphed else None)
        if self.scheduler is not None and ckpt["scheduler"] is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        self.history, self.best, self.early_stopped = ckpt["history"], ckpt["best"], ckpt["early_stopped"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.generator.set_state(ckpt["rng"]["generator"])
        if self.device.type == "cuda" and "cuda" in ckpt["rng"]:
            torch.cuda.set_rng_state(ckpt["rng"]["cuda"], self.device)
        # An early-stopped run is over: resuming it only restores the best weights (`result`).
        self.start_epoch = self.config.epochs + 1 if self.early_stopped else ckpt["epoch"] + 1

    def train_epoch(self, epoch: int, on_batch: Callable[[BatchProgress], None] | None,
                    should_stop: Callable[[], bool] | None) -> int:
        """Shuffle, then one step per batch until the epoch ends or `should_stop()`; the batches done."""
        data, batch_size = self.data, self.config.batch_size
        self.model.train()
        if data.sample_weights is None:
            perm = torch.randperm(data.n, generator=self.generator).to(self.device)
        else:
            perm = torch.multinomial(data.sample_weights, data.n, replacement=True,
                                     generator=self.generator).to(self.device)
        torch.index_select(data.samples, 0, perm, out=self.x_epoch)
        torch.index_select(data.y_train, 0, perm, out=self.y_epoch)
        self.hits_epoch = self.y_epoch if data.hits_train is data.y_train else data.hits_train[perm]
        if self.static_step is not None:
            self.step_offset.zero_()
            self.step_index.zero_()
        for batch, (xb, yb) in enumerate(zip(self.x_epoch.split(batch_size), self.y_epoch.split(batch_size),
                                             strict=True)):
            self.step(batch, xb, yb)
            if on_batch is not None:
                on_batch(BatchProgress(epoch, self.config.epochs, batch + 1, self.total_batches,
                                       (epoch - 1) * data.n + min((batch + 1) * batch_size, data.n)))
            if should_stop is not None and should_stop():
                self.stopped = True
                break
        self.samples_trained += min((batch + 1) * batch_size, data.n)
        return batch + 1

    def step(self, batch: int, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """One batch: the static step for a full batch where the run takes it, else the eager one."""
        if self.static_step is not None and len(yb) == self.config.batch_size:
            self.static_step()
            return
        logits, loss = self._update(xb, yb)
        self.loss_slots[batch].copy_(loss.detach())
        self.predict_into(logits, self.prediction_slots[batch])

    def _static_body(self) -> None:
        torch.add(self.batch_rows, self.step_offset, out=self.rows)
        logits, loss = self._update(self.x_epoch.index_select(0, self.rows), self.y_epoch.index_select(0, self.rows))
        self.batch_losses.index_copy_(0, self.step_index, loss.detach().reshape(1))
        self.predictions.index_copy_(0, self.rows, self.predict_into(logits, self.static_predictions))
        self.step_offset.add_(self.config.batch_size)
        self.step_index.add_(1)

    def _update(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, loss, backward, clipping, optimizer: the logits and the loss, nothing read back."""
        if self.data.train_windows is not None:
            xb = self.data.X_train[xb]  # (batch, L, features): this batch's windows
        with self.amp:  # autocast keeps log_softmax/cross_entropy in float32
            logits = self.model(xb)
            loss = self.criterion(logits, yb)
        for p in self.params:  # zero_grad(set_to_none=True) without its profiler hooks (bench/RESULTS.md)
            p.grad = None
        loss.backward()
        if self.config.gradient_clip is not None:
            _clip_grad_norm(self.params, self.config.gradient_clip)
        self.optimizer.step()
        return logits, loss

    def finish_epoch(self, epoch: int, done: int, started: float, learning_rate: float) -> EpochRecord | None:
        """Validation, the epoch's record, the best weights, early stopping and the schedule; None when
        the epoch was cut short by a stop (its numbers are checked, but no epoch is recorded)."""
        loss_sum, seen_correct, val_loss, val_correct = self._measure(epoch, done)
        if done < self.total_batches:
            return None
        record, self.early_stopped = _record_epoch(
            self.history, self.best, self.config.early_stopping, self.model, epoch,
            (loss_sum, seen_correct, val_loss, val_correct), (self.data.n, len(self.data.y_val)), started,
            learning_rate)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        return record

    def _measure(self, epoch: int, done: int) -> tuple[float, float, float, float]:
        """(training loss sum, correct training predictions, validation loss, correct validation
        predictions) over the `done` batches: validation, then the only reads from the device."""
        data, seen = self.data, min(done * self.config.batch_size, self.data.n)
        val_loss, val_correct = _validate(self.model, data, self.criterion, self.predict_into, self.amp)
        losses = self.batch_losses[:done]
        loss_sum, val_loss = torch.stack([torch.dot(losses, self.batch_sizes[:done]), val_loss]).tolist()
        correct = (self.predictions[:seen] == self.hits_epoch[:seen]).sum()
        seen_correct, val_correct = torch.stack([correct, val_correct]).tolist()
        _check_training_loss(epoch, loss_sum, losses)
        return loss_sum, seen_correct, val_loss, val_correct

    def checkpoint(self, epoch: int) -> None:
        """Everything the run needs to go on after `epoch`, written atomically (see `_Checkpoints`)."""
        if self.checkpoints.path is None:
            return
        rng = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        self.checkpoints.save({
            "epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "history": self.history, "best": self.best, "early_stopped": self.early_stopped, "rng": rng,
        })

    def result(self, started: float, loop_start: float) -> TrainResult:
        """The run's record; with early stopping the model ends with the best epoch's weights."""
        return _run_result(self.model, self.config.early_stopping, self.history, self.best,
                           stopped=self.stopped, early_stopped=self.early_stopped,
                           samples_trained=self.samples_trained, started=started, loop_start=loop_start,
                           device=self.device)


def _empty_best() -> dict:
    """A run's best epoch before it has any: what `_keep_best` updates and a checkpoint carries."""
    return {"epoch": None, "score": -math.inf, "val_loss": None, "val_accuracy": None, "wait": 0, "state": None}


def _validate(model: nn.Module, data: _Data, criterion: Callable, predict_into: Callable,
              amp) -> tuple[torch.Tensor, torch.Tensor]:
    """The validation loss and the number of correct validation predictions, on the device, not read."""
    model.eval()
    with torch.no_grad(), amp:
        chunk = None if data.val_windows is None else VALIDATION_CHUNK
        val_logits = forward_in_chunks(model, data.X_val, data.val_windows, chunk)
        val_loss = criterion(val_logits, data.y_val)
        val_correct = (predict_into(val_logits, torch.empty_like(data.hits_val)) == data.hits_val).sum()
    return val_loss, val_correct


def _check_training_loss(epoch: int, loss_sum: float, losses: torch.Tensor) -> None:
    """Refuse an epoch whose training loss (`loss_sum`, over the batch `losses`) is not a number."""
    if not math.isfinite(loss_sum):
        bad_batch = int(torch.nonzero(~torch.isfinite(losses))[0]) + 1
        raise TrainingError(f"loss became NaN at epoch {epoch}, batch {bad_batch}: lower the "
                            "learning rate or check the features for extreme values")


def _record_epoch(history: list[dict], best: dict, early: EarlyStoppingConfig | None, model: nn.Module, epoch: int,
                  sums: tuple[float, float, float, float], sizes: tuple[int, int], started: float,
                  learning_rate: float) -> tuple[EpochRecord, bool]:
    """A full epoch's record from its sums (training loss, correct training predictions, validation loss,
    correct validation predictions) over `sizes` (training, validation samples), appended to `history`
    and kept in `best` (`_keep_best`); the record, and whether early stopping ends the run now."""
    loss_sum, seen_correct, val_loss, val_correct = sums
    if not math.isfinite(val_loss):
        raise TrainingError(f"validation loss became NaN at epoch {epoch}: check the validation "
                            "features for extreme values, and that its classes occur in training")
    (n, n_val), duration = sizes, time.perf_counter() - started
    record = EpochRecord(
        epoch=epoch, train_loss=loss_sum / n, train_accuracy=seen_correct / n,
        val_loss=val_loss, val_accuracy=val_correct / n_val, learning_rate=learning_rate,
        duration_s=duration, samples_per_second=n / duration, timestamp=datetime.now(UTC).isoformat(),
    )
    history.append(asdict(record))
    return record, _keep_best(best, record, early, model)


def _keep_best(best: dict, record: EpochRecord, early: EarlyStoppingConfig | None, model: nn.Module) -> bool:
    """The best epoch so far (early stopping's monitor, else the lowest val_loss), with a copy of the
    model's weights under early stopping; whether early stopping ends the run now."""
    score = record.val_accuracy if early is not None and early.monitor == "val_accuracy" else -record.val_loss
    improved = score > best["score"] if early is None else score >= best["score"] + early.min_delta
    if improved:
        best.update(epoch=record.epoch, score=score, val_loss=record.val_loss, val_accuracy=record.val_accuracy,
                    wait=0)
        if early is not None:  # a real copy: state_dict() tensors alias the live weights
            best["state"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        best["wait"] += 1
    return early is not None and best["wait"] >= early.patience


def _run_result(model: nn.Module, early: EarlyStoppingConfig | None, history: list[dict], best: dict, *,
                stopped: bool, early_stopped: bool, samples_trained: int, started: float, loop_start: float,
                device: torch.device) -> TrainResult:
    """A run's record, timed from `started` (its call) and `loop_start` (its first epoch) to now; with early
    stopping the model ends with the best epoch's weights. The model is left in eval mode."""
    if early is not None and best["state"] is not None:
        model.load_state_dict(best["state"])
    model.eval()
    now = time.perf_counter()
    last = history[-1] if history else {}
    return TrainResult(
        history=history, epochs_trained=len(history), stopped=stopped,
        early_stopped=early_stopped, best_epoch=best["epoch"], best_val_loss=best["val_loss"],
        best_val_accuracy=best["val_accuracy"], final_train_loss=last.get("train_loss"),
        final_train_accuracy=last.get("train_accuracy"), final_val_loss=last.get("val_loss"),
        final_val_accuracy=last.get("val_accuracy"),
        samples_per_second=samples_trained / (now - loop_start), training_time_s=now - started,
        device=describe_device(device),
    )


def _objective(config: TrainingConfig, data: _Data, num_classes: int, device: torch.device):
    """(criterion(outputs, target), predict_into(outputs, out)): the loss, and the predictions counted
    for accuracy, argmax or (pred > 0) in regression."""
    if config.task == "regression":
        loss = partial(F.huber_loss, delta=config.huber_delta) if config.loss == "huber" else F.mse_loss
        return partial(_on_first_output, loss), _predict_rise
    weight = class_weights(data.y_train.cpu(), num_classes).to(device)  # counted in float64: not on MPS
    if config.loss == "focal":
        return partial(focal_loss, weight=weight, gamma=config.focal_gamma), _predict_class
    return nn.CrossEntropyLoss(weight=weight), _predict_class


def _on_first_output(loss: Callable, outputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return loss(outputs[:, 0], target)


def _predict_rise(outputs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.gt(outputs[:, 0], 0, out=out)


def _predict_class(outputs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.argmax(outputs, dim=1, out=out)


def _clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> None:
    """clip_grad_norm_'s formula in a few in-place ops: its foreach path refuses CPU tensors, and its
    per-tensor fallback and Python-scalar arithmetic cost more than the rest of a small model's step
    (bench/RESULTS.md)."""
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


def _make_optimizer(model: nn.Module, config: TrainingConfig, device: torch.device,
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
    optimizer: torch.optim.Optimizer, spec: LRSchedulerConfig | None
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """§9's schedules, stepped once per epoch; `spec.params` are the scheduler's keyword arguments."""
    if spec is None:
        return None
    kinds = {"step": torch.optim.lr_scheduler.StepLR, "exponential": torch.optim.lr_scheduler.ExponentialLR,
             "reduce_on_plateau": torch.optim.lr_scheduler.ReduceLROnPlateau}
    return kinds[spec.type](optimizer, **spec.params)


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
