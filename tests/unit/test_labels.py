"""ZigZag segment labels (docs/ktrdr-semantics.md §6.1)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainhost.jobs.pipeline.label_specs import SIGNAL_CLASSES
from trainhost.jobs.pipeline.labels import BUY, HOLD, SELL, segment_labels, zigzag_labels, zigzag_pivots

B, H, S = BUY, HOLD, SELL


def test_class_indices():
    assert (BUY, HOLD, SELL) == (0, 1, 2)
    assert [SIGNAL_CLASSES[i] for i in (BUY, HOLD, SELL)] == ["BUY", "HOLD", "SELL"]


def test_hand_checked_series():
    close = [100, 105, 111, 108, 99, 95, 100, 106, 104]
    # up at 2 (+11%); 99 reverses -10.8% from 111; 95 is a lower low (replaces 99); 106 reverses +11.6%
    np.testing.assert_array_equal(zigzag_pivots(close, 0.1), [0, 2, 5, 7])
    labels = zigzag_labels(np.array(close, dtype=float), 0.1)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [H, B, H, S, S, H, B, H, H])


def test_moves_of_exactly_the_threshold_count():
    # (110 - 100) / 100 and (99 - 110) / 110 are exactly ±0.1 in floating point.
    np.testing.assert_array_equal(zigzag_pivots([100, 110, 104, 99], 0.1), [0, 1, 3])
    np.testing.assert_array_equal(zigzag_labels([100, 110, 104, 99], 0.1), [H, H, S, H])


def test_equal_high_does_not_move_the_pivot():
    np.testing.assert_array_equal(zigzag_pivots([100, 111, 111, 99], 0.1), [0, 1, 3])
    np.testing.assert_array_equal(zigzag_labels([100, 111, 111, 99], 0.1), [H, H, S, H])


def test_first_move_down_and_bar_zero_stays_a_pivot():
    close = [100, 102, 95, 89, 91, 99]
    # bar 0 is not the high (102 is) but stays the first pivot; the first move is the -11% at 89
    np.testing.assert_array_equal(zigzag_pivots(close, 0.1), [0, 3, 5])
    np.testing.assert_array_equal(zigzag_labels(close, 0.1), [H, S, S, H, B, H])


def test_fewer_than_two_pivots_is_all_hold():
    np.testing.assert_array_equal(zigzag_labels([100, 101, 99, 100], 0.1), [H, H, H, H])
    np.testing.assert_array_equal(zigzag_labels([100], 0.1), [H])
    assert zigzag_labels(np.array([]), 0.1).shape == (0,)


def test_ties_between_pivots_are_sell():
    # A zigzag never yields equal consecutive pivots; the rule is checked on the segment step.
    np.testing.assert_array_equal(segment_labels([5, 6, 5, 7, 8], [0, 2, 4]), [H, S, H, B, H])
    np.testing.assert_array_equal(segment_labels([5, 6, 7], [1]), [H, H, H])


@pytest.mark.parametrize("threshold", [0, 1, -0.1, 1.5, float("nan")])
def test_threshold_must_be_between_0_and_1(threshold):
    with pytest.raises(ValueError, match="zigzag_threshold"):
        zigzag_labels([1.0, 2.0], threshold)


def test_prices_must_be_positive_and_finite():
    with pytest.raises(ValueError, match="positive"):
        zigzag_labels([1.0, 0.0, 2.0], 0.1)
    with pytest.raises(ValueError, match="finite"):
        zigzag_labels([1.0, np.nan, 2.0], 0.1)


def _ktrdr_segment_labels(prices: np.ndarray, threshold: float) -> np.ndarray:
    """KTRDR's algorithm transcribed as written (a NaN-marked pivot array), for comparison."""
    zz = np.full(len(prices), np.nan)
    zz[0] = prices[0]
    last_idx, last, direction = 0, prices[0], None
    for i in range(1, len(prices)):
        p = prices[i]
        pct = (p - last) / last
        if direction is None:
            if abs(pct) >= threshold:
                direction = 1 if pct > 0 else -1
                zz[i], last_idx, last = p, i, p
        elif direction == 1:
            if p > last:
                zz[last_idx] = np.nan
                zz[i], last_idx, last = p, i, p
            elif pct <= -threshold:
                direction = -1
                zz[i], last_idx, last = p, i, p
        else:
            if p < last:
                zz[last_idx] = np.nan
                zz[i], last_idx, last = p, i, p
            elif pct >= threshold:
                direction = 1
                zz[i], last_idx, last = p, i, p
    labels = np.full(len(prices), HOLD)
    ext = np.flatnonzero(~np.isnan(zz))
    for a, b in zip(ext[:-1], ext[1:], strict=True):
        labels[a + 1:b] = BUY if zz[b] > zz[a] else SELL
    return labels


@pytest.mark.parametrize("threshold", [0.0005, 0.002, 0.005, 0.01, 0.02])
def test_matches_transcribed_ktrdr_on_real_data(sample_data_dir, threshold):
    close = pd.read_csv(sample_data_dir / "EURUSD_1h.csv", index_col=0)["close"].to_numpy(dtype=float)
    np.testing.assert_array_equal(zigzag_labels(close, threshold), _ktrdr_segment_labels(close, threshold))


def test_matches_transcribed_ktrdr_on_rounded_random_walk():
    # Rounded prices give many equal highs/lows and exact-threshold moves.
    rng = np.random.default_rng(3)
    close = np.round(100 + np.cumsum(rng.choice([-1.0, 0.0, 1.0], 20_000)), 0) + 1000
    for threshold in (0.001, 0.003, 0.01):
        np.testing.assert_array_equal(zigzag_labels(close, threshold), _ktrdr_segment_labels(close, threshold))
