"""Model folders on disk (DESIGN.md "Artifacts", docs/ktrdr-semantics.md §11) and loading them back.

`{models_dir}/{strategy}/{timeframe}_v{N}/` holds model.pt (a CPU state dict), metadata.json,
history.json, optionally checkpoint.pt, KTRDR's own metadata_v3.json, features.json and
config.json when the trainer supplies them (`extra_files`), and a `COMPLETE` marker written last;
readers refuse a folder without it. `{timeframe}_latest` is a relative symlink to the newest
complete version.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import nn

from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.metrics import predict_logits
from trainhost.jobs.pipeline.model import build_model
from trainhost.jobs.pipeline.model_paths import COMPLETE_MARKER, open_model_file, read_saved_metadata
from trainhost.jobs.pipeline.names import FOLDER_NAME_RULE, folder_name_error

NAME = re.compile(r"[A-Za-z0-9_.-]+")


def save_artifacts(
    models_dir: str | Path,
    strategy_name: str,
    timeframe: str,
    *,
    state_dict: dict[str, torch.Tensor],
    metadata: dict,
    history: list[dict],
    checkpoint_path: Path | None = None,
    extra_files: dict[str, dict] | None = None,
    fence: Callable[[str, Path], None] | None = None,
) -> Path:
    """Write a new version folder and point `{timeframe}_latest` at it; return the folder.

    `extra_files` maps further JSON file names (e.g. KTRDR's metadata_v3.json) to their content.
    Versions are claimed with os.mkdir, so concurrent savers never share a folder.
    `fence(stage, path)` (a queued session's attempt) is called with "claim" before a version is
    claimed and with "complete" before COMPLETE is written; raising stops the save, and a folder
    refused its COMPLETE is removed.
    """
    for what, name in (("strategy name", strategy_name), ("timeframe", timeframe)):
        if folder_name_error(name) is not None:  # the strategy validator's rule too
            raise PipelineError(f"{what} {name!r} cannot name a model folder: use {FOLDER_NAME_RULE}")
    root = Path(models_dir).resolve()
    strategy_dir = root / strategy_name
    strategy_dir.mkdir(parents=True, exist_ok=True)
    if not strategy_dir.resolve().is_relative_to(root):
        raise PipelineError(f"{strategy_dir} leads outside the models folder {root}")
    # Serialise first: a value JSON cannot hold fails before any folder exists.
    metadata_text = json.dumps(metadata, indent=2)
    history_text = json.dumps(history, indent=2)
    extra_texts = {}
    for file_name, content in (extra_files or {}).items():
        if not NAME.fullmatch(file_name) or not file_name.endswith(".json") or file_name in (
                "metadata.json", "history.json"):
            raise PipelineError(f"extra file name {file_name!r} must be a plain *.json name of its own")
        extra_texts[file_name] = json.dumps(content, indent=2)
    cpu_state = {key: value.detach().cpu() for key, value in state_dict.items()}

    if fence is not None:
        fence("claim", strategy_dir)
    version = _highest_version(strategy_dir, timeframe) + 1
    while True:
        folder = strategy_dir / f"{timeframe}_v{version}"
        try:
            os.mkdir(folder)
            break
        except FileExistsError:
            version += 1
    write_atomic(folder / "model.pt", lambda f: torch.save(cpu_state, f))
    write_atomic(folder / "metadata.json", lambda f: f.write(metadata_text.encode()))
    write_atomic(folder / "history.json", lambda f: f.write(history_text.encode()))
    for file_name, text in extra_texts.items():
        write_atomic(folder / file_name, lambda f, text=text: f.write(text.encode()))
    if checkpoint_path is not None:
        with open(checkpoint_path, "rb") as source:
            write_atomic(folder / "checkpoint.pt", lambda f: shutil.copyfileobj(source, f))
    if fence is not None:
        try:
            fence("complete", folder)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a superseded attempt leaves no half folder
            raise
    mark_complete(folder)
    return folder


def mark_complete(folder: Path) -> None:
    """Write `folder`'s COMPLETE marker (every other file is in place) and point its `_latest` at the
    newest complete version; again after a crash between a commit and the marker."""
    write_atomic(folder / COMPLETE_MARKER, lambda f: f.write(b"complete\n"))
    _point_latest(folder.parent, folder.name.rpartition("_v")[0])


@dataclass
class Predictor:
    """A loaded model. MLPs take rows of features in `feature_names` order, (n, features); LSTM and
    GRU models take windows of consecutive rows, (n, sequence_length, features). Classifiers give
    logits, probabilities and class indices; regression models one predicted return per sample."""

    model: nn.Module
    metadata: dict
    feature_names: list[str] = field(default_factory=list)

    @property
    def spec(self) -> dict:
        return self.metadata["model"]

    @property
    def task(self) -> str:
        return self.metadata.get("task", "classification")

    def predict_logits(self, X: np.ndarray) -> np.ndarray:
        spec = self.spec
        expected = spec["input_size"]
        if spec.get("type", "mlp") == "mlp":
            if np.ndim(X) != 2 or np.shape(X)[1] != expected:
                raise PipelineError(f"the model takes rows of {expected} features (in feature_names order), "
                                    f"got an array of shape {np.shape(X)}")
        elif np.ndim(X) != 3 or np.shape(X)[1:] != (spec["sequence_length"], expected):
            raise PipelineError(f"the {spec['type']} model takes windows of {spec['sequence_length']} consecutive "
                                f"rows of {expected} features, shape (n, {spec['sequence_length']}, {expected}); "
                                f"got an array of shape {np.shape(X)}")
        return predict_logits(self.model, X)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.task == "regression":
            raise PipelineError("a regression model predicts returns, not class probabilities: use predict")
        return torch.softmax(torch.from_numpy(self.predict_logits(X)), dim=1).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class indices, or predicted returns for a regression model."""
        outputs = self.predict_logits(X)
        return outputs[:, 0] if self.task == "regression" else outputs.argmax(axis=1)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """Load a version folder (or a `_latest` link) written by `save_artifacts`, or a KTRDR model
    folder as KTRDR saved it: MLP, LSTM or GRU."""
    folder = Path(path)
    if not folder.is_dir():
        raise PipelineError(f"no model folder at {folder}")
    # Files are opened as regular files of the folder only (model_paths.open_model_file): a symlink
    # inside a confined folder could still lead outside the models root.
    metadata = read_saved_metadata(folder)
    spec = metadata.get("model")
    if not isinstance(spec, dict) or spec.get("type") not in ("mlp", "lstm", "gru"):
        shown = spec.get("type") if isinstance(spec, dict) else spec
        raise PipelineError(f"{folder}: metadata.json model.type is {shown!r}; mlp, lstm and gru load")
    try:
        model = build_model(spec)
    except KeyError as exc:
        raise PipelineError(f"{folder}: metadata.json model section lacks {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise PipelineError(f"{folder}: metadata.json model section is malformed: {exc}") from exc
    with open_model_file(folder, "model.pt") as file:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError):
            # torch's own message suggests weights_only=False, i.e. running whatever the file holds.
            raise PipelineError(f"{folder}: model.pt is not a safe state dict (tensors only) and was not "
                                "loaded: it holds other Python objects, or is not a PyTorch file") from None
    if not isinstance(state, dict):
        raise PipelineError(f"{folder}: model.pt is not a state dict (it holds {type(state).__name__})")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise PipelineError(f"{folder}: model.pt does not match metadata.json's model section: {exc}") from exc
    model.to(device).eval()
    return Predictor(model=model, metadata=metadata, feature_names=list(metadata.get("features", [])))


def _highest_version(strategy_dir: Path, timeframe: str, complete_only: bool = False) -> int:
    pattern = re.compile(re.escape(timeframe) + r"_v(\d+)")
    versions = [
        int(match.group(1))
        for entry in strategy_dir.iterdir()
        if (match := pattern.fullmatch(entry.name)) and (not complete_only or (entry / COMPLETE_MARKER).is_file())
    ]
    return max(versions, default=0)


def _point_latest(strategy_dir: Path, timeframe: str) -> None:
    """Point `{timeframe}_latest` at the newest complete version, atomically (symlink + rename).

    Re-checked after each rename: a slower concurrent saver may have just pointed it back at an
    older version, and whoever renames last then repairs it.
    """
    latest = strategy_dir / f"{timeframe}_latest"
    tmp = strategy_dir / f".{timeframe}_latest.{uuid.uuid4().hex}.tmp"
    while True:
        target = f"{timeframe}_v{_highest_version(strategy_dir, timeframe, complete_only=True)}"
        os.symlink(target, tmp)
        os.replace(tmp, latest)
        if target == f"{timeframe}_v{_highest_version(strategy_dir, timeframe, complete_only=True)}":
            return


def write_atomic(path: Path, write: Callable[[BinaryIO], object], guard: Callable[[], bool] | None = None) -> bool:
    """Write through `write(file)` to a temporary name in the same folder, fsync, rename into place:
    readers never see half a file. `guard` (a fencing check) is asked right before the rename: False
    keeps the old file and returns False; so does an exception, which propagates."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: concurrent attempts never share one
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if guard is not None and not guard():
            tmp.unlink(missing_ok=True)
            return False
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    return True
