"""Live progress of a running session: pipeline events in, job meta and history out.

The training thread only records the latest state (cheap); a background thread writes it to Redis
at most every `interval` seconds, retries when Redis is away (a write that fails is never fatal),
appends per-epoch history to its own key, and fetches the stop request in the same round trip (the
session's control: jobs/control.py). With an attempt (a session run by the worker) each write first
checks the attempt's fencing token, in the same Lua script: an attempt that has been superseded, or
whose session's records are gone, writes nothing and asks the training to stop at its next batch.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Any

from redis.exceptions import RedisError
from rq.job import Job

from trainhost.jobs import keys
from trainhost.jobs.attempts import STATE_FUNCTION, Attempt, record_ttl
from trainhost.jobs.control import Control
from trainhost.jobs.meta import ENDING_FIELDS, Outcome, SessionMeta, empty_metrics, now_iso

log = logging.getLogger("trainhost.progress")
METRIC_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate")
LOWER_IS_BETTER = {"train_loss", "val_loss"}
HISTORY_CHUNK = 500  # records per RPUSH inside the script (Lua's unpack has a bounded stack)
# KEYS: job, history, stop, attempt. ARGV: meta, token ('' without an attempt), 'replace' | 'append',
# history ttl, records... Returns {code, stop request, attempt counter}: 1 written; 0 superseded; -1 the
# job hash (or the attempt counter) is gone. Meta and history go only into an existing job hash: a
# job record lost to a Redis failover or an empty restart (or deleted) must not come back as a hash
# holding nothing but `meta`, which no reader can load, nor as a history blocking its id.
WRITE_PROGRESS = STATE_FUNCTION + f"""
local stop = redis.call('GET', KEYS[3])
if ARGV[2] ~= '' then
  local code, current = attempt_state(KEYS[4], KEYS[1], ARGV[2])
  if code ~= 1 then return {{code, stop, current}} end
elseif redis.call('EXISTS', KEYS[1]) == 0 then
  return {{-1, stop, false}}
end
redis.call('HSET', KEYS[1], 'meta', ARGV[1])
if ARGV[3] == 'replace' then redis.call('DEL', KEYS[2]) end
for i = 5, #ARGV, {HISTORY_CHUNK} do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + {HISTORY_CHUNK - 1}, #ARGV)))
end
if #ARGV >= 5 and tonumber(ARGV[4]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
return {{1, stop, false}}
"""


def _script_keys(job: Job) -> list[str]:
    return [job.key, keys.history_key(job.id), keys.stop_key(job.id), keys.attempt_key(job.id)]


def record_outcome(job: Job, token: int | None, outcome: Outcome, error: str | None = None) -> bool:
    """For the worker, about a job that ended without saying how (its work horse was killed, its
    worker lost): `outcome` (and `error`) merged into the meta the job last wrote, fenced as the
    job's own writes are (`token`: the attempt's; None: the job hash must only exist). False when
    the write was refused (a newer attempt, or no record). The job object's meta follows."""
    meta: SessionMeta = job.get_meta(refresh=True)
    meta["outcome"] = outcome
    if error is not None:
        meta["error"] = error
    script = job.connection.register_script(WRITE_PROGRESS)
    code, _, _ = script(keys=_script_keys(job), args=[job.serializer.dumps(meta), "" if token is None else str(token),
                                                      "append", 0])
    job.meta = meta
    return int(code) == 1


class SessionReporter:
    def __init__(self, job: Job, interval: float = 0.5, attempt: Attempt | None = None):
        self.job = job
        self.connection = job.connection
        self.attempt = attempt
        self.control = Control()
        self._script = self.connection.register_script(WRITE_PROGRESS)
        self._history_ttl = record_ttl(job.result_ttl, job.timeout)
        self.interval = interval
        self.meta: SessionMeta = dict(job.meta)  # type: ignore[assignment]
        for stale in ENDING_FIELDS:  # left by an earlier attempt of a resumed session
            self.meta.pop(stale, None)
        self.meta.setdefault("metrics", empty_metrics())
        self._history: deque[str] = deque()
        # What the run continues from (resumed()): written in place of whatever Redis holds, so the
        # history is exactly the checkpoint's epochs plus this attempt's, whatever an earlier attempt
        # did or did not manage to write before it was lost.
        self._history_base: list[str] | None = None
        self._lock = threading.Lock()
        self._dirty = threading.Event()
        self._closed = threading.Event()
        self._started = time.monotonic()
        self._batch: Any = None
        self._thread = threading.Thread(target=self._run, name=f"progress-{job.id}", daemon=True)
        self._thread.start()

    # -- what the pipeline calls (training thread; no Redis here) ------------------------------
    def phase(self, name: str, message: str = "") -> None:
        with self._lock:
            self.meta["phase"] = name
            self.meta.setdefault("progress", {})["message"] = message or name.replace("_", " ")
        self._dirty.set()

    def info(self, **fields: Any) -> None:
        """Static facts (device, data summary) merged into meta."""
        with self._lock:
            self.meta.update(fields)  # type: ignore[typeddict-item]
        self._dirty.set()

    def batch(self, progress: Any) -> None:
        self._batch = progress  # composed into meta by the writer thread
        self._dirty.set()

    def resumed(self, history: list[dict[str, Any]]) -> None:
        """The epochs the run continues from (its checkpoint's; none when it starts from scratch)."""
        with self._lock:
            self._history_base = [json.dumps(record) for record in history]
        self._dirty.set()

    def epoch(self, record: dict[str, Any]) -> None:
        with self._lock:
            metrics = self.meta.setdefault("metrics", empty_metrics())
            metrics["current"] = {key: record.get(key) for key in METRIC_KEYS}
            best = metrics.setdefault("best", {})
            for key in METRIC_KEYS[:4]:
                value = record.get(key)
                if value is None:
                    continue
                better = min if key in LOWER_IS_BETTER else max
                best[key] = value if best.get(key) is None else better(best[key], value)
            self.meta["throughput"] = {"samples_per_second": record.get("samples_per_second")}
            self._history.append(json.dumps(record))
        self._dirty.set()

    def should_stop(self) -> bool:
        return self.control.should_stop()

    def should_suspend(self) -> bool:
        return self.control.should_suspend()

    @property
    def lost(self) -> bool:
        """True once this attempt may write no more (superseded, or its records are gone)."""
        return self.control.lost

    # -- the end of the job --------------------------------------------------------------------
    def end(self, outcome: Outcome, error: str | None = None, final_phase: str | None = None) -> None:
        """Record how the job ended (what the worker and the status read), then close()."""
        with self._lock:
            self.meta["outcome"] = outcome
            if error is not None:
                self.meta["error"] = error
        self.close(final_phase)

    def close(self, final_phase: str | None = None) -> None:
        """Write the last state synchronously (with retries) and stop the writer thread. The job
        object's meta is that last state, whether or not Redis took it: the worker reads how the job
        ended there, in the work horse, and RQ saves it with a requeued job."""
        if final_phase:
            self.phase(final_phase)
        self._closed.set()
        self._dirty.set()
        self._thread.join(timeout=60)
        self.job.meta = self._compose()

    # -- writer thread ----------------------------------------------------------------------------
    def _compose(self) -> SessionMeta:
        with self._lock:
            meta: SessionMeta = json.loads(json.dumps(self.meta))
        batch = self._batch
        if batch is not None:
            progress = meta.setdefault("progress", {})
            total_epochs = max(1, batch.total_epochs)
            done = (batch.epoch - 1 + batch.batch / max(1, batch.total_batches)) / total_epochs
            elapsed = time.monotonic() - self._started
            progress.update(
                percent=round(100 * done, 2), epoch=batch.epoch, total_epochs=batch.total_epochs,
                batch=batch.batch, total_batches=batch.total_batches, samples_seen=batch.samples_seen,
                eta_seconds=round(elapsed * (1 - done) / done, 1) if done > 0 else None,
            )
        meta["resources"] = resources()
        meta["updated_at"] = now_iso()
        return meta

    def _write(self) -> None:
        meta = self._compose()
        with self._lock:
            base = self._history_base
            pending = list(self._history)
        self.job.meta = meta
        token = "" if self.attempt is None else str(self.attempt.token)
        code, stop, current = self._script(
            keys=_script_keys(self.job),
            args=[self.job.serializer.dumps(meta), token, "append" if base is None else "replace",
                  self._history_ttl, *(base or []), *pending])
        for _ in pending:  # written, or with nowhere to go
            self._history.popleft()
        with self._lock:
            if self._history_base is base:
                self._history_base = None
        if self.attempt is not None and int(code) != 1:
            self.attempt.observe(code, current)
            self.control.lose()
        if stop is not None:
            self.control.stop_requested()

    def _run(self) -> None:
        backoff, failures_while_closing = self.interval, 0
        while True:
            self._dirty.wait(timeout=2.0)  # also a periodic write, so the stop key is polled
            closing = self._closed.is_set()
            self._dirty.clear()
            try:
                self._write()
            except RedisError as exc:  # Redis away: keep the state and try again, never fail the job
                log.warning("progress write for %s failed (%s); retrying in %.1f s", self.job.id, exc, backoff)
                self._dirty.set()
                failures_while_closing += closing
                if failures_while_closing > 10:
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if closing or self.control.lost:
                return
            backoff = self.interval
            self._closed.wait(self.interval)  # at most one write per interval


def resources() -> dict[str, Any]:
    import psutil
    import torch

    usage: dict[str, Any] = {"process_rss_mb": round(psutil.Process().memory_info().rss / 2**20, 1)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        usage["gpu_memory_allocated_mb"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        usage["gpu_memory_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return usage
