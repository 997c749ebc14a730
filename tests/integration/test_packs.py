"""Packed training through the HTTP API: an experiment's same-shape children train in one work horse,
each still its own session. Real redis-server, worker and web processes."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil
import pytest
import requests
import torch
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.helpers.processes import wait_for
from tests.integration.conftest import EXPERIMENTS_AUTH as AUTH

pytestmark = pytest.mark.integration


def status(lab, session_id: str) -> dict:
    return requests.get(f"{lab.url}/training/status/{session_id}", timeout=10).json()


def weights(model_path: str) -> dict[str, torch.Tensor]:
    return torch.load(Path(model_path) / "model.pt", weights_only=True)


def test_same_shape_children_train_in_one_pack_with_the_numbers_each_has_alone(lab, redis_conn):
    lab.worker()
    response = lab.submit(sweep={"params": {"training.learning_rate": [0.001, 0.01],
                                            "training.seed": [1, 2]}})
    assert response.status_code == 202, response.text
    children = response.json()["children"]
    done = lab.wait(response.json()["experiment_id"], {"completed"})
    assert [row["status"] for row in done["rows"]] == ["completed"] * 4

    views = [status(lab, sid) for sid in children]
    packs = {view["pack"]["pack_id"] for view in views}
    assert len(packs) == 1 and sorted(view["pack"]["index"] for view in views) == [0, 1, 2, 3]
    assert all(view["pack"]["size"] == 4 and view["status"] == "completed" for view in views)
    assert all(view["started_at"] <= view["ended_at"] for view in views)
    results = [requests.get(f"{lab.url}/training/result/{sid}", timeout=10).json() for sid in children]
    assert len({result["model_path"] for result in results}) == 4  # each its own folder
    for sid, result in zip(children, results, strict=True):
        history = requests.get(f"{lab.url}/training/sessions/{sid}/history", timeout=10).json()["history"]
        assert [record["epoch"] for record in history] == [1, 2]
        assert result["backtest"]["bars"] > 0 and Path(result["model_path"], "COMPLETE").is_file()
    pack = Job.fetch(packs.pop(), connection=redis_conn, serializer=JSONSerializer)
    assert pack.get_status() == "finished" and set(pack.return_value()["members"].values()) == {"completed"}

    # The same two requests trained alone, one at a time, give the same weights.
    for sid, result in list(zip(children, results, strict=True))[::3]:
        request = Job.fetch(sid, connection=redis_conn, serializer=JSONSerializer).kwargs["request"]
        alone = requests.post(f"{lab.url}/training/start", json=request, headers=AUTH, timeout=30)
        assert alone.status_code == 202, alone.text
        alone_id = alone.json()["session_id"]
        wait_for(lambda i=alone_id: status(lab, i)["status"] == "completed", 120, "the training alone")
        assert status(lab, alone_id)["pack"] is None
        alone_path = requests.get(f"{lab.url}/training/result/{alone_id}", timeout=10).json()["model_path"]
        packed, single = weights(result["model_path"]), weights(alone_path)
        assert packed.keys() == single.keys()
        for name in packed:
            torch.testing.assert_close(packed[name], single[name], atol=1e-5, rtol=1e-4)


def test_stopping_one_member_freezes_it_with_its_partial_model_and_the_others_go_on(lab):
    lab.worker()
    response = lab.submit(epochs=2000, sweep={"params": {"training.learning_rate": [0.001, 0.002, 0.003]}})
    assert response.status_code == 202, response.text
    first, *others = response.json()["children"]
    wait_for(lambda: (view := status(lab, first))["status"] == "running" and (view["progress"].get("epoch") or 0) >= 2,
             180, "the pack to train its first member")
    stopped = requests.post(f"{lab.url}/training/stop", json={"session_id": first}, headers=AUTH, timeout=10)
    assert stopped.status_code == 200 and stopped.json()["status"] == "stopping", stopped.text
    wait_for(lambda: status(lab, first)["phase"] == "done", 60, "the stopped member to be saved")
    assert all(status(lab, sid)["status"] == "running" for sid in others)  # the pack goes on without it
    for sid in others:
        requests.post(f"{lab.url}/training/stop", json={"session_id": sid}, headers=AUTH, timeout=10)
    lab.wait(response.json()["experiment_id"], {"completed", "stopped"})
    view = status(lab, first)
    assert view["status"] == "stopped" and view["pack"]["size"] == 3
    result = requests.get(f"{lab.url}/training/result/{first}", timeout=10).json()
    assert result["stopped"] is True and 2 <= result["training_metrics"]["epochs_trained"] < 2000
    assert Path(result["model_path"], "COMPLETE").is_file()


def test_a_killed_pack_leaves_each_member_to_train_alone_with_the_reason(lab):
    worker = lab.worker()
    response = lab.submit(epochs=30, sweep={"params": {"training.learning_rate": [0.001, 0.002]}})
    assert response.status_code == 202, response.text
    children = response.json()["children"]
    wait_for(lambda: all(status(lab, sid)["status"] == "running" for sid in children), 180, "the pack to start")
    horse = wait_for(lambda: psutil.Process(worker.pid).children(), 30, "the work horse")[0]
    horse.send_signal(signal.SIGKILL)  # stand-in for the OOM killer
    wait_for(lambda: all(status(lab, sid)["pack"].get("error") for sid in children), 120,
             "each member to train alone")
    for sid in children:
        assert "killed" in status(lab, sid)["pack"]["error"]
        requests.post(f"{lab.url}/training/stop", json={"session_id": sid}, headers=AUTH, timeout=10)
    lab.wait(response.json()["experiment_id"], {"completed", "stopped"})
    assert all(status(lab, sid)["status"] in ("stopped", "completed") for sid in children)
