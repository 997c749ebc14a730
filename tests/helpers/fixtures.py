"""The repository's own test data: KTRDR strategies and KTRDR's reference outputs (tests/fixtures/README.md).

Nothing here reads a file when imported: a missing file fails the test that asks for it, by name.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
EXAMPLES = REPO / "examples" / "strategies"
STRATEGIES = FIXTURES / "strategies"
REFERENCE = FIXTURES / "ktrdr-reference"
KTRDR_BACKTEST = FIXTURES / "ktrdr-backtest"  # KTRDR's three recorded backtests, one folder each
KTRDR_MODEL = KTRDR_BACKTEST / "model"  # the model they ran, as KTRDR's ModelStorage saved it

# The ten KTRDR strategies (v3_multi_indicator is also the users' example, so it lives in examples/).
STRATEGY_NAMES = (
    "experiment_h003_lstm", "regime_classifier_seed_v1", "regression_example_v3", "trend_tb_signal_v1",
    "v3_e2e_test", "v3_minimal", "v3_multi_indicator", "v3_multi_output_indicator", "v3_multi_timeframe",
    "v3_single_indicator",
)
# The eight of them KTRDR's training path was run on (tests/fixtures/ktrdr-reference/<name>/).
REFERENCE_NAMES = (
    "regime_classifier_seed_v1", "regression_example_v3", "trend_tb_signal_v1", "v3_e2e_test", "v3_minimal",
    "v3_multi_indicator", "v3_multi_output_indicator", "v3_single_indicator",
)
OHLCV = ["open", "high", "low", "close", "volume"]


def strategy_path(name: str) -> Path:
    """A KTRDR strategy file by name: the users' example if there is one, else the test fixture."""
    example = EXAMPLES / f"{name}.yaml"
    return example if example.exists() else STRATEGIES / f"{name}.yaml"


def strategy_text(name: str) -> str:
    return strategy_path(name).read_text()


@cache
def _read(path: Path, parse_dates: bool):
    import pandas as pd

    return pd.read_csv(path, index_col=0, parse_dates=parse_dates)


def reference_ohlcv(parse_dates: bool = False):
    """The 5,000 EURUSD 1h bars every reference run used (a copy: callers may modify it)."""
    return _read(REFERENCE / "ohlcv.csv.gz", parse_dates).copy()


def reference_frame(name: str, kind: str, parse_dates: bool = False):
    """KTRDR's `kind` output (indicators, fuzzy_raw, features, labels) for strategy `name`, one row a bar;
    `indicators` comes with the OHLCV columns in front, as KTRDR wrote it."""
    frame = _read(REFERENCE / name / f"{kind}.csv.gz", parse_dates).copy()
    if kind == "indicators":
        frame = reference_ohlcv(parse_dates).join(frame)
    return frame


def reference_summary(name: str) -> dict:
    import json

    return json.loads((REFERENCE / name / "summary.json").read_text())


def ktrdr_backtest_frame(run: str, kind: str):
    """One file of a KTRDR backtest run (`decisions`, `fills`, `trades`, `equity_curve`) as KTRDR wrote it."""
    import pandas as pd

    return pd.read_csv(KTRDR_BACKTEST / run / f"{kind}.csv.gz")
