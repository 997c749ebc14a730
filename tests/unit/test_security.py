"""Who may do what: bearer token on mutating endpoints, secrets kept out of answers and logs,
model paths confined to their root, and the strategy parser total on any input."""

from __future__ import annotations

import json
import logging

import fakeredis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.fixtures import strategy_text
from trainhost.config import load_settings
from trainhost.jobs.connection import describe
from trainhost.jobs.pipeline.errors import PipelineError, StrategyError
from trainhost.jobs.pipeline.model_paths import resolve_model_path
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.status_api import create_app

TOKEN = "s3cret-token-value"


@pytest.fixture
def client(sample_data_dir, tmp_path):
    app = create_app({"REDIS_CLIENT": fakeredis.FakeRedis(), "api_token": TOKEN,
                      "data_dir": str(sample_data_dir), "models_dir": str(tmp_path)})
    return app.test_client()


def start_body() -> dict:
    return {"strategy_yaml": strategy_text("v3_minimal"), "start_date": "2017-05-01", "end_date": "2018-02-07"}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("post", "/training/start", start_body),
    ("post", "/training/stop", {"session_id": "x"}),
    ("post", "/training/evaluate", {"model_path": "x"}),
    ("delete", "/training/sessions/x", None),
])
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", TOKEN])
def test_mutating_endpoints_need_the_bearer_token(client, method, path, body, header):
    headers = {"Authorization": header} if header else {}
    response = getattr(client, method)(path, json=body() if callable(body) else body, headers=headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert TOKEN not in response.get_data(as_text=True)


def test_the_right_token_is_accepted_and_reads_stay_open(client):
    accepted = client.post("/training/start", json=start_body(), headers={"Authorization": f"Bearer {TOKEN}"})
    assert accepted.status_code == 202
    session_id = accepted.get_json()["session_id"]
    assert client.get(f"/training/status/{session_id}").status_code == 200
    assert client.get("/training/sessions").status_code == 200
    assert client.get("/health").status_code == 200


def test_token_never_appears_in_answers_or_logs(client, caplog):
    caplog.set_level(logging.DEBUG)
    bodies = [client.get(path).get_data(as_text=True) for path in ("/health", "/health/detailed", "/training/sessions")]
    bodies.append(client.post("/training/start", json={"strategy_yaml": "x: [", "task_id": "t"},
                              headers={"Authorization": f"Bearer {TOKEN}"}).get_data(as_text=True))
    assert all(TOKEN not in body for body in bodies)
    assert TOKEN not in caplog.text
    assert TOKEN not in repr(load_settings({"api_token": TOKEN}))


def test_redis_password_is_redacted_wherever_the_url_is_shown():
    settings = load_settings({"redis_url": "redis://:hunter2@db.example:6379/0"})
    assert "hunter2" not in describe(settings)
    assert "db.example:6379" in describe(settings)


def test_model_paths_stay_inside_models_dir_even_through_symlinks(tmp_path):
    root = tmp_path / "models"
    (root / "s" / "1h_v1").mkdir(parents=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert resolve_model_path(root, "s/1h_v1") == (root / "s" / "1h_v1").resolve()
    for path in ("../elsewhere", "/etc/passwd", "escape", "s/../../elsewhere", str(outside)):
        with pytest.raises(PipelineError, match="outside the models directory"):
            resolve_model_path(root, path)


YAML_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_parser_on_any_text_parses_or_raises_our_error(text):
    try:
        parse_strategy(text)
    except StrategyError as exc:
        assert exc.errors


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAML_TEXT)
def test_parser_on_any_structure_parses_or_raises_our_error(document):
    try:
        parse_strategy(document if isinstance(document, dict) else json.dumps(document))
    except StrategyError as exc:
        assert exc.errors


SECTIONS = ["training_data", "indicators", "fuzzy_sets", "nn_inputs", "model", "decisions", "training"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SECTIONS), YAML_TEXT)
def test_parser_with_one_section_replaced_by_anything(section, value):
    import yaml

    document = yaml.safe_load(strategy_text("v3_multi_indicator"))
    document[section] = value
    try:
        parse_strategy(document)
    except StrategyError as exc:
        assert any(section in error or "yaml" in error for error in exc.errors) or exc.errors


# Model folders are confined by resolving them; the files inside must be confined too: a folder
# under models_dir may hold a symlink to anywhere, or a FIFO that blocks whoever reads it.
MLP_SPEC = {"type": "mlp", "input_size": 2, "hidden_layers": [4], "activation": "relu", "dropout": 0.0,
            "output_size": 3}


def saved_model(root):
    """A small complete model folder written the way training writes one."""
    from trainhost.jobs.pipeline.artifacts import save_artifacts
    from trainhost.jobs.pipeline.model import build_model

    return save_artifacts(root, "s", "1h", state_dict=build_model(MLP_SPEC).state_dict(),
                          metadata={"model": MLP_SPEC, "features": ["a", "b"], "strategy_name": "s"}, history=[])


def in_thread(function, *args, seconds: float = 10):
    """function(*args) run on a daemon thread: a call that blocks (reading a FIFO) fails the test
    instead of hanging it."""
    import threading

    outcome: dict = {}

    def run():
        try:
            outcome["value"] = function(*args)
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"{function.__name__} blocked for {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.parametrize("name", ["model.pt", "metadata.json"])
def test_model_files_that_are_symlinks_out_of_the_root_are_refused(tmp_path, name):
    import shutil

    from trainhost.jobs.pipeline.artifacts import load_model

    folder = saved_model(tmp_path / "models")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(folder / name, outside / name)  # the very same content, only elsewhere
    (folder / name).symlink_to(outside / name)
    with pytest.raises(PipelineError, match=f"{name}.*symbolic link"):
        load_model(folder)


@pytest.mark.parametrize("name", ["model.pt", "metadata.json"])
def test_a_fifo_in_a_model_folder_is_refused_without_blocking(tmp_path, name):
    import os

    from trainhost.jobs.pipeline.artifacts import load_model
    from trainhost.jobs.pipeline.model_paths import read_model_summary

    folder = saved_model(tmp_path / "models")
    (folder / name).unlink()
    os.mkfifo(folder / name)
    with pytest.raises(PipelineError, match=f"{name}.*FIFO"):
        in_thread(load_model, folder)
    if name == "metadata.json":
        with pytest.raises(PipelineError, match="metadata.json.*FIFO"):
            in_thread(read_model_summary, tmp_path / "models", "s/1h_v1")


class NotATensor:  # any class: weights_only=True refuses to build it
    pass


@pytest.mark.parametrize("content", ["pickled object", "not torch", "empty", "a list"])
def test_an_unsafe_or_foreign_model_pt_is_said_to_be_no_safe_state_dict(tmp_path, content):
    import torch

    from trainhost.jobs.pipeline.artifacts import load_model

    folder = saved_model(tmp_path / "models")
    if content == "pickled object":
        torch.save({"w": NotATensor()}, folder / "model.pt")
    elif content == "not torch":
        (folder / "model.pt").write_bytes(b"definitely not a pytorch file")
    elif content == "empty":
        (folder / "model.pt").write_bytes(b"")
    else:
        torch.save([torch.zeros(2)], folder / "model.pt")
    with pytest.raises(PipelineError, match="model.pt is not a (safe )?state dict") as raised:
        load_model(folder)
    assert "weights_only" not in str(raised.value)  # torch's advice is to turn the safety off
