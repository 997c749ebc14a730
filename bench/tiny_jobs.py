"""Job functions for the benchmarks, allow-listed for our worker through
TRAINHOST_EXTRA_JOB_FUNCTIONS=bench.tiny_jobs.tiny,bench.tiny_jobs.hold.

The module imports torch at the top, as every real job module does: RQ's stock worker imports it
anew in each forked work horse, ours preloads it in the parent.
"""

from __future__ import annotations

import time

import torch  # noqa: F401 - the point of the latency baseline: a job module that needs torch
from rq import get_current_job


def tiny(value: int = 0) -> dict:
    """Report progress once, as a job's first progress write, and return. `progress_at` is the wall
    clock just before the write, so the benchmark needs no polling to know when it landed."""
    job = get_current_job()
    job.meta["phase"] = "training"
    job.meta["progress"] = {"percent": 0.0, "message": "started", "progress_at": time.time()}
    job.save_meta()
    return {"value": value}


def hold(seconds: float = 60.0, total_batches: int = 1000) -> dict:
    """A running session with a real training's meta traffic and none of its CPU: the product's
    SessionReporter fed batch progress and epoch records (writes at most twice a second), until
    `seconds` pass or a stop is requested. For pollers of /training/status."""
    from trainhost.jobs.pipeline.trainer import BatchProgress
    from trainhost.jobs.progress import SessionReporter

    job = get_current_job()
    reporter = SessionReporter(job)
    reporter.phase("training", "holding")
    reporter.info(device={"type": "cpu", "name": "x86_64", "index": None})
    started = time.monotonic()
    batch, epoch = 0, 1
    while time.monotonic() - started < seconds and not reporter.should_stop():
        time.sleep(0.05)
        batch += 25
        if batch > total_batches:
            reporter.epoch({"epoch": epoch, "train_loss": 0.9 / epoch, "train_accuracy": 0.5, "val_loss": 0.95 / epoch,
                            "val_accuracy": 0.48, "learning_rate": 1e-3, "duration_s": 2.0,
                            "samples_per_second": 50_000.0, "timestamp": time.time()})
            batch, epoch = 0, epoch + 1
        reporter.batch(BatchProgress(epoch, 100, batch, total_batches, (epoch - 1) * total_batches * 32 + batch * 32))
    reporter.close("done")
    return {"held_s": round(time.monotonic() - started, 3), "epochs": epoch}
