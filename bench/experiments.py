"""Experiments: what one request of many sessions costs beyond the sessions themselves.

- Overhead: a grid of 64 one-epoch trainings of v3_multi_indicator as one experiment, through one
  worker, wall time until the experiment is summarised, against the same 64 training requests sent
  one by one by a client (each submitted, then all awaited) through the same worker, same run.
- Fan-out: submitting an experiment of 2,000 children (validated, enqueued, with its summary job),
  no worker running; baseline: 2,000 single training submissions of the same requests.
"""

from __future__ import annotations

import time

from rq.job import Job
from rq.serializers import JSONSerializer

from bench.harness import Stack, wait_result
from bench.report import Measure
from tests.helpers.fixtures import strategy_path

GRID, FANOUT = 64, 2000


def request(trials: int) -> dict:
    """A grid of `trials` trainings: learning rates, times batch sizes once one parameter's list would
    pass the 1,000 values a parameter may have."""
    sizes = [32] if trials <= 1000 else [16 + i for i in range(-(-trials // 1000))]
    rates = [round(0.0005 + 0.00001 * i, 6) for i in range(trials // len(sizes))]
    return {"base": {"strategy_yaml": strategy_path("v3_multi_indicator").read_text(), "epochs": 1},
            "sweep": {"params": {"training.learning_rate": rates, "training.batch_size": sizes}}}


def single_requests(body: dict) -> list[dict]:
    """The experiment's trials as the training requests a client would send one by one."""
    from trainhost.jobs.pipeline.experiment_space import Sweep, with_params
    from trainhost.jobs.pipeline.strategy import parse_strategy

    document = dict(parse_strategy(body["base"]["strategy_yaml"]).raw)
    return [{"strategy": with_params(document, params), "epochs": 1}
            for params in Sweep.model_validate(body["sweep"]).trials()]


def one_by_one(stack: Stack, settings, body: dict) -> float:
    from trainhost.jobs import producer

    requests = single_requests(body)
    started = time.perf_counter()
    ids = [producer.submit_training(stack.redis, settings, one)["session_id"] for one in requests]
    for session_id in ids:
        wait_result(Job(session_id, connection=stack.redis, serializer=JSONSerializer), 300)
    return time.perf_counter() - started


def as_experiment(stack: Stack, settings, body: dict) -> float:
    """Submit the experiment; seconds until its summary is written (every trial must have completed)."""
    from trainhost.jobs import experiments

    started = time.perf_counter()
    experiment_id = experiments.submit_experiment(stack.redis, settings, body)["experiment_id"]
    deadline = time.monotonic() + 1800
    # The record's summary is set when the summary job ends: one GET a poll (reading every child's
    # view as GET /experiments/<id> does would take CPU from the worker being measured).
    while experiments.load_record(stack.redis, experiment_id)["summary"] is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"experiment {experiment_id} did not complete")
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    view = experiments.get_experiment(stack.redis, experiment_id)
    if view["status"] != "completed" or any(row["status"] != "completed" for row in view["rows"]):
        raise RuntimeError(f"experiment {experiment_id} ended {view['status']}: "
                           f"{[row.get('error') for row in view['rows'] if row['status'] != 'completed'][:3]}")
    return elapsed


def fanout(quick: bool) -> Measure:
    from trainhost.jobs import experiments, producer
    from trainhost.worker.sample_data import write_sample_data

    count = 200 if quick else FANOUT
    body = request(count)
    with Stack("fanout") as stack:
        write_sample_data(stack.data_dir)
        settings = stack.settings(experiments_dir=stack.tmp / "experiments")
        started = time.perf_counter()
        experiments.submit_experiment(stack.redis, settings, body)
        ours = time.perf_counter() - started
        requests = single_requests(body)
        started = time.perf_counter()
        for one in requests:
            producer.submit_training(stack.redis, settings, one, check_data=False)
        singles = time.perf_counter() - started
    return Measure(f"experiments.submit_{count}_children", ours, "s", singles, f"{count} single submissions",
                   "<= 2 s for 2,000", lambda m: m.value <= 2 * count / FANOUT,
                   note=f"{count / ours:,.0f} children/s validated and enqueued")


def run(quick: bool = False) -> list[Measure]:
    from trainhost.worker.sample_data import write_sample_data

    trials = 8 if quick else GRID
    body = request(trials)
    with Stack("experiments") as stack:
        write_sample_data(stack.data_dir)
        env = stack.env(experiments_dir=stack.tmp / "experiments")
        stack.start_worker(env=env)
        # Unpacked: this measures what an experiment adds to its sessions (packing: bench/packed.py).
        settings = stack.settings(experiments_dir=stack.tmp / "experiments", pack_size=1)
        as_experiment(stack, settings, request(2))  # warm the worker's imports and caches first
        baseline = one_by_one(stack, settings, body)
        ours = as_experiment(stack, settings, body)
    overhead = Measure(f"experiments.grid_{trials}_one_epoch.vs_one_by_one", ours, "s", baseline,
                       f"the same {trials} requests sent one by one", "ratio <= 1.05", lambda m: m.ratio <= 1.05,
                       note=f"{ours / trials:.2f} s a trial as an experiment, {baseline / trials:.2f} s one by one")
    return [overhead, fanout(quick)]
