"""A backtest's costs, sizing and decision filters: one validated type, read from a strategy's
`decisions` block and a request's `backtest` overrides (docs/ktrdr-semantics.md §12).

Pure Python (pydantic only) on purpose: the producer validates a request's overrides and a
strategy's `decisions` before anything is enqueued, in the light client that has no numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

# The bounds, written once: the engine's config and a request's overrides both use these types.
Money = Annotated[float, Field(gt=0, allow_inf_nan=False)]
CostRate = Annotated[float, Field(ge=0, lt=1)]
SizeFraction = Annotated[float, Field(gt=0, le=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
Hours = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]

_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


class BacktestConfig(BaseModel):
    """Costs, sizing and filters of one backtest; defaults are KTRDR's.

    `position_size` is the fraction of cash an entry from flat invests (KTRDR hard-codes 0.25).
    `round_trip_cost` and `min_edge_multiplier` set a regression model's edge threshold
    τ = round_trip_cost × min_edge_multiplier; they do not change the costs charged, which are
    `commission` and `slippage` on every fill.
    """

    model_config = _STRICT

    initial_capital: Money = 100_000.0
    commission: CostRate = 0.001
    slippage: CostRate = 0.0005
    position_size: SizeFraction = 0.25
    confidence_threshold: Probability = 0.5
    min_signal_separation_hours: Hours = 4.0
    position_awareness: bool = True
    allow_short_from_flat: bool = False
    round_trip_cost: Annotated[float, Field(gt=0, lt=1)] = 0.003
    min_edge_multiplier: Positive = 1.5


class BacktestOverrides(BaseModel):
    """What a training or evaluation request may set in its `backtest` field; unset keys keep the
    strategy's `decisions` (or KTRDR's defaults)."""

    model_config = _STRICT

    initial_capital: Money | None = None
    commission: CostRate | None = None
    slippage: CostRate | None = None
    position_size: SizeFraction | None = None
    allow_short_from_flat: bool | None = None
    confidence_threshold: Probability | None = None
    min_signal_separation_hours: Hours | None = None


def strategy_backtest_fields(decisions: Mapping[str, Any]) -> dict[str, Any]:
    """The BacktestConfig fields a strategy's `decisions` block sets, by their `decisions` paths:
    {"decisions.filters.min_signal_separation": ("min_signal_separation_hours", 4), ...}."""
    found: dict[str, Any] = {}
    for key in ("confidence_threshold", "position_awareness", "allow_short_from_flat"):
        if key in decisions:
            found[f"decisions.{key}"] = (key, decisions[key])
    filters = decisions.get("filters")
    if isinstance(filters, Mapping) and "min_signal_separation" in filters:
        found["decisions.filters.min_signal_separation"] = ("min_signal_separation_hours",
                                                            filters["min_signal_separation"])
    cost_model = decisions.get("cost_model")
    if isinstance(cost_model, Mapping):
        for key in ("round_trip_cost", "min_edge_multiplier"):
            if key in cost_model:
                found[f"decisions.cost_model.{key}"] = (key, cost_model[key])
    return found


def backtest_config(decisions: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> BacktestConfig:
    """The strategy's `decisions` as defaults, the request's overrides on top (both already validated)."""
    chosen = {name: value for name, value in strategy_backtest_fields(decisions).values()}
    chosen.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return BacktestConfig(**chosen)
