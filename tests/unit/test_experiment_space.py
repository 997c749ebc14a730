"""An experiment's space: a sweep's trials (grid order, seeded random draws, ranges typed as asked, a
tpe search's extremes and refusals), a walk-forward's folds (bars or durations, rolling or anchored,
full test windows that follow each other without overlap), and strategy variants by dotted path."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from tests.helpers.processes import heavy_imports
from trainhost.jobs.pipeline.experiment_space import Fold, Objective, ParamRange, Sweep, WalkForward, folds, with_params

LR = "training.learning_rate"
DROPOUT = "model.architecture.dropout"


def hourly(count: int, start: datetime = datetime(2020, 1, 1, tzinfo=UTC)) -> list[datetime]:
    return [start + timedelta(hours=i) for i in range(count)]


# -- sweeps --------------------------------------------------------------------------------------------


def test_a_grid_is_the_product_of_its_axes_in_order_the_first_slowest():
    sweep = Sweep(params={LR: [0.001, 0.01], DROPOUT: ParamRange(low=0.1, high=0.3, step=0.1)})
    assert sweep.trials() == [{LR: lr, DROPOUT: dropout} for lr in (0.001, 0.01) for dropout in (0.1, 0.2, 0.3)]
    capped = Sweep(params=sweep.params, max_trials=4).trials()
    assert capped == sweep.trials()[:4]


def test_a_grid_refuses_a_range_without_a_step():
    with pytest.raises(ValidationError, match=f"params.{LR}: a grid needs"):
        Sweep(params={LR: {"low": 0.001, "high": 0.1}})


def test_random_draws_are_reproducible_by_seed_and_inside_their_ranges():
    params = {LR: {"low": 1e-4, "high": 1e-1, "log": True}, "model.architecture.hidden_layers": [[32], [64, 32]],
              "training.batch_size": {"low": 16, "high": 128, "integer": True},
              DROPOUT: {"low": 0.0, "high": 0.5, "step": 0.25}}
    first = Sweep(params=params, search="random", max_trials=50, seed=7).trials()
    assert first == Sweep(params=params, search="random", max_trials=50, seed=7).trials()
    assert first != Sweep(params=params, search="random", max_trials=50, seed=8).trials()
    assert len(first) == 50
    for trial in first:
        assert 1e-4 <= trial[LR] <= 1e-1
        assert trial["model.architecture.hidden_layers"] in ([32], [64, 32])
        assert isinstance(trial["training.batch_size"], int) and 16 <= trial["training.batch_size"] <= 128
        assert trial[DROPOUT] in (0.0, 0.25, 0.5)
    # A log range draws evenly in the exponent: about as many below 1e-2.5 as above.
    below = sum(trial[LR] < 10 ** -2.5 for trial in first)
    assert 15 <= below <= 35


def test_a_random_or_tpe_search_needs_a_number_of_trials():
    for search in ("random", "tpe"):
        with pytest.raises(ValidationError, match=f"max_trials: a {search} search"):
            Sweep(params={LR: [0.01]}, search=search)


def test_ranges_are_typed_stepped_and_ordered():
    assert ParamRange(low=1, high=10, step=3, integer=True).grid() == [1, 4, 7, 10]
    assert ParamRange(low=0.1, high=0.3, step=0.1).grid() == [0.1, 0.2, 0.3]  # no 0.30000000000000004
    assert ParamRange(low=2, high=9, integer=True).typed(4.6) == 5
    assert ParamRange(low=1e-4, high=1e-1, log=True).extremes() == (1e-4, 1e-1)
    assert ParamRange(low=0.0, high=1.0, step=0.3).extremes() == (0.0, 0.9)  # the last grid point
    for bad, named in (({"low": 2, "high": 1}, "high must not be below low"),
                       ({"low": 0, "high": 1, "log": True}, "a log range needs low > 0"),
                       ({"low": 0, "high": 1, "step": 0.0001}, "step gives more than")):
        with pytest.raises(ValidationError, match=named):
            ParamRange(**bad)


def test_a_tpe_search_is_asked_of_its_study_and_checked_by_its_extremes():
    sweep = Sweep(params={LR: {"low": 1e-4, "high": 1e-1, "log": True}, DROPOUT: [0.1, 0.2, 0.3]}, search="tpe",
                  max_trials=6, parallelism=2, pruning=True)
    assert sweep.extremes() == [{LR: 1e-4}, {LR: 1e-1}, {DROPOUT: 0.1}, {DROPOUT: 0.2}, {DROPOUT: 0.3}]
    with pytest.raises(ValueError, match="asks its trials of its study"):
        sweep.trials()
    with pytest.raises(ValidationError, match="pruning: only a tpe search"):
        Sweep(params={LR: [0.01]}, pruning=True)
    with pytest.raises(ValidationError, match=f"params.{LR}: a tpe range is either log or stepped"):
        Sweep(params={LR: {"low": 1e-4, "high": 1e-1, "log": True, "step": 0.01}}, search="tpe", max_trials=3)


def test_a_parameter_is_a_dotted_path_with_one_to_a_thousand_values():
    with pytest.raises(ValidationError, match="a parameter is a dotted path"):
        Sweep(params={"model..dropout": [0.1]})
    with pytest.raises(ValidationError, match="give 1 to 1000 values"):
        Sweep(params={DROPOUT: []})


def test_an_objective_reads_the_validation_split_or_the_stitched_out_of_sample_backtest():
    assert Objective(metric="val_loss", direction="minimize").better(0.5, 0.6)
    assert Objective().better(0.6, 0.5)
    Objective(metric="oos.sharpe")
    with pytest.raises(ValidationError, match="the test split is never an objective"):
        Objective(metric="test_accuracy")


# -- folds ---------------------------------------------------------------------------------------------


def assert_consecutive_full_test_windows(times: list[datetime], found: list[Fold], test_bars: int) -> None:
    position = {moment: index for index, moment in enumerate(times)}
    for fold in found:
        assert fold.test_bars == test_bars
        assert position[fold.test_end] - position[fold.test_start] + 1 == test_bars
        assert position[fold.test_start] - position[fold.train_start] == fold.train_bars
    for before, after in zip(found, found[1:], strict=False):
        assert before.test_end < after.test_start  # no overlap
        assert position[after.test_start] == position[before.test_end] + 1  # and no gap (step = test)


def test_rolling_folds_in_bars_keep_their_train_length_and_drop_a_partial_last_window():
    times = hourly(1000)
    found = folds(times, WalkForward(train=400, test=150))
    assert [(f.train_bars, f.test_bars) for f in found] == [(400, 150)] * 4  # 400 + 4 x 150 = 1000
    assert [f.train_start for f in found] == [times[0], times[150], times[300], times[450]]
    assert_consecutive_full_test_windows(times, found, 150)
    assert [f.index for f in found] == [0, 1, 2, 3]
    assert len(folds(hourly(999), WalkForward(train=400, test=150))) == 3  # the fourth would not be full


def test_anchored_folds_grow_their_train_window_from_the_first_bar():
    times = hourly(1000)
    found = folds(times, WalkForward(train=400, test=150, anchored=True))
    assert all(f.train_start == times[0] for f in found)
    assert [f.train_bars for f in found] == [400, 550, 700, 850]
    assert_consecutive_full_test_windows(times, found, 150)


def test_folds_in_durations_count_the_bars_inside_them():
    times = hourly(24 * 20)
    found = folds(times, WalkForward(train="5d", test="2d"))
    assert len(found) == 7  # 5 days, then 7 test windows of 2 days fill the 20
    assert all(f.train_bars == 5 * 24 and f.test_bars == 2 * 24 for f in found)
    assert_consecutive_full_test_windows(times, found, 48)
    assert found[0].test_start == times[0] + timedelta(days=5)


def test_a_longer_step_skips_bars_between_test_windows_and_a_shorter_one_is_refused():
    times = hourly(600)
    found = folds(times, WalkForward(train=200, test=100, step=200))  # every other window tested
    assert [f.test_start for f in found] == [times[200], times[400]]
    assert all(a.test_end < b.test_start for a, b in zip(found, found[1:], strict=False))
    for step, test in ((50, 100), ("1d", "2d")):
        with pytest.raises(ValidationError, match="step: shorter than test, the test windows would overlap"):
            WalkForward(train=200, test=test, step=step)
    with pytest.raises(ValidationError, match="step: give it as test is given"):
        WalkForward(train=200, test=100, step="5d")


def test_too_few_bars_give_no_fold_and_a_bad_window_is_refused():
    assert folds(hourly(100), WalkForward(train=80, test=30)) == []
    for bad in (0, "30x", True):
        with pytest.raises(ValidationError):
            WalkForward(train=bad, test=10)


def test_a_fold_reads_back_what_it_wrote():
    fold = folds(hourly(300), WalkForward(train=100, test=50))[1]
    assert Fold.from_dict(fold.as_dict()) == fold


# -- variants ------------------------------------------------------------------------------------------


def test_with_params_sets_paths_creating_mappings_and_leaves_the_document_alone():
    document = {"training": {"learning_rate": 0.001, "epochs": 5}, "model": {"type": "mlp"},
                "indicators": {"rsi_14": {"period": 14}}}
    variant = with_params(document, {LR: 0.01, "indicators.rsi_14.period": 21, DROPOUT: 0.2})
    assert variant == {"training": {"learning_rate": 0.01, "epochs": 5},
                       "model": {"type": "mlp", "architecture": {"dropout": 0.2}},
                       "indicators": {"rsi_14": {"period": 21}}}
    assert document["training"]["learning_rate"] == 0.001 and "architecture" not in document["model"]
    with pytest.raises(ValueError, match="'training' is not a mapping"):
        with_params({"training": 3}, {LR: 0.01})


def test_the_producer_and_the_web_side_of_experiments_import_no_optuna_nor_torch():
    assert heavy_imports(["trainhost.jobs.experiments", "trainhost.status_api.experiments"],
                         ("optuna", "torch", "pandas", "numpy")) == []


def test_a_gap_lies_between_each_fold_s_train_and_test_windows():
    times = [datetime(2021, 1, 1, tzinfo=UTC) + timedelta(hours=i) for i in range(1000)]
    found = folds(times, WalkForward(train=300, test=100, gap=20))
    position = {t: i for i, t in enumerate(times)}
    assert len(found) == 6  # 300 + 20 + 100, then each next fold 100 bars on
    for fold in found:
        assert position[fold.test_start] - position[fold.train_end] == 21  # 20 bars in neither window
        assert position[fold.train_end] - position[fold.train_start] + 1 == fold.train_bars == 300
    assert all(a.test_end < b.test_start for a, b in zip(found, found[1:], strict=False))
    assert Fold.from_dict(found[0].as_dict()) == found[0]
