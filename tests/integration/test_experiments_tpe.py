"""A tpe search through the HTTP API (real redis-server, worker and web processes): Optuna's study in
our Redis, asked a batch at a time by the experiment's driver job, its trials pruned by the median
pruner; and the pruning hook itself against a real study."""

from __future__ import annotations

import optuna
import pytest
import requests

from tests.integration.conftest import EXPERIMENTS_AUTH as AUTH
from trainhost.jobs import experiment_study, keys
from trainhost.jobs.pipeline.experiment_space import Objective, Sweep
from trainhost.jobs.trial_pruning import PruningReporter

# The Redis journal and the constant liar are marked experimental by Optuna.
pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]
LR = "training.learning_rate"  # (model.training is KTRDR's layout, which the parser does not read)
DECIDED = {"completed", "pruned", "failed"}
TPE = {"params": {LR: {"low": 1e-4, "high": 1e-1, "log": True}}, "search": "tpe", "max_trials": 6,
       "parallelism": 2, "pruning": True, "seed": 3}


def test_a_tpe_search_with_pruning_ends_with_every_trial_decided_and_asks_again_what_it_asked(lab, redis_conn):
    lab.worker()
    response = lab.submit(8, sweep=TPE, objective={"metric": "val_loss", "direction": "minimize"})
    assert response.status_code == 202, response.text
    assert response.json()["trials"] == 6 and response.json()["sessions"] == 6
    experiment_id = response.json()["experiment_id"]
    first = lab.get(experiment_id)
    assert first["children"]["total"] == 6  # the trials still to be asked count from the start
    done = lab.wait_until(experiment_id, lambda e: e["status"] == "completed", 600, "the tpe experiment to complete")

    rows = done["rows"]
    assert [row["trial"] for row in rows] == list(range(6)) and done["children"] == {
        "total": 6, "done": 6, "by_status": done["children"]["by_status"]}
    assert {row["status"] for row in rows} <= DECIDED, rows
    completed = [row for row in rows if row["status"] == "completed"]
    assert completed
    assert done["best"]["trial"] == min(completed, key=lambda row: row["objective"])["trial"]
    assert all(1e-4 <= row["params"][LR] <= 1e-1 for row in rows)
    assert len({row["params"][LR] for row in rows}) == 6

    # The study holds what the rows say: each trial told how it ended, the completed with their objective.
    study = optuna.load_study(study_name=keys.study_key(experiment_id),
                              storage=experiment_study.storage(redis_conn, experiment_id))
    states = {trial.number: trial.state for trial in study.trials}
    assert len(states) == 6
    told = {"completed": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
            "failed": optuna.trial.TrialState.FAIL}
    assert {row["trial"]: told[row["status"]] for row in rows} == states
    for row in completed:
        assert study.trials[row["trial"]].value == pytest.approx(row["objective"])
        assert study.trials[row["trial"]].params[LR] == pytest.approx(row["params"][LR])
        assert len(study.trials[row["trial"]].intermediate_values) == 8  # each epoch reported
    for row in rows:  # a pruned trial's session stopped early, its partial model kept
        child = requests.get(f"{lab.url}/training/status/{row['sessions'][0]}", timeout=10).json()
        assert child["experiment"].get("pruned", False) is (row["status"] == "pruned")
        if row["status"] == "pruned":
            assert child["status"] == "stopped"
            assert child["result"]["training_metrics"]["epochs_trained"] < 8

    # The same request again asks the same first batch (the sampler is seeded), then is stopped.
    again = lab.submit(8, sweep=TPE, objective={"metric": "val_loss", "direction": "minimize"}).json()["experiment_id"]
    asked = lab.wait_until(again, lambda e: len(e["rows"]) >= 2, 120, "the second experiment's first batch")
    assert [row["params"] for row in asked["rows"]] == [row["params"] for row in rows[:2]]
    assert requests.post(f"{lab.url}/experiments/{again}/stop", headers=AUTH, timeout=30).status_code == 200
    stopped = lab.wait_until(again, lambda e: e["status"] == "stopped", 120, "the second experiment to stop")
    assert len(stopped["rows"]) == 2 and stopped["children"]["total"] == 2  # nothing asked after the stop
    assert len(optuna.load_study(study_name=keys.study_key(again),
                                 storage=experiment_study.storage(redis_conn, again)).trials) == 2


def test_a_tpe_search_of_walk_forwards_tells_each_trial_its_stitched_out_of_sample_objective(lab, redis_conn):
    lab.worker()
    sweep = {**TPE, "max_trials": 2, "parallelism": 1, "pruning": False}
    response = lab.submit(epochs=2, sweep=sweep, walk_forward={"train": 2000, "test": 800},
                          objective={"metric": "oos.sharpe"})
    assert response.status_code == 202, response.text
    assert response.json()["sessions"] == 6 and response.json()["folds"] == 3
    experiment_id = response.json()["experiment_id"]
    done = lab.wait_until(experiment_id, lambda e: e["status"] == "completed", 600, "the tpe walk-forward to complete")
    assert [len(row["sessions"]) for row in done["rows"]] == [3, 3] and done["children"]["done"] == 6
    study = optuna.load_study(study_name=keys.study_key(experiment_id),
                              storage=experiment_study.storage(redis_conn, experiment_id))
    for row in done["rows"]:
        assert row["status"] == "completed" and row["objective"] == row["oos"]["sharpe"]
        assert study.trials[row["trial"]].value == pytest.approx(row["objective"])


def test_a_tpe_space_is_refused_before_anything_is_enqueued(lab, redis_conn):
    broken = lab.submit(sweep={**TPE, "params": {"model.architecture.dropout": {"low": 0.1, "high": 1.5}}})
    assert broken.status_code == 422
    message = broken.json()["error"]["message"]
    assert "model.architecture.dropout=1.5" in message and "dropout" in message
    unbounded = lab.submit(sweep={key: value for key, value in TPE.items() if key != "max_trials"})
    assert unbounded.status_code == 422 and "max_trials" in unbounded.json()["error"]["message"]
    folded = lab.submit(sweep=TPE, walk_forward={"train": 2000, "test": 800})
    assert folded.status_code == 422 and "sweep.pruning" in folded.json()["error"]["message"]
    assert not redis_conn.keys("rq:job:*") and not redis_conn.keys("trainhost:experiment*")


class Recorder:
    """A session's reporter as far as the pruning hook uses it."""

    def __init__(self):
        self.epochs, self.infos, self.stop = [], [], False

    def epoch(self, record):
        self.epochs.append(record)

    def info(self, **fields):
        self.infos.append(fields)

    def should_stop(self):
        return self.stop


def test_the_hook_prunes_a_trial_behind_the_completed_ones_and_not_one_that_keeps_up(redis_conn):
    sweep = Sweep.model_validate({**TPE, "max_trials": 4})
    study = experiment_study.open_study(redis_conn, "hook", sweep, Objective(metric="val_loss",
                                                                             direction="minimize"), 0)
    assert [number for number, _ in experiment_study.ask(study, sweep, 4, set())] == [0, 1, 2, 3]
    for number in (0, 1):
        trial = experiment_study.trial(redis_conn, "hook", number, sweep)
        for epoch in range(1, 9):
            trial.report(1.0 - 0.05 * epoch, epoch)
    experiment_study.tell(study, [{"trial": 0, "status": "completed", "objective": 0.6},
                                  {"trial": 1, "status": "completed", "objective": 0.6}])

    def hook(number):
        link = {"experiment_id": "hook", "trial": number, "fold": None}
        reporter = Recorder()
        return PruningReporter(reporter, experiment_study.trial(redis_conn, "hook", number, sweep), link,
                               "val_loss", 8), reporter, link

    behind, reporter, link = hook(2)
    behind.epoch({"epoch": 1, "val_loss": 2.0, "val_accuracy": 0.1})
    assert not behind.should_stop()  # never on its first epoch alone
    behind.epoch({"epoch": 2, "val_loss": 2.0, "val_accuracy": 0.1})
    assert behind.should_stop() and behind.pruned
    assert [record["epoch"] for record in reporter.epochs] == [1, 2]  # the session still saw every epoch
    behind.ended({"stopped": True})
    assert reporter.infos == [{"experiment": {**link, "pruned": True}}]
    assert study.trials[2].intermediate_values == {1: 2.0, 2: 2.0}

    keeping_up, reporter, _ = hook(3)
    for epoch in range(1, 9):
        keeping_up.epoch({"epoch": epoch, "val_loss": 0.9 - 0.05 * epoch})
    assert not keeping_up.should_stop()
    reporter.stop = True  # a stop request still stops it
    assert keeping_up.should_stop()
    keeping_up.ended({"stopped": True})
    assert reporter.infos == []  # stopped, not pruned
