"""Which trainings are packed together, how an experiment's children are enqueued as packs, and how a
pack's member reads while its pack trains it. (Packed training itself: test_packed_trainer.py; through
real workers: tests/integration/test_packs.py.)"""

from __future__ import annotations

import fakeredis
import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from trainhost.config import load_settings
from trainhost.jobs import producer, rq_storage
from trainhost.jobs.meta import queued
from trainhost.jobs.pipeline.experiment_space import with_params
from trainhost.jobs.pipeline.packed_session import dataset_key
from trainhost.jobs.pipeline.packing import CPU_PACK_SIZE, GPU_PACK_SIZE, pack_signature, plan_packs
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.jobs.schemas import TrainingRequest
from trainhost.jobs.sessions import listed_statuses, status_of
from trainhost.worker.devices import worker_name

DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}


def variant(params: dict | None = None, **overrides):
    """v3_multi_indicator with `params` (dotted strategy paths) set and request `overrides`."""
    document = with_params(dict(parse_strategy(strategy_text("v3_multi_indicator")).raw), params or {})
    request = TrainingRequest.model_validate({"strategy": document, **DATES, **overrides})
    return request, parse_strategy(document, request.overrides())


def test_the_signature_is_the_shape_the_loss_the_optimizer_and_the_batch_size():
    _, base = variant()
    _, other_lr = variant({"training.learning_rate": 0.01}, epochs=3, seed=9)
    _, other_batch = variant(batch_size=64)
    assert pack_signature(base) == pack_signature(other_lr)
    assert pack_signature(base) != pack_signature(other_batch)
    assert pack_signature(parse_strategy(strategy_text("experiment_h003_lstm"))) is None  # never packed


def test_packs_group_same_signatures_evenly_and_leave_loners_alone():
    assert plan_packs(["a"] * 33, 16) == [list(range(0, 11)), list(range(11, 22)), list(range(22, 33))]
    assert plan_packs(["a", "b", "a", None, "c", "b"], 16) == [[0, 2], [1, 5]]
    assert plan_packs(["a"] * 5, 1) == [] and plan_packs(["a"], 16) == []
    assert plan_packs(["a"] * 17, 16) == [list(range(0, 9)), list(range(9, 17))]
    assert plan_packs(["a"] * 16, 16, workers=2) == [list(range(0, 8)), list(range(8, 16))]  # one each
    assert plan_packs(["a"] * 5, 16, workers=4) == [[0, 1, 2], [3, 4]]  # no pack of one
    assert plan_packs(["a"] * 3, 16, workers=0) == [[0, 1, 2]]


def test_variants_of_training_settings_share_a_data_set_and_data_changes_do_not():
    _, base = variant()
    _, other_lr = variant({"training.learning_rate": 0.01}, seed=3, epochs=7)
    _, other_range = variant(start_date="2017-06-01")
    assert dataset_key(base) == dataset_key(other_lr)
    assert dataset_key(base) != dataset_key(other_range)


@pytest.fixture
def connection():
    return fakeredis.FakeRedis()


def children(count: int, **overrides):
    out = []
    for index in range(count):
        request, strategy = variant({"training.learning_rate": 0.001 * (index + 1)}, **overrides)
        out.append(producer.TrainingChild(request, strategy, f"exp-t{index}",
                                          {"experiment_id": "exp", "trial": index, "fold": None}))
    return out


def test_an_experiments_children_wait_behind_their_pack_job(connection):
    settings = load_settings({"pack_size": 16})
    producer.enqueue_trainings(connection, settings, children(3), packed=True)
    members = [Job.fetch(f"exp-t{i}", connection=connection, serializer=JSONSerializer) for i in range(3)]
    pack_id = members[0].meta["pack"]["pack_id"]
    assert [m.meta["pack"] for m in members] == [{"pack_id": pack_id, "index": i, "size": 3} for i in range(3)]
    assert all(m.get_status() == JobStatus.DEFERRED and m.dependency_ids == [pack_id] for m in members)
    assert all(m.allow_dependency_failures for m in members)
    queue = Queue(settings.training_queue, connection=connection, serializer=JSONSerializer)
    assert queue.job_ids == [pack_id]  # only the pack waits on the queue
    pack = queue.jobs[0]
    assert pack.func_name == "trainhost.jobs.training_pack.run_training_pack"
    assert pack.kwargs == {"pack_id": pack_id, "members": [m.id for m in members]}
    assert pack.timeout == 3 * settings.job_timeout_seconds
    assert {m.decode() for m in connection.smembers(pack.dependents_key)} == {m.id for m in members}
    assert set(queue.deferred_job_registry.get_job_ids()) == {m.id for m in members}
    listed = producer.list_sessions(connection)["sessions"]
    assert sorted(view["session_id"] for view in listed) == ["exp-t0", "exp-t1", "exp-t2"]  # a pack is no session
    assert {view["status"] for view in listed} == {"queued"}


def test_pack_size_one_and_single_trainings_are_not_packed(connection):
    producer.enqueue_trainings(connection, load_settings({"pack_size": 1}), children(3), packed=True)
    lone = children(4)[3]
    producer.enqueue_trainings(connection, load_settings({"pack_size": 16}), [lone], packed=True)
    jobs = [Job.fetch(f"exp-t{i}", connection=connection, serializer=JSONSerializer) for i in range(4)]
    assert all("pack" not in job.meta and job.get_status() == JobStatus.QUEUED for job in jobs)


def test_the_default_pack_size_follows_the_workers_device(connection):
    settings = load_settings()
    assert settings.pack_size == 0
    assert producer.pack_size(settings, rq_storage.worker_names(connection)) == CPU_PACK_SIZE
    connection.sadd("rq:workers", f"rq:worker:{worker_name(None, 'cpu', 'a')}")
    assert producer.pack_size(settings, rq_storage.worker_names(connection)) == CPU_PACK_SIZE
    connection.sadd("rq:workers", f"rq:worker:{worker_name(0, 'cuda', 'b')}")
    assert producer.pack_size(settings, rq_storage.worker_names(connection)) == GPU_PACK_SIZE


def test_a_member_runs_from_when_its_pack_takes_it_up(connection):
    meta = {**queued("training", "s", ["EURUSD"], ["1h"]), "pack": {"pack_id": "p", "index": 0, "size": 2}}
    assert status_of(JobStatus.DEFERRED, meta) == "queued"
    assert status_of(JobStatus.DEFERRED, {**meta, "phase": "training"}) == "running"
    assert status_of(JobStatus.DEFERRED, {**meta, "phase": "done", "outcome": "stopped"}) == "running"
    assert status_of(JobStatus.DEFERRED, {"phase": "training"}) == "queued"  # not a member: waiting on RQ
    producer.enqueue_trainings(connection, load_settings({"pack_size": 16}), children(2), packed=True)
    member = Job.fetch("exp-t0", connection=connection, serializer=JSONSerializer)
    member.meta["phase"] = "training"
    member.save_meta()
    assert listed_statuses(connection, ["exp-t0", "exp-t1"]) == ["running", "queued"]


def test_stopping_a_member_its_pack_has_not_taken_up_cancels_it(connection):
    settings = load_settings({"pack_size": 16})
    producer.enqueue_trainings(connection, settings, children(2), packed=True)
    answer = producer.request_stop(connection, settings, "exp-t0")
    assert answer["status"] == "cancelled"
    assert Job.fetch("exp-t0", connection=connection, serializer=JSONSerializer).get_status() == JobStatus.CANCELED
