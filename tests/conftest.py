"""Shared fixtures: paths to the shared fixtures and the real sample market data."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.sample_data import write_sample_data

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
STRATEGIES = SHARED / "fixtures" / "ktrdr-strategies"
REFERENCE = SHARED / "fixtures" / "ktrdr-reference"


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory) -> Path:
    """A data root holding EURUSD_1h.csv and GOOG_1d.csv converted from the `backtesting` package."""
    data_dir = tmp_path_factory.mktemp("data")
    write_sample_data(data_dir)
    return data_dir


def strategy_text(name: str) -> str:
    return (STRATEGIES / f"{name}.yaml").read_text()
