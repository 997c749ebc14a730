"""Model folders: versions, the latest link, the COMPLETE marker, loading back, path confinement."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from trainhost.jobs.pipeline.artifacts import load_model, save_artifacts, write_atomic
from trainhost.jobs.pipeline.errors import PipelineError
from trainhost.jobs.pipeline.metrics import predict_logits
from trainhost.jobs.pipeline.model import build_mlp
from trainhost.jobs.pipeline.model_paths import resolve_model_path
from trainhost.jobs.pipeline.trainer import train_model
from trainhost.jobs.pipeline.training_settings import TrainingConfig

SPEC = {"type": "mlp", "input_size": 6, "hidden_layers": [16, 8], "activation": "tanh", "dropout": 0.2,
        "output_size": 3}
FEATURES = [f"f{i}" for i in range(6)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A briefly trained model, its history and checkpoint (module-scoped: trained once)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 1)
    torch.manual_seed(0)
    model = build_mlp(6, SPEC["hidden_layers"], SPEC["activation"], SPEC["dropout"])
    ckpt = tmp_path_factory.mktemp("run") / "ckpt.pt"
    result = train_model(model, X[:300], y[:300], X[300:], y[300:],
                         TrainingConfig(epochs=2, batch_size=32), device="cpu", checkpoint_path=ckpt)
    return model, result.history, ckpt, X


def save(models_dir, trained, strategy="trend", timeframe="1h", checkpoint=False):
    model, history, ckpt, _ = trained
    return save_artifacts(models_dir, strategy, timeframe, state_dict=model.state_dict(),
                          metadata={"model": SPEC, "features": FEATURES, "strategy_name": strategy},
                          history=history, checkpoint_path=ckpt if checkpoint else None)


def test_versions_latest_link_and_files(tmp_path, trained):
    first = save(tmp_path, trained, checkpoint=True)
    second = save(tmp_path, trained)
    assert first == tmp_path.resolve() / "trend" / "1h_v1"
    assert second.name == "1h_v2"
    latest = tmp_path / "trend" / "1h_latest"
    assert latest.is_symlink() and os.readlink(latest) == "1h_v2"  # relative
    assert sorted(p.name for p in first.iterdir()) == [
        "COMPLETE", "checkpoint.pt", "history.json", "metadata.json", "model.pt"]
    assert json.loads((first / "history.json").read_text()) == trained[1]
    assert json.loads((first / "metadata.json").read_text())["features"] == FEATURES
    state = torch.load(first / "model.pt", weights_only=True)
    assert list(state) == ["0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"]
    assert all(t.device.type == "cpu" for t in state.values())
    assert torch.load(first / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not list((tmp_path / "trend").glob(".*"))  # no temporary files left behind


def test_load_model_reproduces_the_trained_model(tmp_path, trained):
    model, _, _, X = trained
    save(tmp_path, trained)
    predictor = load_model(tmp_path / "trend" / "1h_latest")
    expected = predict_logits(model, X)
    np.testing.assert_array_equal(predictor.predict_logits(X), expected)
    np.testing.assert_array_equal(predictor.predict(X), expected.argmax(axis=1))
    np.testing.assert_allclose(predictor.predict_proba(X).sum(axis=1), 1.0, rtol=1e-6)
    assert predictor.feature_names == FEATURES and not predictor.model.training
    assert predictor.metadata["strategy_name"] == "trend"
    with pytest.raises(PipelineError, match="rows of 6 features"):
        predictor.predict(X[:, :5])


def test_incomplete_folder_is_refused_and_skipped(tmp_path, trained):
    save(tmp_path, trained)
    broken = tmp_path / "trend" / "1h_v2"
    broken.mkdir()  # a save that died before COMPLETE
    (broken / "model.pt").write_bytes(b"partial")
    with pytest.raises(PipelineError, match="not a complete saved model folder"):
        load_model(broken)
    third = save(tmp_path, trained)
    assert third.name == "1h_v3" and os.readlink(tmp_path / "trend" / "1h_latest") == "1h_v3"
    with pytest.raises(PipelineError, match="no model folder"):
        load_model(tmp_path / "trend" / "1h_v9")


def test_concurrent_savers_never_collide(tmp_path, trained):
    with ThreadPoolExecutor(max_workers=6) as pool:
        folders = list(pool.map(lambda _: save(tmp_path, trained), range(6)))
    assert sorted(f.name for f in folders) == [f"1h_v{n}" for n in range(1, 7)]
    assert os.readlink(tmp_path / "trend" / "1h_latest") == "1h_v6"
    assert all((f / "COMPLETE").is_file() for f in folders)


@pytest.mark.parametrize("strategy,timeframe", [("../evil", "1h"), ("a/b", "1h"), ("..", "1h"),
                                                (".hidden", "1h"), ("", "1h"), ("ok", "1h/../x")])
def test_names_that_could_escape_are_refused(tmp_path, trained, strategy, timeframe):
    with pytest.raises(PipelineError, match="cannot name a model folder"):
        save(tmp_path, trained, strategy=strategy, timeframe=timeframe)


def test_symlinked_strategy_folder_leading_outside_is_refused(tmp_path, trained):
    outside = tmp_path / "outside"
    outside.mkdir()
    models = tmp_path / "models"
    models.mkdir()
    (models / "trend").symlink_to(outside)
    with pytest.raises(PipelineError, match="outside the models folder"):
        save(models, trained)
    assert not list(outside.iterdir())


def test_resolve_model_path_confines_to_models_dir(tmp_path, trained):
    models = tmp_path / "models"
    folder = save(models, trained)
    assert resolve_model_path(models, "trend/1h_v1") == folder
    assert resolve_model_path(models, folder) == folder
    assert resolve_model_path(models, "trend/1h_latest") == folder  # the link, resolved
    (tmp_path / "secret").mkdir()
    (models / "trend" / "sneaky").symlink_to(tmp_path / "secret")
    for bad in ("../secret", str(tmp_path / "secret"), "trend/sneaky", "trend/../../secret", "/etc"):
        with pytest.raises(PipelineError, match="outside the models directory"):
            resolve_model_path(models, bad)
    for root in (".", "trend/..", str(models)):
        with pytest.raises(PipelineError, match="names the models directory itself"):
            resolve_model_path(models, root)
    with pytest.raises(PipelineError, match="not a usable path"):
        resolve_model_path(models, "trend/1h_v1\x00")


def test_write_atomic_renames_only_what_its_guard_lets_through(tmp_path):
    target = tmp_path / "file.bin"
    assert write_atomic(target, lambda f: f.write(b"first"))
    assert not write_atomic(target, lambda f: f.write(b"second"), guard=lambda: False)  # cannot tell: skipped

    def superseded() -> bool:
        raise RuntimeError("a newer attempt runs")

    with pytest.raises(RuntimeError, match="newer attempt"):
        write_atomic(target, lambda f: f.write(b"third"), guard=superseded)

    def half_written(f) -> None:
        f.write(b"fou")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half_written)
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]  # no temporary left behind
