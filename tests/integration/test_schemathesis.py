"""Schemathesis against the live `trainhost web` process and its own /openapi.json: generated requests
(valid and invalid) to every operation get no 5xx, only documented statuses and content types, and
bodies that match the documented response schemas. Bounded: 10 examples per operation and phase,
a fixed seed (a few hundred requests in all)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import REPO, start_web, stop_process
from trainhost.config import load_settings
from trainhost.jobs import producer

pytestmark = pytest.mark.integration
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
REPORT = REPO / "tests" / "artifacts" / "schemathesis-junit.xml"


@pytest.fixture
def web_url(redis_server, redis_conn, sample_data_dir, tmp_path) -> str:
    """The web app on a Redis holding queued and cancelled sessions (no worker: nothing runs)."""
    settings = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")}
    request = {"strategy_yaml": strategy_text("v3_multi_indicator"), "start_date": "2017-05-01",
               "end_date": "2018-02-07", "epochs": 2}
    ids = [producer.submit_training(redis_conn, load_settings(settings), request)["session_id"] for _ in range(4)]
    producer.request_stop(redis_conn, load_settings(settings), ids[0])
    web, url = start_web(redis_server.url, tmp_path, **settings)
    yield url
    stop_process(web)


def test_generated_requests_get_no_server_error_and_documented_answers(web_url, tmp_path):
    command = [str(Path(sys.executable).with_name("st")), "run", f"{web_url}/openapi.json", "--checks", CHECKS,
               "--max-examples", "10", "--seed", "1", "--workers", "1", "--request-timeout", "20",
               "--report", "junit", "--report-junit-path", str(REPORT)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    server_log = (tmp_path / "web.log").read_text()
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:] + server_log[-4000:]
    assert "Traceback" not in server_log, server_log[-4000:]
