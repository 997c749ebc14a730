"""Attempts at a session, and the fencing token that lets only the newest one write.

A session (one RQ job) can be run more than once: resumed after its worker was lost, or after a
worker shutdown. A worker judged lost may only have been paused (SIGSTOP, a VM freeze) or cut off
from Redis, and come back later still training. So every attempt carries a token, the value of
`trainhost:attempt:<id>` when it started; the counter is raised at submission (fencing out any
attempt of an earlier session that used the id), when a worker starts an attempt, and when a lost
worker's attempt is given up. Every write that counts checks the token first, atomically in Redis
(Lua): progress and history (jobs/progress.py), the checkpoint and the model folder (through the
pipeline's Fence), the committed outcome, and the job's final status and result (the worker).

Light on purpose (redis only): the producer imports it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq.job import Job

from trainhost.jobs import keys, rq_storage
from trainhost.jobs.pipeline.fencing import Superseded

log = logging.getLogger("trainhost.attempts")

CURRENT, SUPERSEDED, GONE = "current", "superseded", "gone"
_CODES = {1: CURRENT, 0: SUPERSEDED, -1: GONE}
DEFAULT_RESULT_TTL = 7 * 86400

# attempt_state(attempt key, job key, token) -> code, counter: 1 current, 0 superseded (a newer attempt
# exists), -1 gone (the session's records are not in Redis: restarted empty, or deleted). A counter
# below the token means Redis lost acknowledged writes (an AOF rewound by its last second): the
# newest attempt is still this one, and the counter is put back so that a later attempt gets a
# token above it.
STATE_FUNCTION = """
local function attempt_state(attempt_key, job_key, token)
  local current = redis.call('GET', attempt_key)
  if not current then return -1, false end
  if redis.call('EXISTS', job_key) == 0 then return -1, current end
  if tonumber(current) > tonumber(token) then return 0, current end
  if tonumber(current) < tonumber(token) then redis.call('SET', attempt_key, token, 'KEEPTTL') end
  return 1, current
end
"""
# KEYS: attempt, job. ARGV: token.
STATE_SCRIPT = STATE_FUNCTION + """
local code, current = attempt_state(KEYS[1], KEYS[2], ARGV[1])
return {code, current}
"""
# KEYS: attempt, job, commit. ARGV: token, request hash, result JSON, ttl. Idempotent for one attempt (a
# retry after a lost reply commits the same record again).
COMMIT_SCRIPT = STATE_FUNCTION + """
local code, current = attempt_state(KEYS[1], KEYS[2], ARGV[1])
if code ~= 1 then return {code, current} end
local owner = redis.call('HGET', KEYS[3], 'attempt')
if owner and owner ~= ARGV[1] then return {0, owner} end
redis.call('HSET', KEYS[3], 'attempt', ARGV[1], 'request', ARGV[2], 'result', ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return {1, current}
"""

# The token of the attempt each session runs as in this process: set by the worker before it forks
# the work horse (which inherits it), read by the job function and by the worker's guards.
_tokens: dict[str, int] = {}


def record_ttl(result_ttl: int | None, timeout: int | None) -> int:
    """How long a session's attempt counter and commit record live: past every attempt and its result."""
    kept = result_ttl if result_ttl is not None and result_ttl > 0 else DEFAULT_RESULT_TTL
    return int(kept + max(timeout or 0, 0) + 86400)


def fence_earlier(connection: Redis, session_id: str, ttl: int, pipeline=None) -> None:
    """Raise the counter: every attempt started before this is superseded."""
    target = pipeline if pipeline is not None else connection
    target.incr(keys.attempt_key(session_id))
    target.expire(keys.attempt_key(session_id), ttl)


def begin(connection: Redis, session_id: str, ttl: int) -> int:
    """Start an attempt: its token, registered for this process (and the work horse forked next)."""
    with connection.pipeline() as pipe:
        pipe.incr(keys.attempt_key(session_id))
        pipe.expire(keys.attempt_key(session_id), ttl)
        token = int(pipe.execute()[0])
    _tokens[session_id] = token
    return token


def token_for(session_id: str) -> int | None:
    return _tokens.get(session_id)


def forget(session_id: str) -> None:
    _tokens.pop(session_id, None)


def attempt_state(connection: Redis, session_id: str, token: int) -> str:
    """CURRENT, SUPERSEDED or GONE (one round trip; raises RedisError when Redis cannot answer)."""
    script = connection.register_script(STATE_SCRIPT)
    code, _ = script(keys=[keys.attempt_key(session_id), rq_storage.job_key(session_id)], args=[token])
    return _CODES[int(code)]


def request_hash(request: dict[str, Any], submission: str) -> str:
    """Which submission a checkpoint or a commit belongs to: the request as sent plus its
    submission's nonce (two submissions of the same request under one id are still different)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{canonical}\n{submission}".encode()).hexdigest()


def checkpoint_file(models_dir: str | Path, session_id: str) -> Path:
    """Where a training session keeps its epoch checkpoint between attempts."""
    return Path(models_dir) / ".checkpoints" / f"{session_id}.pt"


def remove_checkpoint(models_dir: str | Path | None, session_id: str) -> None:
    """A session that ended leaves no checkpoint (a later session reusing the id starts clean)."""
    if models_dir is None:
        return
    try:
        checkpoint_file(models_dir, session_id).unlink(missing_ok=True)
    except OSError as exc:  # the models folder of another host, or unwritable: nothing to undo
        log.warning("could not remove the checkpoint of session %s: %s", session_id, exc)


class Attempt:
    """One attempt at a session: the pipeline's Fence, and what the progress writer reports to."""

    def __init__(self, connection: Redis, session_id: str, token: int, request: str, ttl: int):
        self.connection = connection
        self.session_id = session_id
        self.token = token
        self.request = request
        self.ttl = ttl
        self.lost: str | None = None  # why this attempt may write no more, once known
        self._state_script = connection.register_script(STATE_SCRIPT)
        self._commit_script = connection.register_script(COMMIT_SCRIPT)

    @classmethod
    def for_job(cls, job: Job, request: dict[str, Any], submission: str | None) -> Attempt:
        """The attempt this process runs `job` as: the worker began it before forking; a job run
        some other way (SimpleWorker, a test) begins its own."""
        ttl = record_ttl(job.result_ttl, job.timeout)
        token = token_for(job.id)
        if token is None:
            token = begin(job.connection, job.id, ttl)
        nonce = submission or (job.created_at.isoformat() if job.created_at else job.id)
        return cls(job.connection, job.id, token, request_hash(request, nonce), ttl)

    @property
    def owner(self) -> dict[str, Any]:
        """Stored in each checkpoint: the submission it belongs to and the attempt that wrote it."""
        return {"request": self.request, "attempt": self.token}

    @property
    def keys(self) -> list[str]:
        return [keys.attempt_key(self.session_id), rq_storage.job_key(self.session_id)]

    def observe(self, code: int, current: Any) -> str:
        """Take in an answer of one of the fencing scripts (also the progress writer's)."""
        state = _CODES[int(code)]
        if state != CURRENT and self.lost is None:
            if state == SUPERSEDED:
                self.lost = (f"attempt {self.token} at session {self.session_id} was superseded by attempt "
                             f"{_text(current)} (its worker was judged lost); it stops and writes nothing more")
            else:
                self.lost = (f"the records of session {self.session_id} are gone from Redis (restarted empty, "
                             f"or deleted); attempt {self.token} stops and writes nothing more")
            log.warning("%s", self.lost)
        return state

    def state(self) -> str:
        if self.lost is not None:
            return SUPERSEDED
        code, current = self._state_script(keys=self.keys, args=[self.token])
        return self.observe(code, current)

    # -- the pipeline's Fence -----------------------------------------------------------------------
    def check(self) -> bool:
        try:
            state = self.state()
        except RedisError as exc:
            log.warning("session %s: cannot check attempt %d (%s)", self.session_id, self.token, exc)
            return False
        if state != CURRENT:
            raise Superseded(self.lost)
        return True

    def claim(self) -> None:
        if self._patiently(self.state) != CURRENT:
            raise Superseded(self.lost)

    def commit(self, result: dict[str, Any]) -> None:
        text = json.dumps(result)

        def run() -> str:
            if self.lost is not None:
                return SUPERSEDED
            code, current = self._commit_script(keys=[*self.keys, keys.commit_key(self.session_id)],
                                                args=[self.token, self.request, text, self.ttl])
            return self.observe(code, current)

        if self._patiently(run) != CURRENT:
            raise Superseded(self.lost)

    def committed_result(self) -> dict[str, Any] | None:
        """The outcome an earlier attempt of this submission committed, if any: that attempt's
        model folder is the session's, and nothing is trained again."""
        record = self._patiently(lambda: self.connection.hgetall(keys.commit_key(self.session_id)))
        if not record or record.get(b"request", b"").decode() != self.request:
            return None
        return json.loads(record[b"result"])

    def _patiently(self, call):
        """`call()` until Redis answers (a restart, a failover, a full Redis): the session's
        timeout bounds the wait."""
        pause = 0.5
        while True:
            try:
                return call()
            except RedisError as exc:
                log.warning("session %s: Redis did not answer (%s); trying again in %.1f s", self.session_id,
                            exc, pause)
                time.sleep(pause)
                pause = min(pause * 2, 10.0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
