"""Fixtures every test may use: the real sample market data (test data helpers: tests/helpers/fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainhost.worker.sample_data import write_sample_data


@pytest.fixture(scope="session")
def sample_data_dir(tmp_path_factory) -> Path:
    """A data root holding EURUSD_1h.csv and GOOG_1d.csv converted from the `backtesting` package."""
    data_dir = tmp_path_factory.mktemp("data")
    write_sample_data(data_dir)
    return data_dir
