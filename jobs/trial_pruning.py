"""A tpe trial's training, pruned: each epoch's validation value (the objective's metric) is reported to
its Optuna trial, and once the study's median pruner finds it behind the completed trials the training
is asked to stop, as a stop request does (after its current batch, a partial model kept). The session
then ends `stopped`, its meta saying why (`experiment.pruned`), and its experiment's row is `pruned`.
The pipeline sees only a reporter whose should_stop() turned true."""

from __future__ import annotations

import logging
from typing import Any

from optuna.exceptions import OptunaError
from optuna.trial import Trial
from redis.exceptions import RedisError
from rq.job import Job

from trainhost.jobs import experiment_study, experiments
from trainhost.jobs.meta import ExperimentLink
from trainhost.jobs.producer import RequestError
from trainhost.jobs.progress import SessionReporter

log = logging.getLogger("trainhost.jobs")


class PruningReporter:
    """The session's reporter, with its epochs also reported to the trial and its stop asked of the pruner."""

    def __init__(self, reporter: SessionReporter, trial: Trial, link: ExperimentLink, metric: str, epochs: int):
        self._reporter, self._trial, self._link, self._metric, self._epochs = reporter, trial, link, metric, epochs
        self.pruned = False

    def __getattr__(self, name: str) -> Any:  # phase, info, batch, resumed, should_suspend: the session's
        return getattr(self._reporter, name)

    def epoch(self, record: dict[str, Any]) -> None:
        self._reporter.epoch(record)
        value = record.get(self._metric)
        if self.pruned or value is None:
            return
        try:
            self._trial.report(value, record["epoch"])
            # After the last epoch there is nothing left to save by stopping.
            self.pruned = record["epoch"] < self._epochs and self._trial.should_prune()
        except (RedisError, OptunaError) as exc:  # the pruner out of reach never fails the training
            log.warning("trial %s of experiment %s: epoch %s not reported to its study (%s)", self._link["trial"],
                        self._link["experiment_id"], record["epoch"], exc)

    def should_stop(self) -> bool:
        return self.pruned or self._reporter.should_stop()

    def ended(self, result: dict[str, Any]) -> None:
        """The session's meta says it was pruned, when that is why it stopped."""
        if self.pruned and result.get("stopped"):
            self._reporter.info(experiment={**self._link, "pruned": True})


def pruning_reporter(job: Job, reporter: SessionReporter, epochs: int) -> PruningReporter | None:
    """The reporter for a training of `epochs` that is a trial of a tpe search with pruning; None for any other."""
    link: ExperimentLink | None = job.meta.get("experiment")
    if not link or link["fold"] is not None:
        return None
    try:
        record = experiments.load_record(job.connection, link["experiment_id"])
        if record["search"] != "tpe":
            return None
        request = experiments.request_of(record)
        if not request.sweep.pruning:
            return None
        trial = experiment_study.trial(job.connection, link["experiment_id"], link["trial"], request.sweep)
    except (RequestError, RedisError, OptunaError, KeyError) as exc:  # KeyError: no such trial in the study
        log.warning("job %s: trained without pruning (%s)", job.id, exc)
        return None
    return PruningReporter(reporter, trial, link, request.objective.metric, epochs)
