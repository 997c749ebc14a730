"""The RQ worker: forking (one work horse per job), JSON only, allow-listed functions only."""

from __future__ import annotations

import importlib
import json
import logging
import time

from rq import Queue, Worker
from rq.exceptions import DeserializationError
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.worker import WorkerStatus

from jobs.keys import stop_key

log = logging.getLogger("trainhost.worker")


class TrainhostWorker(Worker):
    """A forking Worker that refuses, in the parent and without importing it, any job whose
    function is not on the allow-list (or whose payload is not JSON)."""

    allowed: frozenset[str] = frozenset()

    def __init__(self, *args, allowed: frozenset[str], **kwargs):
        kwargs.setdefault("serializer", JSONSerializer)
        # The parent checks on its work horse this often: heartbeats, and the hard-stop deadline.
        kwargs.setdefault("job_monitoring_interval", 2)
        super().__init__(*args, **kwargs)
        self.allowed = allowed

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
        job.retries_left = None  # a refused job must not come back through a retry
        with self.connection.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 1, job.id)
            pipe.execute()
        self.handle_job_failure(job, queue, exc_string=reason, execution=execution)
        self.set_state(WorkerStatus.IDLE)


    def maintain_heartbeats(self, job: Job, execution) -> None:
        super().maintain_heartbeats(job, execution)
        self.enforce_stop_deadline(job)

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
    return loaded
