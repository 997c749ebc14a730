"""Asking a running session to end early, and how it finds out.

- A stop: someone asks (producer.request_stop sets the session's stop key, holding its hard-stop
  deadline); the job sees it at its next progress write and ends after the current batch with a
  partial model; the worker kills a work horse still running at the deadline.
- A suspend: the worker is shutting down and signals its work horse; the session checkpoints and
  goes back to the queue.
- Lost: the attempt may write no more (superseded, or its records are gone): it ends at its next batch.

The pipeline asks `should_stop()` / `should_suspend()` after every batch: no Redis here, only flags.
"""

from __future__ import annotations

import json
import signal
import threading

SUSPEND_SIGNAL = signal.SIGUSR1
_suspend = threading.Event()


def install_suspend_handler() -> None:
    """In the work horse: SUSPEND_SIGNAL from the worker means "suspend", not "terminate"."""
    _suspend.clear()
    signal.signal(SUSPEND_SIGNAL, lambda signum, frame: _suspend.set())


def stop_record(requested_at: float, hard_stop_at: float) -> str:
    """The stop key's value."""
    return json.dumps({"hard_stop_at": hard_stop_at, "requested_at": requested_at})


def hard_stop_at(record: bytes | str) -> float:
    """The deadline (epoch seconds) in a stop key's value."""
    return json.loads(record)["hard_stop_at"]


class Control:
    """The flags of one running attempt, set by its progress writer from what Redis answers."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lost = threading.Event()

    def stop_requested(self) -> None:
        self._stop.set()

    def lose(self) -> None:
        self._lost.set()

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    def should_suspend(self) -> bool:
        return _suspend.is_set()

    def should_stop(self) -> bool:
        return self._stop.is_set() or self.should_suspend() or self.lost
