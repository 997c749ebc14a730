"""Packed training: an experiment's same-shape variants trained in packs, against the same experiment
trained one session at a time, through the same worker in the same run.

16 (and 64) variants of v3_multi_indicator, batch 32, 10 epochs, each with its own learning rate and
seed, submitted as one experiment (`pack_size` 64: one pack each), then again with `pack_size: 1`
(every child its own session, as before packing). The measure is models per hour, wall time from
submission until the experiment's summary is written; everything a session does is in it (features,
training, evaluation, backtest, artifacts, its own job).
"""

from __future__ import annotations

import time

from bench.harness import Stack
from bench.report import Measure
from tests.helpers.fixtures import strategy_path

EPOCHS, BATCH = 10, 32
GOALS = {16: 5.0, 64: 10.0}


def request(variants: int, epochs: int) -> dict:
    """`variants` trials: a learning rate and a seed each (a grid of rates x seeds)."""
    seeds = [1, 2, 3, 4] if variants >= 4 else [1]
    rates = [round(0.0005 + 0.0005 * i, 6) for i in range(variants // len(seeds))]
    return {"base": {"strategy_yaml": strategy_path("v3_multi_indicator").read_text(), "epochs": epochs,
                     "batch_size": BATCH},
            "sweep": {"params": {"training.learning_rate": rates, "training.seed": seeds}}}


def experiment_seconds(stack: Stack, settings, body: dict) -> float:
    """Submit the experiment and wait until its summary is written; every child must have completed."""
    from trainhost.jobs import experiments

    started = time.perf_counter()
    experiment_id = experiments.submit_experiment(stack.redis, settings, body)["experiment_id"]
    deadline = time.monotonic() + 1800
    while experiments.load_record(stack.redis, experiment_id)["summary"] is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"experiment {experiment_id} did not complete")
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    view = experiments.get_experiment(stack.redis, experiment_id)
    if view["status"] != "completed" or any(row["status"] != "completed" for row in view["rows"]):
        raise RuntimeError(f"experiment {experiment_id} ended {view['status']}: "
                           f"{[row.get('error') for row in view['rows'] if row['status'] != 'completed'][:3]}")
    return elapsed


def run(quick: bool = False) -> list[Measure]:
    from trainhost.worker.sample_data import write_sample_data

    epochs = 2 if quick else EPOCHS
    sizes = (4, 8) if quick else tuple(GOALS)
    measures = []
    with Stack("packed") as stack:
        write_sample_data(stack.data_dir)
        env = stack.env(experiments_dir=stack.tmp / "experiments")
        stack.start_worker(env=env)
        packed = stack.settings(experiments_dir=stack.tmp / "experiments", pack_size=max(sizes))
        alone = stack.settings(experiments_dir=stack.tmp / "experiments", pack_size=1)
        experiment_seconds(stack, packed, request(4, 1))  # warm the worker's imports and caches first
        for variants in sizes:
            body = request(variants, epochs)
            one_at_a_time = experiment_seconds(stack, alone, body)
            together = experiment_seconds(stack, packed, body)
            ours, baseline = variants * 3600 / together, variants * 3600 / one_at_a_time
            goal = GOALS.get(variants, 1.0)
            measures.append(Measure(
                f"packed.cpu_{variants}_variants_{epochs}_epochs.models_per_hour", ours, "models/h", baseline,
                f"the same {variants} one session at a time", f"ratio >= {goal:g}",
                lambda m, goal=goal: m.ratio >= goal,
                note=f"{together:.1f} s packed, {one_at_a_time:.1f} s one at a time"))
    return measures
