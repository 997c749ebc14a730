"""Where market data files are (`{SYMBOL}_{timeframe}.csv` under a data root, docs/ktrdr-semantics.md
§5.1) and whether a run's are there, or can be resampled from a finer timeframe of the run whose
file is (§5.2, our policy).

Light on purpose (no pandas): the producer checks a request's data with it before enqueueing;
reading the files is `data.py`'s.
"""

from __future__ import annotations

from pathlib import Path

from trainhost.jobs.pipeline.errors import DataError
from trainhost.jobs.pipeline.strategy import Strategy, symbol_error
from trainhost.jobs.pipeline.timeframes import divides, timeframe_error, timeframe_minutes

MAX_LISTED = 20  # files named in a "not found" message


def data_file_name(symbol: str, timeframe: str) -> str:
    return f"{symbol}_{timeframe}.csv"


def data_file_path(data_dir: str | Path, symbol: str, timeframe: str, *, must_exist: bool = False) -> Path:
    """The data file for (symbol, timeframe), guaranteed to lie inside the data root.

    Raises DataError for a malformed symbol or timeframe, for a path that (after resolving
    symlinks) leaves the data root, or, with `must_exist`, for a file that is not there.
    """
    for what, value, check in (("symbol", symbol, symbol_error), ("timeframe", timeframe, timeframe_error)):
        if (message := check(value)) is not None:
            raise DataError(f"{what} {message}")
    root = Path(data_dir).resolve()
    path = (root / data_file_name(symbol, timeframe)).resolve()
    if not path.is_relative_to(root):
        raise DataError(f"{data_file_name(symbol, timeframe)} leads outside the data root {root}; refused")
    if must_exist and not path.is_file():
        raise DataError(f"no data file {data_file_name(symbol, timeframe)} in {root}; available: {_available(root)}")
    return path


def _available(root: Path) -> str:
    names = sorted(p.name for p in root.glob("*.csv")) if root.is_dir() else []
    if not names:
        return "(none)"
    more = f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else ""
    return ", ".join(names[:MAX_LISTED]) + more


def resample_source(timeframe: str, present: list[str], base: str | None = None) -> str | None:
    """The timeframe to resample a missing `timeframe` from: the base if it divides it, else the
    coarsest of `present` that does; None when none does (a finer timeframe cannot be made)."""
    candidates = [tf for tf in present if divides(tf, timeframe)]
    if base in candidates:
        return base
    return max(candidates, key=lambda tf: (timeframe_minutes(tf) or 0), default=None)


def check_data_available(data_dir: str | Path, strategy: Strategy) -> None:
    """Refuse (DataError naming every missing file) unless each symbol x timeframe file exists or can
    be resampled from a finer timeframe of the run whose file exists."""
    missing = []
    for symbol in strategy.symbols:
        timeframes = strategy.feature_timeframes
        present = [tf for tf in timeframes if data_file_path(data_dir, symbol, tf).is_file()]
        for timeframe in timeframes:
            if timeframe in present:
                continue
            if resample_source(timeframe, present) is None:
                missing.append(data_file_name(symbol, timeframe))
    if missing:
        root = Path(data_dir).resolve()
        hint = ("; a missing timeframe is resampled only from a finer one of the run whose file is present"
                if len(strategy.feature_timeframes) > 1 else "")
        raise DataError(f"no data file {', '.join(missing)} in {root}{hint}; available: {_available(root)}")


def evaluation_scope(strategy: Strategy, symbol: str | None, timeframe: str | None) -> tuple[str, str]:
    """The symbol and timeframe an evaluation of a model trained with `strategy` runs on: the
    request's, else the model's own; the timeframe must be the model's base timeframe."""
    timeframe = timeframe or strategy.base_timeframe
    if timeframe != strategy.base_timeframe:
        raise DataError(f"timeframe: the model was trained on {strategy.base_timeframe}, got {timeframe!r}")
    return symbol or strategy.symbols[0], timeframe


def check_evaluation_data(data_dir: str | Path, strategy: Strategy, symbol: str | None,
                          timeframe: str | None) -> None:
    """check_data_available() for an evaluation: every timeframe the model reads, for the evaluated
    symbol, present or resampled from a finer one (as training allows)."""
    symbol, _ = evaluation_scope(strategy, symbol, timeframe)
    check_data_available(data_dir, strategy.model_copy(update={"symbols": [symbol]}))
