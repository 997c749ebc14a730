"""Set in a work horse when its worker is shutting down: the session checkpoints and is requeued."""

from __future__ import annotations

import signal
import threading

SIGNAL = signal.SIGUSR1
requested = threading.Event()


def install_handler() -> None:
    """In the work horse: SIGUSR1 from the worker means "suspend", not "terminate"."""
    requested.clear()
    signal.signal(SIGNAL, lambda signum, frame: requested.set())
