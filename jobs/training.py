"""The training job the worker runs: a thin adapter from RQ to the pipeline, fenced by its attempt."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from rq import get_current_job
from rq.job import JobStatus

from trainhost.config import load_settings
from trainhost.jobs.attempts import Attempt, checkpoint_file
from trainhost.jobs.job_context import run_reported
from trainhost.jobs.meta import PackLink
from trainhost.jobs.pipeline.artifacts import mark_complete
from trainhost.jobs.pipeline.errors import TrainingError, TrainingSuspended
from trainhost.jobs.pipeline.fencing import Superseded
from trainhost.jobs.pipeline.model_paths import COMPLETE_MARKER
from trainhost.jobs.pipeline.session import train_strategy
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.jobs.rq_storage import fetch_job
from trainhost.jobs.schemas import TrainingRequest
from trainhost.jobs.sessions import failure_message
from trainhost.jobs.trial_pruning import pruning_reporter

log = logging.getLogger("trainhost.jobs")


def run_training(request: dict[str, Any], submission: str | None = None) -> dict[str, Any]:
    """`submission` is the producer's nonce for this submission: with the request it names the
    checkpoint and the commit a resumed attempt may use (another session that used the id may
    have left its own)."""
    job = get_current_job()
    settings = load_settings()
    attempt = Attempt.for_job(job, request, submission)
    checkpoint = checkpoint_file(settings.models_dir, job.id)

    pack = job.meta.get("pack")

    def work(reporter):
        committed = attempt.committed_result()
        if pack is not None:
            _after_pack(job, pack, committed, reporter)
        if committed is not None:
            # An earlier attempt committed its model before it was lost: that folder is the
            # session's (its files were all written before the commit), nothing is trained again.
            folder = Path(committed["model_path"])
            if not (folder / COMPLETE_MARKER).is_file():
                mark_complete(folder)
            log.info("job %s: attempt %d finds the outcome committed by an earlier attempt (%s)", job.id,
                     attempt.token, folder)
            reporter.phase("done", "completed by an earlier attempt")
            checkpoint.unlink(missing_ok=True)
            return committed
        req = TrainingRequest.model_validate(request)
        source = req.strategy_yaml if req.strategy_yaml is not None else req.strategy
        strategy = parse_strategy(source, req.overrides())
        pruning = pruning_reporter(job, reporter, strategy.training.epochs)  # a tpe trial's, with pruning
        # A retry after a crash finds the last epoch checkpoint and continues from it, if it is this
        # submission's (train_model checks the owner stored in it).
        result = train_strategy(strategy, settings.data_dir, settings.models_dir, pruning or reporter,
                                checkpoint_path=checkpoint, resume=checkpoint.exists(), session_id=job.id,
                                fence=attempt, checkpoint_owner=attempt.owner,
                                backtest=req.backtest.model_dump(exclude_none=True) if req.backtest else None)
        if pruning is not None:
            pruning.ended(result)
        checkpoint.unlink(missing_ok=True)  # the artifact folder holds its own copy
        return result

    try:
        return run_reported(job, work, attempt)
    except (Superseded, TrainingSuspended):
        raise  # the checkpoint is the newer attempt's, or this session's to resume from
    except BaseException:
        # A session that ended (failed, timed out) leaves no checkpoint; only the current attempt
        # may remove it (a superseded one would delete its successor's).
        try:
            current = attempt.check()
        except Superseded:
            current = False
        if current:
            checkpoint.unlink(missing_ok=True)
        raise


def _after_pack(job, pack: PackLink, committed: dict[str, Any] | None, reporter) -> None:
    """A pack's member, run once its pack ended: the session keeps the pack's start; a failure the
    pack recorded for it is its failure; a member the pack did not decide trains alone, and says why."""
    if pack.get("started_at"):
        job.started_at = datetime.fromisoformat(pack["started_at"])  # saved with the job's result
    if committed is not None:
        return
    if job.meta.get("outcome") == "failed":
        raise TrainingError(job.meta.get("error") or "failed in its pack")
    pack_job = fetch_job(job.connection, pack["pack_id"])
    why = failure_message(pack_job) if pack_job is not None and pack_job.get_status() == JobStatus.FAILED \
        else "its pack ended without training it"
    log.warning("job %s: its pack %s did not train it (%s); it trains alone", job.id, pack["pack_id"], why)
    reporter.info(pack={**pack, "error": why})
    reporter.phase("loading_data", f"training alone: its pack failed ({why})")
