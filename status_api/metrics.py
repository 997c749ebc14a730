"""GET /metrics: Prometheus exposition of sessions, queues, workers, training speed, GPUs and Redis.

Everything is read at scrape time from Redis (job meta, per-epoch history), RQ and NVML; nothing
is kept between scrapes, so any number of web processes give the same answer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from flask import Blueprint
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis import Redis
from redis.exceptions import RedisError

from trainhost.jobs import keys
from trainhost.jobs.meta import SessionMeta
from trainhost.jobs.producer import RequestError
from trainhost.jobs.rq_storage import fetch_jobs
from trainhost.jobs.sessions import STATUSES, session_status
from trainhost.status_api import services
from trainhost.status_api.health import queues_summary, workers_summary
from trainhost.status_api.system_info import MB, gpu_summary

bp = Blueprint("metrics", __name__)
SESSION_LABELS = ["session_id", "strategy"]


def session_families(connection: Redis) -> list[Metric]:
    """Sessions by status; samples/s, last epoch duration and progress of each running training."""
    ids = [i.decode() for i in connection.zrange(keys.sessions_key(), 0, -1)]
    jobs = [job for job in fetch_jobs(connection, ids) if job]
    statuses = [session_status(job) for job in jobs]
    counts = Counter(statuses)
    sessions = GaugeMetricFamily("trainhost_sessions", "Sessions in Redis by status", labels=["status"])
    for status in STATUSES:
        sessions.add_metric([status], counts[status])
    speed = GaugeMetricFamily("trainhost_training_samples_per_second",
                              "Training samples per second in the last epoch of a running session",
                              labels=SESSION_LABELS)
    epoch = GaugeMetricFamily("trainhost_training_epoch_duration_seconds",
                              "Duration of the last finished epoch of a running session", labels=SESSION_LABELS)
    progress = GaugeMetricFamily("trainhost_training_progress_ratio", "Progress of a running session (0..1)",
                                 labels=SESSION_LABELS)
    for job, status in zip(jobs, statuses, strict=True):
        if status != "running":
            continue
        meta: SessionMeta = job.meta
        labels = [job.id, meta.get("strategy") or ""]
        progress.add_metric(labels, ((meta.get("progress") or {}).get("percent") or 0) / 100)
        samples = (meta.get("throughput") or {}).get("samples_per_second")
        if samples is not None:
            speed.add_metric(labels, samples)
        last = connection.lindex(keys.history_key(job.id), -1)
        seconds = json.loads(last).get("duration_s") if last is not None else None
        if seconds is not None:
            epoch.add_metric(labels, seconds)
    return [sessions, speed, epoch, progress]


def queue_families(connection: Redis, names: list[str]) -> list[Metric]:
    depth = GaugeMetricFamily("trainhost_queue_depth", "Jobs waiting in a queue", labels=["queue"])
    for name, counts in queues_summary(connection, names).items():
        depth.add_metric([name], counts["queued"])
    return [depth]


def worker_families(connection: Redis) -> list[Metric]:
    workers = workers_summary(connection)
    states = Counter({"busy": 0, "idle": 0}) + Counter(w["state"] for w in workers)
    by_state = GaugeMetricFamily("trainhost_workers", "Registered workers by state", labels=["state"])
    for state in sorted({"busy", "idle", *states}):
        by_state.add_metric([state], states[state])
    jobs = CounterMetricFamily("trainhost_worker_jobs", "Jobs a worker has finished, by outcome",
                               labels=["worker", "outcome"])
    for worker in workers:
        jobs.add_metric([worker["name"], "successful"], worker["successful_jobs"] or 0)
        jobs.add_metric([worker["name"], "failed"], worker["failed_jobs"] or 0)
    return [by_state, jobs]


def gpu_families(gpu: dict[str, Any]) -> list[Metric]:
    labels = ["gpu", "name"]
    used = GaugeMetricFamily("trainhost_gpu_memory_used_bytes", "GPU memory in use", labels=labels)
    total = GaugeMetricFamily("trainhost_gpu_memory_total_bytes", "GPU memory in all", labels=labels)
    utilization = GaugeMetricFamily("trainhost_gpu_utilization_ratio", "GPU utilisation (0..1)", labels=labels)
    temperature = GaugeMetricFamily("trainhost_gpu_temperature_celsius", "GPU temperature", labels=labels)
    for device in gpu["devices"]:
        device_labels = [str(device["index"]), device["name"]]
        used.add_metric(device_labels, device["memory_used_mb"] * MB)
        total.add_metric(device_labels, device["memory_total_mb"] * MB)
        utilization.add_metric(device_labels, device["utilization_percent"] / 100)
        temperature.add_metric(device_labels, device["temperature_c"])
    return [used, total, utilization, temperature]


class TrainhostCollector:
    """A prometheus_client collector that reads the current state at each scrape."""

    def collect(self) -> Iterator[Metric]:
        redis_families: Iterable[Metric] = []
        try:
            connection = services.redis()
            connection.ping()
            redis_families = [*session_families(connection), *queue_families(connection, services.settings().queues),
                              *worker_families(connection)]
            up = 1
        except (RedisError, RequestError):
            up = 0
        yield GaugeMetricFamily("trainhost_redis_up", "1 when Redis answers, else 0", value=up)
        yield from redis_families
        yield from gpu_families(gpu_summary())


@bp.get("/metrics")
def metrics():
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TrainhostCollector())
    return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}
