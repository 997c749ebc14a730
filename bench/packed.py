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

from bench.experiments import as_experiment
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


def training_only(data_dir, variants: int, epochs: int) -> Measure:
    """In this process, on one data set's tensors: the packed trainer's time a model-epoch against
    `train_model`'s for one model alone (its 10 epochs timed the same way): the step alone, without
    what every session also does (features, evaluation, backtest, artifacts, its job)."""
    import torch

    from trainhost.jobs.pipeline.model import build_model
    from trainhost.jobs.pipeline.packed_trainer import PackMember, train_packed
    from trainhost.jobs.pipeline.reporter import NullReporter
    from trainhost.jobs.pipeline.session import prepare
    from trainhost.jobs.pipeline.strategy import parse_strategy
    from trainhost.jobs.pipeline.trainer import train_model

    strategy = parse_strategy(strategy_path("v3_multi_indicator").read_text(), {"epochs": epochs, "batch_size": BATCH})
    dataset = prepare(strategy, data_dir, NullReporter()).dataset
    (x, y), (xv, yv) = dataset.train.arrays(), dataset.val.arrays()

    def model(seed: int):
        torch.manual_seed(seed)
        return build_model(strategy.model_spec)

    configs = [strategy.training.model_copy(update={"seed": k, "learning_rate": 0.0005 * (1 + k % 8)})
               for k in range(variants)]
    warm = configs[0].model_copy(update={"epochs": 1})
    train_model(model(0), x, y, xv, yv, warm, device="cpu")  # first calls: torch's own warm-up
    train_packed([model(k) for k in range(variants)], [PackMember(x, y, xv, yv, warm)] * variants, device="cpu")
    started = time.perf_counter()
    train_model(model(0), x, y, xv, yv, configs[0], device="cpu")
    alone = (time.perf_counter() - started) / epochs
    started = time.perf_counter()
    train_packed([model(k) for k in range(variants)], [PackMember(x, y, xv, yv, c) for c in configs], device="cpu")
    packed = (time.perf_counter() - started) / epochs / variants
    return Measure(f"packed.cpu_{variants}_variants.training_only.model_epoch_s", packed, "s", alone,
                   "train_model, one model alone", "", None,
                   note=f"{len(y):,} training rows, batch {BATCH}, dropout {strategy.model.dropout}: "
                        f"{alone / packed:.1f}x less time a model-epoch")


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
        as_experiment(stack, packed, request(4, 1))  # warm the worker's imports and caches first
        for variants in sizes:
            body = request(variants, epochs)
            one_at_a_time = as_experiment(stack, alone, body)
            together = as_experiment(stack, packed, body)
            ours, baseline = variants * 3600 / together, variants * 3600 / one_at_a_time
            goal = GOALS.get(variants, 1.0)
            measures.append(Measure(
                f"packed.cpu_{variants}_variants_{epochs}_epochs.models_per_hour", ours, "models/h", baseline,
                f"the same {variants} one session at a time", f"ratio >= {goal:g}",
                lambda m, goal=goal: m.ratio >= goal,
                note=f"{together:.1f} s packed, {one_at_a_time:.1f} s one at a time"))
        measures += [training_only(stack.data_dir, variants, epochs) for variants in sizes]
    return measures
