"""Fuzzy membership functions (docs/ktrdr-semantics.md §3) and their parameter checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from trainhost.jobs.pipeline.fuzzy import membership
from trainhost.jobs.pipeline.membership_specs import MF_TYPES, canonical_mf_type, check_membership

nan = np.nan


def mu(mf_type, params, xs):
    return membership(mf_type, params, np.array(xs, dtype=float))


def same(actual, expected):
    np.testing.assert_allclose(actual, np.array(expected, dtype=float), rtol=1e-12, atol=1e-15)


def test_triangular():
    same(mu("triangular", [0, 50, 100], [-10, 0, 25, 50, 75, 100, 110, nan]), [0, 0, 0.5, 1, 0.5, 0, 0, nan])


def test_triangular_degenerate_edges_peak_first():
    # x == b is tested before the zero test, so a == b and b == c still give 1 at the peak.
    same(mu("triangular", [0, 0, 10], [-1, 0, 5, 10]), [0, 1, 0.5, 0])
    same(mu("triangular", [0, 10, 10], [0, 5, 10, 11]), [0, 0.5, 1, 0])
    same(mu("triangular", [5, 5, 5], [4.9, 5, 5.1]), [0, 1, 0])


def test_trapezoidal():
    xs = [-1, 0, 5, 10, 15, 20, 25, 30, 31, nan]
    same(mu("trapezoidal", [0, 10, 20, 30], xs), [0, 0, 0.5, 1, 1, 1, 0.5, 0, 0, nan])


def test_trapezoidal_shoulders_are_zero_at_the_edge():
    # The zero test comes first: [0, 0, 20, 30] gives 0 at x = 0, as KTRDR does; no open shoulders.
    same(mu("trapezoidal", [0, 0, 20, 30], [-5, 0, 1e-9, 10, 25]), [0, 0, 1, 1, 0.5])
    same(mu("trapezoidal", [0, 10, 30, 30], [5, 30, 29.999, 40]), [0.5, 0, 1, 0])
    same(mu("trapezoidal", [1, 1, 1, 1], [0, 1, 2]), [0, 0, 0])


def test_gaussian():
    same(mu("gaussian", [50, 10], [50, 60, 40, 80, nan]), [1, np.exp(-0.5), np.exp(-0.5), np.exp(-4.5), nan])
    same(mu("gaussian", [-0.002, 0.002], [-0.002, 0.0]), [1, np.exp(-0.5)])


def test_types_are_case_insensitive_with_mf_suffix():
    x = np.linspace(-10, 110, 25)
    base = membership("triangular", [0, 50, 100], x)
    for name in ("Triangular", "TRIANGULARMF", "triangularMF", " triangular "):
        np.testing.assert_array_equal(membership(name, [0, 50, 100], x), base)
    assert canonical_mf_type("GaussianMF") == "gaussian"
    assert canonical_mf_type("TrapezoidalMF") == "trapezoidal"
    assert MF_TYPES == ("triangular", "trapezoidal", "gaussian")


@pytest.mark.parametrize("name", ["triangle", "trapezoid", "sigmoid", "", "mf", None, 3])
def test_validator_only_names_are_refused(name):
    assert canonical_mf_type(name) is None
    assert "unknown membership function type" in check_membership(name, [0, 1, 2])
    with pytest.raises(ValueError, match="supported: triangular, trapezoidal, gaussian"):
        membership(name, [0, 1, 2], np.zeros(2))


@pytest.mark.parametrize(
    ("mf_type", "params", "message"),
    [
        ("triangular", [40, 30], r"triangular requires exactly 3 numbers \[a, b, c\], got 2: \[40, 30\]"),
        ("triangular", [0, 25, 50, 75], r"exactly 3 numbers \[a, b, c\], got 4"),  # list shorthand of 4
        ("triangular", [40, 30, 50], r"triangular parameters must satisfy a <= b <= c, got a=40, b=30, c=50"),
        ("triangular", [0, 50, 40], r"a <= b <= c"),
        ("triangular", [0, "50", 100], r"finite numbers"),
        ("triangular", [0, True, 100], r"finite numbers"),
        ("triangular", [0, float("nan"), 100], r"finite numbers"),
        ("triangular", "0, 50, 100", r"exactly 3 numbers"),
        ("trapezoidal", [0, 10, 20], r"trapezoidal requires exactly 4 numbers \[a, b, c, d\], got 3"),
        ("trapezoidal", [0, 20, 10, 30], r"a <= b <= c <= d, got a=0, b=20, c=10, d=30"),
        ("gaussian", [50], r"gaussian requires exactly 2 numbers \[mu, sigma\], got 1"),
        ("gaussian", [50, 0], r"gaussian sigma must be > 0, got 0"),
        ("gaussian", [50, -1.5], r"sigma must be > 0, got -1.5"),
    ],
)
def test_bad_parameters(mf_type, params, message):
    assert check_membership(mf_type, params) is not None
    with pytest.raises(ValueError, match=message):
        membership(mf_type, params, np.zeros(3))


def test_good_parameters_pass():
    assert check_membership("triangular", [0, 0, 0]) is None
    assert check_membership("triangularmf", (0.0, 1, 2.5)) is None
    assert check_membership("trapezoidal", [0, 0, 20, 30]) is None
    assert check_membership("gaussian", [0, 1e-9]) is None


def test_output_is_float64_and_keeps_shape():
    out = membership("triangular", [0, 1, 2], np.arange(6, dtype=np.int64).reshape(2, 3))
    assert out.dtype == np.float64 and out.shape == (2, 3)
    assert membership("gaussian", [0, 1], np.array([])).shape == (0,)


def test_membership_specs_needs_no_numpy():
    code = ("import sys, trainhost.jobs.pipeline.membership_specs as m; "
            "assert m.check_membership('triangular', [1, 2, 3]) is None; assert 'numpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
