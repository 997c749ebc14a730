"""rq-dashboard on our Redis after a real training: the documented command
(`rq-dashboard --json -u $REDIS_URL`) and the optional mount under /rq of our app (behind the token)
both show the job with our meta. JSON serializer on both sides."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from selenium.webdriver.common.by import By

from tests.helpers.browser import chromium, screenshot, wait
from tests.helpers.fixtures import strategy_text
from tests.helpers.processes import stop_process, wait_for, wait_http
from trainhost.config import load_settings
from trainhost.jobs import producer
from trainhost.status_api import create_app
from trainhost.worker.redis_server import free_port

pytestmark = pytest.mark.integration
TOKEN = "rq-dashboard-token"


@pytest.fixture
def trained(redis_server, redis_conn, start_worker, sample_data_dir, tmp_path) -> str:
    """The id of a finished two-epoch training of v3_multi_indicator."""
    settings = {"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")}
    start_worker(**settings)
    request = {"strategy_yaml": strategy_text("v3_multi_indicator"), "start_date": "2017-05-01",
               "end_date": "2018-02-07", "epochs": 2}
    session_id = producer.submit_training(redis_conn, load_settings(settings), request)["session_id"]

    def finished():
        status = Job.fetch(session_id, connection=redis_conn, serializer=JSONSerializer).get_status()
        assert status != JobStatus.FAILED
        return status == JobStatus.FINISHED

    wait_for(finished, 120, "the training to finish", interval=0.2)
    return session_id


@pytest.fixture
def rq_dashboard_url(redis_server, tmp_path) -> str:
    """The standalone rq-dashboard, started as the README says."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("rq-dashboard")), "--json", "-u", redis_server.url,
               "-b", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=open(tmp_path / "rq-dashboard.log", "wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url)
    yield url
    stop_process(process)


def assert_our_meta(job_data: dict, session_id: str) -> None:
    assert job_data["id"] == session_id and job_data["status"] == "finished"
    meta = json.loads(job_data["metadata"])
    assert meta["kind"] == "training" and meta["phase"] == "done"
    assert meta["progress"]["epoch"] == meta["progress"]["total_epochs"] == 2
    assert meta["metrics"]["current"]["val_accuracy"] is not None


def test_rq_dashboard_shows_our_jobs_meta(trained, rq_dashboard_url, redis_server, tmp_path):
    """One training, seen by the standalone command (in a browser too) and by the mount under /rq."""
    assert_our_meta(requests.get(f"{rq_dashboard_url}/0/data/job/{trained}.json", timeout=10).json(), trained)
    queues = requests.get(f"{rq_dashboard_url}/0/data/queues.json", timeout=10).json()
    assert "training" in {queue["name"] for queue in queues["queues"]}
    browser = chromium(tmp_path)
    try:
        browser.get(f"{rq_dashboard_url}/0/view/job/{trained}")
        wait(browser, lambda d: '"progress"' in d.find_element(By.ID, "job-data").text, "the job's metadata", 30)
        assert '"phase": "done"' in browser.find_element(By.ID, "job-data").text
        screenshot(browser, "rq-dashboard-job.png")
    finally:
        browser.quit()

    client = create_app({"redis_url": redis_server.url, "rq_dashboard": True, "api_token": TOKEN}).test_client()
    refused = client.get("/rq/")
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Basic")
    assert client.get("/rq/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    basic = {"Authorization": "Basic " + base64.b64encode(f"operator:{TOKEN}".encode()).decode()}
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for headers in (basic, bearer):
        page = client.get(f"/rq/0/view/job/{trained}", headers=headers)
        assert page.status_code == 200 and trained in page.get_data(as_text=True)
        assert_our_meta(client.get(f"/rq/0/data/job/{trained}.json", headers=headers).get_json(), trained)
    assert 'href="/rq/"' in client.get("/").get_data(as_text=True)  # the dashboard links to it


def test_rq_dashboard_is_off_by_default(redis_server):
    app = create_app({"redis_url": redis_server.url})
    assert app.test_client().get("/rq/").status_code == 404
    assert 'href="/rq/"' not in app.test_client().get("/").get_data(as_text=True)
