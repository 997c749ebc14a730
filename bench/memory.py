"""5. Memory: the worker's (parent process) RSS idle, and after 50 jobs.

The 50 jobs are the kinds a worker runs: 45 tiny jobs and 5 real trainings (v3_multi_indicator on
the 5,000 EURUSD 1h bars, 2 epochs). Each job runs in its own forked work horse, so what could grow
is the parent: RQ's bookkeeping, logging, anything a job leaves in the parent.
"""

from __future__ import annotations

import time

import psutil
from rq import Queue
from rq.serializers import JSONSerializer

from bench.harness import Stack, wait_result, worker_state
from bench.report import Measure
from tests.helpers.fixtures import strategy_path
from trainhost.worker.processes import wait_for

JOBS = 50
TRAINING_EVERY = 10  # one real training in ten jobs


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def run(quick: bool = False) -> list[Measure]:
    from trainhost.jobs import producer
    from trainhost.worker.sample_data import write_sample_data

    jobs = 20 if quick else JOBS
    with Stack("memory") as stack:
        write_sample_data(stack.data_dir)
        worker = stack.start_worker()
        settings = stack.settings()
        time.sleep(1.0)
        idle = rss_mb(worker.pid)
        queue = Queue("training", connection=stack.redis, serializer=JSONSerializer)
        yaml_text = strategy_path("v3_multi_indicator").read_text()
        trainings = 0
        for i in range(jobs):
            if i % TRAINING_EVERY == TRAINING_EVERY // 2:
                session = producer.submit_training(stack.redis, settings,
                                                   {"strategy_yaml": yaml_text, "epochs": 2})
                job = queue.fetch_job(session["session_id"])
                trainings += 1
            else:
                job = queue.enqueue("bench.tiny_jobs.tiny", kwargs={"value": i}, result_ttl=600)
            result = wait_result(job, 120)
            if result is None or result.type != result.Type.SUCCESSFUL:
                raise RuntimeError(f"job {job.id} did not succeed: {getattr(result, 'exc_string', None)}")
        wait_for(lambda: worker_state(stack.redis, worker.worker_name) == "idle", 30, "the worker to be idle")
        time.sleep(1.0)
        after = rss_mb(worker.pid)
        stack.stop(worker)
    note = (f"parent process of `trainhost worker` (torch and the job modules preloaded); {jobs} jobs: "
            f"{jobs - trainings} tiny, {trainings} trainings; growth {after - idle:+.1f} MB")
    return [
        Measure("memory.worker_rss.idle", idle, "MB"),
        Measure(f"memory.worker_rss.after_{jobs}_jobs", after, "MB", idle, "idle", "growth <= 50 MB",
                lambda m: m.value - m.baseline <= 50, note=note),
    ]
