"""Strategy parsing and validation: the real KTRDR fixtures, resolved defaults, and bad strategies."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
import yaml
from pydantic import ValidationError

from tests.helpers.fixtures import REFERENCE_NAMES, REPO, STRATEGY_NAMES, reference_summary, strategy_text
from trainhost.jobs.pipeline.errors import StrategyError
from trainhost.jobs.pipeline.strategy import MAX_YAML_BYTES, Overrides, Strategy, parse_strategy
from trainhost.jobs.schemas import TrainingRequest

ZIGZAG_1H = ["v3_minimal", "v3_single_indicator", "v3_multi_indicator", "v3_multi_output_indicator", "v3_e2e_test"]
ALL_FIXTURES = list(STRATEGY_NAMES)

# What each fixture that is not a single-timeframe zigzag MLP resolves to.
RESOLVED = {
    "experiment_h003_lstm": {
        "timeframes": ["1h", "5m"], "base": "1h", "model": ("lstm", 3), "task": "classification",
        "labels": ("triple_barrier", {"pt_multiplier": 2.0, "sl_multiplier": 1.5, "max_holding_period": 24,
                                      "vol_span": 14, "vol_method": "atr", "compute_weights": False,
                                      "cusum_threshold": None, "cusum_multiplier": 0.5}),
    },
    "regime_classifier_seed_v1": {
        "timeframes": ["1h"], "base": "1h", "model": ("mlp", 4), "task": "classification",
        "labels": ("regime", {"macro_atr_mult": 3.0, "micro_atr_mult": 1.0, "atr_period": 14, "vol_lookback": 120,
                              "vol_crisis_threshold": 2.0, "progression_tolerance": 0.5}),
    },
    "regression_example_v3": {
        "timeframes": ["1h"], "base": "1h", "model": ("mlp", 1), "task": "regression",
        "labels": ("forward_return", {"horizon": 20}),
    },
    "trend_tb_signal_v1": {
        "timeframes": ["1h"], "base": "1h", "model": ("mlp", 3), "task": "classification",
        "labels": ("triple_barrier", {"pt_multiplier": 2.0, "sl_multiplier": 1.5, "max_holding_period": 50,
                                      "vol_span": 50, "vol_method": "atr", "compute_weights": True,
                                      "cusum_threshold": None, "cusum_multiplier": 0.5}),
    },
    "v3_multi_timeframe": {
        "timeframes": ["1h", "4h", "1d"], "base": "1h", "model": ("mlp", 3), "task": "classification",
        "labels": ("zigzag", {"zigzag_threshold": 0.025, "label_lookahead": 20}),
    },
}

BASE = """
name: test_strategy
version: '3.0'
training_data:
  symbols: {mode: single, symbol: EURUSD}
  timeframes: {mode: single, timeframe: 1h}
indicators:
  rsi_14: {type: rsi, period: 14}
  adx_14: {type: ADX, period: 14}
  macd: {type: macd, fast: 8, slow: 21, signal: 5}
fuzzy_sets:
  rsi_zone:
    indicator: rsi_14
    oversold: [0, 30, 40]
    overbought: [60, 70, 100]
  adx_strength:
    indicator: adx_14.adx
    weak: {type: trapezoidal, parameters: [0, 0, 15, 25]}
    strong: {type: gaussianmf, parameters: [40, 10]}
nn_inputs:
  - {fuzzy_set: rsi_zone, timeframes: all}
  - {fuzzy_set: adx_strength, timeframes: [1h]}
  - {raw_indicator: macd.histogram, timeframes: all, normalization: zscore}
model:
  type: mlp
  architecture: {hidden_layers: [16, 8], activation: relu, dropout: 0.1}
decisions: {output_format: classification}
training:
  epochs: 5
  batch_size: 64
  learning_rate: 0.001
  labels: {source: zigzag, zigzag_threshold: 0.01}
"""

DELETE = object()


def base_doc() -> dict:
    return yaml.safe_load(BASE)


def changed(*edits: tuple[str, object]) -> dict:
    """BASE with each (dotted path, value) set; `[i]` indexes lists; DELETE removes the key."""
    doc = base_doc()
    for path, value in edits:
        parts = [int(p) if p.isdigit() else p for p in path.replace("[", ".").replace("]", "").split(".")]
        target = doc
        for part in parts[:-1]:
            target = target[part]
        if value is DELETE:
            del target[parts[-1]]
        else:
            target[parts[-1]] = value
    return doc


def errors_of(source, overrides=None) -> list[str]:
    with pytest.raises(StrategyError) as caught:
        parse_strategy(source, overrides)
    return caught.value.errors


# ------------------------------------------------------------------------------------------- fixtures


def test_every_fixture_is_supported():
    assert len(ALL_FIXTURES) == 10
    assert set(ZIGZAG_1H) | set(RESOLVED) == set(ALL_FIXTURES)
    for name in ALL_FIXTURES:
        parse_strategy(strategy_text(name))


@pytest.mark.parametrize("name", ZIGZAG_1H)
def test_zigzag_fixture_features_match_ktrdr_order(name):
    strategy = parse_strategy(strategy_text(name))
    summary = reference_summary(name)
    assert strategy.feature_ids == summary["resolved_features_original_yaml_order"]
    assert strategy.symbols == ["EURUSD"] and strategy.timeframes == ["1h"] and strategy.base_timeframe == "1h"
    assert strategy.labels.zigzag_threshold == summary["label_config_used"]["zigzag_threshold"]
    assert (strategy.task, strategy.model.type, strategy.model.output_size) == ("classification", "mlp", 3)


@pytest.mark.parametrize("name", sorted(RESOLVED))
def test_other_fixtures_resolve_their_timeframes_model_and_labels(name):
    strategy = parse_strategy(strategy_text(name))
    expected = RESOLVED[name]
    assert strategy.timeframes == expected["timeframes"] and strategy.base_timeframe == expected["base"]
    assert (strategy.model.type, strategy.model.output_size) == expected["model"]
    assert strategy.task == expected["task"]
    assert (strategy.labels.source, strategy.labels.params) == expected["labels"]
    if name in REFERENCE_NAMES:  # feature ids and order as KTRDR resolves them (YAML order)
        assert strategy.feature_ids == reference_summary(name)["resolved_features_original_yaml_order"]


def test_multi_timeframe_features_follow_the_yaml_timeframe_order():
    strategy = parse_strategy(strategy_text("v3_multi_timeframe"))
    assert strategy.feature_ids == [f"{tf}_rsi_14_{mf}" for tf in ("1h", "4h", "1d")
                                    for mf in ("oversold", "neutral", "overbought")]
    assert strategy.features[3].column == "4h_rsi_14"
    assert strategy.feature_timeframes == ["1h", "4h", "1d"]
    assert [strategy.warmup_bars_at(tf) for tf in ("1h", "4h", "1d")] == [15, 15, 15]


def test_lstm_fixture_resolves_the_sequence_model_and_5m_features():
    strategy = parse_strategy(strategy_text("experiment_h003_lstm"))
    assert strategy.model.model_dump() == {"type": "lstm", "hidden_layers": [], "activation": "relu", "dropout": 0.3,
                                           "output_size": 3, "sequence_length": 20, "hidden_size": 64,
                                           "num_layers": 2}
    assert strategy.model.is_sequence
    # `all` is the YAML order [5m, 1h], not base first (§4.1).
    assert strategy.feature_ids[:6] == ["5m_rsi_momentum_low", "5m_rsi_momentum_neutral", "5m_rsi_momentum_high",
                                        "1h_rsi_momentum_low", "1h_rsi_momentum_neutral", "1h_rsi_momentum_high"]
    assert len(strategy.features) == 2 * (3 + 1 + 3 + 1 + 3 + 1 + 3 + 1)
    assert strategy.training.loss == "focal" and strategy.training.early_stopping.patience == 25


def test_regression_fixture_gets_regression_defaults():
    strategy = parse_strategy(strategy_text("regression_example_v3"))
    assert strategy.decisions.model_dump() == {"output_format": "regression", "round_trip_cost": 0.003,
                                               "min_edge_multiplier": 1.5}
    training = strategy.training
    assert (training.loss, training.huber_delta, training.weight_decay) == ("huber", 0.01, 0.0)
    assert strategy.indicators["macd_12_26_9"].params["fast_period"] == 12


def test_minimal_fixture_gets_ktrdr_defaults():
    strategy = parse_strategy(strategy_text("v3_minimal"))
    training = strategy.training
    assert (training.epochs, training.batch_size, training.learning_rate) == (10, 32, 0.001)
    assert (training.loss, training.optimizer, training.weight_decay, training.gradient_clip) == (
        "cross_entropy", "adam", 1e-4, 1.0)
    assert training.early_stopping is None and training.lr_scheduler is None and training.seed == 42
    assert (training.train_fraction, training.validation_fraction) == (0.7, 0.15)
    assert training.test_fraction == pytest.approx(0.15)
    assert strategy.model.model_dump() == {"type": "mlp", "hidden_layers": [32, 16], "activation": "relu",
                                           "dropout": 0.2, "output_size": 3, "sequence_length": None,
                                           "hidden_size": 64, "num_layers": 2}
    assert strategy.decisions.output_format == "classification" and strategy.task == "classification"
    assert strategy.labels.source == "zigzag" and strategy.labels.zigzag_threshold == 0.02
    assert strategy.indicators["rsi_14"].params == {"period": 14, "source": "close"}
    assert strategy.start is None and strategy.end is None
    assert strategy.warmup_bars == 15
    assert strategy.warnings == []


def test_model_training_section_is_ignored():
    # v3_e2e_test sets model.training.early_stopping and epochs: KTRDR ignores them (§1.6), so do we.
    strategy = parse_strategy(strategy_text("v3_e2e_test"))
    assert strategy.training.early_stopping is None and strategy.training.epochs == 100


def test_regime_fixture_with_zigzag_labels_warns_about_dropped_parameter():
    doc = yaml.safe_load(strategy_text("regime_classifier_seed_v1"))
    doc["training"]["labels"] = {"source": "zigzag"}
    strategy = parse_strategy(doc)
    assert any(w.startswith("indicators.squeeze_20.period: unknown parameter for squeezeintensity")
               for w in strategy.warnings)
    assert strategy.indicators["squeeze_20"].params["bb_period"] == 20
    assert strategy.start == datetime(2019, 1, 1, tzinfo=UTC) and strategy.end == datetime(2024, 1, 1, tzinfo=UTC)
    assert strategy.features[12].column == "1h_adx_14.plus_di"


def test_trend_fixture_with_zigzag_labels_honours_macd_aliases_and_training_keys():
    doc = yaml.safe_load(strategy_text("trend_tb_signal_v1"))
    doc["training"]["labels"] = {"source": "zigzag"}
    strategy = parse_strategy(doc)
    assert strategy.indicators["macd_12_26_9"].params == {"fast_period": 12, "slow_period": 26,
                                                          "signal_period": 9, "source": "close"}
    training = strategy.training
    assert training.loss == "focal" and training.focal_gamma == 2.0 and training.batch_size == 256
    assert training.early_stopping.model_dump() == {"monitor": "val_loss", "patience": 15, "min_delta": 0.001}
    assert training.lr_scheduler.model_dump() == {"type": "reduce_on_plateau", "params": {"factor": 0.5, "patience": 5}}


# ------------------------------------------------------------------------------------------- resolution


def test_base_strategy_resolves_features_columns_and_params():
    strategy = parse_strategy(BASE)
    assert strategy.feature_ids == ["1h_rsi_zone_oversold", "1h_rsi_zone_overbought", "1h_adx_strength_weak",
                                    "1h_adx_strength_strong", "1h_macd.histogram_raw"]
    raw = strategy.features[-1]
    assert raw.model_dump() == {"feature_id": "1h_macd.histogram_raw", "kind": "raw", "timeframe": "1h",
                                "fuzzy_set_id": None, "membership": None, "indicator_id": "macd",
                                "output": "histogram", "column": "1h_macd.histogram", "normalization": "zscore"}
    fuzzy = strategy.features[2]
    assert (fuzzy.column, fuzzy.output, fuzzy.membership, fuzzy.normalization) == (
        "1h_adx_14.adx", "adx", "weak", "none")
    assert strategy.features[0].column == "1h_rsi_14" and strategy.features[0].output is None
    assert strategy.indicators["adx_14"].type == "adx"
    assert strategy.indicators["macd"].params == {"fast_period": 8, "slow_period": 21, "signal_period": 5,
                                                  "source": "close"}
    memberships = strategy.fuzzy_sets["adx_strength"].memberships
    assert [(m.name, m.type, m.parameters) for m in memberships] == [
        ("weak", "trapezoidal", [0.0, 0.0, 15.0, 25.0]), ("strong", "gaussian", [40.0, 10.0])]
    assert strategy.warmup_bars == 29  # adx: 2 * 14 + 1
    assert strategy.used_indicator_ids == ["rsi_14", "adx_14", "macd"]


def test_dict_source_is_not_modified_and_kept_as_raw():
    doc = base_doc()
    before = copy.deepcopy(doc)
    strategy = parse_strategy(doc)
    assert doc == before and strategy.raw == before


def test_to_dict_is_json_and_round_trips():
    strategy = parse_strategy(BASE, {"start_date": "2017-05-01", "end_date": "2017-06-01T12:00:00+02:00"})
    data = json.loads(json.dumps(strategy.to_dict()))
    assert data["start"] == "2017-05-01T00:00:00Z" and data["end"] == "2017-06-01T10:00:00Z"
    assert Strategy.from_dict(data) == strategy


def test_dates_prefer_overrides_then_date_range_then_start_end_date():
    doc = changed(("training_data.date_range", {"start": "2018-01-01", "end": "2019-06-30T12:00:00"}),
                  ("training_data.start_date", "2010-01-01"), ("training_data.end_date", "2011-01-01"))
    strategy = parse_strategy(doc)
    assert strategy.start == datetime(2018, 1, 1, tzinfo=UTC)
    assert strategy.end == datetime(2019, 6, 30, 12, tzinfo=UTC)  # naive means UTC
    strategy = parse_strategy(doc, {"end_date": "2020-01-01"})
    assert strategy.start == datetime(2018, 1, 1, tzinfo=UTC) and strategy.end == datetime(2020, 1, 1, tzinfo=UTC)


def test_unquoted_yaml_dates_are_accepted():
    text = BASE.replace("  timeframes: {mode: single, timeframe: 1h}\n",
                        "  timeframes: {mode: single, timeframe: 1h}\n  start_date: 2018-01-01\n"
                        "  end_date: 2018-03-01 06:00:00+01:00\n")
    strategy = parse_strategy(text)
    assert strategy.start == datetime(2018, 1, 1, tzinfo=UTC) and strategy.end == datetime(2018, 3, 1, 5, tzinfo=UTC)


def test_overrides_replace_run_settings():
    strategy = parse_strategy(strategy_text("v3_single_indicator"),
                              {"symbols": ["GBPUSD", "EURUSD"], "timeframes": ["4h"], "epochs": 3,
                               "batch_size": 16, "seed": 7})
    assert strategy.symbols == ["GBPUSD", "EURUSD"] and strategy.timeframes == ["4h"]
    assert strategy.feature_ids == ["4h_rsi_14_oversold", "4h_rsi_14_neutral", "4h_rsi_14_overbought"]
    assert (strategy.training.epochs, strategy.training.batch_size, strategy.training.seed) == (3, 16, 7)
    assert parse_strategy(BASE, Overrides(epochs=2)).training.epochs == 2


def test_triple_barrier_aliases_ktrdr_drops_are_honoured():
    doc = changed(("training.labels", {"source": "triple_barrier", "profit_target_atr": 3, "stop_loss_atr": 1,
                                       "max_holding_bars": 12, "atr_period": 20, "compute_weights": True,
                                       "cusum_threshold": 0}))
    strategy = parse_strategy(doc)
    assert strategy.labels.params == {"pt_multiplier": 3.0, "sl_multiplier": 1.0, "max_holding_period": 12,
                                      "vol_span": 20, "vol_method": "atr", "compute_weights": True,
                                      "cusum_threshold": 0.0, "cusum_multiplier": 0.5}
    assert strategy.model.output_size == 3 and strategy.warnings == []


def test_label_keys_that_do_nothing_are_warnings():
    doc = changed(("training.labels", {"source": "regime", "horizon": 10, "trending_threshold": 0.3,
                                       "macro_atr_mult": 4, "colour": "red"}))
    strategy = parse_strategy(doc)
    assert strategy.labels.params["macro_atr_mult"] == 4.0 and strategy.model.output_size == 4
    assert "training.labels.horizon: is not used by regime labels (as in KTRDR), ignored" in strategy.warnings
    assert any(w.startswith("training.labels.colour: unknown key for regime labels, ignored; known: macro_atr_mult")
               for w in strategy.warnings)


def test_context_labels_and_regression_decisions():
    context = parse_strategy(changed(("training.labels", {"source": "context", "horizon": 24})))
    assert context.labels.params == {"horizon": 24, "bullish_threshold": 0.005, "bearish_threshold": -0.005}
    regression = parse_strategy(changed(
        ("decisions", {"output_format": "regression", "confidence_threshold": 0.6,
                       "cost_model": {"round_trip_cost": 0.002, "min_edge_multiplier": 2}}),
        ("training.labels", {"source": "forward_return", "horizon": 5}), ("training.loss", "mse"),
        ("training.weight_decay", 0.001)))
    assert regression.task == "regression" and regression.model.output_size == 1
    assert (regression.training.loss, regression.training.weight_decay) == ("mse", 0.001)
    assert any(w.startswith("decisions.confidence_threshold: is ignored in regression") for w in regression.warnings)


def test_multi_timeframe_override_is_accepted_base_first():
    strategy = parse_strategy(BASE, {"timeframes": ["1h", "4h"]})
    assert strategy.timeframes == ["1h", "4h"] and strategy.base_timeframe == "1h"
    assert strategy.feature_timeframes == ["1h", "4h"]
    assert [f.timeframe for f in strategy.features].count("4h") == 3  # the two `all` inputs


def test_multi_symbol_list_is_accepted():
    doc = changed(("training_data.symbols", {"mode": "multi_symbol", "list": ["EURUSD", "GBPUSD"]}))
    assert parse_strategy(doc).symbols == ["EURUSD", "GBPUSD"]


@pytest.mark.parametrize("overrides, path, message", [
    ({"start_date": "2020-02-01", "end_date": "2020-01-01"}, "overrides.end_date", "is before start"),
    ({"symbols": ["../etc"]}, "overrides.symbols", "must be 1-20 letters"),
    ({"timeframes": ["4h"]}, "nn_inputs[1].timeframes", "'1h' not among the run's timeframes; available: 4h"),
    ({"epochs": 0}, "overrides.epochs", "must be greater than or equal to 1, got 0"),
    ({"epochs": 2.0}, "overrides.epochs", "must be a valid integer"),
    ({"start_date": "last tuesday"}, "overrides.start_date", "must be an ISO date"),
    ({"learning_rate": 1}, "overrides.learning_rate", "unknown key; allowed: symbols"),
])
def test_bad_overrides_are_reported_with_their_path(overrides, path, message):
    errors = errors_of(BASE, overrides)
    assert len(errors) == 1 and errors[0].startswith(f"{path}: ") and message in errors[0], errors


@pytest.mark.parametrize("field, value", [
    ("epochs", 0), ("epochs", 100_001), ("epochs", True), ("epochs", "10"), ("epochs", 2.0),
    ("batch_size", 0), ("batch_size", 1_000_001), ("seed", -1), ("seed", 2**32), ("seed", False),
])
def test_a_request_its_overrides_and_the_strategy_refuse_the_same_training_values(field, value):
    """One definition of the bounds (training_settings): the HTTP request, the parser's overrides and
    the strategy's own `training` keys refuse the same values, strictly."""
    with pytest.raises(ValidationError, match=field):
        TrainingRequest(strategy_yaml="name: x", **{field: value})
    assert [e.split(":")[0] for e in errors_of(BASE, {field: value})] == [f"overrides.{field}"]
    assert [e.split(":")[0] for e in errors_of(changed((f"training.{field}", value)))] == [f"training.{field}"]
    edge = {"epochs": 100_000, "batch_size": 1_000_000, "seed": 2**32 - 1}[field]
    TrainingRequest(strategy_yaml="name: x", **{field: edge})
    assert getattr(parse_strategy(changed((f"training.{field}", edge)), {field: edge}).training, field) == edge


@pytest.mark.parametrize("value, expected", [
    (True, {"type": "reduce_on_plateau", "params": {"factor": 0.5, "patience": 5}}),
    ({"type": "step", "step_size": 10}, {"type": "step", "params": {"step_size": 10, "gamma": 0.1}}),
    ({"type": "Exponential", "gamma": 0.9}, {"type": "exponential", "params": {"gamma": 0.9}}),
    (False, None),
])
def test_lr_scheduler_forms(value, expected):
    result = parse_strategy(changed(("training.lr_scheduler", value))).training.lr_scheduler
    assert (result.model_dump() if result else None) == expected


@pytest.mark.parametrize("value, expected", [
    (None, None), (True, {"monitor": "val_loss", "patience": 10, "min_delta": 0.001}),
    ({"enabled": False, "patience": 3}, None),
    ({"monitor": "val_accuracy", "patience": 3, "min_delta": 0}, {"monitor": "val_accuracy", "patience": 3,
                                                                  "min_delta": 0.0}),
])
def test_early_stopping_forms(value, expected):
    result = parse_strategy(changed(("training.early_stopping", value))).training.early_stopping
    assert (result.model_dump() if result else None) == expected


@pytest.mark.parametrize("value, expected", [(0, None), (False, None), (None, None), (0.5, 0.5), (True, 1.0)])
def test_gradient_clip_forms(value, expected):
    assert parse_strategy(changed(("training.gradient_clip", value))).training.gradient_clip == expected


def test_data_split_test_defaults_to_the_rest():
    training = parse_strategy(changed(("training.data_split", {"train": 0.6, "validation": 0.2}))).training
    assert (training.train_fraction, training.validation_fraction, training.test_fraction) == (0.6, 0.2, 0.2)


def test_unused_definitions_and_unknown_params_are_warnings():
    doc = changed(("indicators.sma_5", {"type": "sma", "period": 5, "colour": "red"}),
                  ("fuzzy_sets.spare", {"indicator": "rsi_14", "mid": [40, 50, 60]}))
    warnings = parse_strategy(doc).warnings
    assert any(w.startswith("indicators.sma_5.colour: unknown parameter for sma") for w in warnings)
    assert "indicators.sma_5: defined but not referenced by any fuzzy set or raw input" in warnings
    assert "fuzzy_sets.spare: defined but not used by any nn_inputs entry" in warnings


# ------------------------------------------------------------------------------------------- bad strategies

BAD_CASES = [
    ("unknown indicator", [("indicators.rsi_14.type", "bar")],
     "indicators.rsi_14.type", "unknown indicator type 'bar'; supported: adx, atr,"),
    ("indicator without type", [("indicators.rsi_14.type", DELETE)], "indicators.rsi_14.type", "is required"),
    ("int param given 14.0", [("indicators.rsi_14.period", 14.0)],
     "indicators.rsi_14.period", "must be an integer, got 14.0"),
    ("param out of range", [("indicators.rsi_14.period", 1)],
     "indicators.rsi_14.period", "must be between 2 and 100, got 1"),
    ("macd alias and name both", [("indicators.macd.fast_period", 12)],
     "indicators.macd.fast", "give either 'fast' or 'fast_period', not both"),
    ("context data source", [("indicators.rsi_14.data_source", "fred_DGS10")],
     "indicators.rsi_14.data_source", "context_data is not supported yet; supported:"),
    ("context_data section", [("context_data", [{"provider": "fred", "series": ["DGS10"]}])],
     "context_data", "context_data is not supported yet"),
    ("dotted indicator id", [("indicators", {"rsi_14": {"type": "rsi"}, "adx_14": {"type": "adx"},
                                             "macd": {"type": "macd"}, "rsi.x": {"type": "rsi"}})],
     "indicators.rsi.x", "must be 1-64 letters, digits"),
    ("bad MF param count", [("fuzzy_sets.rsi_zone.oversold", [40, 30])],
     "fuzzy_sets.rsi_zone.oversold", "triangular requires exactly 3 numbers [a, b, c], got 2: [40, 30]"),
    ("bad MF param order", [("fuzzy_sets.rsi_zone.oversold", [40, 30, 20])],
     "fuzzy_sets.rsi_zone.oversold", "triangular parameters must satisfy a <= b <= c"),
    ("gaussian sigma zero", [("fuzzy_sets.adx_strength.strong.parameters", [40, 0])],
     "fuzzy_sets.adx_strength.strong.parameters", "gaussian sigma must be > 0"),
    ("unknown MF type", [("fuzzy_sets.adx_strength.strong.type", "sigmoid")],
     "fuzzy_sets.adx_strength.strong.type", "unknown type 'sigmoid'; supported: triangular, trapezoidal, gaussian"),
    ("MF mapping without type", [("fuzzy_sets.adx_strength.strong", {"parameters": [40, 10]})],
     "fuzzy_sets.adx_strength.strong.type", "is required"),
    ("MF not a list", [("fuzzy_sets.rsi_zone.oversold", 30)],
     "fuzzy_sets.rsi_zone.oversold", "must be a list of numbers (triangular [a, b, c]) or a mapping"),
    ("fuzzy set without MFs", [("fuzzy_sets.rsi_zone", {"indicator": "rsi_14"})],
     "fuzzy_sets.rsi_zone", "has no membership functions"),
    ("fuzzy set on unknown indicator", [("fuzzy_sets.rsi_zone.indicator", "rsi_99")],
     "fuzzy_sets.rsi_zone.indicator", "'rsi_99' not found in indicators; available: rsi_14, adx_14, macd"),
    ("dot on single-output", [("fuzzy_sets.rsi_zone.indicator", "rsi_14.value")],
     "fuzzy_sets.rsi_zone.indicator", "'rsi_14' (type: rsi) is single-output and does not support dot notation"),
    ("bad output name", [("fuzzy_sets.adx_strength.indicator", "adx_14.foo")],
     "fuzzy_sets.adx_strength.indicator", "invalid output 'foo' for adx indicator 'adx_14'; valid outputs: adx, "
     "plus_di, minus_di"),
    ("raw bad output name", [("nn_inputs[2].raw_indicator", "macd.hist")],
     "nn_inputs[2].raw_indicator", "invalid output 'hist' for macd"),
    ("missing fuzzy set", [("nn_inputs[0].fuzzy_set", "x")],
     "nn_inputs[0].fuzzy_set", "'x' not found in fuzzy_sets; available: rsi_zone, adx_strength"),
    ("both fuzzy_set and raw_indicator", [("nn_inputs[0].raw_indicator", "rsi_14")],
     "nn_inputs[0]", "specify either fuzzy_set or raw_indicator, not both"),
    ("neither fuzzy_set nor raw_indicator", [("nn_inputs[0].fuzzy_set", DELETE)],
     "nn_inputs[0]", "must specify either fuzzy_set or raw_indicator"),
    ("normalization on fuzzy_set", [("nn_inputs[0].normalization", "minmax")],
     "nn_inputs[0].normalization", "is only valid with raw_indicator, not fuzzy_set"),
    ("unknown normalization", [("nn_inputs[2].normalization", "robust")],
     "nn_inputs[2].normalization", "must be minmax, zscore or none"),
    ("bare timeframe string", [("nn_inputs[0].timeframes", "1h")],
     "nn_inputs[0].timeframes", "must be 'all' or a non-empty list of timeframes"),
    ("unavailable input timeframe", [("nn_inputs[1].timeframes", ["4h"])],
     "nn_inputs[1].timeframes", "'4h' not among the run's timeframes; available: 1h"),
    ("same input twice", [("nn_inputs[2]", {"fuzzy_set": "rsi_zone", "timeframes": "all"})],
     "nn_inputs[2]", "repeats '1h_rsi_zone_oversold', '1h_rsi_zone_overbought', already produced by nn_inputs[0]"),
    ("empty nn_inputs", [("nn_inputs", [])], "nn_inputs", "must be a non-empty list"),
    ("traversal in symbol", [("training_data.symbols.symbol", "../etc")],
     "training_data.symbols.symbol", "must be 1-20 letters, digits, '_', '.' or '-' and not start with '.'"),
    ("dot-dot symbol", [("training_data.symbols.symbol", "..")], "training_data.symbols.symbol", "not start with"),
    ("bad timeframe", [("training_data.timeframes.timeframe", "1hour")],
     "training_data.timeframes.timeframe", "must be a timeframe such as 5m, 1h"),
    ("base timeframe not listed", [("training_data.timeframes", {"mode": "single", "list": ["1h"],
                                                                  "base_timeframe": "4h"})],
     "training_data.timeframes.base_timeframe", "'4h' is not in the timeframe list (1h)"),
    ("multi-timeframe with one timeframe", [("training_data.timeframes", {"mode": "multi_timeframe", "list": ["1h"]})],
     "training_data.timeframes.list", "multi_timeframe mode needs at least 2 timeframes"),
    ("empty date range", [("training_data.date_range", {"start": "2021-01-01", "end": "2020-01-01"})],
     "training_data.date_range.end", "is before start 2021-01-01T00:00:00+00:00 (from training_data.date_range.start)"),
    ("unparsable date", [("training_data.start_date", "01/02/2020")],
     "training_data.start_date", "must be an ISO date or date-time"),
    ("history too short", [("training_data.history_required", 10)],
     "training_data.history_required", "must be an integer >= 50"),
    ("unquoted version", [("version", 3.0)], "version", "must be a string such as '3.0'"),
    ("name with a slash", [("name", "a/../b")], "name", "must be 1-100 letters"),
    ("missing section", [("model", DELETE)], "model", "required section is missing"),
    ("lstm without sequence_length", [("model.type", "LSTM")],
     "model.architecture.sequence_length", "is required for lstm models (the number of bars in each input window"),
    ("gru with a bad sequence_length", [("model.type", "gru"), ("model.architecture", {"sequence_length": 0})],
     "model.architecture.sequence_length", "must be greater than or equal to 1, got 0"),
    ("lstm with too many parameters", [("model.type", "lstm"),
                                       ("model.architecture", {"sequence_length": 10, "hidden_size": 65536})],
     "model.architecture.hidden_size", "the limit is 50,000,000"),
    ("unknown model", [("model.type", "transformer")], "model.type", "unknown model type 'transformer'"),
    ("missing hidden layers", [("model.architecture.hidden_layers", DELETE)],
     "model.architecture.hidden_layers", "is required"),
    ("huge hidden layer", [("model.architecture.hidden_layers", [10**9])],
     "model.architecture.hidden_layers", "each layer size must be between 1 and 65536, got 1000000000"),
    ("too many layers", [("model.architecture.hidden_layers", [8] * 20)],
     "model.architecture.hidden_layers", "must have at most 16 items"),
    ("too many parameters", [("model.architecture.hidden_layers", [65536, 65536])],
     "model.architecture.hidden_layers", "the limit is 50,000,000"),
    ("dropout of one", [("model.architecture.dropout", 1.0)],
     "model.architecture.dropout", "must be less than 1, got 1.0"),
    ("unknown activation", [("model.architecture.activation", "gelu")],
     "model.architecture.activation", "must be 'relu', 'tanh', 'sigmoid' or 'leaky_relu', got 'gelu'"),
    ("regression without cost model", [("decisions.output_format", "regression"),
                                       ("training.labels", {"source": "forward_return"})],
     "decisions.cost_model", "is required for regression (must include round_trip_cost and min_edge_multiplier"),
    ("regression with a zero cost", [("decisions", {"output_format": "regression", "cost_model": {
        "round_trip_cost": 0, "min_edge_multiplier": 1.5}}), ("training.labels", {"source": "forward_return"})],
     "decisions.cost_model.round_trip_cost", "must be a positive number, got 0"),
    ("regression on class labels", [("decisions", {"output_format": "regression", "cost_model": {
        "round_trip_cost": 0.003, "min_edge_multiplier": 1.5}})],
     "training.labels.source", "'zigzag' labels are classes, but decisions.output_format is regression"),
    ("regression with a classification loss", [("decisions", {"output_format": "regression", "cost_model": {
        "round_trip_cost": 0.003, "min_edge_multiplier": 1.5}}), ("training.labels", {"source": "forward_return"}),
        ("training.loss", "focal")],
     "training.loss", "must be 'huber' or 'mse' for regression, got 'focal'"),
    ("forward_return horizon not an integer", [("decisions", {"output_format": "regression", "cost_model": {
        "round_trip_cost": 0.003, "min_edge_multiplier": 1.5}}),
        ("training.labels", {"source": "forward_return", "horizon": 2.5})],
     "training.labels.horizon", "must be an integer >= 1, got 2.5"),
    ("forward_return without regression", [("training.labels", {"source": "forward_return"})],
     "training.labels.source", "forward_return labels are continuous returns: set decisions.output_format: "
     "regression"),
    ("unknown output format", [("decisions.output_format", "ranking")],
     "decisions.output_format", "must be 'classification' or 'regression'"),
    ("triple barrier alias and name both", [("training.labels", {"source": "triple_barrier", "max_holding_bars": 10,
                                                                 "max_holding_period": 20})],
     "training.labels.max_holding_bars", "give either 'max_holding_bars' or 'max_holding_period', not both"),
    ("triple barrier bad vol_method", [("training.labels", {"source": "triple_barrier", "vol_method": "parkinson"})],
     "training.labels.vol_method", "must be 'atr' or 'close', got 'parkinson'"),
    ("triple barrier atr_period with close volatility", [("training.labels", {
        "source": "triple_barrier", "vol_method": "close", "atr_period": 20})],
     "training.labels.atr_period", "needs vol_method: atr"),
    ("triple barrier float holding period", [("training.labels", {"source": "triple_barrier",
                                                                 "max_holding_period": 50.0})],
     "training.labels.max_holding_period", "must be an integer >= 1, got 50.0"),
    ("context thresholds crossed", [("training.labels", {"source": "context", "bullish_threshold": -0.01,
                                                         "bearish_threshold": 0.01})],
     "training.labels.bearish_threshold", "must not exceed bullish_threshold (-0.01), got 0.01"),
    ("regime tolerance out of range", [("training.labels", {"source": "regime", "progression_tolerance": 1.5})],
     "training.labels.progression_tolerance", "must be a number between 0 and 1, got 1.5"),
    ("unknown label source", [("training.labels.source", "magic")],
     "training.labels.source", "unknown label source 'magic'; supported: zigzag, triple_barrier, context, regime, "
     "forward_return"),
    ("zigzag threshold out of range", [("training.labels.zigzag_threshold", 1.5)],
     "training.labels.zigzag_threshold", "must be a number between 0 and 1 (exclusive)"),
    ("negative epochs", [("training.epochs", -5)],
     "training.epochs", "must be greater than or equal to 1, got -5"),
    ("float epochs", [("training.epochs", 10.0)], "training.epochs", "must be a valid integer, got 10.0"),
    ("zero learning rate", [("training.learning_rate", 0)], "training.learning_rate", "must be greater than 0"),
    ("infinite learning rate", [("training.learning_rate", float("inf"))],
     "training.learning_rate", "must be a finite number"),
    ("unknown optimizer", [("training.optimizer", "adamw")],
     "training.optimizer", "must be 'adam', 'sgd' or 'rmsprop', got 'adamw'"),
    ("negative weight decay", [("training.weight_decay", -0.1)], "training.weight_decay", "greater than or equal to 0"),
    ("negative gradient clip", [("training.gradient_clip", -1)], "training.gradient_clip", "must be a positive number"),
    ("bad early stopping monitor", [("training.early_stopping", {"monitor": "val_f1"})],
     "training.early_stopping.monitor", "must be 'val_loss' or 'val_accuracy'"),
    ("early stopping enabled not a boolean", [("training.early_stopping", {"enabled": "yes"})],
     "training.early_stopping.enabled", "must be a valid boolean, got 'yes'"),
    ("early stopping patience zero", [("training.early_stopping", {"patience": 0})],
     "training.early_stopping.patience", "must be greater than or equal to 1, got 0"),
    ("epochs true", [("training.epochs", True)], "training.epochs", "must be a valid integer, got True"),
    ("batch size too big", [("training.batch_size", 10**6 + 1)],
     "training.batch_size", "must be less than or equal to 1000000, got 1000001"),
    ("unknown scheduler", [("training.lr_scheduler", {"type": "cosine"})],
     "training.lr_scheduler.type", "unknown scheduler type 'cosine'; supported: step, exponential, reduce_on_plateau"),
    ("bad scheduler param", [("training.lr_scheduler", {"type": "step", "step_size": 0})],
     "training.lr_scheduler.step_size", "must be between 1 and 100000, got 0"),
    ("split leaves no test", [("training.data_split", {"train": 0.9, "validation": 0.1})],
     "training.data_split", "train + validation must be below 1"),
    ("split does not add up", [("training.data_split", {"train": 0.6, "validation": 0.2, "test": 0.1})],
     "training.data_split", "must add up to 1"),
    ("split fraction out of range", [("training.data_split", {"train": 1.2})],
     "training.data_split.train", "must be a number between 0 and 1 (exclusive)"),
]


@pytest.mark.parametrize("edits, path, message", [case[1:] for case in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_strategy_reports_one_clear_error(edits, path, message):
    errors = errors_of(changed(*edits))
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}: ") and message in errors[0], errors


def test_bool_membership_name_gets_a_hint():
    text = BASE.replace("    overbought: [60, 70, 100]", "    yes: [60, 70, 100]")
    (error,) = errors_of(text)
    assert error.startswith("fuzzy_sets.rsi_zone.True: membership name True is not a string")
    assert "quote it" in error


def test_all_problems_of_a_file_are_reported_together():
    doc = changed(("indicators.adx_14.type", "bar"), ("fuzzy_sets.rsi_zone.oversold", [40, 30]),
                  ("training.epochs", -1))
    errors = errors_of(doc)
    assert [e.split(":", 1)[0] for e in errors] == [
        "indicators.adx_14.type", "fuzzy_sets.rsi_zone.oversold", "training.epochs"]
    assert "Strategy validation failed:\n  - indicators.adx_14.type" in str(StrategyError(errors))


def test_v2_style_indicator_list_is_refused():
    errors = errors_of(changed(("indicators", [{"name": "rsi", "period": 14}])))
    assert errors[0].startswith("indicators: must be a mapping of indicator id to definition (v3 format)")


# ------------------------------------------------------------------------------------------- YAML safety


@pytest.mark.parametrize("source, message", [
    ("a: &x [1, 2]\nb: [*x, *x]\n", "line 2, column 5: YAML aliases (*name) are not allowed"),
    ("a: 1\na: 2\n", "line 2, column 1: duplicate key 'a'"),
    ("name: [unclosed\n", "invalid YAML at line 2"),
    ("- just\n- a list\n", "the strategy must be a mapping of sections at the top level, got list"),
    ("", "the strategy must be a mapping of sections at the top level, got NoneType"),
    ("x: !!python/object/apply:os.system [echo]\n", "could not determine a constructor"),
    ("when: 2024-13-45\n", "invalid value: month must be in 1..12"),
    (b"name: \xff\xfe\n", "not UTF-8 text"),
    ("[" * 100_000, "line 1, column 51: nested more than 50 levels deep"),
    ("x: [" + "1, " * 20_000 + "1]", "more than 10,000 values"),
])
def test_unsafe_or_invalid_yaml_is_refused(source, message):
    (error,) = errors_of(source)
    assert error.startswith("yaml: ") and message in error


def test_billion_laughs_is_refused_quickly():
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    (error,) = errors_of("\n".join(lines))
    assert "aliases" in error


def test_oversized_yaml_is_refused():
    (error,) = errors_of("#" * (MAX_YAML_BYTES + 1))
    assert error == f"yaml: the strategy is {MAX_YAML_BYTES + 1:,} bytes; the limit is {MAX_YAML_BYTES:,}"


def test_strategy_module_needs_no_numpy_pandas_or_torch():
    code = ("import sys, trainhost.jobs.pipeline.strategy, trainhost.jobs.pipeline.data_paths; "
            "print(sorted(m for m in ('numpy', 'pandas', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
