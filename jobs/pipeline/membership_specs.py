"""Membership function types and parameter checks (docs/ktrdr-semantics.md §3).

Pure Python on purpose: the strategy validator runs in the light client (no numpy), so the
checks live apart from the vectorised formulas in `fuzzy.py`.
"""

from __future__ import annotations

import math
from typing import Any

MF_TYPES: tuple[str, ...] = ("triangular", "trapezoidal", "gaussian")

# Parameter names per type, in order; their count is the required length.
_PARAM_NAMES: dict[str, tuple[str, ...]] = {
    "triangular": ("a", "b", "c"),
    "trapezoidal": ("a", "b", "c", "d"),
    "gaussian": ("mu", "sigma"),
}


def canonical_mf_type(name: Any) -> str | None:
    """The runtime MF type for `name` (case-insensitive, `<type>mf` accepted), or None if unsupported."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    if key.endswith("mf"):
        key = key[:-2]
    return key if key in _PARAM_NAMES else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(values: Any) -> str:
    if not isinstance(values, (list, tuple)):
        return repr(values)
    return "[" + ", ".join(f"{v:g}" if _is_number(v) else repr(v) for v in values) + "]"


def check_membership(mf_type: Any, parameters: Any) -> str | None:
    """Say what is wrong with an MF of `mf_type` with `parameters`, or return None if it is usable."""
    kind = canonical_mf_type(mf_type)
    if kind is None:
        return f"unknown membership function type {mf_type!r}; supported: {', '.join(MF_TYPES)}"
    names = _PARAM_NAMES[kind]
    shape = f"{len(names)} numbers [{', '.join(names)}]"
    if not isinstance(parameters, (list, tuple)) or len(parameters) != len(names):
        got = len(parameters) if isinstance(parameters, (list, tuple)) else type(parameters).__name__
        return f"{kind} requires exactly {shape}, got {got}: {_fmt(parameters)}"
    if not all(_is_number(v) for v in parameters):
        return f"{kind} requires {shape} (finite numbers), got {_fmt(parameters)}"
    if kind == "gaussian":
        if not parameters[1] > 0:
            return f"gaussian sigma must be > 0, got {parameters[1]:g}"
        return None
    if any(lo > hi for lo, hi in zip(parameters, parameters[1:], strict=False)):
        order = " <= ".join(names)
        got = ", ".join(f"{n}={v:g}" for n, v in zip(names, parameters, strict=True))
        return f"{kind} parameters must satisfy {order}, got {got}"
    return None
