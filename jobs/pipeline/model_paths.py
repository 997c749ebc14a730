"""Model folders named by users, confined to models_dir (pure Python: the light client uses it).

The folder is confined by resolving it; the files in it are confined by refusing anything but a
regular file of the folder itself: a symlink could lead out of the models root (model.pt ->
/etc/shadow), and a FIFO or device would block the reader or never end.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import ValidationError

from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.strategy import Strategy

COMPLETE_MARKER = "COMPLETE"  # written last into a model folder: readers refuse a folder without it
MAX_METADATA_BYTES = 32 << 20  # far above any real metadata.json; a bigger one is not ours
SUMMARY_KEYS = {"strategy_name": str, "symbol": str, "timeframe": str, "strategy": dict}
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
              float: "a number", type(None): "null"}


def resolve_model_path(models_dir: str | Path, model_path: str | Path) -> Path:
    """`model_path` (absolute, or relative to models_dir) resolved with symlinks followed; refused
    unless it lies inside models_dir (the models directory itself is no model folder either)."""
    root = Path(models_dir).resolve()
    shown = repr(str(model_path))
    try:
        resolved = (root / model_path).resolve()  # an absolute model_path replaces root here
    except (ValueError, OSError) as exc:  # e.g. an embedded NUL byte, a symlink loop
        raise PipelineError(f"model_path: {shown} is not a usable path ({exc})") from None
    if resolved == root:
        raise PipelineError(f"model_path: {shown} names the models directory itself, not a model folder in it")
    if root not in resolved.parents:
        raise PipelineError(f"model_path: {shown} is outside the models directory")
    return resolved


def is_regular_file(path: Path) -> bool:
    """True for a regular file that is not a symlink (lstat: the link itself is judged)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def open_model_file(folder: Path, name: str, where: str | None = None) -> BinaryIO:
    """`folder/name` opened for binary reading, refused (PipelineError naming the file and `where`,
    the folder as the caller knows it) unless it is a regular file of the folder itself.

    O_NOFOLLOW refuses a symlink, O_NONBLOCK keeps a FIFO from blocking the open, and the type is
    checked on the open descriptor, so nothing can be swapped in between the check and the read."""
    shown = f"{name} in {where or folder}"
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(folder / name, flags)
    except FileNotFoundError:
        raise PipelineError(f"{shown}: missing; the model folder is incomplete") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PipelineError(f"{shown}: is a symbolic link; model files must be regular files inside "
                                "the model folder") from None
        raise PipelineError(f"{shown}: cannot be read ({exc.strerror})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else "not a regular file"
        raise PipelineError(f"{shown}: is {kind}; model files must be regular files")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_metadata(folder: Path, where: str | None = None) -> dict[str, Any]:
    """metadata.json of a model folder as a dict, or a PipelineError saying what is wrong with it."""
    shown = f"metadata.json in {where or folder}"
    with open_model_file(folder, "metadata.json", where) as file:
        raw = file.read(MAX_METADATA_BYTES + 1)
    if len(raw) > MAX_METADATA_BYTES:
        raise PipelineError(f"{shown}: is larger than {MAX_METADATA_BYTES >> 20} MiB")
    try:
        metadata = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PipelineError(f"{shown}: is not UTF-8 text") from None
    except RecursionError:
        raise PipelineError(f"{shown}: is not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise PipelineError(f"{shown}: is not valid JSON ({exc})") from None
    if not isinstance(metadata, dict):
        raise PipelineError(f"{shown}: must be a JSON object, got {json_type(metadata)}")
    return metadata


def read_saved_metadata(folder: Path, where: str | None = None) -> dict[str, Any]:
    """The metadata of a saved model: metadata.json of a complete folder of ours, or what a KTRDR
    model folder's own files say; refused (naming `where`) for anything else, e.g. a save of ours
    that was interrupted before its COMPLETE marker."""
    from trainhost.jobs.pipeline import ktrdr_import  # it reads the files with this module's helpers

    if is_regular_file(folder / COMPLETE_MARKER):
        return read_metadata(folder, where)
    if ktrdr_import.is_ktrdr_folder(folder):
        return ktrdr_import.ktrdr_metadata(folder, where)
    raise PipelineError(f"model_path: {where or str(folder)!r} is not a complete saved model folder (no "
                        f"{COMPLETE_MARKER} marker: a save that was interrupted, or not a model folder; a KTRDR "
                        f"model folder holds {', '.join(ktrdr_import.KTRDR_FILES)})")


def json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


def read_model_summary(models_dir: str | Path, model_path: str | Path) -> dict[str, Any]:
    """Strategy name, symbol, timeframe and strategy (a dict) of a complete saved model (reads
    metadata.json only)."""
    folder = resolve_model_path(models_dir, model_path)
    where = repr(str(model_path))
    metadata = read_saved_metadata(folder, where)
    missing = [key for key in SUMMARY_KEYS if key not in metadata]
    if missing:
        raise PipelineError(f"metadata.json in {where}: lacks {', '.join(missing)}")
    for key, kind in SUMMARY_KEYS.items():
        if not isinstance(metadata[key], kind):
            raise PipelineError(f"metadata.json in {where}: {key} must be {JSON_TYPES[kind]}, "
                                f"got {json_type(metadata[key])}")
    try:  # what the evaluation will rebuild the strategy from: a broken one is refused here, not there
        Strategy.from_dict(metadata["strategy"])
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(["strategy", *map(str, first["loc"])])
        raise PipelineError(f"metadata.json in {where}: {field}: {first['msg']}") from None
    except (TypeError, KeyError, AttributeError) as exc:  # a validator tripped over a value of the wrong shape
        raise PipelineError(f"metadata.json in {where}: strategy is malformed ({type(exc).__name__}: {exc})") from None
    return {"strategy": metadata["strategy_name"], "symbol": metadata["symbol"],
            "timeframe": metadata["timeframe"], "path": str(folder), "spec": metadata["strategy"]}
