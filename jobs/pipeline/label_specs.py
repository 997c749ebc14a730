"""What each label source accepts and produces (docs/ktrdr-semantics.md §6).

Pure Python on purpose: strategy validation runs in the light client (no numpy, no pandas), so the
catalogue the validator checks against lives apart from the labelers in `labels.py`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The trade-signal classes by index (§6 "Class indices"): what zigzag and triple_barrier labels mean,
# and what the dashboard names a 3-class model's outputs.
SIGNAL_CLASSES: tuple[str, ...] = ("BUY", "HOLD", "SELL")
# Class names by index, per source; forward_return is continuous.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "zigzag": SIGNAL_CLASSES,
    "triple_barrier": SIGNAL_CLASSES,
    "context": ("BULLISH", "BEARISH", "NEUTRAL"),
    "regime": ("TRENDING_UP", "TRENDING_DOWN", "RANGING", "VOLATILE"),
    "forward_return": (),
}
LABEL_SOURCES: tuple[str, ...] = tuple(CLASS_NAMES)
# metadata_v3.json `output_type` (§11).
OUTPUT_TYPES: dict[str, str] = {
    "zigzag": "classification", "triple_barrier": "classification", "forward_return": "regression",
    "context": "context_classification", "regime": "regime_classification",
}


@dataclass(frozen=True)
class Key:
    """One `training.labels` key: `kind` int, float, bool or str; `ok` an extra test on the value;
    `requirement` says both in words ("an integer >= 1")."""

    kind: type
    default: Any
    requirement: str
    ok: Callable[[Any], bool] = lambda value: True
    nullable: bool = False

    def check(self, value: Any) -> str | None:
        if value is None and self.nullable:
            return None
        wrong_type = (
            (self.kind is int and (isinstance(value, bool) or not isinstance(value, int)))
            or (self.kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))
                                        or not math.isfinite(value)))
            or (self.kind is bool and not isinstance(value, bool))
            or (self.kind is str and not isinstance(value, str))
        )
        if wrong_type or not self.ok(value):
            return f"must be {self.requirement}, got {value!r}"
        return None


def _positive(kind: type, default: Any) -> Key:
    return Key(kind, default, "a number > 0" if kind is float else "an integer >= 1", lambda v: v > 0)


LABEL_KEYS: dict[str, dict[str, Key]] = {
    "zigzag": {
        "zigzag_threshold": Key(float, 0.02, "a number between 0 and 1 (exclusive), e.g. 0.02",
                                lambda v: 0 < v < 1),
        "label_lookahead": _positive(int, 10),  # passed along by KTRDR, unused by segment labels
    },
    "triple_barrier": {
        "pt_multiplier": _positive(float, 2.0),
        "sl_multiplier": _positive(float, 1.5),
        "max_holding_period": _positive(int, 50),
        "vol_span": _positive(int, 50),
        "vol_method": Key(str, "atr", "'atr' or 'close'", lambda v: v in ("atr", "close")),
        "compute_weights": Key(bool, False, "true or false"),
        # Given: label CUSUM event bars only; 0 means cusum_multiplier x volatility (§6.2).
        "cusum_threshold": Key(float, None, "a number >= 0 (0: cusum_multiplier x volatility), or null for no "
                               "CUSUM filter", lambda v: v >= 0, nullable=True),
        "cusum_multiplier": _positive(float, 0.5),
    },
    "forward_return": {"horizon": _positive(int, 20)},
    "context": {
        "horizon": _positive(int, 5),
        "bullish_threshold": Key(float, 0.005, "a return such as 0.005"),
        "bearish_threshold": Key(float, -0.005, "a return such as -0.005"),
    },
    "regime": {
        "macro_atr_mult": _positive(float, 3.0),
        "micro_atr_mult": _positive(float, 1.0),
        "atr_period": _positive(int, 14),
        "vol_lookback": Key(int, 120, "an integer >= 2", lambda v: v >= 2),
        "vol_crisis_threshold": _positive(float, 2.0),
        "progression_tolerance": Key(float, 0.5, "a number between 0 and 1", lambda v: 0 <= v <= 1),
    },
}
# Keys some KTRDR strategies write that KTRDR's training path drops (§6.2, §14.2); we honour them.
LABEL_ALIASES: dict[str, dict[str, str]] = {
    "triple_barrier": {"profit_target_atr": "pt_multiplier", "stop_loss_atr": "sl_multiplier",
                       "max_holding_bars": "max_holding_period", "atr_period": "vol_span"},
}
# Keys KTRDR forwards to the labeler but the labeler never reads (§6.5): accepted with a warning.
UNUSED_LABEL_KEYS: dict[str, tuple[str, ...]] = {"regime": ("horizon", "trending_threshold")}


def num_classes(source: str) -> int:
    """Output size of a classifier on `source` labels (§8): 4 for regime, else 3."""
    return len(CLASS_NAMES[source]) or 1
