"""The RQ worker: forking (one work horse per job), JSON only, allow-listed functions only."""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from contextlib import suppress

from redis.exceptions import RedisError
from rq import Queue, Worker
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from trainhost.jobs import interrupt
from trainhost.jobs.keys import stop_key
from trainhost.jobs.sessions import HEARTBEAT_TTL

log = logging.getLogger("trainhost.worker")

MONITORING_INTERVAL = 2  # seconds between the parent's checks on its work horse
MAINTENANCE_INTERVAL = 10  # how often a worker looks for sessions abandoned by a lost worker


class TrainhostWorker(Worker):
    """A forking Worker that refuses, in the parent and without importing it, any job whose
    function is not on the allow-list (or whose payload is not JSON)."""

    allowed: frozenset[str] = frozenset()

    def __init__(self, *args, allowed: frozenset[str], **kwargs):
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("job_monitoring_interval", MONITORING_INTERVAL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        super().__init__(*args, **kwargs)
        self.allowed = allowed

    # -- the allow-list ---------------------------------------------------------------------------
    def refusal_reason(self, job: Job) -> str | None:
        try:
            func_name = job.func_name
        except DeserializationError:
            return "refused: the job payload is not JSON (pickled or corrupt); only JSON jobs are run"
        if func_name not in self.allowed:
            allowed = ", ".join(sorted(self.allowed))
            return f"refused: {func_name!r} is not an allowed job function (allowed: {allowed})"
        return None

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = self.refusal_reason(job)
        if reason is None:
            super().execute_job(job, queue)
            return
        log.warning("job %s %s", job.id, reason)
        execution = self.prepare_execution(job)
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.execute()
        self.handle_job_failure(job, queue, exc_string=reason, execution=execution)
        self.set_state(WorkerStatus.IDLE)

    # -- failures, retries, shutdown --------------------------------------------------------------
    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string: str = "",
                           execution=None) -> None:
        """A session that failed in its work horse (an error, a timeout, an out-of-memory kill) would
        fail the same way again: it is not retried. One suspended for a worker shutdown is requeued
        and resumes from its checkpoint. (Retries are for sessions whose worker was lost: RQ's
        abandoned-job cleanup requeues those.)"""
        if "TrainingSuspended" in exc_string:
            job.retries_left = (job.retries_left or 0) + 1  # requeued, not an attempt used up
            job.retry_intervals = None  # at once
        else:
            job.retries_left = 0
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                   exc_string=exc_string, execution=execution)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        if self.horse_pid:  # ask the running session to checkpoint and go back to the queue
            with suppress(ProcessLookupError):
                os.kill(self.horse_pid, interrupt.SIGNAL)

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        interrupt.install_handler()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        return HEARTBEAT_TTL

    def maintain_heartbeats(self, job: Job, execution) -> None:
        """Heartbeats and the hard-stop deadline; Redis away for a moment is not fatal to the worker."""
        try:
            super().maintain_heartbeats(job, execution)
            self.enforce_stop_deadline(job)
        except RedisError as exc:
            log.warning("heartbeat for job %s failed (%s); trying again in %d s", job.id, exc,
                        self.job_monitoring_interval)

    def enforce_stop_deadline(self, job: Job) -> None:
        """A session asked to stop that is still running after its grace period is killed here,
        in the worker, so the hard stop happens even if no web process is watching."""
        raw = self.connection.get(stop_key(job.id))
        if raw is None:
            return
        if time.time() >= json.loads(raw)["hard_stop_at"]:
            log.warning("job %s did not stop within its grace period; killing the work horse", job.id)
            self._stopped_job_id = job.id
            self.kill_horse()


def warm_up_torch() -> None:
    """Pay torch's lazy first-use costs (the first optimizer imports torch._dynamo: seconds) once in
    the parent instead of in every work horse. CPU only: CUDA stays uninitialised."""
    import torch

    parameter = torch.zeros(1, requires_grad=True)
    torch.optim.Adam([parameter]).step()


def preload(function_paths: frozenset[str]) -> list[str]:
    """Import the job modules in the parent so each forked work horse starts with them loaded."""
    loaded = []
    for path in sorted(function_paths):
        module_name = path.rpartition(".")[0]
        try:
            importlib.import_module(module_name)
            loaded.append(module_name)
        except ImportError as exc:
            log.warning("could not preload %s: %s", module_name, exc)
    from trainhost.jobs.pipeline import kernels  # numba: a worker without it fails here, at start, not in a job

    kernels.warm_up()  # every kernel loaded (compiled, on a fresh install) before any work horse forks
    return loaded
