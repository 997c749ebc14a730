"""Every Redis key of ours, built in one place (all share the `trainhost:` prefix)."""

from __future__ import annotations

PREFIX = "trainhost:"


def stop_key(session_id: str) -> str:
    """Set when someone asks a session to stop; read by the job between batches."""
    return f"{PREFIX}stop:{session_id}"


def history_key(session_id: str) -> str:
    """Per-epoch history of a training session (a list of JSON records)."""
    return f"{PREFIX}history:{session_id}"


def sessions_key() -> str:
    """Sorted set of every session id, scored by submission time (newest first listing)."""
    return f"{PREFIX}sessions"
