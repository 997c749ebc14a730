"""1. Job start latency on an idle worker: enqueue -> `running`, and enqueue -> first progress in meta.

Ours: `trainhost worker` (torch and the allow-listed job modules preloaded in the parent). Baseline,
same run, same Redis, same queues, same job: RQ's own `rq worker` CLI, whose forked work horse
imports the job's module (and with it torch) for every job.

Times come from the processes' own clocks (same machine): the client's wall clock just before
`enqueue`, the `started_at` RQ writes when the job becomes STARTED, and the `progress_at` the job
writes with its first progress. The client blocks on the job's result stream instead of polling,
so measuring adds no load.
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from rq import Queue
from rq.results import Result
from rq.serializers import JSONSerializer

from bench.harness import Stack, percentile, wait_result, worker_state
from bench.report import Measure
from trainhost.worker.processes import wait_for

QUEUES = ["high", "training", "evaluation"]  # the product's listen order, for both workers


def _timestamp(raw: bytes) -> float:
    return datetime.fromisoformat(raw.decode()).timestamp()


def measure_worker(stack: Stack, worker_name: str, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """(enqueue -> running, enqueue -> first progress) in ms for `runs` jobs after `warmup` ones."""
    queue = Queue("training", connection=stack.redis, serializer=JSONSerializer)
    started_ms, progress_ms = [], []
    for i in range(warmup + runs):
        wait_for(lambda: worker_state(stack.redis, worker_name) == "idle", 60, "the worker to be idle", 0.005)
        time.sleep(0.05)  # back in its blocking dequeue
        t0 = time.time()
        job = queue.enqueue("bench.tiny_jobs.tiny", kwargs={"value": i}, result_ttl=600, job_timeout=120)
        result = wait_result(job, 120)
        if result is None or result.type != Result.Type.SUCCESSFUL:
            detail = getattr(result, "exc_string", None) or "no result within 120 s"
            raise RuntimeError(f"tiny job {job.id} on {worker_name} did not succeed: {detail}")
        started_at, meta = stack.redis.hmget(job.key, "started_at", "meta")
        progress_at = JSONSerializer.loads(meta)["progress"]["progress_at"]
        if i >= warmup:
            started_ms.append((_timestamp(started_at) - t0) * 1000)
            progress_ms.append((progress_at - t0) * 1000)
    return started_ms, progress_ms


def run(quick: bool = False) -> list[Measure]:
    runs = 15 if quick else 50
    baseline_runs = 5 if quick else 50
    with Stack("latency") as stack:
        ours = stack.start_worker("--queues", ",".join(QUEUES))
        ours_start, ours_progress = measure_worker(stack, ours.worker_name, runs, warmup=3)
        stack.stop(ours)
        rq_worker = stack.start_rq_worker(QUEUES)
        base_start, base_progress = measure_worker(stack, rq_worker.worker_name, baseline_runs, warmup=1)
        stack.stop(rq_worker)

    label = f"rq worker, {baseline_runs} runs"
    note = (f"{runs} runs (ours) / {baseline_runs} (rq worker) of bench.tiny_jobs.tiny after warm-up; "
            f"ours min/max {min(ours_progress):.1f}/{max(ours_progress):.1f} ms to first progress; "
            f"raw ms: {json.dumps([round(x, 1) for x in ours_progress])}")
    p = percentile
    return [
        Measure("latency.enqueue_to_running.p50", p(ours_start, 50), "ms", p(base_start, 50), label,
                "<= 50 ms", lambda m: m.value <= 50,
                note="RQ marks a job STARTED in the work horse before it imports the job's module, so the "
                     "baseline's import cost shows in first progress, not here"),
        Measure("latency.enqueue_to_running.p95", p(ours_start, 95), "ms", p(base_start, 95), label),
        Measure("latency.enqueue_to_first_progress.p50", p(ours_progress, 50), "ms", p(base_progress, 50), label,
                "<= 50 ms and ratio <= 0.1 (>= 10x faster)", lambda m: m.value <= 50 and m.ratio <= 0.1,
                note=note),
        Measure("latency.enqueue_to_first_progress.p95", p(ours_progress, 95), "ms", p(base_progress, 95), label),
    ]
