"""The training job the worker runs: a thin adapter from RQ to the pipeline."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from trainhost.config import load_settings
from trainhost.jobs.job_context import run_reported
from trainhost.jobs.pipeline.run import train_strategy
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.jobs.schemas import TrainingRequest


def run_training(request: dict[str, Any]) -> dict[str, Any]:
    job = get_current_job()
    settings = load_settings()
    checkpoint = settings.models_dir / ".checkpoints" / f"{job.id}.pt"

    def work(reporter):
        req = TrainingRequest.model_validate(request)
        source = req.strategy_yaml if req.strategy_yaml is not None else req.strategy
        strategy = parse_strategy(source, req.overrides())
        # A retry after a crash finds the last epoch checkpoint and continues from it.
        result = train_strategy(strategy, settings.data_dir, settings.models_dir, reporter,
                                checkpoint_path=checkpoint, resume=checkpoint.exists(), session_id=job.id)
        checkpoint.unlink(missing_ok=True)  # the artifact folder holds its own copy
        return result

    return run_reported(job, work)
