"""The evaluation job the worker runs: a thin adapter from RQ to the pipeline."""

from __future__ import annotations

from typing import Any

from rq import get_current_job

from trainhost.config import load_settings
from trainhost.jobs.job_context import run_reported
from trainhost.jobs.pipeline.run import evaluate_saved_model
from trainhost.jobs.pipeline.strategy import parse_when
from trainhost.jobs.schemas import EvaluationRequest


def run_evaluation(request: dict[str, Any]) -> dict[str, Any]:
    job = get_current_job()
    settings = load_settings()

    def work(reporter):
        req = EvaluationRequest.model_validate(request)
        return evaluate_saved_model(
            settings.models_dir, req.model_path, settings.data_dir, symbol=req.symbol, timeframe=req.timeframe,
            start=parse_when(req.start_date) if req.start_date else None,
            end=parse_when(req.end_date) if req.end_date else None, reporter=reporter,
        )

    return run_reported(job, work)
