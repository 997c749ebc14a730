"""Fuzzy membership functions, exactly as KTRDR's element-wise path evaluates them (§3).

Each MF is evaluated as a chain of rules in KTRDR's priority order: the first rule that matches
a value decides it. NaN inputs match no rule and stay NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jobs.pipeline.membership_specs import MF_TYPES, canonical_mf_type, check_membership

__all__ = ["MF_TYPES", "canonical_mf_type", "check_membership", "membership"]

_EPS = np.finfo(float).eps


def membership(mf_type: str, parameters: Sequence[float], x: np.ndarray) -> np.ndarray:
    """Degree of membership of each value of `x` (float64, same shape); NaN in gives NaN out."""
    problem = check_membership(mf_type, parameters)
    if problem is not None:
        raise ValueError(problem)
    x = np.asarray(x, dtype=np.float64)
    kind = canonical_mf_type(mf_type)
    params = [float(p) for p in parameters]
    if kind == "triangular":
        return _triangular(x, *params)
    if kind == "trapezoidal":
        return _trapezoidal(x, *params)
    return _gaussian(x, *params)


def _first_match(rules: list[tuple[np.ndarray, np.ndarray | float]]) -> np.ndarray:
    """Apply (condition, value) rules in priority order; values no rule matches stay NaN."""
    return np.select([cond for cond, _ in rules], [value for _, value in rules], default=np.nan)


def _triangular(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        rise = (x - a) / max(b - a, _EPS)
        fall = (c - x) / max(c - b, _EPS)
    return _first_match([
        (x == b, 1.0),  # first, so degenerate a == b or b == c still peak at 1
        ((x <= a) | (x >= c), 0.0),
        ((a < x) & (x < b), rise),
        ((b < x) & (x < c), fall),
    ])


def _trapezoidal(x: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        rise = (x - a) / max(b - a, _EPS)
        fall = (d - x) / max(d - c, _EPS)
    return _first_match([
        ((x <= a) | (x >= d), 0.0),  # first, so a shoulder a == b gives 0 at x == a (as KTRDR does)
        ((a < x) & (x < b), rise),
        ((b <= x) & (x <= c), 1.0),
        ((c < x) & (x < d), fall),
    ])


def _gaussian(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2)
