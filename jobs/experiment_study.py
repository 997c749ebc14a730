"""A tpe experiment's Optuna study: kept in our Redis (Optuna's journal storage, one per experiment
under our prefix), its space as Optuna's distributions, asked for trials a batch at a time and told
how each one ended. Only workers import this (the experiment's driver job and its trials' trainings):
the producer and the web never load Optuna.
"""

from __future__ import annotations

import math
import random
import warnings
from typing import Any
from urllib.parse import quote

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import MedianPruner
from optuna.samplers import RandomSampler, TPESampler
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalRedisBackend
from optuna.trial import Trial, TrialState
from redis import Redis
from redis.connection import SSLConnection
from redis.sentinel import SentinelConnectionPool

from trainhost.jobs import keys
from trainhost.jobs.pipeline.experiment_space import Objective, ParamRange, Sweep

optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial asked and told would flood the worker log
# The Redis journal and the constant liar are marked experimental: said at every step, not once.
warnings.filterwarnings("ignore", category=ExperimentalWarning)
TPE_STARTUP_TRIALS = 10  # Optuna's default: random trials before the sampler models the space
PRUNER_STARTUP_TRIALS = 5  # Optuna's default: completed trials before any is pruned
PRUNER_WARMUP_EPOCHS = 1  # a trial is never pruned on its first epoch alone


def storage(connection: Redis, experiment_id: str) -> JournalStorage:
    """The experiment's own journal (a storage per experiment: opening one replays its log, which then
    holds this study only)."""
    return JournalStorage(JournalRedisBackend(redis_url(connection), prefix=keys.study_key(experiment_id)))


def redis_url(connection: Redis) -> str:
    """The URL of the server `connection` talks to, for Optuna's Redis backend (which opens its own
    client): its current master where it goes through Sentinel; timeouts bounded, as ours are."""
    pool = connection.connection_pool
    options = pool.connection_kwargs
    password = options.get("password")
    auth = f"{quote(options.get('username') or '', safe='')}:{quote(password, safe='')}@" if password else ""
    query = f"db={options.get('db') or 0}&socket_connect_timeout=2&socket_timeout=10"
    if "path" in options:
        return f"unix://{auth}{options['path']}?{query}"
    if isinstance(pool, SentinelConnectionPool):
        host, port = pool.get_master_address()
    else:
        host, port = options["host"], options["port"]
    scheme = "rediss" if issubclass(pool.connection_class, SSLConnection) else "redis"
    return f"{scheme}://{auth}{host}:{port}?{query}"


def open_study(connection: Redis, experiment_id: str, sweep: Sweep, objective: Objective, asked: int) -> optuna.Study:
    """The study, created by the driver's first run. Its sampler is seeded by the sweep's seed and the
    number of trials asked so far: each batch is asked by a new process, whose sampler would otherwise
    start over, and the same request asks the same trials."""
    seed = random.Random(f"{sweep.seed}:{asked}").getrandbits(32)
    # The first batch is random whatever the sampler (nothing has ended to model); from the second on
    # TPE models what ended, after at most Optuna's default number of random trials.
    startup = max(sweep.parallelism, min(TPE_STARTUP_TRIALS, (sweep.max_trials or 0) // 3))
    sampler = TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)
    return optuna.create_study(storage=storage(connection, experiment_id), study_name=keys.study_key(experiment_id),
                               sampler=sampler, direction=objective.direction, load_if_exists=True)


def pruner(sweep: Sweep) -> MedianPruner:
    # A first batch's worth of completed trials (at most Optuna's default) before any is pruned: a
    # small study prunes at all. Steps are epochs, counted from 1.
    return MedianPruner(n_startup_trials=min(PRUNER_STARTUP_TRIALS, sweep.parallelism),
                        n_warmup_steps=PRUNER_WARMUP_EPOCHS + 1)


def trial(connection: Redis, experiment_id: str, number: int, sweep: Sweep) -> Trial:
    """Trial `number`, for its training to report its epochs to and ask the pruner about."""
    journal = storage(connection, experiment_id)
    study = optuna.load_study(study_name=keys.study_key(experiment_id), storage=journal, sampler=RandomSampler(),
                              pruner=pruner(sweep))
    study_id = journal.get_study_id_from_name(keys.study_key(experiment_id))
    return Trial(study, journal.get_trial_id_from_study_id_trial_number(study_id, number))


def distributions(sweep: Sweep) -> dict[str, BaseDistribution]:
    """The space: a list of values is categorical (over their indices where a value is not a plain
    scalar, e.g. a list of layer sizes), a range a float or an integer distribution (log, step)."""
    space: dict[str, BaseDistribution] = {}
    for path, values in sweep.params.items():
        if isinstance(values, ParamRange) and values.integer:
            space[path] = IntDistribution(round(values.low), round(values.high), log=values.log,
                                          step=max(1, round(values.step or 1)))
        elif isinstance(values, ParamRange):
            space[path] = FloatDistribution(values.low, values.high, log=values.log, step=values.step)
        else:
            space[path] = CategoricalDistribution(values if _scalars(values) else list(range(len(values))))
    return space


def _scalars(values: list[Any]) -> bool:
    return all(value is None or isinstance(value, str | int | float | bool) for value in values)


def trial_params(sweep: Sweep, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's values as the strategy takes them: a list's own value where the study holds its index,
    a range's as the range types it."""
    values = {}
    for path, space in sweep.params.items():
        value = params[path]
        if isinstance(space, ParamRange):
            values[path] = space.typed(value)
        else:
            values[path] = value if _scalars(space) else space[value]
    return values


def running(study: optuna.Study) -> set[int]:
    """The numbers of the trials asked and not yet told."""
    return {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}


def tell(study: optuna.Study, rows: list[dict[str, Any]]) -> None:
    """Each ended trial's row told to the study: completed with its objective, pruned, or failed (failed,
    stopped, cancelled, or without an objective to tell)."""
    for row in rows:
        value = row["objective"]
        if row["status"] == "completed" and value is not None and math.isfinite(value):
            study.tell(row["trial"], value, skip_if_finished=True)
        elif row["status"] == "pruned":
            study.tell(row["trial"], state=TrialState.PRUNED, skip_if_finished=True)
        else:
            study.tell(row["trial"], state=TrialState.FAIL, skip_if_finished=True)


def ask(study: optuna.Study, sweep: Sweep, count: int, recorded: set[int]) -> list[tuple[int, dict[str, Any]]]:
    """The next `count` trials (number, the strategy's values). Trials an earlier run of this step asked
    but did not get into the record (it was lost meanwhile) are taken first, not asked again."""
    space = distributions(sweep)
    batch = []
    for lost in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if lost.number in recorded:
            continue
        if len(lost.params) == len(space) and len(batch) < count:
            batch.append((lost.number, lost.params))
        else:  # asked but never sampled in full, or beyond this batch
            study.tell(lost.number, state=TrialState.FAIL, skip_if_finished=True)
    while len(batch) < count:
        asked = study.ask(space)
        batch.append((asked.number, asked.params))
    return [(number, trial_params(sweep, params)) for number, params in batch]
