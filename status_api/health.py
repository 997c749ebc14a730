"""GET /health (liveness) and GET /health/detailed (system, GPUs, Redis, workers, queues)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, jsonify
from redis import Redis
from redis.exceptions import RedisError, ResponseError
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from trainhost.status_api import services
from trainhost.status_api.errors import OUT_OF_MEMORY
from trainhost.status_api.system_info import gpu_summary, system_summary

bp = Blueprint("health", __name__)
SERVICE = "training-host"


def workers_summary(connection: Redis) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    workers = []
    for worker in Worker.all(connection=connection, serializer=JSONSerializer):
        heartbeat = worker.last_heartbeat
        if heartbeat is not None and heartbeat.tzinfo is None:
            heartbeat = heartbeat.replace(tzinfo=UTC)
        workers.append({
            "name": worker.name,
            "state": str(worker.get_state()),
            "queues": worker.queue_names(),
            "current_session": worker.get_current_job_id(),
            "heartbeat_age_seconds": round((now - heartbeat).total_seconds(), 1) if heartbeat else None,
            "successful_jobs": worker.successful_job_count,
            "failed_jobs": worker.failed_job_count,
        })
    return sorted(workers, key=lambda w: w["name"])


def queues_summary(connection: Redis, names: list[str]) -> dict[str, dict[str, int]]:
    """Jobs waiting, running and failed per queue. Counted without RQ's registry cleanup: that moves
    abandoned jobs (a write, refused by a full Redis, and the workers' job every few seconds), and a
    read must not change a session."""
    summary = {}
    for name in names:
        queue = Queue(name, connection=connection, serializer=JSONSerializer)
        summary[name] = {"queued": queue.count,
                         "started": queue.started_job_registry.get_job_count(cleanup=False),
                         "failed": queue.failed_job_registry.get_job_count(cleanup=False)}
    return summary


def out_of_memory(info: dict[str, Any]) -> bool:
    """Whether Redis refuses writes for want of memory, judged as Redis does: the memory it counts
    against maxmemory (used_memory less replication and AOF buffers) is above maxmemory. With an
    evicting policy that still holds only when nothing is left to evict."""
    maxmemory = int(info.get("maxmemory") or 0)
    counted = int(info.get("used_memory") or 0) - int(info.get("mem_not_counted_for_evict") or 0)
    return maxmemory > 0 and counted > maxmemory


def memory_info(connection: Redis) -> dict[str, Any]:
    """INFO memory (an answer also shows Redis is reachable); {} where INFO is disabled (some managed
    Redis services), after a PING: memory cannot be judged there."""
    try:
        return connection.info("memory")
    except ResponseError:
        connection.ping()
        return {}


def redis_summary(connection: Redis) -> dict[str, Any]:
    ok = bool(connection.ping())
    try:
        info = connection.info()
    except ResponseError:  # INFO disabled (some managed Redis services): the ping is what matters
        info = {}
    return {"ok": ok, "version": info.get("redis_version"),
            "used_memory_mb": round(info.get("used_memory", 0) / 1024 / 1024, 2),
            "maxmemory_mb": round(int(info.get("maxmemory") or 0) / 1024 / 1024, 2) or None,
            "maxmemory_policy": info.get("maxmemory_policy"), "out_of_memory": out_of_memory(info)}


OUT_OF_MEMORY_ERROR = {"code": "redis_out_of_memory", "message": OUT_OF_MEMORY}


@bp.get("/health")
def health():
    connection = services.redis()
    try:
        full = out_of_memory(memory_info(connection))
        workers = workers_summary(connection)
    except RedisError as exc:
        error = {"code": "redis_unavailable", "message": f"Redis is unreachable: {exc}"}
        return jsonify({"healthy": False, "service": SERVICE, "status": "unhealthy", "error": error}), 503
    busy = [w for w in workers if w["state"] == "busy"]
    body = {
        "healthy": True,
        "service": SERVICE,
        "status": "healthy" if workers and not full else "degraded",
        "workers": len(workers),
        "worker_status": "busy" if busy else "idle",
        "current_session": busy[0]["current_session"] if busy else None,
    }
    if full:  # up and readable, but no session can be submitted or progress saved
        body["error"] = OUT_OF_MEMORY_ERROR
    return jsonify(body)


@bp.get("/health/detailed")
def health_detailed():
    settings = services.settings()
    body: dict[str, Any] = {
        "service": SERVICE,
        "timestamp": datetime.now(UTC).isoformat(),
        "system": system_summary(settings.models_dir),
        "gpu": gpu_summary(),
    }
    try:
        connection = services.redis()
        body["redis"] = redis_summary(connection)
        body["workers"] = workers_summary(connection)
        body["queues"] = queues_summary(connection, settings.queues)
    except RedisError as exc:
        body.update(healthy=False, status="unhealthy",
                    error={"code": "redis_unavailable", "message": f"Redis is unreachable: {exc}"})
        body["redis"] = {"ok": False, "error": str(exc)}
        return jsonify(body), 503
    full = body["redis"]["out_of_memory"]
    body.update(healthy=True, status="healthy" if body["workers"] and not full else "degraded")
    if full:
        body["error"] = OUT_OF_MEMORY_ERROR
    return jsonify(body)
