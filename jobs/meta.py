"""A session's job meta (RQ's `job.meta`, JSON in the job hash): its one declared shape.

Who writes what:
- the producer, at enqueue (`queued()`): kind, strategy, symbols, timeframes, phase, progress,
  updated_at; experiment (an experiment's child) and pack (a child trained in a pack);
- the job's progress writer while it runs (jobs/progress.py): phase, progress, metrics, throughput,
  device, resources, updated_at; and, as the job ends (jobs/job_context.py), outcome and error
  (and a pruned tpe trial's training, experiment.pruned: jobs/trial_pruning.py); for a pack's
  member, its pack writes all of these through the member's own attempt, and pack.started_at
  (jobs/training_pack.py), and the member's job pack.error if it then trains alone (jobs/training.py);
- the worker, for what a job could not say itself (its work horse was killed, it was hard-stopped,
  its worker was lost): outcome and error (worker/rq_worker.py, through progress.record_outcome).

The session view passes `VIEW_FIELDS` through (status_api/responses.py derives the response model
from these types); `outcome` and `error` feed its status and error. Light on purpose (typing only):
the producer and the web process import it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, NotRequired

# pydantic reads these types for the OpenAPI document, and needs typing_extensions' TypedDict to do so
# on Python < 3.12.
from typing_extensions import TypedDict

Kind = Literal["training", "evaluation"]
# How the job ended, recorded by the job itself before it returns or raises: the worker and the
# status read this, never the wording of a traceback.
#   completed  returned normally
#   stopped    stopped early on request (cooperatively, after a batch: a partial model; or killed at
#              the hard-stop deadline)
#   suspended  checkpointed for a worker shutdown: the worker requeues it, and it resumes
#   failed     raised; `error` says why in words a person can act on
# A superseded attempt records nothing (the session is the newer attempt's).
Outcome = Literal["completed", "stopped", "suspended", "failed"]


class Progress(TypedDict, total=False):
    percent: float | None
    epoch: int | None
    total_epochs: int | None
    batch: int | None
    total_batches: int | None
    samples_seen: int | None
    message: str | None
    eta_seconds: float | None


class Metrics(TypedDict):
    """The last epoch's metrics, and the best of each so far."""

    current: dict[str, float | None]
    best: dict[str, float | None]


class Throughput(TypedDict, total=False):
    samples_per_second: float | None


class Device(TypedDict, total=False):
    type: str
    name: str
    index: int | None


class Resources(TypedDict, total=False):
    process_rss_mb: float
    gpu_memory_allocated_mb: float
    gpu_memory_peak_mb: float


class ExperimentLink(TypedDict):
    """Which experiment a session is a child of: its trial, and its walk-forward fold (None without one).
    `pruned`: written by a tpe trial's training that its pruner stopped (jobs/trial_pruning.py); the
    session is then `stopped`, and its experiment's row `pruned`."""

    experiment_id: str
    trial: int
    fold: int | None
    pruned: NotRequired[bool]


class PackLink(TypedDict):
    """The pack a session trains in (jobs/training_pack.py): one work horse training `size` same-shape
    models in one vectorised step; this session's model is number `index` of it."""

    pack_id: str
    index: int
    size: int
    started_at: NotRequired[str]  # when the pack took it up (written by the pack)
    error: NotRequired[str]  # why the pack ended without deciding it, which then trained it alone


class SessionMeta(TypedDict, total=False):
    kind: Kind
    strategy: str
    symbols: list[str]
    timeframes: list[str]
    phase: str
    progress: Progress
    metrics: Metrics
    throughput: Throughput
    device: Device
    resources: Resources
    updated_at: str
    outcome: Outcome
    error: str
    experiment: ExperimentLink
    pack: PackLink


VIEW_FIELDS = ("kind", "phase", "strategy", "symbols", "timeframes", "progress", "metrics", "throughput", "device",
               "resources", "updated_at", "experiment", "pack")
# What a new attempt of a session clears: how an earlier attempt of it ended (a suspended one is resumed).
ENDING_FIELDS = ("outcome", "error")


def now_iso() -> str:
    """`updated_at`: an aware UTC ISO timestamp."""
    return datetime.now(UTC).isoformat()


def queued(kind: Kind, strategy: str, symbols: list[str], timeframes: list[str],
           total_epochs: int | None = None) -> SessionMeta:
    """The meta a session is enqueued with (`total_epochs`: a training's)."""
    progress: Progress = {"percent": 0.0}
    if total_epochs is not None:
        progress.update(epoch=0, total_epochs=total_epochs)
    progress["message"] = "queued"
    return {"phase": "queued", "progress": progress, "updated_at": now_iso(), "kind": kind, "strategy": strategy,
            "symbols": symbols, "timeframes": timeframes}


def empty_metrics() -> Metrics:
    return {"current": {}, "best": {}}


def view_fields(meta: SessionMeta) -> dict[str, Any]:
    """The meta fields the session view shows, None where absent."""
    return {name: meta.get(name) for name in VIEW_FIELDS}
