"""What the pipeline asks before a write that counts, when the run is one attempt among several at
the same session (the job layer's `trainhost.jobs.attempts.Attempt` answers; without a queue
there is no fence and every write goes ahead).

A session can have two attempts alive at once: one whose worker was judged lost while it was only
paused, and the one that took over. Only the newest may write; the older one finds out here and
stops (pure Python: no Redis, no torch).
"""

from __future__ import annotations

from typing import Any, Protocol


class Superseded(Exception):
    """This attempt is no longer the session's current one (a newer attempt started, or the
    session's records are gone): it must stop and write nothing more."""


class Fence(Protocol):
    """The checks a fenced run goes through."""

    def check(self) -> bool:
        """True while this attempt is current; False when that cannot be told right now (the
        write may be skipped and tried again later); raises Superseded when it is not."""
        ...

    def claim(self) -> None:
        """Before claiming a model folder: waits until it can tell; raises Superseded."""
        ...

    def commit(self, result: dict[str, Any]) -> None:
        """Record `result` as the session's outcome, atomically with the check that this attempt is
        current; only then is the model folder marked COMPLETE. Raises Superseded."""
        ...
