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


def attempt_key(session_id: str) -> str:
    """The session's fencing token: a counter raised at submission, when a worker starts an
    attempt, and when a lost worker's attempt is given up; only the attempt holding the current
    value may write."""
    return f"{PREFIX}attempt:{session_id}"


def claim_key(session_id: str) -> str:
    """Held (SET NX, short-lived) by the one submission that may create a session with this id."""
    return f"{PREFIX}claim:{session_id}"


def commit_key(session_id: str) -> str:
    """The session's committed outcome (attempt, request hash, result): written once, atomically
    with the fencing check, before its model folder is marked COMPLETE."""
    return f"{PREFIX}commit:{session_id}"


def delete_lock_key(session_id: str) -> str:
    """Held while one DELETE removes a session, so that a concurrent DELETE answers 404."""
    return f"{PREFIX}deleting:{session_id}"


def experiment_key(experiment_id: str) -> str:
    """An experiment's record (JSON): its request, trials, folds, children and, once aggregated, its summary."""
    return f"{PREFIX}experiment:{experiment_id}"


def experiments_key() -> str:
    """Sorted set of every experiment id, scored by submission time."""
    return f"{PREFIX}experiments"


def study_key(experiment_id: str) -> str:
    """A tpe experiment's Optuna study: its name, and the prefix of its journal's keys."""
    return f"{PREFIX}optuna:{experiment_id}"
