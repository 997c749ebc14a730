"""The allow-list and worker naming, with fakeredis (no fork happens for a refused job)."""

import re

import fakeredis
import pytest
from rq import Queue
from rq.job import JobStatus
from rq.serializers import JSONSerializer
from rq.utils import import_attribute

from trainhost.jobs.allowlist import JOB_FUNCTIONS, allowed_functions
from trainhost.worker.devices import worker_name
from trainhost.worker.rq_worker import TrainhostWorker


@pytest.fixture
def queue():
    return Queue("training", connection=fakeredis.FakeRedis(), serializer=JSONSerializer)


def run_burst(queue: Queue) -> TrainhostWorker:
    worker = TrainhostWorker([queue], connection=queue.connection, allowed=allowed_functions())
    worker.work(burst=True)
    return worker


@pytest.mark.parametrize("func", ["os.system", "subprocess.call", "builtins.eval", "shutil.rmtree"])
def test_non_allow_listed_function_is_refused_and_never_runs(queue, tmp_path, func):
    marker = tmp_path / "pwned"
    argument = f"touch {marker}" if func != "builtins.eval" else f"open({str(marker)!r}, 'w')"
    if func == "shutil.rmtree":
        marker.mkdir()
        argument = str(marker)
    job = queue.enqueue(func, argument)
    run_burst(queue)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert "not an allowed job function" in job.latest_result().exc_string
    assert marker.exists() == (func == "shutil.rmtree")  # nothing created, nothing removed


def test_pickled_payload_is_refused(queue, tmp_path):
    import pickle

    job = queue.enqueue("trainhost.jobs.training.run_training", "x")
    queue.connection.hset(job.key, "data", pickle.dumps(("os.system", None, ("true",), {})))
    run_burst(queue)
    job = queue.fetch_job(job.id)
    assert job.get_status() == JobStatus.FAILED
    assert "not JSON" in job.latest_result().exc_string


def test_refused_job_is_not_retried(queue):
    from rq import Retry

    job = queue.enqueue("os.getcwd", retry=Retry(max=3))
    run_burst(queue)
    assert queue.fetch_job(job.id).get_status() == JobStatus.FAILED
    assert queue.count == 0


def test_allow_list_holds_the_product_jobs_plus_extras():
    assert JOB_FUNCTIONS == {"training": "trainhost.jobs.training.run_training",
                             "evaluation": "trainhost.jobs.evaluation.run_evaluation",
                             "experiment": "trainhost.jobs.experiment_summary.summarize_experiment",
                             "pack": "trainhost.jobs.training_pack.run_training_pack"}
    assert all(callable(import_attribute(path)) for path in JOB_FUNCTIONS.values())  # what the producer enqueues
    assert allowed_functions() == frozenset(JOB_FUNCTIONS.values())
    assert "tests.helpers.jobs.tiny_job" in allowed_functions(["tests.helpers.jobs.tiny_job"])
    assert "os.system" not in allowed_functions()


def test_worker_names():
    assert re.fullmatch(r"box:gpu1-[0-9a-f]{6}", worker_name(1, "cuda", host="box"))
    assert re.fullmatch(r"box:cpu-[0-9a-f]{6}", worker_name(None, "cpu", host="box"))
    assert re.fullmatch(r"box:mps-[0-9a-f]{6}", worker_name(None, "mps", host="box"))
    assert worker_name(0, "cuda", host="box") != worker_name(0, "cuda", host="box")
