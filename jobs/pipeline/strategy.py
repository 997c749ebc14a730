"""KTRDR v3 strategy files: parse, validate, and resolve what training needs (docs/ktrdr-semantics.md §1, §4.1).

`parse_strategy` reads a strategy (YAML text, bytes or an already-parsed mapping) plus optional
request overrides and returns a frozen `Strategy`, or raises `StrategyError` listing every problem
of the file at once, each as `<yaml path>: <what is wrong and what is expected>`.

Pure Python on purpose (pydantic and PyYAML only): the light client validates a strategy before it
enqueues a job, and it has no numpy, pandas or torch.

Where KTRDR is lenient we are stricter (a bad value is refused instead of silently replaced):
unknown activation or optimizer, `base_timeframe` outside the timeframe list, malformed symbols and
timeframes, duplicate YAML keys, label keys of the wrong type, regression without forward_return
labels (or forward_return labels without regression), and what is not supported (context data).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trainhost.jobs.pipeline import indicator_specs
from trainhost.jobs.pipeline.backtest_settings import BacktestConfig, strategy_backtest_fields
from trainhost.jobs.pipeline.errors import StrategyError
from trainhost.jobs.pipeline.label_specs import (
    CLASS_NAMES,
    LABEL_ALIASES,
    LABEL_KEYS,
    LABEL_SOURCES,
    UNUSED_LABEL_KEYS,
    num_classes,
)
from trainhost.jobs.pipeline.membership_specs import MF_TYPES, canonical_mf_type, check_membership
from trainhost.jobs.pipeline.names import folder_name_error
from trainhost.jobs.pipeline.timeframes import timeframe_error
from trainhost.jobs.pipeline.training_settings import (
    DEFAULT_LR_SCHEDULER,
    LR_SCHEDULERS,
    REGRESSION_LOSSES,
    BatchSize,
    EarlyStoppingConfig,
    Epochs,
    LRSchedulerConfig,
    Seed,
    TrainingConfig,
)

# Pure-Python YAML parsing is slow per node and per byte: these limits keep the worst case well under
# a second (bench/RESULTS.md), far above what real strategies need (a few KB, a few hundred nodes).
MAX_YAML_BYTES = 256 * 1024
MAX_YAML_NODES = 10_000
MAX_YAML_DEPTH = 50
SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,20}")
# Ids become parts of column names and feature ids; a dot would be read as an output selector.
ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}")

MAX_HIDDEN_LAYERS = 16
MAX_LAYER_SIZE = 65_536
MAX_MODEL_PARAMETERS = 50_000_000
NUM_CLASSES = 3  # zigzag labels: 0 = BUY, 1 = HOLD, 2 = SELL
MAX_SEQUENCE_LENGTH = 10_000
MAX_RNN_LAYERS = 16

REQUIRED_SECTIONS = ("name", "training_data", "indicators", "fuzzy_sets", "nn_inputs", "model", "decisions",
                     "training")
KNOWN_LOSSES = ("cross_entropy", "focal")
# The `training` keys read as they are written (the others are read by hand below).
TRAINING_KEYS = ("epochs", "batch_size", "learning_rate", "focal_gamma", "huber_delta", "optimizer", "weight_decay",
                 "seed")


# ---------------------------------------------------------------------------------------------
# Resolved strategy: what the pipeline reads
# ---------------------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IndicatorDef(_Frozen):
    type: str  # canonical name, e.g. "rsi"
    params: dict[str, Any]  # every parameter of the type, defaults filled in


class Membership(_Frozen):
    name: str
    type: str  # triangular | trapezoidal | gaussian
    parameters: list[float]


class FuzzySetDef(_Frozen):
    indicator_id: str
    output: str | None  # None: the indicator's own column (a multi-output indicator's primary output)
    memberships: list[Membership]  # YAML order


class Feature(_Frozen):
    feature_id: str
    kind: Literal["fuzzy", "raw"]
    timeframe: str
    fuzzy_set_id: str | None
    membership: str | None
    indicator_id: str
    output: str | None
    column: str  # the indicator column read, e.g. "1h_adx_14.adx" or "1h_rsi_14"
    normalization: Literal["none", "minmax", "zscore"]


class ModelConfig(_Frozen):
    """The network (§8). MLP: `hidden_layers`, `activation`; LSTM/GRU: `sequence_length`,
    `hidden_size`, `num_layers`. `output_size` is 1 for regression, 4 for regime labels, else 3."""

    type: Literal["mlp", "lstm", "gru"] = "mlp"
    hidden_layers: list[int] = Field(default_factory=list)
    activation: Literal["relu", "tanh", "sigmoid", "leaky_relu"] = "relu"
    dropout: float = 0.2
    output_size: int = NUM_CLASSES
    sequence_length: int | None = None  # LSTM/GRU: bars per input window
    hidden_size: int = 64
    num_layers: int = 2

    @property
    def is_sequence(self) -> bool:
        return self.type in ("lstm", "gru")


class LabelConfig(_Frozen):
    """`training.labels` resolved: `params` holds every key of the source, defaults filled in and
    KTRDR's aliases (profit_target_atr, ...) mapped to their canonical names."""

    source: Literal["zigzag", "triple_barrier", "forward_return", "context", "regime"] = "zigzag"
    zigzag_threshold: float = 0.02
    params: dict[str, Any] = Field(default_factory=dict)
    raw: dict[Any, Any] = Field(default_factory=dict)  # training.labels as written


class DecisionsConfig(_Frozen):
    """What training needs of `decisions` (§1.6); the rest is the backtest's and stays in `raw`."""

    output_format: Literal["classification", "regression"] = "classification"
    round_trip_cost: float | None = None
    min_edge_multiplier: float | None = None


class Strategy(_Frozen):
    """A validated strategy with everything resolved (defaults, overrides, feature order).

    `start`/`end` are UTC-aware and inclusive. As in KTRDR, a date-only end date means 00:00 UTC on
    that day, so bars later that day are not included; give a date-time to include them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64")

    name: str
    version: str
    raw: dict[Any, Any]  # the strategy as parsed, for metadata
    symbols: list[str]
    timeframes: list[str]  # base timeframe first
    base_timeframe: str
    start: datetime | None
    end: datetime | None
    test_start: datetime | None = None  # a walk-forward fold: train and validation before it, test from it
    train_end: datetime | None = None  # with test_start: train and validation up to it (a gap before the test)
    indicators: dict[str, IndicatorDef]
    fuzzy_sets: dict[str, FuzzySetDef]
    features: list[Feature]  # canonical order (§4.1)
    model: ModelConfig
    labels: LabelConfig
    training: TrainingConfig
    decisions: DecisionsConfig = Field(default_factory=DecisionsConfig)
    warnings: list[str] = Field(default_factory=list)

    @property
    def feature_ids(self) -> list[str]:
        return [f.feature_id for f in self.features]

    @property
    def task(self) -> str:
        """`classification` or `regression` (decisions.output_format)."""
        return self.decisions.output_format

    @property
    def feature_timeframes(self) -> list[str]:
        """The run's timeframes some feature reads, base first (the base is always loaded: labels)."""
        used = {f.timeframe for f in self.features}
        return [tf for tf in self.timeframes if tf == self.base_timeframe or tf in used]

    def warmup_bars_at(self, timeframe: str) -> int:
        """The fewest `timeframe` bars its indicators need before they can be computed at all."""
        ids = dict.fromkeys(f.indicator_id for f in self.features if f.timeframe == timeframe)
        needs = [indicator_specs.lookup(self.indicators[i].type).min_rows(self.indicators[i].params) for i in ids]
        return max(needs, default=0)

    @property
    def history_required(self) -> int:
        """Bars of history the strategy asks for before its first bar (`training_data.history_required`)."""
        return int((self.raw.get("training_data") or {}).get("history_required", 200))

    @property
    def used_indicator_ids(self) -> list[str]:
        """Indicators some feature reads, in order of first use (the others need not be computed)."""
        return list(dict.fromkeys(f.indicator_id for f in self.features))

    @property
    def warmup_bars(self) -> int:
        """The fewest bars every used indicator needs before it can be computed at all."""
        needs = [indicator_specs.lookup(self.indicators[i].type).min_rows(self.indicators[i].params)
                 for i in self.used_indicator_ids]
        return max(needs, default=0)

    @property
    def model_spec(self) -> dict[str, Any]:
        """metadata.json's `model` section: what `build_model` needs to rebuild the network."""
        config = self.model
        spec: dict[str, Any] = {"type": config.type, "input_size": len(self.features), "dropout": config.dropout,
                                "output_size": config.output_size}
        if config.is_sequence:
            spec.update(sequence_length=config.sequence_length, hidden_size=config.hidden_size,
                        num_layers=config.num_layers)
        else:
            spec.update(hidden_layers=config.hidden_layers, activation=config.activation)
        return spec

    @property
    def label_metadata(self) -> dict[str, Any]:
        """metadata.json's `labels` section: the source, its class names by index, its parameters."""
        labels = self.labels
        return {"source": labels.source, "mapping": dict(enumerate(CLASS_NAMES[labels.source])),
                "params": labels.params, "zigzag_threshold": labels.zigzag_threshold}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict; `Strategy.from_dict` reads it back."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Strategy:
        return cls.model_validate(dict(data))


# ---------------------------------------------------------------------------------------------
# Request overrides
# ---------------------------------------------------------------------------------------------


def parse_when(value: Any) -> datetime:
    """A date or date-time (object or ISO string) as an aware UTC datetime; naive means UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time())
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"must be an ISO date or date-time such as 2024-01-31 or 2024-01-31T12:00:00Z, "
                             f"got {value!r}") from None
    else:
        raise ValueError(f"must be an ISO date or date-time such as 2024-01-31, got {value!r}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_end(value: Any) -> datetime:
    """An inclusive end: a bare date means the end of that day (KTRDR's backtest drops the rest of it,
    its D12), a date-time means that moment."""
    moment = parse_when(value)
    bare = isinstance(value, date) and not isinstance(value, datetime) or (
        isinstance(value, str) and "T" not in value.strip() and " " not in value.strip() and len(value.strip()) <= 10)
    return moment + timedelta(days=1) - timedelta(microseconds=1) if bare else moment


def symbol_error(value: Any) -> str | None:
    """Why `value` is not an acceptable symbol (it becomes part of a file name), or None."""
    if not isinstance(value, str) or not SYMBOL_PATTERN.fullmatch(value) or value.startswith("."):
        return (f"must be 1-20 letters, digits, '_', '.' or '-' and not start with '.', got {value!r}")
    return None


def _check_names(values: list[str], check) -> list[str]:
    for value in values:
        if (message := check(value)) is not None:
            raise ValueError(message)
    if len(set(values)) != len(values):
        raise ValueError(f"must not repeat an entry, got {values}")
    return values


class Overrides(BaseModel):
    """What a training request may change in the strategy it sends."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    symbols: list[str] | None = Field(None, min_length=1)
    timeframes: list[str] | None = Field(None, min_length=1)
    start_date: datetime | None = None
    end_date: datetime | None = None
    epochs: Epochs | None = None
    batch_size: BatchSize | None = None
    seed: Seed | None = None
    test_start_date: datetime | None = None
    train_end_date: datetime | None = None

    @field_validator("start_date", "end_date", "test_start_date", "train_end_date", mode="before")
    @classmethod
    def _when(cls, value: Any) -> datetime | None:
        return None if value is None else parse_when(value)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _check_names(values, symbol_error)

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, values: list[str] | None) -> list[str] | None:
        return None if values is None else _check_names(values, timeframe_error)


# ---------------------------------------------------------------------------------------------
# Error collection
# ---------------------------------------------------------------------------------------------


def _key(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _index(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _listing(values) -> str:
    return ", ".join(str(v) for v in values) or "(none)"


_PYDANTIC_PHRASES = (("Value error, ", ""), ("Input should be", "must be"), ("List should have", "must have"),
                     (" after validation", ""))


class _Problems:
    """Errors and warnings found so far, each prefixed with its YAML path."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def warn(self, path: str, message: str) -> None:
        self.warnings.append(f"{path}: {message}")

    def add_pydantic(self, exc: ValidationError, prefix: str, allowed: list[str] | None = None) -> None:
        """Pydantic's errors, rewritten as `path: message, got <value>` (never a raw dump)."""
        for err in exc.errors(include_url=False):
            path = prefix
            for part in err["loc"]:
                path = _index(path, part) if isinstance(part, int) else _key(path, part)
            if err["type"] == "missing":
                message = "is required"
            elif err["type"] == "extra_forbidden":
                message = "unknown key" + (f"; allowed: {_listing(allowed)}" if allowed else "")
            else:
                message = err["msg"]
                for old, new in _PYDANTIC_PHRASES:
                    message = message.replace(old, new)
                if err["type"] != "value_error":
                    message += f", got {err['input']!r}"
            self.error(path, message)


def _id_error(value: Any, what: str) -> str | None:
    if isinstance(value, bool):
        return (f"{what} {value!r} is not a string (YAML reads unquoted yes/no/on/off as true/false; "
                f"quote it)")
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        return f"{what} {value!r} must be 1-64 letters, digits, '_' or '-' (no dots: a dot selects an output)"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# YAML loading
# ---------------------------------------------------------------------------------------------


class _StrategyLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no real strategy uses them; they allow 'billion laughs'
    blow-ups), documents too deep or too large to parse quickly, and duplicate keys (YAML would
    silently keep the last one)."""

    depth = 0
    nodes = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._refuse("YAML aliases (*name) are not allowed in strategies")
        if self.depth >= MAX_YAML_DEPTH:
            self._refuse(f"nested more than {MAX_YAML_DEPTH} levels deep")
        self.nodes += 1
        if self.nodes > MAX_YAML_NODES:
            self._refuse(f"more than {MAX_YAML_NODES:,} values; real strategies need far fewer")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def _refuse(self, problem: str) -> None:
        raise yaml.MarkedYAMLError(problem=problem, problem_mark=self.peek_event().start_mark)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.MarkedYAMLError(problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark)
            seen.add(key if isinstance(key, (str, int, float, bool)) else id(key))
        return super().construct_mapping(node, deep=deep)


def _load_yaml(source: str | bytes) -> Any:
    """The parsed YAML document; raises StrategyError for oversized, undecodable or invalid YAML."""
    size = len(source) if isinstance(source, bytes) else len(source.encode("utf-8", "replace"))
    if size > MAX_YAML_BYTES:
        raise StrategyError([f"yaml: the strategy is {size:,} bytes; the limit is {MAX_YAML_BYTES:,}"])
    if isinstance(source, bytes):
        try:
            source = source.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise StrategyError([f"yaml: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        return yaml.load(source, Loader=_StrategyLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise StrategyError([f"yaml: invalid YAML at {where}{exc.problem or exc}"]) from None
    except yaml.YAMLError as exc:
        raise StrategyError([f"yaml: invalid YAML: {exc}"]) from None
    except ValueError as exc:  # e.g. an unquoted impossible date such as 2024-13-45
        raise StrategyError([f"yaml: invalid value: {exc}"]) from None


# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


def _mapping(value: Any, path: str, problems: _Problems, example: str = "") -> Mapping | None:
    if isinstance(value, Mapping):
        return value
    hint = f", e.g. {example}" if example else ""
    problems.error(path, f"must be a mapping{hint}, got {type(value).__name__}")
    return None


def _check_top_level(doc: Mapping, problems: _Problems) -> None:
    for section in REQUIRED_SECTIONS:
        if doc.get(section) is None:
            problems.error(section, "is required" if section == "name" else "required section is missing")
    name = doc.get("name")
    # The saver's own rule (the name becomes the model folder): what passes here can be saved.
    if name is not None and (message := folder_name_error(name)) is not None:
        problems.error("name", message)
    version = doc.get("version", "3.0")
    if not isinstance(version, str):
        problems.error("version", f"must be a string such as '3.0' (quote it: unquoted 3.0 is a number), "
                       f"got {version!r}")
    if doc.get("context_data"):
        problems.error("context_data", "context_data is not supported yet; supported: indicators computed on "
                       "the strategy's own symbols")


class _RunScope(NamedTuple):
    symbols: list[str]
    timeframes: list[str]  # available timeframes in YAML order: what `timeframes: all` means
    base_timeframe: str | None
    start: datetime | None
    end: datetime | None


def _read_training_data(value: Any, overrides: Overrides | None, problems: _Problems) -> _RunScope:
    """Symbols, timeframes and dates of the run; the request's overrides win over the strategy."""
    example = "{symbols: {mode: single, symbol: EURUSD}, timeframes: {mode: single, timeframe: 1h}}"
    training_data = None if value is None else _mapping(value, "training_data", problems, example)
    symbols, timeframes, base = [], [], None
    if training_data is not None:
        symbols = _read_symbols(training_data, problems)
        timeframes, base = _read_timeframes(training_data, problems)
        _read_history(training_data, problems)
    if overrides is not None and overrides.symbols:
        symbols = list(overrides.symbols)
    if overrides is not None and overrides.timeframes:
        timeframes, base = list(overrides.timeframes), overrides.timeframes[0]
    start, end = _resolve_dates(training_data or {}, overrides, problems)
    return _RunScope(symbols, timeframes, base, start, end)


def _read_symbols(training_data: Mapping, problems: _Problems) -> list[str]:
    path = "training_data.symbols"
    section = _mapping(training_data.get("symbols"), path, problems, "{mode: single, symbol: EURUSD}")
    if section is None:
        return []
    mode = section.get("mode", "single")
    if mode not in ("single", "multi_symbol"):
        problems.error(_key(path, "mode"), f"must be 'single' or 'multi_symbol', got {mode!r}")
    list_key = "list" if "list" in section else "symbols"  # `list` is KTRDR's alias of `symbols`
    if section.get(list_key):
        return _check_name_list(section[list_key], _key(path, list_key), symbol_error, problems)
    if mode == "multi_symbol":
        problems.error(_key(path, "list"), "multi_symbol mode needs a non-empty list of symbols")
        return []
    if "symbol" not in section:
        problems.error(_key(path, "symbol"), "is required in single mode (or give a list)")
        return []
    return _check_name_list([section["symbol"]], _key(path, "symbol"), symbol_error, problems)


def _check_name_list(values: Any, path: str, check, problems: _Problems) -> list[str]:
    if not isinstance(values, list) or not values:
        problems.error(path, f"must be a non-empty list, got {values!r}")
        return []
    try:
        return _check_names(values, check)
    except ValueError as exc:
        problems.error(path, str(exc))
        return []


def _read_timeframes(training_data: Mapping, problems: _Problems) -> tuple[list[str], str | None]:
    """The available timeframes in YAML order and the base timeframe."""
    path = "training_data.timeframes"
    section = _mapping(training_data.get("timeframes"), path, problems, "{mode: single, timeframe: 1h}")
    if section is None:
        return [], None
    mode = section.get("mode", "single")
    if mode not in ("single", "multi_timeframe"):
        problems.error(_key(path, "mode"), f"must be 'single' or 'multi_timeframe', got {mode!r}")
    list_key = "list" if "list" in section else "timeframes"
    if section.get(list_key) is not None:
        values = _check_name_list(section[list_key], _key(path, list_key), timeframe_error, problems)
        if mode == "multi_timeframe" and len(values) == 1:
            problems.error(_key(path, list_key), "multi_timeframe mode needs at least 2 timeframes")
    elif "timeframe" in section:
        values = _check_name_list([section["timeframe"]], _key(path, "timeframe"), timeframe_error, problems)
    else:
        problems.error(path, "needs `timeframe` (single mode) or `list`")
        return [], None
    base = section.get("base_timeframe")
    if base is None:
        return values, values[0] if values else None
    if values and base not in values:  # KTRDR's own check never runs (§1.2); ours does
        problems.error(_key(path, "base_timeframe"), f"{base!r} is not in the timeframe list ({_listing(values)})")
        return values, None
    return values, base


def _read_history(training_data: Mapping, problems: _Problems) -> None:
    value = training_data.get("history_required", 200)
    if isinstance(value, bool) or not isinstance(value, int) or value < 50:
        problems.error("training_data.history_required", f"must be an integer >= 50, got {value!r}")


def _read_when(container: Mapping, key: str, path: str, problems: _Problems) -> tuple[datetime | None, str]:
    value = container.get(key)
    if value is None:
        return None, ""
    try:
        return parse_when(value), _key(path, key)
    except ValueError as exc:
        problems.error(_key(path, key), str(exc))
        return None, ""


def _resolve_dates(training_data: Mapping, overrides: Overrides | None,
                   problems: _Problems) -> tuple[datetime | None, datetime | None]:
    """Each end: the override, else training_data.date_range, else training_data.start_date/end_date."""
    date_range = training_data.get("date_range")
    if date_range is not None:
        date_range = _mapping(date_range, "training_data.date_range", problems, "{start: '2020-01-01'}")
    found = []
    for override, range_key, legacy_key in (("start_date", "start", "start_date"), ("end_date", "end", "end_date")):
        moment = getattr(overrides, override) if overrides is not None else None
        where = f"overrides.{override}"
        if moment is None:
            moment, where = _read_when(date_range or {}, range_key, "training_data.date_range", problems)
        if moment is None:
            moment, where = _read_when(training_data, legacy_key, "training_data", problems)
        found.append((moment, where))
    (start, start_where), (end, end_where) = found
    if start is not None and end is not None and start > end:
        problems.error(end_where, f"end {end.isoformat()} is before start {start.isoformat()} "
                       f"(from {start_where}); the date range is empty")
    return start, end


def _read_indicators(section: Any, problems: _Problems) -> dict[str, IndicatorDef]:
    """The valid indicator definitions (invalid ones are reported and left out)."""
    if section is None:  # reported as a missing section
        return {}
    if isinstance(section, list):
        problems.error("indicators", "must be a mapping of indicator id to definition (v3 format); a list is the "
                       "v2 format, which is not supported (migrate with 'ktrdr strategy migrate')")
        return {}
    if _mapping(section, "indicators", problems, "{rsi_14: {type: rsi, period: 14}}") is None:
        return {}
    if not section:
        problems.error("indicators", "at least one indicator is required")
    resolved = {}
    for ind_id, body in section.items():
        path = _key("indicators", ind_id)
        if (message := _id_error(ind_id, "indicator id")) is not None:
            problems.error(path, message)
        elif _mapping(body, path, problems, "{type: rsi, period: 14}") is not None:
            definition = _read_indicator(body, path, problems)
            if definition is not None:
                resolved[ind_id] = definition
    return resolved


def _read_indicator(body: Mapping, path: str, problems: _Problems) -> IndicatorDef | None:
    if "data_source" in body:
        problems.error(_key(path, "data_source"), "context_data is not supported yet; supported: indicators "
                       "computed on the strategy's own symbols")
    type_name = body.get("type")
    spec = indicator_specs.lookup(type_name) if isinstance(type_name, str) else None
    if spec is None:
        what = "is required" if type_name is None else f"unknown indicator type {type_name!r}"
        problems.error(_key(path, "type"), f"{what}; supported: {_listing(indicator_specs.supported_types())}")
        return None
    resolution = spec.resolve({k: v for k, v in body.items() if k not in ("type", "data_source")})
    for key in resolution.unknown:
        problems.warn(_key(path, key), f"unknown parameter for {spec.name}, ignored (as KTRDR does); "
                      f"known: {_listing(spec.params)}")
    for key, message in resolution.errors.items():
        problems.error(_key(path, key), message)
    if resolution.errors:
        return None
    return IndicatorDef(type=spec.name, params=resolution.params)


def _resolve_ref(ref: Any, path: str, declared: Mapping, indicators: dict[str, IndicatorDef],
                 problems: _Problems) -> tuple[str, str | None] | None:
    """(indicator_id, output or None) for `id` or `id.output`; None when it cannot be used."""
    if not isinstance(ref, str) or not ref:
        problems.error(path, f"must be an indicator id or id.output, got {ref!r}")
        return None
    ind_id, dot, output = ref.partition(".")
    if ind_id not in declared:
        problems.error(path, f"{ind_id!r} not found in indicators; available: {_listing(declared)}")
        return None
    if ind_id not in indicators:  # its definition is invalid and already reported
        return None
    spec = indicator_specs.lookup(indicators[ind_id].type)
    if not dot:
        return ind_id, None
    if not spec.multi_output:
        problems.error(path, f"indicator {ind_id!r} (type: {spec.name}) is single-output and does not support "
                       f"dot notation; remove {'.' + output!r}")
        return None
    if output not in spec.outputs:
        problems.error(path, f"invalid output {output!r} for {spec.name} indicator {ind_id!r}; valid outputs: "
                       f"{_listing(spec.outputs)}")
        return None
    return ind_id, output


def _read_fuzzy_sets(section: Any, declared: Mapping, indicators: dict[str, IndicatorDef],
                     problems: _Problems) -> dict[str, FuzzySetDef]:
    if section is None or _mapping(section, "fuzzy_sets", problems,
                                   "{rsi_zone: {indicator: rsi_14, low: [0, 20, 40]}}") is None:
        return {}
    resolved = {}
    for fs_id, body in section.items():
        path = _key("fuzzy_sets", fs_id)
        if (message := _id_error(fs_id, "fuzzy set id")) is not None:
            problems.error(path, message)
        elif _mapping(body, path, problems, "{indicator: rsi_14, low: [0, 20, 40]}") is not None:
            fuzzy_set = _read_fuzzy_set(body, path, declared, indicators, problems)
            if fuzzy_set is not None:
                resolved[fs_id] = fuzzy_set
    return resolved


def _read_fuzzy_set(body: Mapping, path: str, declared: Mapping, indicators: dict[str, IndicatorDef],
                    problems: _Problems) -> FuzzySetDef | None:
    if "indicator" not in body:
        problems.error(_key(path, "indicator"), "is required (an indicator id, or id.output)")
        ref = None
    else:
        ref = _resolve_ref(body["indicator"], _key(path, "indicator"), declared, indicators, problems)
    names = [name for name in body if name != "indicator"]  # every other key is a membership function
    if not names:
        problems.error(path, "has no membership functions; at least one is required, e.g. oversold: [0, 20, 40]")
    memberships = [_read_membership(name, body[name], _key(path, name), problems) for name in names]
    if ref is None or not names or None in memberships:
        return None
    return FuzzySetDef(indicator_id=ref[0], output=ref[1], memberships=memberships)


def _read_membership(name: Any, value: Any, path: str, problems: _Problems) -> Membership | None:
    """A membership function: a list is a triangular shorthand, a mapping needs type and parameters."""
    if (message := _id_error(name, "membership name")) is not None:
        problems.error(path, message)
        return None
    if isinstance(value, list):
        mf_type, parameters, where = "triangular", value, path
    elif isinstance(value, Mapping):
        mf_type = canonical_mf_type(value.get("type"))
        if mf_type is None:
            what = "is required" if value.get("type") is None else f"unknown type {value.get('type')!r}"
            problems.error(_key(path, "type"), f"{what}; supported: {_listing(MF_TYPES)}")
            return None
        parameters, where = value.get("parameters"), _key(path, "parameters")
    else:
        problems.error(path, f"must be a list of numbers (triangular [a, b, c]) or a mapping "
                       f"{{type, parameters}}, got {value!r}")
        return None
    if (message := check_membership(mf_type, parameters)) is not None:
        problems.error(where, message)
        return None
    return Membership(name=name, type=mf_type, parameters=[float(p) for p in parameters])


class _Catalogue(NamedTuple):
    """What nn_inputs may reference: declared ids (valid or not) and the valid definitions."""

    indicators_declared: Mapping
    indicators: dict[str, IndicatorDef]
    fuzzy_sets_declared: Mapping
    fuzzy_sets: dict[str, FuzzySetDef]


def _read_nn_inputs(section: Any, timeframes: list[str], catalogue: _Catalogue,
                    problems: _Problems) -> list[Feature]:
    """The features in canonical order (§4.1): inputs, then timeframes, then memberships."""
    if section is None:
        return []
    if not isinstance(section, list) or not section:
        problems.error("nn_inputs", f"must be a non-empty list of inputs, e.g. [{{fuzzy_set: rsi_zone, "
                       f"timeframes: all}}], got {section!r}")
        return []
    features: list[Feature] = []
    produced_by: dict[str, str] = {}
    for i, item in enumerate(section):
        path = _index("nn_inputs", i)
        if _mapping(item, path, problems, "{fuzzy_set: rsi_zone, timeframes: all}") is None:
            continue
        new = _read_nn_input(item, path, timeframes, catalogue, problems)
        repeated = {f.feature_id: produced_by[f.feature_id] for f in new if f.feature_id in produced_by}
        if repeated:
            problems.error(path, f"repeats {_listing(repr(f) for f in repeated)}, already produced by "
                           f"{_listing(dict.fromkeys(repeated.values()))}; each feature may appear once")
            continue
        produced_by.update((f.feature_id, path) for f in new)
        features.extend(new)
    return features


def _read_nn_input(item: Mapping, path: str, timeframes: list[str], catalogue: _Catalogue,
                   problems: _Problems) -> list[Feature]:
    has_fuzzy, has_raw = item.get("fuzzy_set") is not None, item.get("raw_indicator") is not None
    if has_fuzzy == has_raw:
        problems.error(path, "specify either fuzzy_set or raw_indicator, not both" if has_fuzzy
                       else "must specify either fuzzy_set or raw_indicator")
        return []
    normalization = item.get("normalization")
    if normalization is not None and has_fuzzy:
        problems.error(_key(path, "normalization"), "is only valid with raw_indicator, not fuzzy_set")
        return []
    if normalization not in (None, "minmax", "zscore", "none"):
        problems.error(_key(path, "normalization"), f"must be minmax, zscore or none, got {normalization!r}")
        return []
    input_timeframes = _read_input_timeframes(item, path, timeframes, problems)
    if has_fuzzy:
        return _fuzzy_features(item["fuzzy_set"], path, input_timeframes, catalogue, problems)
    raw_ref = item["raw_indicator"]
    ref = _resolve_ref(raw_ref, _key(path, "raw_indicator"), catalogue.indicators_declared, catalogue.indicators,
                       problems)
    if ref is None:
        return []
    return [Feature(feature_id=f"{tf}_{raw_ref}_raw", kind="raw", timeframe=tf, fuzzy_set_id=None,
                    membership=None, indicator_id=ref[0], output=ref[1], column=f"{tf}_{raw_ref}",
                    normalization=normalization or "none") for tf in input_timeframes]


def _read_input_timeframes(item: Mapping, path: str, timeframes: list[str], problems: _Problems) -> list[str]:
    """`all` means every available timeframe in YAML order; a list must name available ones."""
    value = item.get("timeframes")
    where = _key(path, "timeframes")
    if value == "all":
        return list(timeframes)
    if value is None:
        problems.error(where, "is required: 'all' or a list of timeframes such as [1h]")
        return []
    if not isinstance(value, list) or not value:
        problems.error(where, f"must be 'all' or a non-empty list of timeframes such as [1h], got {value!r}")
        return []
    if not timeframes:  # the run's timeframes are invalid, already reported
        return []
    unknown = [tf for tf in value if tf not in timeframes]
    if unknown:
        problems.error(where, f"{_listing(repr(tf) for tf in unknown)} not among the run's timeframes; "
                       f"available: {_listing(timeframes)}")
        return []
    return value


def _fuzzy_features(fs_id: Any, path: str, timeframes: list[str], catalogue: _Catalogue,
                    problems: _Problems) -> list[Feature]:
    if not isinstance(fs_id, str) or fs_id not in catalogue.fuzzy_sets_declared:
        problems.error(_key(path, "fuzzy_set"), f"{fs_id!r} not found in fuzzy_sets; available: "
                       f"{_listing(catalogue.fuzzy_sets_declared)}")
        return []
    fuzzy_set = catalogue.fuzzy_sets.get(fs_id)
    if fuzzy_set is None:  # invalid, already reported
        return []
    ref = fuzzy_set.indicator_id + (f".{fuzzy_set.output}" if fuzzy_set.output else "")
    return [Feature(feature_id=f"{tf}_{fs_id}_{mf.name}", kind="fuzzy", timeframe=tf, fuzzy_set_id=fs_id,
                    membership=mf.name, indicator_id=fuzzy_set.indicator_id, output=fuzzy_set.output,
                    column=f"{tf}_{ref}", normalization="none")
            for tf in timeframes for mf in fuzzy_set.memberships]


class _ArchitectureSpec(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    hidden_layers: list[int] = Field(max_length=MAX_HIDDEN_LAYERS)
    activation: Literal["relu", "tanh", "sigmoid", "leaky_relu"] = "relu"
    dropout: float = Field(0.2, ge=0, lt=1)

    @field_validator("hidden_layers")
    @classmethod
    def _sizes(cls, sizes: list[int]) -> list[int]:
        for size in sizes:
            if not 1 <= size <= MAX_LAYER_SIZE:
                raise ValueError(f"each layer size must be between 1 and {MAX_LAYER_SIZE}, got {size}")
        return sizes

    @field_validator("activation", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class _RecurrentSpec(BaseModel):
    """`model.architecture` of an LSTM or GRU (§8); KTRDR's defaults."""

    model_config = ConfigDict(strict=True, extra="ignore", allow_inf_nan=False)

    sequence_length: int = Field(ge=1, le=MAX_SEQUENCE_LENGTH)
    hidden_size: int = Field(64, ge=1, le=MAX_LAYER_SIZE)
    num_layers: int = Field(2, ge=1, le=MAX_RNN_LAYERS)
    dropout: float = Field(0.2, ge=0, lt=1)


def _recurrent_parameters(kind: str, n_features: int, spec: _RecurrentSpec, output_size: int) -> int:
    gates = 4 if kind == "lstm" else 3
    h = spec.hidden_size
    layers = sum(gates * (h * (width + h) + 2 * h) for width in [n_features] + [h] * (spec.num_layers - 1))
    return layers + (h + 1) * output_size


def _read_model(section: Any, n_features: int, output_size: int, problems: _Problems) -> ModelConfig | None:
    example = "{type: mlp, architecture: {hidden_layers: [64, 32]}}"
    if section is None or _mapping(section, "model", problems, example) is None:
        return None
    model_type = section.get("type", "mlp")
    kind = model_type.lower() if isinstance(model_type, str) else model_type
    if kind not in ("mlp", "lstm", "gru"):
        problems.error("model.type", f"unknown model type {model_type!r}; supported: mlp, lstm, gru")
        return None
    recurrent = kind != "mlp"
    architecture = _mapping(section.get("architecture"), "model.architecture", problems,
                            "{sequence_length: 20, hidden_size: 64}" if recurrent else "{hidden_layers: [64, 32]}")
    if architecture is None:
        return None
    if recurrent and "sequence_length" not in architecture:
        problems.error("model.architecture.sequence_length", f"is required for {kind} models (the number of bars "
                       "in each input window, e.g. 20)")
        return None
    try:
        spec = (_RecurrentSpec if recurrent else _ArchitectureSpec).model_validate(dict(architecture))
    except ValidationError as exc:
        problems.add_pydantic(exc, "model.architecture")
        return None
    if recurrent:
        n_params, where = _recurrent_parameters(kind, n_features, spec, output_size), "model.architecture.hidden_size"
    else:
        sizes = [n_features, *spec.hidden_layers, output_size]
        n_params = sum((a + 1) * b for a, b in zip(sizes, sizes[1:], strict=False))
        where = "model.architecture.hidden_layers"
    if n_params > MAX_MODEL_PARAMETERS:
        problems.error(where, f"the network would have {n_params:,} parameters; the limit is {MAX_MODEL_PARAMETERS:,}")
        return None
    if recurrent:
        return ModelConfig(type=kind, dropout=spec.dropout, output_size=output_size,
                           sequence_length=spec.sequence_length, hidden_size=spec.hidden_size,
                           num_layers=spec.num_layers)
    return ModelConfig(hidden_layers=spec.hidden_layers, activation=spec.activation, dropout=spec.dropout,
                       output_size=output_size)


def _read_decisions(section: Any, problems: _Problems) -> DecisionsConfig:
    """output_format, and for regression the cost model the backtest's threshold needs (§1.6)."""
    if section is None or _mapping(section, "decisions", problems, "{output_format: classification}") is None:
        return DecisionsConfig()
    _check_backtest_fields(section, problems)
    output_format = section.get("output_format", "classification")
    if output_format not in ("classification", "regression"):
        problems.error("decisions.output_format", f"must be 'classification' or 'regression', got {output_format!r}")
        return DecisionsConfig()
    if output_format == "classification":
        return DecisionsConfig()
    cost_model = section.get("cost_model")
    if not isinstance(cost_model, Mapping):
        problems.error("decisions.cost_model", "is required for regression (must include round_trip_cost and "
                       "min_edge_multiplier, e.g. {round_trip_cost: 0.003, min_edge_multiplier: 1.5})")
        return DecisionsConfig(output_format="regression")
    values = {}
    for key in ("round_trip_cost", "min_edge_multiplier"):
        value = cost_model.get(key)
        if not _is_number(value) or value <= 0:
            problems.error(f"decisions.cost_model.{key}", f"must be a positive number, got {value!r}")
        else:
            values[key] = float(value)
    if "confidence_threshold" in section:
        problems.warn("decisions.confidence_threshold", "is ignored in regression (as in KTRDR): the backtest trades "
                      "when the predicted return exceeds round_trip_cost x min_edge_multiplier")
    return DecisionsConfig(output_format="regression", **values)


def _check_backtest_fields(section: Mapping, problems: _Problems) -> None:
    """The backtest's defaults a `decisions` block sets (§12) hold values a backtest can use."""
    for path, (name, value) in strategy_backtest_fields(section).items():
        if path.startswith("decisions.cost_model."):
            continue  # checked with the regression's cost model (_read_decisions)
        try:
            BacktestConfig(**{name: value})
        except ValidationError as exc:
            problems.error(path, f"{exc.errors()[0]['msg'].lower()}, got {value!r}")


def _read_labels(value: Any, task: str, problems: _Problems) -> LabelConfig | None:
    """The label source and its keys (§6), checked and with defaults; regression needs forward_return
    labels and forward_return labels need regression."""
    path = "training.labels"
    labels = {} if value is None else _mapping(value, path, problems, "{source: zigzag}")
    if labels is None:
        return None
    source = labels.get("source", "zigzag")
    if source not in LABEL_SOURCES:
        problems.error(_key(path, "source"), f"unknown label source {source!r}; supported: {_listing(LABEL_SOURCES)}")
        return None
    if task == "regression" and source != "forward_return":
        problems.error(_key(path, "source"), f"{source!r} labels are classes, but decisions.output_format is "
                       "regression; regression trains on forward_return labels")
        return None
    if task == "classification" and source == "forward_return":
        problems.error(_key(path, "source"), "forward_return labels are continuous returns: set "
                       "decisions.output_format: regression (with a cost_model), or use a class label source "
                       "(zigzag, triple_barrier, context, regime)")
        return None
    keys, aliases = LABEL_KEYS[source], LABEL_ALIASES.get(source, {})
    params, ok = {}, True
    for key, given in labels.items():
        if key == "source":
            continue
        name = aliases.get(key, key)
        if name != key and name in labels:
            problems.error(_key(path, key), f"give either {key!r} or {name!r}, not both")
            ok = False
        elif name not in keys:
            if key in UNUSED_LABEL_KEYS.get(source, ()):
                problems.warn(_key(path, key), f"is not used by {source} labels (as in KTRDR), ignored")
            else:
                problems.warn(_key(path, key), f"unknown key for {source} labels, ignored; known: "
                              f"{_listing([*keys, *aliases])}")
        elif (message := keys[name].check(given)) is not None:
            problems.error(_key(path, key), message)
            ok = False
        else:
            params[name] = float(given) if keys[name].kind is float and given is not None else given
    if not ok:
        return None
    resolved = {name: params.get(name, key.default) for name, key in keys.items()}
    if source == "triple_barrier" and "atr_period" in labels and resolved["vol_method"] != "atr":
        problems.error(_key(path, "atr_period"), "sets the ATR volatility span and needs vol_method: atr; with "
                       "vol_method: close give vol_span")
        return None
    if source == "context" and resolved["bearish_threshold"] > resolved["bullish_threshold"]:
        problems.error(_key(path, "bearish_threshold"), f"must not exceed bullish_threshold "
                       f"({resolved['bullish_threshold']:g}), got {resolved['bearish_threshold']:g}")
        return None
    threshold = resolved["zigzag_threshold"] if source == "zigzag" else 0.02
    return LabelConfig(source=source, zigzag_threshold=threshold, params=resolved, raw=dict(labels))


def _read_loss(value: Any, task: str, problems: _Problems) -> str:
    if task == "regression":
        if not isinstance(value, str) or value.lower() not in REGRESSION_LOSSES:
            problems.error("training.loss", f"must be 'huber' or 'mse' for regression, got {value!r}")
            return "huber"
        return value.lower()
    if not isinstance(value, str):
        problems.error("training.loss", f"must be a string such as cross_entropy or focal, got {value!r}")
        return "cross_entropy"
    if value.lower() not in KNOWN_LOSSES:
        problems.warn("training.loss", f"{value!r} is not a classification loss; weighted cross-entropy is used "
                      "(as in KTRDR)")
    return "focal" if value.lower() == "focal" else "cross_entropy"


def _read_gradient_clip(value: Any, problems: _Problems) -> float | None:
    """A max-norm; 0, false or null turn clipping off, true means the default 1.0."""
    if value is None or value is False or value == 0:
        return None
    if value is True:
        return 1.0
    if not _is_number(value) or value < 0:
        problems.error("training.gradient_clip", f"must be a positive number, or 0/false to turn clipping off, "
                       f"got {value!r}")
        return None
    return float(value)


def _read_early_stopping(value: Any, problems: _Problems) -> EarlyStoppingConfig | None:
    """`true` means the defaults; a mapping may turn it off with `enabled: false` (other keys ignored)."""
    path = "training.early_stopping"
    if value is None or value is False:
        return None
    if value is True:
        return EarlyStoppingConfig()
    if _mapping(value, path, problems, "{monitor: val_loss, patience: 10}") is None:
        return None
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        problems.error(_key(path, "enabled"), f"must be a valid boolean, got {enabled!r}")
    try:
        given = {key: value[key] for key in EarlyStoppingConfig.model_fields if key in value}
        config = EarlyStoppingConfig.model_validate(given)
    except ValidationError as exc:
        problems.add_pydantic(exc, path)
        return None
    return config if enabled is True else None


def _read_lr_scheduler(value: Any, problems: _Problems) -> LRSchedulerConfig | None:
    """A schedule with every parameter given; `true` means reduce_on_plateau with its defaults."""
    path = "training.lr_scheduler"
    if value is None or value is False:
        return None
    if value is True:
        value = {"type": DEFAULT_LR_SCHEDULER}
    if _mapping(value, path, problems, "{type: step, step_size: 30, gamma: 0.1}") is None:
        return None
    kind = value.get("type")
    params_spec = LR_SCHEDULERS.get(kind.lower() if isinstance(kind, str) else kind)
    if params_spec is None:
        what = "is required" if kind is None else f"unknown scheduler type {kind!r}"
        problems.error(_key(path, "type"), f"{what}; supported: {_listing(LR_SCHEDULERS)}")
        return None
    params, ok = {}, True
    for key, given in value.items():
        if key == "type":
            continue
        if key not in params_spec:
            problems.warn(_key(path, key), f"unknown parameter for {kind}, ignored; known: {_listing(params_spec)}")
        elif (message := params_spec[key].check(given)) is not None:
            problems.error(_key(path, key), message)
            ok = False
        else:
            params[key] = params_spec[key].normalise(given)
    if not ok:
        return None
    return LRSchedulerConfig(type=kind.lower(), params={k: params.get(k, p.default) for k, p in params_spec.items()})


def _read_fraction(split: Mapping, key: str, default: float | None, problems: _Problems) -> float | None:
    value = split.get(key, default)
    if value is None:
        return None
    if not _is_number(value) or not 0 < value < 1:
        problems.error(_key("training.data_split", key), f"must be a number between 0 and 1 (exclusive), "
                       f"got {value!r}")
        return None
    return float(value)


def _read_data_split(value: Any, problems: _Problems) -> tuple[float, float, float] | None:
    """(train, validation, test) fractions; test defaults to what train and validation leave."""
    split = {} if value is None else _mapping(value, "training.data_split", problems, "{train: 0.7, validation: 0.15}")
    if split is None:
        return None
    errors_before = len(problems.errors)
    train = _read_fraction(split, "train", 0.7, problems)
    validation = _read_fraction(split, "validation", 0.15, problems)
    test = _read_fraction(split, "test", None, problems)
    if len(problems.errors) != errors_before:
        return None
    if train + validation >= 1:
        problems.error("training.data_split", f"train + validation must be below 1 to leave a test split, got "
                       f"{train:g} + {validation:g}")
        return None
    if test is None:
        test = round(1 - train - validation, 12)
    elif abs(train + validation + test - 1) > 1e-6:
        problems.error("training.data_split", f"train + validation + test must add up to 1, got "
                       f"{train:g} + {validation:g} + {test:g}")
        return None
    return train, validation, test


def _read_training(section: Any, task: str, overrides: Overrides | None, problems: _Problems):
    """(LabelConfig, TrainingConfig), either None when invalid. The request's overrides replace the
    section's epochs, batch size and seed (Overrides has checked them with the same types)."""
    if section is None or _mapping(section, "training", problems, "{epochs: 100, batch_size: 32}") is None:
        return None, None
    errors_before = len(problems.errors)
    labels = _read_labels(section.get("labels"), task, problems)
    chosen = {key: section[key] for key in TRAINING_KEYS if key in section}
    if task == "regression":
        chosen.setdefault("weight_decay", 0.0)  # KTRDR's regression default (§9)
    chosen["loss"] = _read_loss(section.get("loss", "huber" if task == "regression" else "cross_entropy"), task,
                                problems)
    chosen["gradient_clip"] = _read_gradient_clip(section.get("gradient_clip", 1.0), problems)
    chosen["early_stopping"] = _read_early_stopping(section.get("early_stopping"), problems)
    chosen["lr_scheduler"] = _read_lr_scheduler(section.get("lr_scheduler"), problems)
    split = _read_data_split(section.get("data_split"), problems)
    if split is not None:
        chosen.update(train_fraction=split[0], validation_fraction=split[1], test_fraction=split[2])
    try:
        training = TrainingConfig.model_validate(chosen)
    except ValidationError as exc:
        problems.add_pydantic(exc, "training")
        return labels, None
    if len(problems.errors) != errors_before:
        return labels, None
    if overrides is not None:
        training = training.model_copy(update={
            key: value for key in ("epochs", "batch_size", "seed") if (value := getattr(overrides, key)) is not None})
    return labels, training


def _warn_unused(doc: Mapping, fuzzy_sets: Mapping, features: list[Feature], problems: _Problems) -> None:
    used_sets = {f.fuzzy_set_id for f in features}
    used_indicators = {f.indicator_id for f in features} | {fs.indicator_id for fs in fuzzy_sets.values()}
    for fs_id in fuzzy_sets:
        if fs_id not in used_sets:
            problems.warn(_key("fuzzy_sets", fs_id), "defined but not used by any nn_inputs entry")
    indicators = doc.get("indicators")
    for ind_id in indicators if isinstance(indicators, Mapping) else ():
        if ind_id not in used_indicators:
            problems.warn(_key("indicators", ind_id), "defined but not referenced by any fuzzy set or raw input")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _read_overrides(overrides: Mapping | Overrides | None, problems: _Problems) -> Overrides | None:
    if overrides is None or isinstance(overrides, Overrides):
        return overrides
    if not isinstance(overrides, Mapping):
        problems.error("overrides", f"must be a mapping, got {type(overrides).__name__}")
        return None
    try:
        return Overrides.model_validate(dict(overrides))
    except ValidationError as exc:
        problems.add_pydantic(exc, "overrides", allowed=list(Overrides.model_fields))
        return None


def _declared(doc: Mapping, section: str) -> Mapping:
    """The ids a section declares, valid or not (references to invalid ones are not reported twice)."""
    value = doc.get(section)
    return value if isinstance(value, Mapping) else {}


def _copy_mapping(source: Mapping) -> dict:
    """A private copy of an already-parsed strategy (the caller's dict is never changed)."""
    try:
        return copy.deepcopy(dict(source))
    except RecursionError:
        raise StrategyError(["strategy: nested too deeply"]) from None


def parse_strategy(source: str | bytes | Mapping, overrides: Mapping | Overrides | None = None) -> Strategy:
    """Parse and validate a v3 strategy (YAML text or bytes, or a parsed mapping) and apply overrides.

    Raises StrategyError listing every problem found, each as `<yaml path>: <message>`; overrides'
    problems are reported under `overrides.<key>`. Non-fatal findings (e.g. an indicator parameter
    KTRDR would drop) end up in `Strategy.warnings`.
    """
    doc = _copy_mapping(source) if isinstance(source, Mapping) else _load_yaml(source)
    if not isinstance(doc, Mapping):
        raise StrategyError([f"yaml: the strategy must be a mapping of sections at the top level, got "
                             f"{type(doc).__name__}"])
    problems = _Problems()
    chosen = _read_overrides(overrides, problems)
    _check_top_level(doc, problems)
    scope = _read_training_data(doc.get("training_data"), chosen, problems)
    indicators = _read_indicators(doc.get("indicators"), problems)
    fuzzy_sets = _read_fuzzy_sets(doc.get("fuzzy_sets"), _declared(doc, "indicators"), indicators, problems)
    catalogue = _Catalogue(_declared(doc, "indicators"), indicators, _declared(doc, "fuzzy_sets"), fuzzy_sets)
    features = _read_nn_inputs(doc.get("nn_inputs"), scope.timeframes, catalogue, problems)
    decisions = _read_decisions(doc.get("decisions"), problems)
    training_section = doc.get("training")
    label_source = (training_section.get("labels") or {}) if isinstance(training_section, Mapping) else {}
    label_source = label_source.get("source", "zigzag") if isinstance(label_source, Mapping) else "zigzag"
    output_size = 1 if decisions.output_format == "regression" else (
        num_classes(label_source) if label_source in LABEL_SOURCES else NUM_CLASSES)
    model = _read_model(doc.get("model"), len(features), output_size, problems)
    labels, training = _read_training(training_section, decisions.output_format, chosen, problems)
    _warn_unused(doc, fuzzy_sets, features, problems)

    test_start = chosen.test_start_date if chosen is not None else None
    train_end = chosen.train_end_date if chosen is not None else None
    if test_start is not None and not ((scope.start is None or scope.start < test_start)
                                       and (scope.end is None or test_start < scope.end)):
        problems.error("overrides.test_start_date", "must lie inside the date range, after its start and before "
                       "its end (train and validation come before it, the test from it)")
    if train_end is not None and (test_start is None or train_end >= test_start):
        problems.error("overrides.train_end_date", "needs a test_start_date after it (the bars between are a gap "
                       "that neither trains nor tests)")
    if problems.errors:
        raise StrategyError(problems.errors)
    base = scope.base_timeframe
    return Strategy(name=doc["name"], version=doc.get("version", "3.0"), raw=doc, symbols=scope.symbols,
                    timeframes=[base, *(tf for tf in scope.timeframes if tf != base)], base_timeframe=base,
                    start=scope.start, end=scope.end, test_start=test_start, train_end=train_end,
                    indicators=indicators,
                    fuzzy_sets=fuzzy_sets, features=features, model=model, labels=labels, training=training,
                    decisions=decisions, warnings=problems.warnings)
