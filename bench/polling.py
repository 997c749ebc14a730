"""4. Status API under polling, through the production server (`trainhost web`, waitress) on loopback.

- 32 concurrent pollers on /training/status/<id> of a running session, against the same pollers
  on a constant-JSON Flask route under the same server (bench/const_app.py, answering a snapshot
  of that very status document, so both send the same bytes).
- /training/sessions (the default page of 50) with 1,000 finished sessions stored, one client.

The running session is `bench.tiny_jobs.hold` run by a real `trainhost worker`: the product's
SessionReporter writes its meta (batch progress, epoch metrics, resources) at the real rate, without
a training's CPU load, so the numbers are the web server's.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta

from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from bench.harness import Stack, percentile
from bench.loadgen import load, sequential
from bench.report import Measure
from tests.helpers.fixtures import strategy_path
from trainhost.worker.processes import answers, free_port, wait_for

POLLERS = 32


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def start_running_session(stack: Stack, seconds: float) -> str:
    from trainhost.jobs import keys

    session_id = f"bench-running-{uuid.uuid4().hex[:8]}"
    meta = {"kind": "training", "strategy": "v3_multi_indicator_example", "symbols": ["EURUSD"],
            "timeframes": ["1h"], "phase": "queued", "updated_at": datetime.now(UTC).isoformat(),
            "progress": {"percent": 0.0, "epoch": 0, "total_epochs": 100, "message": "queued"}}
    Queue("training", connection=stack.redis, serializer=JSONSerializer).enqueue(
        "bench.tiny_jobs.hold", kwargs={"seconds": seconds}, job_id=session_id, meta=meta,
        job_timeout=int(seconds) + 120, result_ttl=3600, description="training v3_multi_indicator_example")
    stack.redis.zadd(keys.sessions_key(), {session_id: time.time()})
    return session_id


def seed_sessions(stack: Stack, count: int) -> None:
    """`count` finished training sessions as a busy host would hold them: the request (with its
    strategy YAML) as the job's payload, a finished session's meta; 90 % completed, 5 % failed,
    5 % stopped."""
    from trainhost.jobs import keys

    strategy_yaml = strategy_path("v3_multi_indicator").read_text()
    now = datetime.now(UTC)
    scores = {}
    with stack.redis.pipeline(transaction=False) as pipe:
        for i in range(count):
            session_id = f"bench-done-{i:05d}"
            ended = now - timedelta(minutes=count - i)
            kind = "failed" if i % 20 == 7 else ("stopped" if i % 20 == 13 else "completed")
            metrics = {"train_loss": 0.71, "train_accuracy": 0.52, "val_loss": 0.78, "val_accuracy": 0.47,
                       "learning_rate": 0.001}
            meta = {
                "kind": "training", "strategy": "v3_multi_indicator_example", "symbols": ["EURUSD"],
                "timeframes": ["1h"], "phase": "done" if kind != "failed" else "training",
                "progress": {"percent": 100.0, "epoch": 10, "total_epochs": 10, "batch": 105, "total_batches": 105,
                             "samples_seen": 33510, "message": "completed", "eta_seconds": 0.0},
                "metrics": {"current": metrics, "best": metrics},
                "throughput": {"samples_per_second": 52000.0},
                "device": {"type": "cpu", "name": "x86_64", "index": None},
                "resources": {"process_rss_mb": 412.0}, "updated_at": ended.isoformat(),
            }
            if kind == "failed":
                meta["error"] = "loss became NaN at epoch 3, batch 17: lower the learning rate"
            if kind == "stopped":
                meta["outcome"] = "stopped"
            job = Job.create("trainhost.jobs.training.run_training", kwargs={"request": {
                "strategy_yaml": strategy_yaml, "start_date": "2017-05-01", "end_date": "2018-02-07", "epochs": 10}},
                connection=stack.redis, serializer=JSONSerializer, id=session_id, origin="training", meta=meta,
                status=JobStatus.FAILED if kind == "failed" else JobStatus.FINISHED, result_ttl=86400,
                description="training v3_multi_indicator_example")
            job.enqueued_at = ended - timedelta(seconds=2)
            job.started_at = ended - timedelta(seconds=1.5)
            job.ended_at = ended
            job.worker_name = "bench:cpu-000000"
            job.save(pipeline=pipe)
            scores[session_id] = ended.timestamp()
        pipe.zadd(keys.sessions_key(), scores)
        pipe.execute()


def run(quick: bool = False) -> list[Measure]:
    duration = 3 if quick else 10
    sessions_stored = 1000
    with Stack("polling") as stack:
        stack.start_worker()
        _, base = stack.start_web()
        session_id = start_running_session(stack, seconds=6 * duration + 120)
        status_url = f"{base}/training/status/{session_id}"
        wait_for(lambda: get_json(status_url)["status"] == "running" and get_json(status_url).get("progress", {})
                 .get("batch"), 60, "the held session to run and report progress", 0.1)
        body = stack.tmp / "status.json"
        body.write_text(json.dumps(get_json(status_url)))
        port = free_port()
        stack.spawn([sys.executable, "-m", "bench.const_app", "--port", str(port), "--body", str(body)], "const.log")
        const_url = f"http://127.0.0.1:{port}/const"
        wait_for(lambda: answers(const_url), 30, "the constant app")
        seed_sessions(stack, sessions_stored)

        for url in (const_url, status_url):  # warm both servers' threads and connections
            sequential(url, 20)
        const = load(const_url, POLLERS, duration)
        commands_before = stack.redis.info("stats")["total_commands_processed"]
        status = load(status_url, POLLERS, duration)
        commands = stack.redis.info("stats")["total_commands_processed"] - commands_before
        still = get_json(status_url)
        if still["status"] != "running":
            raise RuntimeError(f"the held session stopped running during the measure: {still['status']}")

        sessions_url = f"{base}/training/sessions"
        listing = get_json(sessions_url)
        if listing["total"] < sessions_stored:
            raise RuntimeError(f"/training/sessions lists {listing['total']} sessions, expected {sessions_stored}+")
        sequential(sessions_url, 3)
        runs = 10 if quick else 30
        sessions_ms = sequential(sessions_url, runs)
        const_ms = sequential(const_url, runs)
        size = len(body.read_bytes())
    where = (f"{POLLERS} pollers for {duration} s on each route, client {status.client}; the status document is "
             f"{size:,} bytes; Redis commands per status request: {commands / max(1, status.requests):.1f} "
             f"(the held session's own writes included)")

    return [
        Measure("polling.status.req_per_s", status.req_per_s, "req/s", const.req_per_s, "constant route",
                "ratio >= 0.5 (and >= 1,000 req/s where the machine allows)", lambda m: m.ratio >= 0.5,
                note=f"{where}; {status.requests:,} requests to the status route, {const.requests:,} to the "
                     f"constant route"),
        Measure("polling.status.p99", status.p99_ms, "ms", const.p99_ms, "constant route", "<= 50 ms",
                lambda m: m.value <= 50, note=f"p50 {status.p50_ms:.1f} ms (constant route {const.p50_ms:.1f} ms)"),
        Measure("polling.status.errors", status.errors, "errors", const.errors, "constant route", "0",
                lambda m: m.value == 0),
        Measure("polling.sessions_page.p50", percentile(sessions_ms, 50), "ms", percentile(const_ms, 50),
                "constant route", "<= 100 ms", lambda m: m.value <= 100,
                note=f"GET /training/sessions (page of 50, newest first) with {listing['total']:,} sessions stored; "
                     f"{runs} sequential requests, p95 {percentile(sessions_ms, 95):.1f} ms"),
    ]
