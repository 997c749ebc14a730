"""What every job function shares: progress reporting, fencing, and failures said in words."""

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

log = logging.getLogger("trainhost.jobs")


def run_reported(job: Job, work: Callable[[SessionReporter], dict[str, Any]],
                 attempt: Attempt | None = None) -> dict[str, Any]:
    """Run `work` with a reporter bound to `job` (and its attempt: every progress write is fenced);
    on failure put a person-readable message in meta (the status API shows it instead of a
    traceback) and re-raise so RQ marks the job failed. A superseded attempt writes nothing: the
    worker leaves the session to the newer attempt."""
    reporter = SessionReporter(job, attempt=attempt)
    try:
        result = work(reporter)
    except Superseded as exc:
        log.warning("job %s: %s", job.id, exc)
        reporter.close()
        raise
    except TrainingSuspended as exc:
        reporter.phase("queued", str(exc))
        reporter.close()
        raise
    except JobTimeoutException:
        reporter.info(error=f"timed out after {job.timeout / 60:g} minutes (session_timeout_minutes)")
        reporter.close()
        raise
    except PipelineError as exc:
        reporter.info(error=str(exc))
        reporter.close()
        raise
    except OSError as exc:
        reporter.info(error=f"{exc.strerror or exc} ({exc.filename})" if exc.filename else str(exc))
        reporter.close()
        raise
    except Exception as exc:
        log.exception("job %s failed", job.id)
        reporter.info(error=f"internal error ({type(exc).__name__}: {exc}); see the worker log")
        reporter.close()
        raise
    if result.get("stopped"):
        reporter.info(outcome="stopped")
    reporter.close("done")
    return result
