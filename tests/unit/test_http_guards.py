"""Requests a web page elsewhere can make the operator's browser send: refused, and nothing changes.

A page the operator opens can POST text/plain or form bodies to 127.0.0.1 without asking, GET any
URL (an <img>) with cached Basic credentials and no Origin, and — re-pointing its own name at
127.0.0.1 (DNS rebinding) — read and write the API as if it were same-origin. (fakeredis; real Flask.)
"""

from __future__ import annotations

import base64
import json
import socket

import fakeredis
import pytest
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from tests.helpers.fixtures import strategy_text
from trainhost.config import load_settings
from trainhost.jobs import producer
from trainhost.status_api import create_app

DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}
TOKEN = "guard-token"


def start_body() -> dict:
    return {"strategy_yaml": strategy_text("v3_minimal"), **DATES}


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


def make_client(redis, sample_data_dir, tmp_path, **settings):
    app = create_app({"REDIS_CLIENT": redis, "data_dir": str(sample_data_dir),
                      "models_dir": str(tmp_path / "models"), **settings})
    return app.test_client()


@pytest.fixture
def client(redis, sample_data_dir, tmp_path):
    return make_client(redis, sample_data_dir, tmp_path)


@pytest.fixture
def queued(redis, sample_data_dir, tmp_path) -> str:
    """A queued training session, to see that refused stops and deletes leave it alone."""
    settings = load_settings({"data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models")})
    return producer.submit_training(redis, settings, start_body())["session_id"]


def status_of(redis, session_id: str) -> JobStatus:
    return Job.fetch(session_id, connection=redis, serializer=JSONSerializer).get_status()


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == code


# What a cross-site page sends: an HTML form with enctype=text/plain (its body can spell JSON), or
# fetch(url, {mode: "no-cors", method: "POST", body}) — both carry the page's Origin.
CROSS_SITE = [
    ("text/plain from a form", {"content_type": "text/plain"}, 415, "unsupported_media_type"),
    ("urlencoded form", {"content_type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type"),
    ("no-cors fetch with its Origin", {"content_type": "text/plain", "headers": {"Origin": "https://evil.example"}},
     403, "cross_origin_refused"),
    ("json from a foreign Origin", {"content_type": "application/json",
                                    "headers": {"Origin": "https://evil.example"}}, 403, "cross_origin_refused"),
    ("dns rebinding", {"content_type": "application/json",
                       "headers": {"Host": "rebind.evil.example:5002", "Origin": "http://rebind.evil.example:5002"}},
     421, "misdirected_request"),
]


@pytest.mark.parametrize(("case", "how", "status", "code"), CROSS_SITE, ids=[c[0] for c in CROSS_SITE])
def test_cross_site_start_and_evaluate_enqueue_nothing(client, redis, case, how, status, code):
    for path, body in (("/training/start", start_body()), ("/training/evaluate", {"model_path": "x/1h_v1"})):
        response = client.post(path, data=json.dumps(body), **how)
        assert_error(response, status, code)
    assert not redis.keys("rq:job:*") and not redis.keys("rq:queue:*")


@pytest.mark.parametrize(("case", "how", "status", "code"), CROSS_SITE, ids=[c[0] for c in CROSS_SITE])
def test_cross_site_stop_and_delete_change_nothing(client, redis, queued, case, how, status, code):
    response = client.post("/training/stop", data=json.dumps({"session_id": queued}), **how)
    assert_error(response, status, code)
    if "headers" in how:
        assert_error(client.delete(f"/training/sessions/{queued}", headers=how["headers"]), status, code)
    assert status_of(redis, queued) == JobStatus.QUEUED
    assert not redis.keys("trainhost:stop:*")


def test_a_rebinding_page_cannot_read_either(client, queued):
    headers = {"Host": "rebind.evil.example:5002"}
    for path in ("/health", "/health/detailed", "/training/sessions", f"/training/status/{queued}", "/",
                 f"/sessions/{queued}", "/metrics", "/openapi.json", "/static/dashboard.js"):
        response = client.get(path, headers=headers)
        assert_error(response, 421, "misdirected_request")
        assert queued not in response.get_data(as_text=True)


def test_our_own_pages_and_plain_clients_still_work(client, redis, queued):
    # curl / requests / the backend: no Origin at all.
    assert client.post("/training/start", json=start_body()).status_code == 202
    # The dashboard's own Stop button: same-origin fetch, JSON, its Origin names our Host.
    own = {"Host": "127.0.0.1:5002", "Origin": "http://127.0.0.1:5002"}
    stopped = client.post("/training/stop", data=json.dumps({"session_id": queued}),
                          content_type="application/json; charset=utf-8", headers=own)
    assert stopped.status_code == 200 and stopped.get_json()["status"] == "cancelled"
    for host in ("localhost:5002", "LOCALHOST", "127.0.0.1", "127.0.0.2:80", "[::1]:5002", "app.localhost"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_and_origins_are_configurable(redis, sample_data_dir, tmp_path):
    client = make_client(redis, sample_data_dir, tmp_path, allowed_hosts=["gpu-box", ".lab.example"],
                         allowed_origins=["https://ops.example"])
    for host in ("gpu-box:5002", "GPU-BOX", "lab.example", "a.lab.example:443"):
        assert client.get("/health", headers={"Host": host}).status_code == 200, host
    for host in ("gpu-box.evil.example", "evillab.example", "example"):
        assert_error(client.get("/health", headers={"Host": host}), 421, "misdirected_request")
    allowed = client.post("/training/start", json=start_body(), headers={"Origin": "https://ops.example"})
    assert allowed.status_code == 202
    assert_error(client.post("/training/start", json=start_body(), headers={"Origin": "http://ops.example"}),
                 403, "cross_origin_refused")


def test_the_bound_address_is_a_host_we_answer_for(redis, sample_data_dir, tmp_path):
    client = make_client(redis, sample_data_dir, tmp_path, host="10.1.2.3", api_token=TOKEN)
    assert client.get("/health", headers={"Host": "10.1.2.3:5002"}).status_code == 200
    assert_error(client.get("/health", headers={"Host": "10.1.2.4:5002"}), 421, "misdirected_request")
    # Bound to every address: any address literal (no page can rebind one) and the machine's name.
    wildcard = make_client(redis, sample_data_dir, tmp_path, host="0.0.0.0", api_token=TOKEN)
    for host in ("10.9.8.7:5002", "[fd00::1]:5002", socket.gethostname()):
        assert wildcard.get("/health", headers={"Host": host}).status_code == 200, host
    assert_error(wildcard.get("/health", headers={"Host": "rebind.evil.example"}), 421, "misdirected_request")


@pytest.mark.parametrize(("value", "expected"), [
    ("Example.COM:5002", ("example.com", "5002")), ("[::1]:80", ("::1", "80")), ("[::1]", ("::1", "")),
    ("::1", ("::1", "")), ("localhost.", ("localhost", "")), ("", ("", "")),
])
def test_split_host(value, expected):
    from trainhost.status_api.guards import split_host

    assert split_host(value) == expected


def test_host_policy_and_origin_matching():
    from trainhost.status_api.guards import HostPolicy, same_origin

    policy = HostPolicy("127.0.0.1", ["Gpu-Box"])
    assert policy.allows("gpu-box") and policy.allows("localhost") and not policy.allows("evil.example")
    assert same_origin("http://localhost", "localhost:80", frozenset())
    assert same_origin("https://localhost", "localhost:443", frozenset())
    assert not same_origin("http://localhost", "localhost:5002", frozenset())
    for origin in ("null", "file://", "chrome-extension://abc", "http://localhost:5002/path", "http://[bad"):
        assert not same_origin(origin, "localhost:5002", frozenset()), origin


# rq-dashboard's requeue-everything route answers GET, so an <img src> on any page re-ran every failed
# job; a browser sends that GET with the Basic credentials it cached, and without an Origin.
@pytest.fixture
def failed_job(redis) -> str:
    queue = Queue("training", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue("tests.helpers.jobs.tiny_job", job_id="failed-one")
    queue.remove(job.id)
    FailedJobRegistry(queue=queue).add(job, exc_string="boom")
    job.set_status(JobStatus.FAILED)
    return job.id


def failed_count(redis) -> int:
    return FailedJobRegistry("training", connection=redis, serializer=JSONSerializer).count


def rq_client(redis, sample_data_dir, tmp_path, **settings):
    pytest.importorskip("rq_dashboard")
    return make_client(redis, sample_data_dir, tmp_path, rq_dashboard=True, **settings)


def test_rq_dashboard_is_read_only_without_a_token(redis, sample_data_dir, tmp_path, failed_job):
    client = rq_client(redis, sample_data_dir, tmp_path)
    assert client.get("/rq/favicon.ico").status_code == 200  # its pages read a Redis URL: see the integration test
    for method, path in (("get", "/rq/requeue/training"), ("post", "/rq/requeue/training"),
                         ("post", f"/rq/job/{failed_job}/requeue"), ("post", f"/rq/job/{failed_job}/delete"),
                         ("post", "/rq/queue/training/failed/empty"), ("post", "/rq/queue/training/compact")):
        same = {"Host": "localhost", "Origin": "http://localhost"}
        assert_error(getattr(client, method)(path, headers=same), 403, "read_only")
    assert failed_count(redis) == 1 and status_of(redis, failed_job) == JobStatus.FAILED


def test_rq_dashboard_actions_need_the_token_and_a_same_origin_request(redis, sample_data_dir, tmp_path,
                                                                       failed_job):
    client = rq_client(redis, sample_data_dir, tmp_path, api_token=TOKEN)
    basic = {"Authorization": "Basic " + base64.b64encode(f"operator:{TOKEN}".encode()).decode()}
    assert client.get("/rq/requeue/training").status_code == 401
    # The <img> GET: the browser's cached credentials, no Origin, no Referer.
    assert_error(client.get("/rq/requeue/training", headers=basic), 403, "cross_origin_refused")
    assert_error(client.get("/rq/requeue/training", headers={**basic, "Sec-Fetch-Site": "cross-site"}),
                 403, "cross_origin_refused")
    assert_error(client.get("/rq/requeue/training", headers={**basic, "Referer": "https://evil.example/x"}),
                 403, "cross_origin_refused")
    assert_error(client.post("/rq/requeue/training", headers={**basic, "Origin": "https://evil.example"}),
                 403, "cross_origin_refused")
    assert failed_count(redis) == 1 and status_of(redis, failed_job) == JobStatus.FAILED
    # Its own page's button: a same-origin POST with the page's Origin.
    own = client.post("/rq/requeue/training", headers={**basic, "Origin": "http://localhost"})
    assert own.status_code == 200 and own.get_json()["count"] == 1
    assert failed_count(redis) == 0


def test_rq_dashboard_reads_need_no_same_origin_proof(redis, sample_data_dir, tmp_path):
    client = rq_client(redis, sample_data_dir, tmp_path, api_token=TOKEN)
    assert client.get("/rq/favicon.ico", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
