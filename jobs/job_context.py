"""What every job function shares: progress reporting, fencing, and how the job ended, recorded in
its meta (`outcome`, and `error` in words) before it returns or raises: the worker and the status
API read that, not a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from rq.job import Job
from rq.timeouts import JobTimeoutException

from trainhost.jobs.attempts import Attempt
from trainhost.jobs.pipeline.errors import PipelineError, TrainingSuspended
from trainhost.jobs.pipeline.fencing import Superseded
from trainhost.jobs.progress import SessionReporter
from trainhost.jobs.sessions import timed_out

log = logging.getLogger("trainhost.jobs")


def run_reported(job: Job, work: Callable[[SessionReporter], dict[str, Any]],
                 attempt: Attempt | None = None) -> dict[str, Any]:
    """Run `work` with a reporter bound to `job` (and its attempt: every progress write is fenced),
    record its outcome, and re-raise what it raised (RQ marks the job failed; the worker requeues a
    suspended one). A superseded attempt records nothing: the session is the newer attempt's."""
    reporter = SessionReporter(job, attempt=attempt)
    try:
        result = work(reporter)
    except Superseded as exc:
        log.warning("job %s: %s", job.id, exc)
        reporter.close()
        raise
    except TrainingSuspended as exc:
        reporter.phase("queued", str(exc))
        reporter.end("suspended")
        raise
    except Exception as exc:
        reporter.end("failed", error=failure_text(job, exc))
        raise
    reporter.end("stopped" if result.get("stopped") else "completed", final_phase="done")
    return result


def failure_text(job: Job, exc: Exception) -> str:
    """A failure in words a person can act on (the status API shows it instead of a traceback)."""
    if isinstance(exc, JobTimeoutException):
        return timed_out(job.timeout)
    if isinstance(exc, PipelineError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc)
    log.error("job %s failed", job.id, exc_info=exc)
    return f"internal error ({type(exc).__name__}: {exc}); see the worker log"
