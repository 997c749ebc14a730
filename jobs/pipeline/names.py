"""The one rule for a name that becomes a model folder (a strategy name, a timeframe): what the
strategy validator accepts and what the saver writes are the same set, so a strategy that passes
validation can always be saved (pure Python: the light client validates with it)."""

from __future__ import annotations

import re
from typing import Any

# One plain path segment: no separator, not hidden (no leading '.'), and no '..' anywhere, which
# some tools still read as "the parent folder".
FOLDER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
FOLDER_NAME_RULE = "1-100 letters, digits, '_', '.' or '-', not starting with '.' and without '..'"


def folder_name_error(value: Any) -> str | None:
    """Why `value` cannot name a model folder, or None when it can."""
    if not isinstance(value, str) or not FOLDER_NAME.fullmatch(value) or ".." in value:
        return f"must be {FOLDER_NAME_RULE} (it names the model folder), got {value!r}"
    return None
