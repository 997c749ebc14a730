"""A model folder saved by KTRDR itself (its `ModelStorage`: `model.pt` as a state dict,
`config.json`, `features.json`, `metadata_v3.json`), read as one of ours, so a KTRDR user can
evaluate and backtest the models they already have. Light (json only): the producer validates an
evaluation request with it.

KTRDR writes no completion marker; its folder is recognised by its own files, and a folder of
ours is never taken for one (ours carry our `metadata.json`, with the versions that wrote it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.model_paths import MAX_METADATA_BYTES, is_regular_file, open_model_file
from trainhost.jobs.pipeline.strategy import StrategyError, parse_strategy

KTRDR_FILES = ("model.pt", "config.json", "metadata_v3.json")


def is_ktrdr_folder(folder: Path) -> bool:
    """KTRDR's files are there and no metadata.json of ours (an interrupted save of ours also holds
    KTRDR's files, beside our metadata.json: it stays refused for its missing marker)."""
    if not all(is_regular_file(folder / name) for name in KTRDR_FILES):
        return False
    if not is_regular_file(folder / "metadata.json"):
        return True
    try:
        ours = "versions" in _read_json(folder, "metadata.json", str(folder))
    except PipelineError:
        return False
    return not ours


def ktrdr_metadata(folder: Path, where: str | None = None) -> dict[str, Any]:
    """Our metadata.json's content for a KTRDR folder: the strategy parsed from its config.json,
    the feature order, normalisation, symbol and timeframes from its metadata_v3.json."""
    shown = where or str(folder)
    v3 = _read_json(folder, "metadata_v3.json", shown)
    config = _read_json(folder, "config.json", shown)
    try:
        strategy = parse_strategy(config)
    except StrategyError as exc:
        raise PipelineError(f"config.json in {shown}: not a strategy this service can run: {exc}") from None
    features = v3.get("resolved_features")
    if features != strategy.feature_ids:
        raise PipelineError(f"metadata_v3.json in {shown}: resolved_features {features!r} are not the features "
                            f"its config.json computes ({strategy.feature_ids!r}); the model cannot be fed")
    normalization = v3.get("normalization_params") or {}
    if not isinstance(normalization, dict):
        raise PipelineError(f"metadata_v3.json in {shown}: normalization_params must be an object")
    symbols = v3.get("training_symbols") or strategy.symbols
    return {
        "source": "ktrdr",
        "strategy_name": str(v3.get("strategy_name") or strategy.name),
        "created_at": v3.get("created_at"),
        "strategy": strategy.to_dict(),
        "features": features,
        "normalization": normalization,
        "task": strategy.task,
        "labels": strategy.label_metadata,
        "model": strategy.model_spec,
        "symbol": symbols[0],
        "timeframe": strategy.base_timeframe,
        "timeframes": strategy.feature_timeframes,
    }


def _read_json(folder: Path, name: str, shown: str) -> dict[str, Any]:
    with open_model_file(folder, name, shown) as file:
        raw = file.read(MAX_METADATA_BYTES + 1)
    try:
        value = json.loads(raw[:MAX_METADATA_BYTES].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise PipelineError(f"{name} in {shown}: is not valid JSON") from None
    if not isinstance(value, dict):
        raise PipelineError(f"{name} in {shown}: must be a JSON object")
    return value
