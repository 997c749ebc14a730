"""The example experiments (examples/experiments/) are requests the producer accepts: read by the CLI's
loader, valid ExperimentRequests, every trial a valid strategy, every walk-forward's folds inside the
sample data; and the loader's refusals name the file or the field."""

from __future__ import annotations

import json

import pytest

from tests.helpers.fixtures import EXAMPLES, REPO
from trainhost.config import load_settings
from trainhost.jobs.experiments import bar_times
from trainhost.jobs.pipeline.experiment_space import folds, with_params
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.jobs.producer import RequestError
from trainhost.jobs.schemas import ExperimentRequest
from trainhost.worker.client import load_experiment_file

EXPERIMENTS = REPO / "examples" / "experiments"
NAMES = ("grid", "walk_forward", "sweep_walk_forward", "ktrdr_squad")


def test_every_example_is_listed_here():
    assert sorted(path.stem for path in EXPERIMENTS.glob("*.yaml")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_an_example_is_an_experiment_the_producer_accepts(name, sample_data_dir):
    raw = load_experiment_file(EXPERIMENTS / f"{name}.yaml")
    assert raw["base"]["strategy_yaml"] == (EXAMPLES / "v3_multi_indicator.yaml").read_text()
    request = ExperimentRequest.model_validate(raw)
    document = dict(parse_strategy(request.base.strategy_yaml).raw)
    trials = request.sweep.trials() if request.sweep else [{}]
    strategies = [parse_strategy(with_params(document, params), request.base.overrides()) for params in trials]
    for params, strategy in zip(trials, strategies, strict=True):
        for path, value in params.items():  # the value landed where the path says
            node = strategy.raw
            for key in path.split("."):
                node = node[key]
            assert node == value, path
    # Every trial is a different training: no swept path is one the strategy's parser does not read.
    resolved = [strategy.model_dump_json(exclude={"raw"}) for strategy in strategies]
    assert len(set(resolved)) == len(trials)
    if request.walk_forward:
        found = folds(bar_times(load_settings({"data_dir": sample_data_dir}), strategies[0]), request.walk_forward)
        assert [fold.test_bars for fold in found] == [800] * 3
        assert all(fold.train_bars == 2000 for fold in found)
    assert len(trials) * (3 if request.walk_forward else 1) <= load_settings().max_experiment_sessions


def test_the_grid_example_is_the_two_by_two_grid():
    request = ExperimentRequest.model_validate(load_experiment_file(EXPERIMENTS / "grid.yaml"))
    assert request.base.epochs == 2 and request.objective.metric == "val_accuracy"
    assert request.sweep.trials() == [{"training.learning_rate": lr, "model.architecture.dropout": dropout}
                                      for lr in (0.001, 0.01) for dropout in (0.1, 0.3)]


def test_a_json_file_and_a_strategy_file_relative_to_it(tmp_path):
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "s.yaml").write_text("name: s\n")
    path = tmp_path / "e.json"
    path.write_text(json.dumps({"base": {"strategy_file": "strategies/s.yaml", "epochs": 2},
                                "walk_forward": {"train": 10, "test": 5}}))
    assert load_experiment_file(path) == {"base": {"strategy_yaml": "name: s\n", "epochs": 2},
                                          "walk_forward": {"train": 10, "test": 5}}


@pytest.mark.parametrize(("content", "named"), [
    ("base: [unclosed", "not valid YAML"),
    ("- a list", "an experiment is a mapping"),
    ("base: {strategy_file: missing.yaml}", "base.strategy_file"),
    ("base: {strategy_file: s.yaml, strategy_yaml: 'name: s'}", "base.strategy_file: give one of"),
])
def test_a_broken_file_is_refused_naming_what_is_wrong(tmp_path, content, named):
    (tmp_path / "s.yaml").write_text("name: s\n")
    path = tmp_path / "e.yaml"
    path.write_text(content)
    with pytest.raises(RequestError) as refused:
        load_experiment_file(path)
    assert refused.value.status == 422 and named in refused.value.message
    with pytest.raises(RequestError, match="No such file"):
        load_experiment_file(tmp_path / "absent.yaml")
