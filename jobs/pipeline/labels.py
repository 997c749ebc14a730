"""ZigZag segment labels, exactly as KTRDR's training path makes them (KTRDR-PIPELINE.md §6.1)."""

from __future__ import annotations

import numpy as np

BUY, HOLD, SELL = 0, 1, 2
LABEL_NAMES = ["BUY", "HOLD", "SELL"]


def zigzag_pivots(close: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of the zigzag pivots of `close` (always starting with 0), ascending."""
    if not 0 < threshold < 1:
        raise ValueError(f"zigzag_threshold must be > 0 and < 1, got {threshold!r}")
    arr = np.asarray(close, dtype=np.float64)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    if not (np.isfinite(arr).all() and (arr > 0).all()):
        raise ValueError("zigzag labels need finite, positive close prices")
    # Until the first move of `threshold` from bar 0 the reference stays at bar 0.
    hits = np.flatnonzero(np.abs((arr[1:] - arr[0]) / arr[0]) >= threshold)
    if len(hits) == 0:
        return np.zeros(1, dtype=np.int64)
    start = int(hits[0]) + 1
    pivots = [0, start]
    prices = arr.tolist()  # Python floats: the rest of the walk is sequential
    ref = prices[start]
    up = ref > prices[0]
    neg = -threshold
    # The last pivot is always the running extreme: a new extreme replaces it, a reversal of at
    # least `threshold` from it adds one. r is computed as KTRDR does, so ties at the threshold agree.
    for i, p in enumerate(prices[start + 1:], start + 1):
        if up:
            if p > ref:
                pivots[-1] = i
                ref = p
            elif (p - ref) / ref <= neg:
                pivots.append(i)
                ref = p
                up = False
        elif p < ref:
            pivots[-1] = i
            ref = p
        elif (p - ref) / ref >= threshold:
            pivots.append(i)
            ref = p
            up = True
    return np.asarray(pivots, dtype=np.int64)


def zigzag_labels(close: np.ndarray, threshold: float) -> np.ndarray:
    """One zigzag segment label per bar (int64: BUY=0, HOLD=1, SELL=2), as KTRDR makes them."""
    prices = np.asarray(close, dtype=np.float64)
    return segment_labels(prices, zigzag_pivots(prices, threshold))


def segment_labels(close: np.ndarray, pivots: np.ndarray) -> np.ndarray:
    """Bars strictly between consecutive pivots take that segment's direction: BUY when the later
    pivot's price is higher, otherwise SELL (a tie is SELL). Pivot bars, bars outside the pivots
    and every bar when there are fewer than two pivots are HOLD."""
    prices = np.asarray(close, dtype=np.float64)
    pivots = np.asarray(pivots, dtype=np.int64)
    labels = np.full(len(prices), HOLD, dtype=np.int64)
    if len(pivots) < 2:
        return labels
    seg_label = np.where(prices[pivots[1:]] > prices[pivots[:-1]], BUY, SELL)
    span = np.arange(pivots[0], pivots[-1])
    # Bar j in [p_k, p_{k+1}) belongs to segment k; pivot bars are reset to HOLD afterwards.
    labels[span] = seg_label[np.searchsorted(pivots, span, side="right") - 1]
    labels[pivots] = HOLD
    return labels
