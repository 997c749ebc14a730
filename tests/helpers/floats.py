"""Comparing float32 results that were reduced in different orders (chunked vs one pass, another kernel)."""

from __future__ import annotations

import numpy as np

# Reordering a float32 sum moves it by a few units in the last place of its largest terms, not of the
# result: a relative tolerance fails wherever the result is near zero, so the tolerance is absolute,
# scaled to the size of the values compared.
FLOAT32_REORDER_TOLERANCE = 1e-5


def assert_float32_close(actual: np.ndarray, expected: np.ndarray) -> None:
    expected = np.asarray(expected)
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=FLOAT32_REORDER_TOLERANCE * scale)
