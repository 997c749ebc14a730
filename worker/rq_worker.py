"""The RQ worker: forking (one work horse per job), JSON only, allow-listed functions only, and
each session's attempts fenced (jobs/attempts.py): the worker starts an attempt before it forks the
work horse, and writes a job's final status and result only while that attempt is current. It
also judges other workers' sessions lost (worker/lost.py) and registers again when Redis lost its
registration."""

from __future__ import annotations

import importlib
import logging
import os
import time
from contextlib import suppress
from pathlib import Path

from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from rq import Queue, Worker
from rq.exceptions import DeserializationError, InvalidJobOperation
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import now
from rq.worker import WorkerStatus

from trainhost.jobs import attempts, control, keys, progress, rq_storage
from trainhost.jobs.meta import Outcome
from trainhost.jobs.pipeline.fencing import Superseded
from trainhost.jobs.sessions import HEARTBEAT_TTL, LOST_BACKSTOP_SECONDS, horse_killed, timed_out, worker_lost
from trainhost.worker.lost import REAP_INTERVAL, LostWorkerWatch

log = logging.getLogger("trainhost.worker")

MONITORING_INTERVAL = 2  # seconds between the parent's checks on its work horse
MAINTENANCE_INTERVAL = REAP_INTERVAL  # RQ's registry maintenance, and the lost-session watch while idle
# An idle worker blocks on its queues for at most worker_ttl - 15 s (RQ): this wakes it for each
# maintenance round.
WORKER_TTL = MAINTENANCE_INTERVAL + 15
PATIENCE_SECONDS = 60  # how long the guards wait for Redis before they give up on a write


class TrainhostWorker(Worker):
    """A forking Worker that refuses, in the parent and without importing it, any job whose
    function is not on the allow-list (or whose payload is not JSON)."""

    allowed: frozenset[str] = frozenset()

    def __init__(self, *args, allowed: frozenset[str], models_dir: str | Path | None = None,
                 lost_grace: float = HEARTBEAT_TTL, **kwargs):
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("job_monitoring_interval", MONITORING_INTERVAL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        super().__init__(*args, **kwargs)
        self.allowed = allowed
        self.models_dir = models_dir  # where ended sessions' checkpoints are removed (None: not here)
        self.lost_watch = LostWorkerWatch(lost_grace)
        self._last_watch = float("-inf")

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
            # The attempt starts here, in the parent, so the parent's own writes about this job (a
            # killed horse, a hard stop) are fenced as well as the horse's; the horse inherits it.
            attempts.begin(self.connection, job.id, attempts.record_ttl(job.result_ttl, job.timeout))
            try:
                if self.returns_committed(job):
                    # Only returns what its pack committed for it (jobs/training.py): no training, so no
                    # work horse, as RQ's SimpleWorker runs a job. A fork would cost more than the job.
                    self.perform_job(job, queue, self.prepare_execution(job))
                    self.set_state(WorkerStatus.IDLE)
                else:
                    super().execute_job(job, queue)
            finally:
                attempts.forget(job.id)
            return
        log.warning("job %s %s", job.id, reason)
        execution = self.prepare_execution(job)
        with self.connection.pipeline() as pipe:
            rq_storage.take_off_intermediate_queue(pipe, queue, job.id)
            pipe.execute()
        self.handle_job_failure(job, queue, exc_string=reason, execution=execution)
        self.set_state(WorkerStatus.IDLE)

    def returns_committed(self, job: Job) -> bool:
        """Whether `job` is a pack's member whose pack has committed its result (the job only returns it)."""
        return bool(job.meta.get("pack")) and bool(self.connection.exists(keys.commit_key(job.id)))

    # -- fencing: a job's outcome is written by its current attempt only ----------------------------
    def may_write(self, job: Job) -> bool:
        """Whether this process's attempt at `job` is still its session's current one. A superseded
        attempt (its worker was judged lost, and another took over) leaves the session to the newer
        attempt; one whose records are gone (Redis restarted empty, or the session was deleted)
        must not bring back a half-record."""
        token = attempts.token_for(job.id)
        if token is None:
            return True
        deadline = time.monotonic() + PATIENCE_SECONDS
        while True:
            try:
                state = attempts.attempt_state(self.connection, job.id, token)
                break
            except RedisError as exc:
                if time.monotonic() > deadline:  # what follows needs Redis too, and will say so
                    return True
                log.warning("job %s: cannot check attempt %d (%s); trying again", job.id, token, exc)
                time.sleep(2)
        if state == attempts.SUPERSEDED:
            log.warning("job %s: attempt %d was superseded by a newer attempt (its worker was judged lost); "
                        "its outcome is not recorded", job.id, token)
        elif state == attempts.GONE:
            log.warning("job %s: its record is gone from Redis (restarted empty, or deleted); attempt %d's "
                        "outcome is not recorded", job.id, token)
        return state == attempts.CURRENT

    def forget_execution(self, job: Job, execution) -> None:
        """Remove this worker's own execution entry of a job whose outcome it does not write."""
        if execution is None:
            return
        try:
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(job, pipeline=pipe, execution=execution)
                pipe.execute()
        except RedisError as exc:
            log.warning("job %s: could not remove this worker's execution record (%s)", job.id, exc)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        if self.may_write(job):
            super().handle_execution_ended(job, queue, heartbeat_ttl)
        else:
            job.ended_at = now()  # no heartbeat: it would write into the newer attempt's (or no) record

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry, execution) -> None:
        """In the work horse, when the job function returned: RQ would set FINISHED and write the
        result; a superseded attempt (a worker that was paused, then resumed) must not."""
        if not self.may_write(job):
            self.forget_execution(job, execution)
            return
        super().handle_job_success(job, queue, started_job_registry, execution)

    def handle_exception(self, job: Job, *exc_info) -> None:
        if isinstance(exc_info[1], Superseded):  # expected, said in one line, not as a failure
            log.warning("job %s: %s", job.id, exc_info[1])
            return
        super().handle_exception(job, *exc_info)

    # -- failures, retries, shutdown --------------------------------------------------------------
    def handle_job_failure(self, job: Job, queue: Queue, started_job_registry=None, exc_string: str = "",
                           execution=None) -> None:
        """A session that failed in its work horse (an error, a timeout, an out-of-memory kill) would
        fail the same way again: it is not retried. One suspended for a worker shutdown is requeued
        and resumes from its checkpoint: the job says so in its meta (jobs/job_context.py), which
        is the horse's own job object here. (Retries are for sessions whose worker was lost: the
        lost-session watch requeues those.) A superseded attempt records nothing; a session that
        ended leaves no checkpoint."""
        if not self.may_write(job):
            rq_storage.forget_stop_mark(self, job.id)
            self.forget_execution(job, execution)
            return
        if job.meta.get("outcome") == "suspended":
            job.retries_left = (job.retries_left or 0) + 1  # requeued, not an attempt used up
            job.retry_intervals = None  # at once
        else:
            job.retries_left = 0
        super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                   exc_string=exc_string, execution=execution)
        self.remove_checkpoint_if_ended(job)

    def handle_work_horse_killed(self, job: Job, retpid, ret_val, rusage) -> None:
        """In the worker, when the work horse died without ending the job (the OOM killer, an operator,
        or this worker past the job's timeout): say so in the job's meta, as the job would have."""
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)
        elapsed = (now() - job.started_at).total_seconds() if job.started_at else 0.0
        if job.timeout is not None and 0 < job.timeout < elapsed:
            error = timed_out(job.timeout)
        else:
            signaled = ret_val is not None and os.WIFSIGNALED(ret_val)
            error = horse_killed(f"signal {os.WTERMSIG(ret_val)}" if signaled else f"waitpid returned {ret_val}")
        self.record_outcome(job, "failed", error)

    def record_outcome(self, job: Job, outcome: Outcome, error: str | None = None) -> None:
        """How a job ended, in its meta, for a job that could not record it (fenced by this process's
        attempt at it, if any). Redis away: the status falls back to RQ's own record."""
        try:
            progress.record_outcome(job, attempts.token_for(job.id), outcome, error)
        except RedisError as exc:
            log.warning("job %s: could not record its outcome (%s)", job.id, exc)

    def remove_checkpoint_if_ended(self, job: Job) -> None:
        try:
            status = job.get_status(refresh=True)
        except (InvalidJobOperation, RedisError):
            return
        if status in (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED):
            attempts.remove_checkpoint(self.models_dir, job.id)

    def handle_warm_shutdown_request(self) -> None:
        super().handle_warm_shutdown_request()
        if self.horse_pid:  # ask the running session to checkpoint and go back to the queue
            with suppress(ProcessLookupError):
                os.kill(self.horse_pid, control.SUSPEND_SIGNAL)

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        control.install_suspend_handler()

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The started-registry entry outlives a missed heartbeat by far: RQ's cleanup, which
        anything counting the registry runs, must not requeue a session before a worker has judged
        it lost (watch_sessions); it only acts when no trainhost worker is left to judge."""
        return LOST_BACKSTOP_SECONDS

    def maintain_heartbeats(self, job: Job, execution) -> None:
        """Heartbeats and the hard-stop deadline; Redis away for a moment is not fatal to the worker.
        Then (every REAP_INTERVAL) the look at other workers' sessions and at this one's registration."""
        try:
            super().maintain_heartbeats(job, execution)
            self.enforce_stop_deadline(job, execution)
        except RedisError as exc:
            self.lost_watch.interrupted()  # other workers' heartbeats cannot get through either
            log.warning("heartbeat for job %s failed (%s); trying again in %d s", job.id, exc,
                        self.job_monitoring_interval)
            return
        self.watch_sessions()

    def heartbeat(self, timeout: int | None = None, pipeline=None) -> None:
        if pipeline is not None:  # its errors come with the pipeline's execute(), where they are handled
            super().heartbeat(timeout, pipeline)
            return
        try:
            super().heartbeat(timeout)
        except RedisError:
            self.lost_watch.interrupted()
            raise

    def run_maintenance_tasks(self) -> None:
        """RQ's registry maintenance, then the lost-session watch (the idle worker's turn at it).
        Redis refusing the maintenance is not fatal: it is tried again on the next round."""
        try:
            super().run_maintenance_tasks()
        except RedisError as exc:
            self.lost_watch.interrupted()
            log.warning("registry maintenance failed (%s); trying again in %d s", exc, self.maintenance_interval)
            return
        self.watch_sessions()

    def dequeue_job_and_maintain_ttl(self, timeout: int | None,
                                     max_idle_time: int | None = None) -> tuple[Job, Queue] | None:
        """RQ's wait for a job, which rides out connection errors, also riding out a Redis that
        refuses writes (full, or a replica during a failover) instead of ending the worker."""
        pause = 1.0
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except (OutOfMemoryError, ReadOnlyError) as exc:
                self.lost_watch.interrupted()
                log.warning("Redis refuses writes (%s); waiting %.0f s", exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 30.0)

    # -- other workers' sessions, and this worker's registration -----------------------------------
    def watch_sessions(self) -> None:
        """At most every REAP_INTERVAL: register again if Redis lost this worker's registration,
        and give up the attempts of sessions whose worker is lost (worker/lost.py)."""
        moment = time.monotonic()
        if moment - self._last_watch < REAP_INTERVAL - 0.5:
            return
        self._last_watch = moment
        try:
            self.ensure_registered()
            own = {execution.composite_key for execution in self.executions.values()}
            entries = rq_storage.started_entries(self.connection, self.queues, exclude=own)
            for (queue_name, member), score in self.lost_watch.observe(entries, time.monotonic()):
                self.give_up_lost(next(q for q in self.queues if q.name == queue_name), member, score)
        except RedisError as exc:
            self.lost_watch.interrupted()
            log.warning("looking for lost sessions failed (%s); trying again in %d s", exc, REAP_INTERVAL)

    def ensure_registered(self) -> None:
        """After Redis restarted empty (or this worker's key expired while it was paused) the worker
        is no longer listed: /health would say no worker runs while one does."""
        if rq_storage.is_registered(self):
            return
        log.warning("worker %s: its registration is gone from Redis (restarted empty?); registering again",
                    self.name)
        rq_storage.register_again(self)

    def give_up_lost(self, queue: Queue, member: str, score: float) -> None:
        """Fence out the lost worker's attempt and let RQ's abandoned-job cleanup requeue the session
        (or fail it without retries left, saying why in its meta), unless its worker beat meanwhile."""
        registry = queue.started_job_registry
        job_id = rq_storage.job_id_of(member)
        if not rq_storage.expire_if_unchanged(self.connection, registry.key, member, score, keys.attempt_key(job_id),
                                              attempts.record_ttl(None, None)):
            return
        log.warning("session %s: no heartbeat from its worker for %g s while Redis answered; its attempt is "
                    "given up and the session requeued (or failed without retries left)", job_id,
                    self.lost_watch.grace)
        registry.cleanup(exception_handlers=[self.record_abandoned])
        job = Job(job_id, connection=self.connection, serializer=self.serializer)
        self.remove_checkpoint_if_ended(job)

    def record_abandoned(self, job: Job, *exc_info) -> None:
        """Called by RQ's cleanup for a session whose worker was lost: one without retries left fails."""
        if not job.retries_left:
            self.record_outcome(job, "failed", worker_lost(self.lost_watch.grace))

    def enforce_stop_deadline(self, job: Job, execution) -> None:
        """A session asked to stop that is still running after its grace period is killed here,
        in the worker, so the hard stop happens even if no web process is watching. RQ's
        send_stop_job_command would do the same by way of pub/sub, addressed to whichever worker the
        job hash names (after a takeover, another one's); this is its in-process form."""
        raw = self.connection.get(keys.stop_key(job.id))
        if raw is None or time.time() < control.hard_stop_at(raw):
            return
        log.warning("job %s did not stop within its grace period; killing the work horse", job.id)
        self.request_stop_execution(execution.id)  # RQ then marks the job STOPPED, not FAILED
        self.record_outcome(job, "stopped")


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
