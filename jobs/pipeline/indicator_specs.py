"""What each supported indicator accepts and produces (docs/ktrdr-semantics.md §2), and the one rule
that resolves the parameters a strategy gives it.

Pure Python on purpose: strategy validation runs in the light client (no numpy, no pandas),
so the catalogue the validator checks against lives apart from the vectorised formulas in
`indicators.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from trainhost.jobs.pipeline.bar_columns import OHLCV_COLUMNS


@dataclass(frozen=True)
class Param:
    """One parameter: `kind` is int, float, str or bool; `low`/`high` bound numbers inclusively."""

    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    low_exclusive: bool = False

    def check(self, value: Any) -> str | None:
        """Return a message saying what is wrong with `value`, or None if it is acceptable."""
        if self.kind is int:
            # KTRDR's integer parameters are strict: 14.0, "14" and true are refused.
            if isinstance(value, bool) or not isinstance(value, int):
                return f"must be an integer, got {value!r}"
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number, got {value!r}"
            if value != value or value in (float("inf"), float("-inf")):
                return f"must be a finite number, got {value!r}"
        elif self.kind is bool:
            if not isinstance(value, bool):
                return f"must be true or false, got {value!r}"
        elif self.kind is str:
            if not isinstance(value, str):
                return f"must be a string, got {value!r}"
            if self.choices and value.lower() not in {c.lower() for c in self.choices}:
                return f"must be one of {', '.join(self.choices)}, got {value!r}"
        if self.kind in (int, float):
            if self.low is not None:
                if self.low_exclusive and not value > self.low:
                    return f"must be > {self.low:g} and <= {self.high:g}, got {value!r}"
                if not self.low_exclusive and value < self.low:
                    return f"must be between {self.low:g} and {self.high:g}, got {value!r}"
            if self.high is not None and value > self.high:
                lo = f"> {self.low:g}" if self.low_exclusive else f"between {self.low:g} and"
                return f"must be {lo} {self.high:g}, got {value!r}"
        return None

    def normalise(self, value: Any) -> Any:
        """A checked `value` as resolved parameters hold it: floats as float, string choices in the
        catalogue's spelling (`source: Close` reads `close`)."""
        if self.kind is float:
            return float(value)
        if self.kind is str and self.choices:
            return next(c for c in self.choices if c.lower() == value.lower())
        return value


def _period(default: int, low: int = 1, high: int = 500) -> Param:
    return Param(int, default, low, high)


SOURCE = Param(str, "close", choices=OHLCV_COLUMNS)


@dataclass(frozen=True)
class Resolution:
    """What `IndicatorSpec.resolve` made of the parameters a strategy gave an indicator."""

    params: dict[str, Any]  # every parameter of the type: the given value, normalised, else the default
    errors: dict[str, str]  # given key -> what is wrong with it (then `params` must not be used)
    unknown: tuple[str, ...]  # given keys the type does not have: ignored, as KTRDR does


@dataclass(frozen=True)
class IndicatorSpec:
    name: str
    params: dict[str, Param]
    outputs: tuple[str, ...] = ()  # empty: single-output
    min_rows: Callable[[dict[str, Any]], int] = field(default=lambda p: 1)
    # Aliases KTRDR silently drops; our policy honours them (README "Differences from KTRDR").
    param_aliases: dict[str, str] = field(default_factory=dict)

    @property
    def multi_output(self) -> bool:
        return bool(self.outputs)

    @property
    def primary_output(self) -> str | None:
        return self.outputs[0] if self.outputs else None

    def resolve(self, given: Mapping[str, Any]) -> Resolution:
        """The parameters `given` (a strategy's, without `type`) as the formulas read them: an alias
        stands for its canonical name (giving both is an error), each value is checked and
        normalised, and a parameter not given takes its default."""
        params: dict[str, Any] = {}
        errors: dict[str, str] = {}
        unknown: list[str] = []
        for key, value in given.items():
            name = self.param_aliases.get(key, key)
            param = self.params.get(name)
            if name != key and name in given:
                errors[key] = f"give either {key!r} or {name!r}, not both"
            elif param is None:
                unknown.append(key)
            elif (message := param.check(value)) is not None:
                errors[key] = message
            else:
                params[name] = param.normalise(value)
        return Resolution({n: params.get(n, p.default) for n, p in self.params.items()}, errors, tuple(unknown))


SPECS: dict[str, IndicatorSpec] = {
    s.name: s
    for s in [
        IndicatorSpec("rsi", {"period": _period(14, 2, 100), "source": SOURCE}, (), lambda p: p["period"] + 1),
        IndicatorSpec("roc", {"period": _period(10, 1, 100), "source": SOURCE}, (), lambda p: p["period"] + 1),
        IndicatorSpec(
            "macd",
            {
                "fast_period": _period(12, 1, 100),
                "slow_period": _period(26, 1, 200),
                "signal_period": _period(9, 1, 50),
                "source": SOURCE,
            },
            ("line", "signal", "histogram"),
            lambda p: max(p["fast_period"], p["slow_period"]) + p["signal_period"],
            {"fast": "fast_period", "slow": "slow_period", "signal": "signal_period"},
        ),
        IndicatorSpec("adx", {"period": _period(14, 2, 200)}, ("adx", "plus_di", "minus_di"),
                      lambda p: 2 * p["period"] + 1),
        IndicatorSpec("atr", {"period": _period(14, 1, 100)}, (), lambda p: p["period"] + 1),
        IndicatorSpec("sma", {"period": _period(20, 2, 500), "source": SOURCE}, (), lambda p: p["period"]),
        IndicatorSpec(
            "ema",
            {"period": _period(20, 1, 500), "source": SOURCE, "adjust": Param(bool, True)},
            (),
            lambda p: p["period"],
        ),
        IndicatorSpec(
            "stochastic",
            {"k_period": _period(14, 1, 100), "d_period": _period(3, 1, 20), "smooth_k": _period(3, 1, 20)},
            ("k", "d"),
            lambda p: max(p["k_period"], p["smooth_k"]) + p["d_period"],
        ),
        IndicatorSpec("williamsr", {"period": _period(14, 1, 100)}, (), lambda p: p["period"]),
        IndicatorSpec(
            "bollingerbands",
            {"period": _period(20, 2, 200), "multiplier": Param(float, 2.0, 0, 10, low_exclusive=True),
             "source": SOURCE},
            ("upper", "middle", "lower"),
            lambda p: p["period"],
        ),
        IndicatorSpec(
            "bollingerbandwidth",
            {"period": _period(20, 2, 200), "multiplier": Param(float, 2.0, 0, 10, low_exclusive=True),
             "source": SOURCE},
            (),
            lambda p: p["period"],
        ),
        IndicatorSpec(
            "keltnerchannels",
            {"period": _period(20, 1, 500), "atr_period": _period(10, 1, 500),
             "multiplier": Param(float, 2.0, 0, 10, low_exclusive=True)},
            ("upper", "middle", "lower"),
            lambda p: max(p["period"], p["atr_period"]),
        ),
        IndicatorSpec(
            "squeezeintensity",
            {
                "bb_period": _period(20, 2, 200),
                "bb_multiplier": Param(float, 2.0, 0, 5, low_exclusive=True),
                "kc_period": _period(20, 1, 500),
                "kc_multiplier": Param(float, 2.0, 0, 10, low_exclusive=True),
                "source": SOURCE,
            },
            (),
            lambda p: max(p["bb_period"], p["kc_period"], 10),
        ),
        IndicatorSpec("momentum", {"period": _period(10), "source": SOURCE}, (), lambda p: p["period"] + 1),
        IndicatorSpec("cci", {"period": _period(20, 2, 500)}, (), lambda p: p["period"]),
        IndicatorSpec("volumeratio", {"period": _period(20, 1, 500)}, (), lambda p: p["period"]),
        IndicatorSpec(
            "distancefromma",
            {"period": _period(20, 1, 500), "ma_type": Param(str, "SMA", choices=("SMA", "EMA")),
             "source": SOURCE},
            (),
            lambda p: p["period"],
        ),
        IndicatorSpec("obv", {}, (), lambda p: 2),
        IndicatorSpec("mfi", {"period": _period(14, 1, 500)}, (), lambda p: p["period"] + 1),
    ]
}

# KTRDR looks types up case-insensitively; these are its aliases (plus "<Name>Indicator").
ALIASES: dict[str, str] = {"bbands": "bollingerbands"}
for _name in SPECS:
    ALIASES[_name + "indicator"] = _name


def lookup(type_name: str) -> IndicatorSpec | None:
    """The spec for an indicator `type` as written in a strategy, or None if unsupported."""
    key = type_name.strip().lower()
    return SPECS.get(ALIASES.get(key, key))


def supported_types() -> list[str]:
    return sorted(SPECS)
