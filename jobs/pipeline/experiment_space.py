"""What an experiment varies and how it is judged: the sweep's parameter space and its trials, the
walk-forward's folds over the bars, the objective. Light (pydantic and the standard library): the
producer expands and validates an experiment with it before anything is enqueued.

A parameter is a dotted path into the strategy document (`training.learning_rate`,
`indicators.rsi_14.period`: an indicator or fuzzy set is named by its id); a trial is one value per
path. A fold is a train window followed by a test window of bars; the folds' test windows follow
each other without overlap, so their backtests stitch into one out-of-sample curve.
"""

from __future__ import annotations

import copy
import itertools
import math
import random
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator

MAX_VALUES = 1000  # values of one parameter
DURATION = re.compile(r"^(\d+)\s*([mhdw])$")
DURATION_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
# What an objective may read: the validation metrics of a training (never the test split's), or for a
# walk-forward the stitched out-of-sample backtest (`oos.<backtest metric>`).
VALIDATION_METRICS = ("val_accuracy", "val_loss")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ParamRange(_Spec):
    """A range to sample from (`random`), or with `step` a grid of its own."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> ParamRange:
        if self.high < self.low:
            raise ValueError("high must not be below low")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        if self.step is not None and (self.high - self.low) / self.step >= MAX_VALUES:
            raise ValueError(f"step gives more than {MAX_VALUES} values")
        return self

    def grid(self) -> list[float | int]:
        if self.step is None:
            raise ValueError("a grid needs a list of values, or a range with a step")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [self.typed(self.low + i * self.step) for i in range(count)]

    def sample(self, rng: random.Random) -> float | int:
        if self.step is not None:
            return rng.choice(self.grid())
        if self.log:
            return self.typed(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return self.typed(rng.uniform(self.low, self.high))

    def extremes(self) -> tuple[float | int, float | int]:
        """The lowest and the highest value the range gives."""
        if self.step is not None:
            values = self.grid()
            return values[0], values[-1]
        return self.typed(self.low), self.typed(self.high)

    def typed(self, value: float) -> float | int:
        """A value of the range as a trial holds it: an int for an integer range, else rounded to 12 digits."""
        return int(round(value)) if self.integer else round(value, 12)


class Sweep(_Spec):
    """`grid`: every point of the lists (and stepped ranges); `random`: `max_trials` draws; `tpe`:
    `max_trials` asked of Optuna's TPE sampler, `parallelism` at a time, each batch chosen from how
    the trials before it did (trainhost.jobs.experiment_study)."""

    params: dict[str, list[Any] | ParamRange] = Field(min_length=1, max_length=32)
    search: Literal["grid", "random", "tpe"] = "grid"
    max_trials: int | None = Field(default=None, ge=1, le=100_000)
    parallelism: int = Field(default=4, ge=1, le=1024, description="trials in flight at once (queued ahead); "
                                                                   "tpe: the trials asked per batch")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    pruning: bool = Field(default=False, description="tpe: Optuna's median pruner stops a trial whose per-epoch "
                                                     "validation value falls behind the completed trials'")

    @field_validator("params")
    @classmethod
    def _paths(cls, params: dict[str, Any]) -> dict[str, Any]:
        for path, values in params.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", path):
                raise ValueError(f"{path!r}: a parameter is a dotted path into the strategy, e.g. "
                                 "training.learning_rate")
            if isinstance(values, list) and not 1 <= len(values) <= MAX_VALUES:
                raise ValueError(f"{path}: give 1 to {MAX_VALUES} values")
        return params

    @model_validator(mode="after")
    def _searchable(self) -> Sweep:
        if self.search in ("random", "tpe") and self.max_trials is None:
            raise ValueError(f"max_trials: a {self.search} search needs a number of trials")
        if self.pruning and self.search != "tpe":
            raise ValueError("pruning: only a tpe search prunes trials")
        if self.search == "tpe":
            for path, values in self.params.items():
                if isinstance(values, ParamRange) and values.log and values.step is not None:
                    raise ValueError(f"params.{path}: a tpe range is either log or stepped, not both")
        if self.search == "grid":
            for path, values in self.params.items():
                if isinstance(values, ParamRange) and values.step is None:
                    raise ValueError(f"params.{path}: a grid needs a list of values or a range with a step")
        return self

    def trials(self) -> list[dict[str, Any]]:
        """One mapping of path to value per trial: the grid's points in order (at most `max_trials`
        of them), or `max_trials` random draws from `seed`."""
        if self.search == "grid":
            axes = [v.grid() if isinstance(v, ParamRange) else list(v) for v in self.params.values()]
            points = itertools.islice(itertools.product(*axes), self.max_trials)
            return [dict(zip(self.params, point, strict=True)) for point in points]
        if self.search == "tpe":
            raise ValueError("a tpe search asks its trials of its study as they run")
        rng = random.Random(self.seed)
        return [{path: values.sample(rng) if isinstance(values, ParamRange) else rng.choice(values)
                 for path, values in self.params.items()} for _ in range(self.max_trials or 0)]

    def extremes(self) -> list[dict[str, Any]]:
        """One trial per extreme of each parameter, the others left as the base strategy has them:
        every value of a list, a range's lowest and highest (what a tpe search may ask, checked before
        anything is enqueued)."""
        return [{path: value} for path, values in self.params.items()
                for value in (values.extremes() if isinstance(values, ParamRange) else values)]


Window = StrictInt | str  # bars (true is no number of bars), or a duration such as "30d", "720h", "4w"


class WalkForward(_Spec):
    train: Window = Field(description="bars, or a duration (m, h, d, w) such as 90d")
    test: Window = Field(description="bars, or a duration")
    step: Window | None = Field(default=None, description="from one fold to the next; default: the test length")
    anchored: bool = Field(default=False, description="true: the train window grows from the first bar")
    gap: int = Field(default=0, ge=0, le=1_000_000, description=(
        "bars between a fold's train window and its test window, in neither: a label that looks ahead from "
        "the last training bars then ends before the test window"))

    @field_validator("train", "test", "step")
    @classmethod
    def _window(cls, value: Window | None) -> Window | None:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive number of bars or a duration such as 30d")
        if isinstance(value, str) and not DURATION.fullmatch(value.strip()):
            raise ValueError(f"{value!r} is neither a number of bars nor a duration such as 30d, 720h, 4w")
        return value

    @model_validator(mode="after")
    def _no_overlap(self) -> WalkForward:
        if self.step is None:
            return self
        if isinstance(self.step, int) != isinstance(self.test, int):
            raise ValueError("step: give it as test is given, in bars or as a duration")
        if (self.step < self.test if isinstance(self.step, int) else _duration(self.step) < _duration(self.test)):
            raise ValueError("step: shorter than test, the test windows would overlap (their backtests are stitched "
                             "into one out-of-sample curve)")
        return self


class Objective(_Spec):
    metric: str = Field(default="val_accuracy", description="val_accuracy, val_loss, or oos.<backtest metric> "
                                                            "(walk-forward: the stitched out-of-sample backtest)")
    direction: Literal["maximize", "minimize"] = "maximize"

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in VALIDATION_METRICS and not re.fullmatch(r"oos\.[a-z_]+", metric):
            raise ValueError(f"{metric!r}: use {', '.join(VALIDATION_METRICS)} or oos.<backtest metric> "
                             "(e.g. oos.sharpe); the test split is never an objective")
        return metric

    def better(self, a: float, b: float) -> bool:
        return a > b if self.direction == "maximize" else a < b


class Fold(NamedTuple):
    """A fold's bars: train from `train_start` to `train_end`, test from `test_start` to `test_end`
    (all inclusive); the gap's bars lie between `train_end` and `test_start`."""

    index: int
    train_start: datetime
    test_start: datetime
    test_end: datetime
    train_bars: int
    test_bars: int
    train_end: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"fold": self.index, **{key: getattr(self, key).isoformat() for key in FOLD_TIMES},
                "train_bars": self.train_bars, "test_bars": self.test_bars}

    @classmethod
    def from_dict(cls, fold: Mapping[str, Any]) -> Fold:
        """The fold as_dict() wrote."""
        times = {key: datetime.fromisoformat(fold[key]) for key in FOLD_TIMES}
        return cls(fold["fold"], train_bars=fold["train_bars"], test_bars=fold["test_bars"], **times)


FOLD_TIMES = ("train_start", "train_end", "test_start", "test_end")


def folds(times: Sequence[datetime], spec: WalkForward) -> list[Fold]:
    """The folds over the bars at `times` (sorted): consecutive, non-overlapping, full test windows."""
    n = len(times)
    result = []
    train_end = _ahead(times, 0, spec.train)  # exclusive, as every position here
    while train_end + spec.gap < n:
        test_start = train_end + spec.gap
        test_end = _ahead(times, test_start, spec.test)
        if test_end > n:
            break
        start = 0 if spec.anchored else max(0, _back(times, train_end, spec.train))
        result.append(Fold(len(result), times[start], times[test_start], times[test_end - 1], train_end - start,
                           test_end - test_start, times[train_end - 1]))
        train_end = _ahead(times, test_start, spec.step or spec.test) - spec.gap
    return result


def _ahead(times: Sequence[datetime], position: int, window: Window) -> int:
    """The position `window` after `position`: that many bars on, or the first bar at or after the
    duration; past the end (len + 1) when the data does not reach it."""
    if isinstance(window, int):
        return position + window
    moment = times[position] + _duration(window)
    if moment > times[-1]:
        return len(times) + 1
    return position + sum(1 for t in times[position:] if t < moment)


def _back(times: Sequence[datetime], position: int, window: Window) -> int:
    """The position `window` before `position`."""
    if isinstance(window, int):
        return position - window
    moment = times[position] - _duration(window)
    return sum(1 for t in times[:position] if t < moment)


def _duration(window: str) -> timedelta:
    count, unit = DURATION.fullmatch(window.strip()).groups()
    return int(count) * DURATION_UNITS[unit]


def with_params(document: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the strategy `document` with each dotted path set to its value (mappings on the
    way created where missing)."""
    variant = copy.deepcopy(dict(document))
    for path, value in params.items():
        node = variant
        *parents, leaf = path.split(".")
        for key in parents:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ValueError(f"{path}: {key!r} is not a mapping in the strategy")
            node = child
        node[leaf] = value
    return variant
