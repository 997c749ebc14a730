"""The evaluation job the worker runs: a thin adapter from RQ to the pipeline."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from trainhost.config import load_settings
from trainhost.jobs.attempts import Attempt
from trainhost.jobs.job_context import run_reported
from trainhost.jobs.pipeline.session import evaluate_saved_model
from trainhost.jobs.pipeline.strategy import parse_end, parse_when
from trainhost.jobs.schemas import EvaluationRequest


def run_evaluation(request: dict[str, Any], submission: str | None = None) -> dict[str, Any]:
    job = get_current_job()
    settings = load_settings()

    def work(reporter):
        req = EvaluationRequest.model_validate(request)
        return evaluate_saved_model(
            settings.models_dir, req.model_path, settings.data_dir, symbol=req.symbol, timeframe=req.timeframe,
            start=parse_when(req.start_date) if req.start_date else None,
            end=parse_end(req.end_date) if req.end_date else None, reporter=reporter,
            backtest=req.backtest.model_dump(exclude_none=True) if req.backtest else None, session_id=job.id,
        )

    # Fenced like a training: an evaluation whose worker was judged lost writes no progress, and its
    # outcome is not recorded over the one its session was given (the worker checks).
    return run_reported(job, work, Attempt.for_job(job, request, submission))
