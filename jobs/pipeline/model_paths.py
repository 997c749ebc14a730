"""Model folders named by users, confined to models_dir (pure Python: the light client uses it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trainhost.jobs.pipeline.errors import PipelineError

COMPLETE_MARKER = "COMPLETE"


def resolve_model_path(models_dir: str | Path, model_path: str | Path) -> Path:
    """`model_path` (absolute, or relative to models_dir) resolved with symlinks followed; refused
    unless it lies inside models_dir."""
    root = Path(models_dir).resolve()
    candidate = Path(model_path)
    try:
        resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    except (ValueError, OSError) as exc:  # e.g. an embedded NUL byte, a symlink loop
        raise PipelineError(f"model_path: {str(model_path)!r} is not a usable path ({exc})") from None
    if resolved != root and root not in resolved.parents:
        raise PipelineError(f"model_path: {str(model_path)!r} is outside the models directory")
    return resolved


def read_model_summary(models_dir: str | Path, model_path: str | Path) -> dict[str, Any]:
    """Strategy name, symbol, timeframe and strategy (a dict) of a complete saved model (reads
    metadata.json only)."""
    folder = resolve_model_path(models_dir, model_path)
    if not (folder / COMPLETE_MARKER).is_file():
        raise PipelineError(f"model_path: {str(model_path)!r} is not a complete saved model folder")
    metadata = json.loads((folder / "metadata.json").read_text())
    return {"strategy": metadata["strategy_name"], "symbol": metadata["symbol"],
            "timeframe": metadata["timeframe"], "path": str(folder), "spec": metadata["strategy"]}
