"""The pack job: several training sessions trained in one work horse, their models in one vectorised
step (jobs/pipeline/packed_session.py). A thin adapter from RQ to the pipeline, as the training job is.

A pack's members are ordinary sessions. Each member's own job waits behind the pack's (an RQ
dependency that allows failure), so its status, progress, stop, history, artifacts and backtest are
its own: the pack reports each member through the member's own attempt (fenced like any attempt),
commits each member's result as that attempt, and records a member's own failure in its meta. Once the
pack has ended, RQ runs each member's job: it returns what the pack committed for it, fails with the
reason the pack recorded, or, when the pack ended without deciding it (its work horse was killed,
it timed out), trains it alone (jobs/training.py).
"""

from __future__ import annotations

import logging
from typing import Any

from rq import get_current_job
from rq.job import Job, JobStatus

from trainhost.config import load_settings
from trainhost.jobs.attempts import Attempt
from trainhost.jobs.job_context import failure_text, run_reported
from trainhost.jobs.meta import now_iso
from trainhost.jobs.pipeline.errors import PipelineError, TrainingSuspended
from trainhost.jobs.pipeline.fencing import Superseded
from trainhost.jobs.pipeline.packed_session import PackedTraining, train_pack
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.jobs.progress import SessionReporter
from trainhost.jobs.rq_storage import fetch_jobs
from trainhost.jobs.schemas import TrainingRequest

log = logging.getLogger("trainhost.jobs")


def run_training_pack(pack_id: str, members: list[str]) -> dict[str, Any]:
    """Train the pack's members that still wait for it; returns how each ended."""
    job = get_current_job()
    settings = load_settings()

    def work(reporter: SessionReporter) -> dict[str, Any]:
        reporter.phase("training", f"pack of {len(members)} trainings")
        taken = _take_up(job, members)
        trainings = [training for _, training in taken]
        ended: dict[str, str] = {}

        def record(index: int, outcome: dict[str, Any] | Exception) -> None:
            member, training = taken[index]
            ended[member.id] = _record(member, training.reporter, outcome)

        try:
            train_pack(trainings, settings.data_dir, settings.models_dir, on_outcome=record)
        except BaseException as exc:
            # Suspended: the pack runs again once the worker is back. Failed: each undecided member's job
            # trains it alone.
            why = "its pack was suspended (the worker is shutting down)" if isinstance(exc, TrainingSuspended) \
                else f"its pack failed ({type(exc).__name__}); it trains alone next"
            for member, training in taken:
                if member.id not in ended:
                    training.reporter.phase("queued", why)
                    training.reporter.close()
            raise
        return {"pack_id": pack_id, "members": ended}

    return run_reported(job, work)


def _take_up(job: Job, members: list[str]) -> list[tuple[Job, PackedTraining]]:
    """The members still waiting for this pack, each begun as an attempt of its session with its own
    reporter; a cancelled, deleted or already decided member is left out."""
    taken = []
    for member_id, member in zip(members, fetch_jobs(job.connection, members), strict=True):
        if member is None or member.get_status(refresh=False) != JobStatus.DEFERRED:
            log.info("pack %s: member %s no longer waits for it; left out", job.id, member_id)
            continue
        request, submission = member.kwargs["request"], member.kwargs.get("submission")
        attempt = Attempt.for_job(member, request, submission)
        if attempt.committed_result() is not None:  # an earlier run of this pack finished it
            continue
        req = TrainingRequest.model_validate(request)
        strategy = parse_strategy(req.strategy_yaml if req.strategy_yaml is not None else req.strategy,
                                  req.overrides())
        reporter = SessionReporter(member, attempt=attempt)
        reporter.info(pack={**member.meta["pack"], "started_at": now_iso()})
        taken.append((member, PackedTraining(
            strategy, reporter, member.id, fence=attempt,
            backtest=req.backtest.model_dump(exclude_none=True) if req.backtest else None)))
    return taken


def _record(member: Job, reporter: SessionReporter, outcome: dict[str, Any] | Exception) -> str:
    """How one member ended, in its meta (what its own job reads next): the pack's word on it."""
    if isinstance(outcome, Superseded):
        reporter.close()  # a newer attempt owns the session
        return "superseded"
    if isinstance(outcome, Exception):
        if not isinstance(outcome, PipelineError | OSError):
            log.error("pack member %s failed", member.id, exc_info=outcome)
        reporter.end("failed", error=failure_text(member, outcome))
        return "failed"
    status = "stopped" if outcome.get("stopped") else "completed"
    reporter.end(status, final_phase="done")
    return status
