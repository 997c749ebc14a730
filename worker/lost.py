"""When a running session's worker counts as lost: decided by live workers, with a grace that
survives Redis outages, Redis refusing writes, and pauses of the judging worker itself.

Every worker watches the started registries of its queues (the entry of each running session,
whose score its worker moves on at every heartbeat). A session is lost when a watcher has seen
its entry unchanged for `grace` seconds of its own clock, over observations that came at most
`max_gap` apart and during which the watcher itself could read and write Redis: a Redis outage
or a full Redis stops the owner's heartbeats too, so it restarts the count instead of ending it,
and so does a watcher that was itself paused. The judgement is then made final atomically, only if
the entry still holds the score that was watched (jobs/rq_storage.py, expire_if_unchanged): the
session's fencing token is raised (the old attempt, if it was only paused, can write nothing more)
and the entry is expired, and RQ's own abandoned-job cleanup requeues the session (or fails it when
no retries are left).

The queues are assumed to be served by trainhost workers, which beat every 2 s: a plain RQ worker
beats every 30 s by default, and a job of its running longer than the grace would be judged lost.
"""

from __future__ import annotations

from collections.abc import Hashable

REAP_INTERVAL = 5  # seconds between a worker's looks at the started registries
MAX_GAP = 3 * REAP_INTERVAL  # observations further apart than this do not add up to a grace


class LostWorkerWatch:
    """How long each started-registry entry has been seen unchanged, by one watcher (no Redis here)."""

    def __init__(self, grace: float, max_gap: float = MAX_GAP):
        self.grace = grace
        self.max_gap = max_gap
        self._seen: dict[Hashable, tuple[float, float]] = {}  # entry -> (score, first seen with it)
        self._last: float | None = None

    def interrupted(self) -> None:
        """This watcher could not read or write Redis: nothing seen so far counts any more."""
        self._seen.clear()
        self._last = None

    def observe(self, entries: dict[Hashable, float], now: float) -> list[tuple[Hashable, float]]:
        """Take in one look at the registries (entry -> score) at monotonic time `now`; return the
        entries seen unchanged for the grace, with the score they were watched at."""
        if self._last is not None and now - self._last > self.max_gap:
            self._seen.clear()
        self._last = now
        seen = {}
        for entry, score in entries.items():
            previous = self._seen.get(entry)
            seen[entry] = previous if previous is not None and previous[0] == score else (score, now)
        self._seen = seen
        return [(entry, score) for entry, (score, since) in seen.items() if now - since >= self.grace]
