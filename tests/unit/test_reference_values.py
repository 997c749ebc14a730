"""Our indicators, memberships and zigzag labels against KTRDR's own output on real EURUSD 1h data.

`tests/fixtures/ktrdr-reference/<strategy>/` holds what KTRDR computed (see tests/fixtures/README.md); the
strategy files are read with yaml.safe_load directly so this test depends only on the formulas.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.helpers.fixtures import OHLCV, REFERENCE_NAMES, reference_frame, strategy_text
from trainhost.jobs.pipeline.fuzzy import membership
from trainhost.jobs.pipeline.indicator_specs import lookup
from trainhost.jobs.pipeline.indicators import indicator_columns
from trainhost.jobs.pipeline.labels import zigzag_labels

TF = "1h"
RTOL, ATOL = 1e-7, 1e-9

CASES = REFERENCE_NAMES


@cache
def load(name: str) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    strategy = yaml.safe_load(strategy_text(name))
    reference = reference_frame(name, "indicators")
    indicators = {
        ind_id: (body["type"], lookup(body["type"]).resolve({k: v for k, v in body.items() if k != "type"}).params)
        for ind_id, body in strategy["indicators"].items()
    }
    return strategy, reference, indicator_columns(indicators, reference[OHLCV], TF)


def assert_matches(ours: np.ndarray, theirs: np.ndarray, what: str) -> None:
    """Same NaN positions (warm-up included) and the same values wherever KTRDR has one: our warm-up
    transients (ADX, MACD, squeeze) agree with KTRDR's from the first bar, so none is skipped."""
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs), err_msg=f"{what}: NaN positions")
    valid = ~np.isnan(theirs)
    assert valid.sum() > 1000, what
    np.testing.assert_allclose(ours[valid], theirs[valid], rtol=RTOL, atol=ATOL, err_msg=what)


def membership_functions(fuzzy_set: dict) -> dict[str, tuple[str, list]]:
    """MF name -> (type, parameters); a bare list is shorthand for triangular."""
    return {
        name: ("triangular", value) if isinstance(value, list) else (value["type"], value["parameters"])
        for name, value in fuzzy_set.items()
        if name != "indicator"
    }


@pytest.mark.parametrize("name", CASES)
def test_indicator_columns_match_ktrdr(name):
    _, reference, ours = load(name)
    expected = [c for c in reference.columns if c not in OHLCV]
    assert sorted(ours.columns) == sorted(expected)
    for column in expected:
        assert_matches(ours[column].to_numpy(), reference[column].to_numpy(), f"{name} {column}")


@pytest.mark.parametrize("name", CASES)
def test_memberships_match_ktrdr(name):
    strategy, _, ours = load(name)
    reference = reference_frame(name, "fuzzy_raw")
    compared = set()
    for set_id, fuzzy_set in strategy["fuzzy_sets"].items():
        x = ours[f"{TF}_{fuzzy_set['indicator']}"].to_numpy()
        for mf_name, (mf_type, params) in membership_functions(fuzzy_set).items():
            column = f"{TF}_{set_id}_{mf_name}"
            assert_matches(membership(mf_type, params, x), reference[column].to_numpy(), f"{name} {column}")
            compared.add(column)
    assert compared == set(reference.columns)


def _zigzag_threshold(strategy: dict) -> float | None:
    """The zigzag threshold when the strategy's labels are zigzag (the default), else None."""
    labels = (strategy.get("training") or {}).get("labels") or {}
    if labels.get("source", "zigzag") != "zigzag":
        return None
    return labels.get("zigzag_threshold", 0.02)


@pytest.mark.parametrize("name", CASES)
def test_zigzag_labels_match_ktrdr(name):
    strategy, reference, _ = load(name)
    threshold = _zigzag_threshold(strategy)
    if threshold is None:
        pytest.skip(f"{name}: labels are not zigzag labels")
    expected = reference_frame(name, "labels")["label"].to_numpy()
    ours = zigzag_labels(reference["close"].to_numpy(), threshold)
    assert len(ours) == len(expected)
    np.testing.assert_array_equal(ours, expected.astype(np.int64))
