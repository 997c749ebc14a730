"""Fuzzy membership functions, exactly as KTRDR's element-wise path evaluates them (§3).

Each MF is evaluated as a chain of rules in KTRDR's priority order: the first rule that matches
a value decides it. NaN inputs match no rule and stay NaN. Triangular and trapezoidal MFs run as
compiled loops (kernels.py): one pass instead of one array per rule.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trainhost.jobs.pipeline import kernels
from trainhost.jobs.pipeline.membership_specs import MF_TYPES, canonical_mf_type, check_membership

__all__ = ["MF_TYPES", "canonical_mf_type", "check_membership", "membership"]

_EPS = np.finfo(float).eps


def membership(mf_type: str, parameters: Sequence[float], x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Degree of membership of each value of `x` (float64, same shape); NaN in gives NaN out.

    `out`, when given, is a C-contiguous float64 array of x's size (a row of a feature matrix)
    that receives the degrees and is returned, which saves a copy.
    """
    problem = check_membership(mf_type, parameters)
    if problem is not None:
        raise ValueError(problem)
    values = np.asarray(x, dtype=np.float64)
    result = np.empty(values.shape) if out is None else out
    if result.dtype != np.float64 or result.size != values.size or not result.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 array of {values.size} values")
    params = [float(p) for p in parameters]
    # Flat views: the kernels take 1-D arrays; reshape(-1) of a C-contiguous array is a view.
    _FORMS[canonical_mf_type(mf_type)](kernels.as_input(values).reshape(-1), *params, out=result.reshape(-1))
    return result


def _triangular(x: np.ndarray, a: float, b: float, c: float, out: np.ndarray) -> None:
    # A zero-width side divides by eps, as KTRDR's; x == b is tested first, so a == b or b == c
    # still peak at 1.
    kernels.triangular(x, a, b, c, max(b - a, _EPS), max(c - b, _EPS), out)


def _trapezoidal(x: np.ndarray, a: float, b: float, c: float, d: float, out: np.ndarray) -> None:
    # The zero test comes first, so a shoulder a == b gives 0 at x == a (as KTRDR does).
    kernels.trapezoidal(x, a, b, c, d, max(b - a, _EPS), max(d - c, _EPS), out)


def _gaussian(x: np.ndarray, mu: float, sigma: float, out: np.ndarray) -> None:
    np.exp(-0.5 * ((x - mu) / sigma) ** 2, out=out)


_FORMS = {"triangular": _triangular, "trapezoidal": _trapezoidal, "gaussian": _gaussian}
