"""Sample market data: the `backtesting` package's real EURUSD hourly and GOOG daily bars."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

SAMPLES = {"EURUSD.csv": "EURUSD_1h.csv", "GOOG.csv": "GOOG_1d.csv"}


def write_sample_data(data_dir: str | Path) -> list[Path]:
    """Convert the shipped CSVs to `{SYMBOL}_{tf}.csv` in `data_dir` (skipping files already there)."""
    spec = importlib.util.find_spec("backtesting")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the 'backtesting' package is not installed: pip install backtesting")
    source_dir = Path(list(spec.submodule_search_locations)[0]) / "test"
    target_dir = Path(data_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source_name, target_name in SAMPLES.items():
        target = target_dir / target_name
        if not target.exists():
            with open(source_dir / source_name, newline="") as src:
                rows = list(csv.reader(src))
            tmp = target.with_suffix(".tmp")
            with open(tmp, "w", newline="") as dst:
                out = csv.writer(dst)
                out.writerow(["timestamp", "open", "high", "low", "close", "volume"])
                for row in rows[1:]:
                    stamp = row[0] if " " in row[0] else row[0] + " 00:00:00"
                    out.writerow([stamp + "+00:00", *row[1:6]])
            tmp.replace(target)
        written.append(target)
    return written
