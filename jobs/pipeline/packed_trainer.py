"""K same-shape MLPs trained together (a pack), one vectorised step for all of them, each exactly as
`train_model` (trainer.py) trains it alone: a small MLP's step is bound by per-step overhead, not work.

The K models' parameters are the rows of one tensor `theta` (K, P) and each layer's weights are views
of it: a layer is one batched matmul for all K, one backward pass over the sum of the K losses gives
every model its gradient, and clipping and the optimizer (torch's Adam, SGD and RMSprop formulas,
written over the rows, each with its own learning rate, weight decay and step count) are a few
element-wise operations. All else is each model's own, as train_model has it: its training and
validation rows (any number), class weights, batch order (its own seeded generator: a permutation, or
weighted sampling), dropout masks, schedule (torch's scheduler on a stand-in optimizer), clipping
norm, epochs, early stopping, stop request and callbacks.

A pack's epoch is as many steps as its longest member's epoch; each step gathers every model's batch
rows by index (K, batch) from all members' training rows, concatenated (a training set several
members share, once). A row a model lacks at a step (its epoch has fewer batches, its last batch is
shorter, it is finished) is masked out of its loss (past a model's rows the index reads a zero row);
a model with no rows at a step is not updated at all: parameters and optimizer state stay as they are.
Once an epoch each model's row is copied into its nn.Sequential, which is validated, early-stopped
and restored by trainer.py's own code.

Dropout on the CPU: each model draws its masks from its own generator, seeded as train_model seeds
the global one, in the same calls, so the masks are the single runs' to the bit. On other devices one
draw from the device's generator (seeded with the first member's seed) serves all K. On CUDA
(`step_mode` "auto") the step reads fixed buffers only, through an on-device step counter (the static
step), and is replayed as a CUDA graph (`CapturedStep`); "static" runs that body eagerly anywhere.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainhost.jobs.pipeline.errors import TrainingError
from trainhost.jobs.pipeline.model import ACTIVATIONS, select_device
from trainhost.jobs.pipeline.trainer import (
    STEP_MODES,
    BatchProgress,
    CapturedStep,
    EpochRecord,
    TrainResult,
    _check_training_loss,
    _Data,
    _empty_best,
    _make_scheduler,
    _objective,
    _record_epoch,
    _run_result,
    _validate,
    class_weights,
    cpu_threads,
)
from trainhost.jobs.pipeline.training_settings import TrainingConfig

# torch's defaults, which trainer._make_optimizer keeps (SGD's momentum is its own).
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8
SGD_MOMENTUM = 0.9
RMSPROP_ALPHA, RMSPROP_EPS = 0.99, 1e-8
ON_BATCH_INTERVAL_S = 0.1  # on_batch at most this often per model, and at every epoch's last batch
SHARED_SETTINGS = ("optimizer", "batch_size", "loss")  # one step serves them all


@dataclass
class PackMember:
    """One model of a pack: its own data (rows, as train_model takes them) and settings."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    config: TrainingConfig
    sample_weights: np.ndarray | None = None
    on_batch: Callable[[BatchProgress], None] | None = None
    on_epoch: Callable[[EpochRecord], None] | None = None
    should_stop: Callable[[], bool] | None = None
    # Called once, as soon as this model's training has ended (the pack may go on): its TrainResult,
    # its weights final in its model; or its TrainingError.
    on_end: Callable[[TrainResult | TrainingError], None] | None = None


def train_packed(models: list[nn.Sequential], members: list[PackMember], *, device: str = "auto",
                 step_mode: str = "auto") -> list[TrainResult | TrainingError]:
    """Train `models[k]` on `members[k]` in place, all in one vectorised step, each as `train_model` would
    alone (its weights end on the device, in eval mode, early stopping's best restored); per member its
    TrainResult, or the TrainingError that ended its training alone (the others go on).

    The models are built and seeded by the caller as for a single training, with the same layers
    (dropout rates may differ); the members share their optimizer kind, batch size and loss kind.
    Raises TrainingError when they do not. `step_mode` as train_model's. `on_batch` is called at most
    every ON_BATCH_INTERVAL_S per model and at each epoch's last batch; `should_stop` after every
    batch, ending that model alone. An epoch's `duration_s` and the `samples_per_second` figures are
    the pack's wall-clock time. No checkpoints: a pack restarts from scratch.
    """
    if step_mode not in STEP_MODES:
        raise ValueError(f"step_mode must be one of {STEP_MODES}, got {step_mode!r}")
    if len(models) != len(members):
        raise TrainingError(f"a pack needs one model per member, got {len(models)} models for {len(members)}")
    if not models:
        return []
    layers, sizes = _architecture(models)
    for name in SHARED_SETTINGS:
        values = {str(getattr(member.config, name)) for member in members}
        if len(values) > 1:
            raise TrainingError(f"the members of a pack must share their {name}, not {sorted(values)}")
    chosen = select_device(device)
    try:
        with cpu_threads(models[0], members[0].config.batch_size, chosen, copies=len(models)):
            return _train(models, members, layers, sizes, chosen, step_mode)
    finally:
        if chosen.type == "cuda":  # the pack's buffers back (a captured step refers to its pack: a cycle)
            gc.collect()
            torch.cuda.empty_cache()


def _train(models: list[nn.Sequential], members: list[PackMember], layers: list[tuple], sizes: list[int],
           device: torch.device, step_mode: str) -> list[TrainResult | TrainingError]:
    """Each member seated (its data checked: a failure is its own), then the pack trained."""
    started = time.perf_counter()
    outcomes: list[TrainResult | TrainingError] = [None] * len(models)  # type: ignore[list-item]
    seats = []
    for index, (model, member) in enumerate(zip(models, members, strict=True)):
        try:
            seats.append(_Seat(index, len(seats), model, member, device))
        except TrainingError as exc:  # its data or labels: this member's alone
            outcomes[index] = exc
            if member.on_end is not None:
                member.on_end(exc)
    if seats:
        _Pack(seats, layers, sizes, device, step_mode).train(started)
    for seat in seats:
        outcomes[seat.index] = seat.outcome
    return outcomes


def _architecture(models: list[nn.Sequential]) -> tuple[list[tuple], list[int]]:
    """The pack's layers, ("linear", out, in), ("activation", module) or ("dropout", width), and the sizes
    of the pieces of a parameter row (each Linear's weight, then its bias); the models must agree."""
    def describe(model: nn.Module) -> list[tuple]:
        if not isinstance(model, nn.Sequential):
            raise TrainingError(f"only MLPs (nn.Sequential) are packed, not {type(model).__name__}")
        found, width = [], None
        for module in model:
            if isinstance(module, nn.Linear) and module.bias is not None:
                found.append(("linear", module.out_features, module.in_features))
                width = module.out_features
            elif isinstance(module, nn.Dropout) and width is not None:
                found.append(("dropout", width))
            elif isinstance(module, tuple(ACTIVATIONS.values())):
                found.append(("activation", repr(module)))
            else:
                raise TrainingError(f"a packed MLP holds Linear layers (with a bias), activations and Dropout "
                                    f"after a Linear, not {module!r}")
        return found

    reference = describe(models[0])
    for i, model in enumerate(models[1:], 1):
        if describe(model) != reference:
            raise TrainingError(f"the models of a pack must have the same layers: model {i} differs from model 0 "
                                f"({reference})")
    layers = [("activation", module) if layer[0] == "activation" else layer
              for layer, module in zip(reference, models[0], strict=True)]
    sizes = [size for kind, *shape in reference if kind == "linear" for size in (shape[0] * shape[1], shape[0])]
    return layers, sizes


class _Seat:
    """One member of a pack: its data, objective, generators, schedule and record (trainer.py's own
    bookkeeping, `history` and `best`), and how it ended (`outcome`). `slot` is its row in the pack."""

    def __init__(self, index: int, slot: int, model: nn.Sequential, member: PackMember, device: torch.device):
        config = member.config
        self.index, self.slot, self.model, self.member, self.config = index, slot, model, member, config
        regression = config.task == "regression"
        model.to(device)
        # Checked and converted on the host: the training rows go to the device once, concatenated (_Pack).
        data = _Data.on_device(torch.device("cpu"), regression, member.X_train, member.y_train, member.X_val,
                               member.y_val, None, None, member.sample_weights)
        y_val = data.y_val.to(device)
        self.data = dataclasses.replace(data, X_val=data.X_val.to(device), y_val=y_val,
                                        hits_val=y_val if data.hits_val is data.y_val else data.hits_val.to(device))
        num_classes = self.data.check_targets(model, regression)
        self.criterion, self.predict_into = _objective(config, self.data, num_classes, device)
        self.class_weights = None if regression else class_weights(self.data.y_train, num_classes)
        self.order = torch.Generator().manual_seed(config.seed)  # batch order, as train_model's
        self.dropout_rng = torch.Generator().manual_seed(config.seed)  # as train_model's torch.manual_seed
        self.dropout = [module.p for module in model if isinstance(module, nn.Dropout)]
        self.n = self.data.n
        self.batches = math.ceil(self.n / config.batch_size)
        self.sizes = torch.full((self.batches,), float(config.batch_size), device=device)
        self.sizes[-1] = self.n - config.batch_size * (self.batches - 1)
        # The schedule: torch's scheduler on a stand-in optimizer whose rate the pack copies each epoch.
        self.rate_holder = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.learning_rate)
        self.scheduler = _make_scheduler(self.rate_holder, config.lr_scheduler)
        self.history: list[dict] = []
        self.best = _empty_best()
        self.stopped = self.early_stopped = False
        self.samples_trained = self.done = 0
        self.outcome: TrainResult | TrainingError | None = None

    @property
    def learning_rate(self) -> float:
        return float(self.rate_holder.param_groups[0]["lr"])

    def end(self, outcome: TrainResult | TrainingError) -> None:
        """This model's training is over (it gets no rows from now on): its outcome, told at once."""
        self.outcome = outcome
        if self.member.on_end is not None:
            self.member.on_end(outcome)

    def shuffle(self) -> torch.Tensor:
        """This epoch's order of the training rows, as train_model draws it."""
        if self.data.sample_weights is None:
            return torch.randperm(self.n, generator=self.order)
        return torch.multinomial(self.data.sample_weights, self.n, replacement=True, generator=self.order)

    def rows_at(self, step: int) -> int:
        return min(self.config.batch_size, self.n - step * self.config.batch_size)

    def end_epoch(self, epoch: int, losses: torch.Tensor, correct: torch.Tensor, started: float,
                  learning_rate: float, amp) -> EpochRecord | None:
        """train_model's end of an epoch over its `done` batches (their `losses` and `correct` training
        predictions): validation, the checks, the record, the best epoch, the schedule; None when a stop
        cut the epoch short."""
        val_loss, val_correct = _validate(self.model, self.data, self.criterion, self.predict_into, amp)
        loss_sum, val_loss = torch.stack([torch.dot(losses, self.sizes[:self.done]), val_loss]).tolist()
        seen_correct, val_correct = torch.stack([correct, val_correct]).tolist()
        self.samples_trained += min(self.done * self.config.batch_size, self.n)
        _check_training_loss(epoch, loss_sum, losses)
        if self.done < self.batches:
            return None
        record, self.early_stopped = _record_epoch(
            self.history, self.best, self.config.early_stopping, self.model, epoch,
            (loss_sum, seen_correct, val_loss, val_correct), (self.n, len(self.data.y_val)), started, learning_rate)
        if self.scheduler is not None:
            self.rate_holder.step()  # a no-op (no gradients): schedulers expect an optimizer step first
            if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                self.scheduler.step(val_loss)
            else:
                self.scheduler.step()
        return record


class _Pack:
    """The seats' models stacked: parameters, optimizer state, training rows and per-epoch buffers on the
    device, the step (eager, or static and on CUDA captured), and the loop over epochs and batches."""

    def __init__(self, seats: list[_Seat], layers: list[tuple], sizes: list[int], device: torch.device,
                 step_mode: str):
        self.seats, self.layers, self.sizes, self.device = seats, layers, sizes, device
        configs = [seat.config for seat in seats]
        count, batch_size = len(seats), configs[0].batch_size
        self.batch_size, self.regression = batch_size, configs[0].task == "regression"
        self.theta = torch.stack([torch.cat([p.detach().reshape(-1) for p in seat.model.parameters()])
                                  for seat in seats]).to(device).requires_grad_()
        exact = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self.optimizer = _StackedOptimizer(configs[0].optimizer, self.theta, [c.learning_rate for c in configs],
                                           [c.weight_decay for c in configs], exact)
        # Clipping: an unclipped model's norm is infinite, so its coefficient is min(1, inf) = 1.
        clips = [math.inf if c.gradient_clip is None else c.gradient_clip for c in configs]
        self.max_norm = None if all(map(math.isinf, clips)) else torch.tensor(clips, device=device)
        self._objective_settings(seats, configs)
        self._data(seats)
        self._dropout(seats)
        use_amp = device.type == "cuda" and not self.regression
        static = step_mode == "static" or (step_mode == "auto" and device.type == "cuda")
        graphed = static and device.type == "cuda"
        self.amp = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=not graphed) if use_amp \
            else nullcontext()
        steps = max(seat.batches for seat in seats)
        self.batch_losses = torch.zeros(steps, count, device=device)
        self.batch_correct = torch.zeros(steps, count, dtype=torch.int64, device=device)
        self.loss_slots, self.correct_slots = self.batch_losses.unbind(), self.batch_correct.unbind()
        self.step_index = torch.zeros(1, dtype=torch.int64, device=device)
        self.static_step = (CapturedStep(self._static_body) if graphed else self._static_body) if static else None
        self.next_report = 0.0

    def _objective_settings(self, seats: list[_Seat], configs: list[TrainingConfig]) -> None:
        """The loss's per-model settings: class weights, focal γ, Huber δ (one number where all share it)."""
        def shared_or_rows(values: list[float]) -> float | torch.Tensor:
            return values[0] if len(set(values)) == 1 else torch.tensor(values, device=self.device)[:, None]

        self.loss = configs[0].loss
        self.gamma = shared_or_rows([c.focal_gamma for c in configs])
        self.delta = shared_or_rows([c.huber_delta for c in configs])
        self.class_weights = None if self.regression else torch.stack([s.class_weights for s in seats]).to(self.device)

    def _data(self, seats: list[_Seat]) -> None:
        """The members' distinct training sets (variants often share theirs), concatenated, then one zero
        row that the positions past a model's rows read; each seat's offset there; the epoch's index
        (K, positions) into those rows (int32: half the upload), filled on the host (pinned for CUDA),
        and each model's row count this epoch (`limit`: 0 once it is frozen)."""
        sets: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (X, y, offset)
        self.offsets, size = [], 0
        for seat in seats:
            X, y = seat.data.X_train, seat.data.y_train
            offset = next((offset for X0, y0, offset in sets if X0.shape == X.shape and y0.shape == y.shape
                           and torch.equal(X0, X) and torch.equal(y0, y)), None)
            if offset is None:
                offset, size = size, size + len(y)
                sets.append((X, y, offset))
            self.offsets.append(offset)
        first = seats[0].data
        X = torch.cat([X for X, _, _ in sets] + [first.X_train.new_zeros(1, first.X_train.shape[1])])
        y = torch.cat([y for _, y, _ in sets] + [first.y_train.new_zeros(1)])
        self.X, self.y = X.to(self.device), y.to(self.device)
        self.pad = len(X) - 1
        shape = (len(seats), max(seat.batches for seat in seats) * self.batch_size)
        self.host_rows = torch.full(shape, self.pad, dtype=torch.int32, pin_memory=self.device.type == "cuda")
        self.rows = self.host_rows.to(self.device, copy=True)
        self.limit = torch.zeros(len(seats), dtype=torch.int64, device=self.device)
        self.batch_positions = torch.arange(self.batch_size, device=self.device)
        self.positions = self.batch_positions.clone()  # the static step's: this step's positions

    def _dropout(self, seats: list[_Seat]) -> None:
        """Per dropout layer: which models drop, their keep probabilities and scales, and on the CPU the
        mask buffers each model's generator fills (a model that never drops keeps ones)."""
        self.host_draws = self.device.type == "cpu"
        if not self.host_draws:  # the one draw for all K, repeatable (train_model seeds the global RNG too)
            torch.manual_seed(seats[0].config.seed)
        widths = [layer[1] for layer in self.layers if layer[0] == "dropout"]
        rates = [[seat.dropout[j] for seat in seats] for j in range(len(widths))]
        self.dropping = [any(p > 0 for p in layer) for layer in rates]
        # As F.dropout scales: div_(1 - p) in float32 (p = 1 drops everything, as F.dropout's zeros).
        self.scales = [torch.tensor([0.0 if p == 1 else torch.ones(()).div_(1 - p).item() for p in layer],
                                    device=self.device)[:, None, None] for layer in rates]
        self.keep = [torch.tensor([1 - p for p in layer], device=self.device)[:, None, None] for layer in rates]
        self.masks = [torch.ones(len(seats), self.batch_size, width, device=self.device) if self.host_draws else None
                      for width in widths]
        self.draws = [[(j, 1 - seat.dropout[j]) for j in range(len(widths)) if 0 < seat.dropout[j] < 1]
                      for seat in seats]

    # -- the loop --------------------------------------------------------------------------------
    def train(self, started: float) -> None:
        """Epochs until every seat has an outcome."""
        loop_start, epoch = time.perf_counter(), 0
        while training := [seat for seat in self.seats if seat.outcome is None]:
            epoch += 1
            epoch_start, rates = time.perf_counter(), [seat.learning_rate for seat in training]
            self._begin_epoch(training)
            for step in range(max(seat.batches for seat in training)):
                active = [seat for seat in training if step < seat.done]
                if self.host_draws:
                    self._draw_masks(active, step)
                if self.static_step is not None:
                    self.static_step()
                else:
                    self._eager_step(step)
                self._after_batch(active, epoch, step)
            for seat, rate in zip(training, rates, strict=True):
                self._end_epoch(seat, epoch, epoch_start, rate, started, loop_start)

    def _begin_epoch(self, training: list[_Seat]) -> None:
        """Each training seat's rows for this epoch (its own shuffle) into the index, its row count and its
        learning rate; the others get no rows (past its rows a seat's index stays on the zero row)."""
        limits = [0] * len(self.seats)
        for seat in training:
            self.host_rows[seat.slot, :seat.n] = seat.shuffle() + self.offsets[seat.slot]
            seat.done, limits[seat.slot] = seat.batches, seat.n
        self.rows.copy_(self.host_rows, non_blocking=True)
        self.limit.copy_(torch.tensor(limits))
        self.optimizer.lr.copy_(torch.tensor([seat.learning_rate for seat in self.seats], dtype=torch.float64))
        self.positions.copy_(self.batch_positions)
        self.step_index.zero_()

    def _draw_masks(self, active: list[_Seat], step: int) -> None:
        """Each active model's dropout masks for this step from its own generator, in train_model's calls:
        one bernoulli_ per dropout layer on the batch's (rows, width), in layer order."""
        for seat in active:
            rows = seat.rows_at(step)
            for j, keep in self.draws[seat.slot]:
                self.masks[j][seat.slot, :rows].bernoulli_(keep, generator=seat.dropout_rng)

    def _after_batch(self, active: list[_Seat], epoch: int, step: int) -> None:
        """on_batch (throttled, always at an epoch's last batch) and should_stop, per model: a stop ends
        that model after this batch (it gets no rows from now on)."""
        now = time.perf_counter()
        report = now >= self.next_report
        if report:
            self.next_report = now + ON_BATCH_INTERVAL_S
        for seat in active:
            member = seat.member
            if member.on_batch is not None and (report or step + 1 == seat.batches):
                member.on_batch(BatchProgress(epoch, seat.config.epochs, step + 1, seat.batches,
                                              (epoch - 1) * seat.n + min((step + 1) * self.batch_size, seat.n)))
            if member.should_stop is not None and member.should_stop():
                seat.stopped, seat.done = True, step + 1
                self.limit[seat.slot] = 0

    def _end_epoch(self, seat: _Seat, epoch: int, epoch_start: float, learning_rate: float, started: float,
                   loop_start: float) -> None:
        """The seat's weights into its model, then train_model's end of an epoch; its outcome once it is over."""
        with torch.no_grad():
            for p, piece in zip(seat.model.parameters(), self.theta[seat.slot].split(self.sizes), strict=True):
                p.copy_(piece.view_as(p))
        losses = self.batch_losses[:seat.done, seat.slot]
        correct = self.batch_correct[:seat.done, seat.slot].sum()
        try:
            record = seat.end_epoch(epoch, losses, correct, epoch_start, learning_rate, self.amp)
        except TrainingError as exc:
            seat.end(exc)
            return
        if record is not None and seat.member.on_epoch is not None:
            seat.member.on_epoch(record)
        if record is None or seat.stopped or seat.early_stopped or epoch == seat.config.epochs:
            seat.end(_run_result(seat.model, seat.config.early_stopping, seat.history, seat.best,
                                 stopped=seat.stopped, early_stopped=seat.early_stopped,
                                 samples_trained=seat.samples_trained, started=started,
                                 loop_start=loop_start, device=self.device))

    # -- the step --------------------------------------------------------------------------------
    def _eager_step(self, step: int) -> None:
        start = step * self.batch_size
        loss, correct = self._update(self.rows[:, start:start + self.batch_size], self.batch_positions + start)
        self.loss_slots[step].copy_(loss)
        self.correct_slots[step].copy_(correct)

    def _static_body(self) -> None:
        """The step on fixed buffers only, its batch chosen by on-device counters (the positions in the
        epoch, the step): what a CUDA graph replays."""
        loss, correct = self._update(self.rows.index_select(1, self.positions), self.positions)
        self.batch_losses.index_copy_(0, self.step_index, loss[None])
        self.batch_correct.index_copy_(0, self.step_index, correct[None])
        self.positions.add_(self.batch_size)
        self.step_index.add_(1)

    def _update(self, rows: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, per-model losses, one backward, clipping, optimizer for the batch `rows` (K, batch) at
        `positions` of the epoch, of which each model has those below its `limit`: each model's loss and
        correct predictions, nothing read back. A model with none (past its epoch, frozen) is not updated."""
        count = len(self.seats)
        valid = positions < self.limit[:, None]
        x = self.X.index_select(0, rows.reshape(-1)).view(count, self.batch_size, -1)
        y = self.y.index_select(0, rows.reshape(-1)).view(count, self.batch_size)
        with self.amp:
            outputs = self._forward(x)
            loss, hits = self._loss(outputs, y, valid)
        (grad,) = torch.autograd.grad(loss.sum(), self.theta)
        with torch.no_grad():
            if self.max_norm is not None:  # trainer._clip_grad_norm's arithmetic, per model
                norm = torch.linalg.vector_norm(grad, dim=1)
                grad = grad * norm.add_(1e-6).reciprocal_().mul_(self.max_norm).clamp_(max=1.0)[:, None]
            self.optimizer.step(grad, valid[:, 0])
        return loss.detach(), hits.sum(1)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """The K models in training mode on their batches x (K, batch, features)."""
        pieces, h, j = iter(self.theta.split(self.sizes, dim=1)), x, 0
        for layer in self.layers:
            if layer[0] == "linear":
                weight, bias = next(pieces).view(-1, layer[1], layer[2]), next(pieces).unsqueeze(1)
                h = torch.baddbmm(bias, h, weight.transpose(1, 2))
            elif layer[0] == "activation":
                h = layer[1](h)
            else:
                if self.dropping[j]:
                    h = h * self._noise(j, h.shape).to(h.dtype)
                j += 1
        return h

    def _noise(self, j: int, shape: torch.Size) -> torch.Tensor:
        """Dropout layer j's multiplier, 0 or 1/(1 - p) per element: the host-drawn masks on the CPU,
        else one draw from the device's generator."""
        if self.host_draws:
            return self.masks[j] * self.scales[j]
        return torch.where(torch.rand(shape, device=self.device) < self.keep[j], self.scales[j], 0.0)

    def _loss(self, outputs: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each model's loss over its valid rows, as trainer._objective's criterion has it, and the rows
        it predicts right (argmax, or the sign in regression)."""
        weight = valid.float()
        count = weight.sum(1).clamp_min(1)
        if self.regression:
            predicted = outputs[..., 0]
            error = predicted - y
            if self.loss == "huber":
                z = error.abs()
                per_row = torch.where(z < self.delta, 0.5 * z * z, self.delta * (z - 0.5 * self.delta))
            else:
                per_row = error.square()
            return (per_row * weight).sum(1) / count, ((predicted > 0) == (y > 0)) & valid
        log_p = F.log_softmax(outputs, dim=-1).gather(-1, y[..., None]).squeeze(-1)
        weight = self.class_weights.gather(1, y) * weight
        hits = (outputs.argmax(-1) == y) & valid
        if self.loss == "focal":
            return (-weight * (1 - log_p.exp()).pow(self.gamma) * log_p).sum(1) / count, hits
        # Cross-entropy's weighted mean; a model without rows divides 0 by a tiny number, not by 0.
        return -(weight * log_p).sum(1) / weight.sum(1).clamp_min(torch.finfo(torch.float32).tiny), hits


class _StackedOptimizer:
    """K optimizers of one kind over the rows of `theta`, in torch's formulas: Adam (L2 in the gradient,
    as torch.optim.Adam's weight_decay), SGD with momentum 0.9 and no dampening, or RMSprop; each row
    with its own learning rate, weight decay and step count (on the device, so a graph can replay the
    step). A row that is not `active` keeps its parameters and state exactly. On the CPU each update is
    the one torch's optimizers (train_model's) make, to the bit, but for the weight decay of the few
    elements their fused kernels leave to scalar code (a parameter's last numel % SIMD width), which
    may differ in the last bit."""

    def __init__(self, kind: str, theta: torch.Tensor, rates: list[float], decays: list[float], exact: torch.dtype):
        device = theta.device
        self.kind, self.theta = kind, theta
        self.lr = torch.tensor(rates, dtype=exact, device=device)
        self.decay = torch.tensor(decays, device=device)[:, None] if any(decays) else None
        self.steps = torch.zeros(len(rates), dtype=exact, device=device)
        self.first = torch.zeros_like(theta)  # Adam's exp_avg, SGD's momentum, RMSprop's square_avg
        self.second = torch.zeros_like(self.first) if kind == "adam" else None  # Adam's exp_avg_sq

    def step(self, grad: torch.Tensor, active: torch.Tensor) -> None:
        # addcmul where torch's CPU kernels round a product and a sum once (a fused multiply-add).
        theta, keep = self.theta, active[:, None]
        if self.decay is not None:
            grad = torch.addcmul(grad, theta, self.decay)
        self.steps.add_(active)
        if self.kind == "adam":
            beta1, beta2 = ADAM_BETAS
            first = torch.lerp(self.first, grad, 1 - beta1)
            second = (self.second * beta2).addcmul_(grad, grad, value=1 - beta2)
            step_size = (self.lr / (1 - beta1 ** self.steps)).float()[:, None]
            bias_correction2_sqrt = (1 - beta2 ** self.steps).sqrt().float()[:, None]
            new = theta - step_size * first / (_sqrt(second) / bias_correction2_sqrt + ADAM_EPS)
            torch.where(keep, second, self.second, out=self.second)
        elif self.kind == "sgd":
            first = torch.where((self.steps == 1)[:, None], grad, self.first * SGD_MOMENTUM + grad)
            new = torch.addcmul(theta, first, (-self.lr).float()[:, None])
        else:
            first = (self.first * RMSPROP_ALPHA).addcmul_(grad, grad, value=1 - RMSPROP_ALPHA)
            new = theta + (-self.lr).float()[:, None] * grad / (first.sqrt() + RMSPROP_EPS)
        torch.where(keep, first, self.first, out=self.first)
        torch.where(keep, new, theta, out=theta)


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    """Correctly rounded on the CPU, as fused Adam's kernel takes it (torch.sqrt's vectorised CPU kernel
    is not, to the last bit): float64's square root of a float32, rounded back, is."""
    return x.double().sqrt().float() if x.device.type == "cpu" else x.sqrt()
