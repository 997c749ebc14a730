"""Request bodies, validated before anything is enqueued (shared by the producer API, the HTTP API
and the CLI, and the source of the OpenAPI document)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from trainhost.jobs.pipeline.backtest_settings import BacktestOverrides
from trainhost.jobs.pipeline.experiment_space import Objective, Sweep, WalkForward
from trainhost.jobs.pipeline.strategy import parse_when, symbol_error
from trainhost.jobs.pipeline.timeframes import timeframe_error
from trainhost.jobs.pipeline.training_settings import BatchSize, Epochs, Seed

SESSION_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_STRATEGY_CHARS = 1_000_000
LIST_LIMIT_MAX = 1000  # sessions in one page of a listing
LIST_OFFSET_MAX = 1_000_000_000  # far beyond any real listing, well inside Redis's 64-bit offsets

SessionId = Field(default=None, pattern=SESSION_ID_PATTERN, description="[A-Za-z0-9_-]{1,64}")
Priority = Literal["normal", "high"]
PriorityField = Field(default="normal", description='"high": queued on the high-priority queue, which workers '
                                                     "serve before the others")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class TrainingRequest(_Request):
    """Either the KTRDR form (`task_id`, `strategy_yaml`, ...) or the structured form
    (`session_id`, `strategy` as a mapping, ...)."""

    session_id: str | None = SessionId
    task_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN, description="KTRDR's name for session_id")
    strategy_yaml: str | None = Field(default=None, min_length=1, max_length=MAX_STRATEGY_CHARS)
    strategy: dict[str, Any] | None = None
    symbols: list[str] | None = Field(default=None, min_length=1, max_length=100)
    timeframes: list[str] | None = Field(default=None, min_length=1, max_length=10)
    start_date: str | None = Field(default=None, max_length=40)
    end_date: str | None = Field(default=None, max_length=40)
    epochs: Epochs | None = None
    batch_size: BatchSize | None = None
    seed: Seed | None = None
    test_start_date: str | None = Field(default=None, max_length=40, description=(
        "the first moment of the test split (a walk-forward fold): train and validation are the labelled bars "
        "before it, split by the strategy's fractions, and the test split and its backtest are the bars from it"))
    train_end_date: str | None = Field(default=None, max_length=40, description=(
        "with test_start_date: the last moment of train and validation; the bars between it and test_start_date "
        "are left out (a walk-forward fold's gap)"))
    backtest: BacktestOverrides | None = None  # of the test split; unset keys keep the strategy's decisions
    priority: Priority = PriorityField

    @model_validator(mode="after")
    def _one_strategy_one_id(self) -> TrainingRequest:
        if (self.strategy_yaml is None) == (self.strategy is None):
            raise ValueError("give exactly one of strategy_yaml (KTRDR form) or strategy (structured form)")
        if self.task_id and self.session_id and self.task_id != self.session_id:
            raise ValueError("task_id and session_id name the same thing; give one")
        return self

    @property
    def requested_id(self) -> str | None:
        return self.session_id or self.task_id

    def overrides(self) -> dict[str, Any]:
        fields = ("symbols", "timeframes", "start_date", "end_date", "epochs", "batch_size", "seed", "test_start_date",
                  "train_end_date")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


class EvaluationRequest(_Request):
    """Evaluate a trained model (a folder under models_dir) on a symbol and date range."""

    session_id: str | None = SessionId
    task_id: str | None = Field(default=None, pattern=SESSION_ID_PATTERN)
    model_path: str = Field(min_length=1, max_length=1000)
    symbol: str | None = Field(default=None, max_length=20)
    timeframe: str | None = Field(default=None, max_length=10)
    start_date: str | None = Field(default=None, max_length=40)
    end_date: str | None = Field(default=None, max_length=40)
    backtest: BacktestOverrides | None = None  # unset keys keep the strategy's decisions
    priority: Priority = PriorityField

    @property
    def requested_id(self) -> str | None:
        return self.session_id or self.task_id

    @field_validator("start_date", "end_date")
    @classmethod
    def _iso_date(cls, value: str | None) -> str | None:
        if value is not None:
            parse_when(value)
        return value

    @field_validator("symbol", "timeframe")
    @classmethod
    def _market(cls, value: str | None, info: ValidationInfo) -> str | None:
        check = symbol_error if info.field_name == "symbol" else timeframe_error
        problem = check(value) if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _ordered_dates(self) -> EvaluationRequest:
        if self.start_date and self.end_date and parse_when(self.start_date) > parse_when(self.end_date):
            raise ValueError("end_date: must not be before start_date")
        return self


class StopRequest(_Request):
    session_id: str = Field(pattern=SESSION_ID_PATTERN)


class ExperimentRequest(_Request):
    """Many sessions of one base training request: a sweep over strategy parameters, a walk-forward
    over its date range, or both (every trial walk-forward validated)."""

    experiment_id: str | None = SessionId
    name: str | None = Field(default=None, max_length=200)
    base: TrainingRequest
    sweep: Sweep | None = None
    walk_forward: WalkForward | None = None
    objective: Objective = Field(default_factory=Objective)

    @model_validator(mode="after")
    def _something_to_vary(self) -> ExperimentRequest:
        if self.sweep is None and self.walk_forward is None:
            raise ValueError("give a sweep, a walk_forward, or both")
        if self.base.requested_id or self.base.test_start_date or self.base.train_end_date:
            raise ValueError("base: session ids, test_start_date and train_end_date are the experiment's to set, "
                             "per child")
        if self.objective.metric.startswith("oos.") and self.walk_forward is None:
            raise ValueError("objective.metric: oos.* needs a walk_forward (its stitched out-of-sample backtest)")
        return self
