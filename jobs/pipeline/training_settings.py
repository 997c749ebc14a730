"""A training run's settings: one validated type, built by the strategy parser from a strategy's
`training` section (a request's overrides on top) and read by the trainer (docs/ktrdr-semantics.md
§1.6, §9). Defaults are KTRDR's.

Pure Python (pydantic only) on purpose: the producer validates a request's overrides before
anything is enqueued, in the light client that has no numpy or torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from trainhost.jobs.pipeline.indicator_specs import Param

# The bounds a request (schemas.TrainingRequest), the parser's overrides and a strategy's own
# `training` keys share. Strict: JSON `true` is not an epoch count (lax mode would read it as 1),
# nor "10" or 2.0.
Epochs = Annotated[StrictInt, Field(ge=1, le=100_000)]
BatchSize = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
Seed = Annotated[StrictInt, Field(ge=0, le=2**32 - 1)]

REGRESSION_LOSSES = ("huber", "mse")
# Each schedule's parameters (torch's keyword arguments) with §9's defaults; `lr_scheduler: true`
# means DEFAULT_LR_SCHEDULER with these.
LR_SCHEDULERS: dict[str, dict[str, Param]] = {
    "step": {"step_size": Param(int, 30, 1, 100_000), "gamma": Param(float, 0.1, 0, 1, low_exclusive=True)},
    "exponential": {"gamma": Param(float, 0.95, 0, 1, low_exclusive=True)},
    "reduce_on_plateau": {"factor": Param(float, 0.5, 0, 1, low_exclusive=True),
                          "patience": Param(int, 5, 0, 100_000)},
}
DEFAULT_LR_SCHEDULER = "reduce_on_plateau"

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


class EarlyStoppingConfig(BaseModel):
    """Stop after `patience` epochs without `score >= best + min_delta` (score = -val_loss or val_accuracy)."""

    model_config = _STRICT

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    patience: int = Field(10, ge=1, le=100_000)
    min_delta: float = Field(0.001, ge=0)


class LRSchedulerConfig(BaseModel):
    """A learning-rate schedule, stepped once per epoch; `params` holds every one of its
    LR_SCHEDULERS parameters (the parser fills in the defaults)."""

    model_config = _STRICT

    type: Literal["step", "exponential", "reduce_on_plateau"]
    params: dict[str, int | float]


class TrainingConfig(BaseModel):
    """The `training` section, resolved: what the trainer runs with and the split fractions."""

    model_config = _STRICT

    epochs: Epochs = 100
    batch_size: BatchSize = 32
    learning_rate: float = Field(0.001, gt=0)
    loss: Literal["cross_entropy", "focal", "huber", "mse"] = "cross_entropy"
    focal_gamma: float = Field(2.0, ge=0)
    huber_delta: float = Field(0.01, gt=0)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    weight_decay: float = Field(1e-4, ge=0)
    gradient_clip: float | None = 1.0  # None: no clipping
    early_stopping: EarlyStoppingConfig | None = None  # None: run every epoch
    lr_scheduler: LRSchedulerConfig | None = None  # None: constant learning rate
    train_fraction: float = 0.7
    validation_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: Seed = 42

    @field_validator("optimizer", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def task(self) -> str:
        """`regression` for a regression loss (one output, a return), else `classification`."""
        return "regression" if self.loss in REGRESSION_LOSSES else "classification"
