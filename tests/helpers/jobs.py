"""Test-only job functions, allow-listed through TRAINHOST_EXTRA_JOB_FUNCTIONS."""

from __future__ import annotations

import time

from rq import get_current_job


def tiny_job(value: int) -> dict:
    """Writes meta like a real job does and returns a value."""
    job = get_current_job()
    job.meta["phase"] = "done"
    job.meta["progress"] = {"percent": 100.0}
    job.save_meta()
    return {"doubled": value * 2}


def sleepy_job(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
