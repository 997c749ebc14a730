"""A table of malformed requests against every mutating endpoint: each is a 4xx JSON error naming
the problem, nothing is enqueued, and the service stays up. (fakeredis; the HTTP layer is real Flask.)"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

import fakeredis
import pytest

from tests.helpers.fixtures import strategy_text
from trainhost.jobs.pipeline.strategy import parse_strategy
from trainhost.status_api import create_app

DATES = {"start_date": "2017-05-01", "end_date": "2018-02-07"}
Body = Callable[[], dict]  # built when the test runs: the cases read no file at collection


@cache
def good_yaml() -> str:
    return strategy_text("v3_multi_indicator")


def with_yaml(old: str, new: str) -> Body:
    def body() -> dict:
        assert old in good_yaml(), old
        return {"strategy_yaml": good_yaml().replace(old, new, 1), **DATES}
    return body


def good(**changes) -> Body:
    return lambda: {"strategy_yaml": good_yaml(), **DATES, **changes}


@dataclass(frozen=True)
class Sent:
    """A request sent other than as a JSON body with Content-Type: application/json."""

    data: bytes
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"1" + b"}" * depth


DEEP_ARRAY = b"[" * 1000 + b"]" * 1000  # the JSON parser itself runs out of recursion
DEEP_OBJECT = nested(900)  # parses, but is deeper than anything downstream should walk
# What a web page elsewhere can send without asking (no CORS preflight): text/plain or form bodies.
CROSS_SITE_BODIES = [
    ("text/plain body", Sent(b'{"session_id": "abc"}', "text/plain"), 415, "application/json"),
    ("form body", Sent(b"session_id=abc", "application/x-www-form-urlencoded"), 415, "application/json"),
    ("multipart body", Sent(b"--x\r\n\r\n{}\r\n--x--\r\n", "multipart/form-data; boundary=x"), 415,
     "application/json"),
    ("no content type", Sent(b'{"session_id": "abc"}', None), 415, "application/json"),
    ("json nested 1000 deep", Sent(DEEP_ARRAY), 400, "nested"),
    ("json nested 900 deep", Sent(DEEP_OBJECT), 400, "nested"),
    ("foreign origin", Sent(b'{"session_id": "abc"}', headers={"Origin": "https://evil.example"}), 403,
     "evil.example"),
    ("null origin", Sent(b'{"session_id": "abc"}', headers={"Origin": "null"}), 403, "origin"),
    ("same host other port", Sent(b'{"session_id": "abc"}', headers={"Origin": "http://localhost:8080"}), 403,
     "localhost:8080"),
    ("dns rebinding host", Sent(b'{"session_id": "abc"}', headers={"Host": "rebind.evil.example:5002",
                                                                    "Origin": "http://rebind.evil.example:5002"}),
     421, "allowed_hosts"),
    ("foreign host", Sent(b'{"session_id": "abc"}', headers={"Host": "evil.example"}), 421, "evil.example"),
]

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]\n"

START_CASES = [
    # (id, body or raw bytes, expected status, text the error must contain)
    ("not json", b"{bad", 400, "JSON"),
    ("json array", [1, 2], 400, "JSON object"),
    ("json string", "hello", 400, "JSON object"),
    ("json null", None, 400, "JSON"),
    ("non utf-8", b"\xff\xfe{\x00", 400, "UTF-8"),
    ("empty object", {}, 422, "strategy_yaml"),
    ("both forms", good(strategy={"name": "x"}), 422, "exactly one"),
    ("yaml not a string", {"strategy_yaml": 42, **DATES}, 422, "strategy_yaml"),
    ("yaml empty", {"strategy_yaml": "", **DATES}, 422, "strategy_yaml"),
    ("unknown field", good(foo=1), 422, "foo"),
    ("epochs negative", good(epochs=-1), 422, "epochs"),
    ("epochs zero", good(epochs=0), 422, "epochs"),
    ("epochs huge", good(epochs=10**9), 422, "epochs"),
    ("epochs text", good(epochs="ten"), 422, "epochs"),
    ("epochs fraction", good(epochs=1.5), 422, "epochs"),
    ("epochs bool", good(epochs=[True]), 422, "epochs"),
    ("epochs true", good(epochs=True), 422, "epochs"),
    ("epochs false", good(epochs=False), 422, "epochs"),
    ("epochs numeric string", good(epochs="10"), 422, "epochs"),
    ("batch size true", good(batch_size=True), 422, "batch_size"),
    ("seed true", good(seed=True), 422, "seed"),
    ("seed false", good(seed=False), 422, "seed"),
    ("batch size zero", good(batch_size=0), 422, "batch_size"),
    ("batch size huge", good(batch_size=10**12), 422, "batch_size"),
    ("seed negative", good(seed=-1), 422, "seed"),
    ("symbols a string", good(symbols="EURUSD"), 422, "symbols"),
    ("symbols empty", good(symbols=[]), 422, "symbols"),
    ("symbol traversal", good(symbols=["../etc/passwd"]), 422, "symbols"),
    ("symbol slash", good(symbols=["EUR/USD"]), 422, "symbols"),
    ("symbol dotfile", good(symbols=[".hidden"]), 422, "symbols"),
    ("symbol missing data", good(symbols=["GBPUSD"]), 422, "GBPUSD_1h.csv"),
    ("timeframe unknown unit", good(timeframes=["1x"]), 422, "timeframes"),
    ("timeframe traversal", good(timeframes=["../../1h"]), 422, "timeframes"),
    ("start date words", good(start_date="yesterday"), 422, "start_date"),
    ("end date impossible", good(end_date="2018-13-45"), 422, "end_date"),
    ("dates reversed", good(start_date="2018-02-01", end_date="2017-05-01"), 422, "end_date"),
    ("date not a string", good(start_date=20170501), 422, "start_date"),
    ("task id traversal", good(task_id="../x"), 422, "task_id"),
    ("task id too long", good(task_id="a" * 65), 422, "task_id"),
    ("task id space", good(task_id="has space"), 422, "task_id"),
    ("task and session ids differ", good(task_id="a", session_id="b"), 422, "task_id"),
    ("invalid yaml", {"strategy_yaml": "name: [unclosed", **DATES}, 422, "yaml"),
    ("yaml alias bomb", {"strategy_yaml": ALIAS_BOMB, **DATES}, 422, "alias"),
    ("yaml is a list", {"strategy_yaml": "- a\n- b\n", **DATES}, 422, "mapping"),
    ("yaml oversized", {"strategy_yaml": "name: x\n" + "# padding\n" * 40_000, **DATES}, 422, "limit"),
    ("not v3", {"strategy_yaml": "name: x\nindicators: []\n", **DATES}, 422, "v3"),
    ("unknown indicator", with_yaml("type: adx", "type: supertrendy"), 422, "supertrendy"),
    ("bad triangle", with_yaml("parameters: [0, 30, 40]", "parameters: [40, 30]"), 422, "oversold"),
    ("triangle unordered", with_yaml("parameters: [0, 30, 40]", "parameters: [40, 30, 50]"), 422, "a <= b <= c"),
    ("unknown mf type", with_yaml("type: triangular", "type: sigmoid"), 422, "sigmoid"),
    ("missing fuzzy set", with_yaml("- {fuzzy_set: adx_trend", "- {fuzzy_set: nope"), 422, "nope"),
    ("dot on single output", with_yaml("indicator: rsi_14\n", "indicator: rsi_14.line\n"), 422, "single-output"),
    ("unknown output", with_yaml("indicator: adx_14.adx", "indicator: adx_14.nope"), 422, "nope"),
    ("unknown indicator ref", with_yaml("indicator: rsi_14\n", "indicator: ghost\n"), 422, "ghost"),
    ("hidden layer of 1e9 units", with_yaml("hidden_layers: [64, 32]", "hidden_layers: [1000000000]"), 422,
     "hidden_layers"),
    ("hidden layers not ints", with_yaml("hidden_layers: [64, 32]", "hidden_layers: [a, b]"), 422, "hidden_layers"),
    ("dropout above 1", with_yaml("dropout: 0.2", "dropout: 1.5"), 422, "dropout"),
    ("unknown activation", with_yaml("activation: relu", "activation: swish"), 422, "activation"),
    ("unquoted version", with_yaml("version: '3.0'", "version: 3.0"), 422, "version"),
    ("float period", with_yaml("{type: rsi, period: 14", "{type: rsi, period: 14.0"), 422, "period"),
    ("negative period", with_yaml("{type: rsi, period: 14", "{type: rsi, period: -5"), 422, "period"),
    ("split over 1", with_yaml("data_split: {train: 0.7", "data_split: {train: 1.5"), 422, "train"),
    ("no nn inputs", with_yaml("nn_inputs:\n- {fuzzy_set: rsi_14, timeframes: all}\n- {fuzzy_set: adx_trend, "
                               "timeframes: all}", "nn_inputs: []"), 422, "nn_inputs"),
    ("normalization on fuzzy", with_yaml("{fuzzy_set: rsi_14, timeframes: all}",
                                         "{fuzzy_set: rsi_14, timeframes: all, normalization: zscore}"), 422,
     "normalization"),
    ("timeframes bare string", with_yaml("{fuzzy_set: rsi_14, timeframes: all}",
                                         "{fuzzy_set: rsi_14, timeframes: 1h}"), 422, "timeframes"),
    ("context data", with_yaml("indicators:", "context_data: [{provider: fred, series: DGS10}]\nindicators:"), 422,
     "context_data"),
    ("decisions confidence above 1", with_yaml("confidence_threshold: 0.6", "confidence_threshold: 1.6"), 422,
     "decisions.confidence_threshold"),
    ("backtest commission negative", good(backtest={"commission": -0.1}), 422, "backtest.commission"),
    ("backtest capital a boolean", good(backtest={"initial_capital": True}), 422, "backtest.initial_capital"),
    ("backtest position size over 1", good(backtest={"position_size": 1.5}), 422, "backtest.position_size"),
    ("backtest unknown key", good(backtest={"leverage": 10}), 422, "backtest.leverage"),
    ("backtest not a mapping", good(backtest=[0.001]), 422, "backtest"),
    ("structured form not a mapping", {"strategy": "name: x", **DATES}, 422, "strategy"),
    ("structured form empty", {"strategy": {}, **DATES}, 422, "name"),
    ("priority unknown", good(priority="urgent"), 422, "priority"),
    ("priority not a string", good(priority=1), 422, "priority"),
    *CROSS_SITE_BODIES,
]


@pytest.fixture
def redis():
    return fakeredis.FakeRedis()


def model_metadata(name: str, yaml_text: str) -> dict:
    strategy = parse_strategy(yaml_text)
    return {"strategy_name": name, "symbol": strategy.symbols[0], "timeframe": strategy.base_timeframe,
            "strategy": strategy.to_dict()}


def write_model_folder(folder, yaml_text: str) -> None:
    """What evaluation reads of a saved model before enqueueing: metadata.json and the COMPLETE marker."""
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps(model_metadata(folder.parent.name, yaml_text)))
    (folder / "COMPLETE").write_text("")


def write_broken_models(models, outside) -> None:
    """COMPLETE folders under models/broken/ whose metadata.json is wrong in one way each."""
    good_metadata = model_metadata("broken", strategy_text("v3_multi_indicator"))
    contents = {
        "malformed": b'{"strategy_name": "x", ',
        "list": b"[1, 2, 3]",
        "lacks_keys": json.dumps({"strategy_name": "x"}).encode(),
        "wrong_types": json.dumps({**good_metadata, "strategy": "v3_multi_indicator"}).encode(),
        "bad_strategy": json.dumps({**good_metadata, "strategy": {"name": "x"}}).encode(),
        "not_utf8": b'{"strategy_name": "\xff\xfe"}',
        "nested_deep": b"[" * 5000 + b"]" * 5000,
    }
    for name, content in contents.items():
        (models / "broken" / name).mkdir(parents=True)
        (models / "broken" / name / "metadata.json").write_bytes(content)
    (models / "broken" / "missing").mkdir()
    # A symlink to a perfectly good metadata.json, but outside the models root.
    outside.mkdir()
    (outside / "metadata.json").write_text(json.dumps(good_metadata))
    (models / "broken" / "symlink").mkdir()
    (models / "broken" / "symlink" / "metadata.json").symlink_to(outside / "metadata.json")
    (models / "broken" / "fifo").mkdir()
    os.mkfifo(models / "broken" / "fifo" / "metadata.json")  # reading it would wait for a writer forever
    (models / "broken" / "directory" / "metadata.json").mkdir(parents=True)
    for folder in (models / "broken").iterdir():
        (folder / "COMPLETE").write_text("")


@pytest.fixture
def client(redis, sample_data_dir, tmp_path):
    write_model_folder(tmp_path / "models" / "some_strategy" / "1h_v1", strategy_text("v3_multi_indicator"))
    (tmp_path / "models" / "half_written").mkdir()
    # Trained on 4h bars with 1h features: evaluation reads the 1h file and resamples the 4h one.
    write_model_folder(tmp_path / "models" / "coarse" / "4h_v1",
                       strategy_text("v3_multi_timeframe").replace("base_timeframe: 1h", "base_timeframe: 4h"))
    write_broken_models(tmp_path / "models", tmp_path / "outside")
    app = create_app({"REDIS_CLIENT": redis, "data_dir": str(sample_data_dir), "models_dir": str(tmp_path / "models"),
                      "max_request_bytes": 1_000_000})
    return app.test_client()


def post(client, path: str, body):
    if callable(body):
        body = body()
    if isinstance(body, Sent):
        return client.post(path, data=body.data, content_type=body.content_type, headers=body.headers)
    if isinstance(body, bytes):
        return client.post(path, data=body, content_type="application/json")
    return client.post(path, data=json.dumps(body), content_type="application/json")


def assert_refused(response, status: int, text: str, redis) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] and text.lower() in json.dumps(error).lower(), error
    assert not redis.keys("rq:job:*") and not redis.keys("rq:queue:*"), "something was enqueued"


@pytest.mark.parametrize(("case", "body", "status", "text"), START_CASES, ids=[c[0] for c in START_CASES])
def test_training_start_refuses(client, redis, case, body, status, text):
    assert_refused(post(client, "/training/start", body), status, text, redis)


EVALUATE_CASES = [
    ("empty", {}, 422, "model_path"),
    ("traversal", {"model_path": "../../etc"}, 422, "outside the models directory"),
    ("absolute outside", {"model_path": "/etc"}, 422, "outside the models directory"),
    ("incomplete folder", {"model_path": "half_written"}, 422, "not a complete"),
    ("missing folder", {"model_path": "nope/1h_v9"}, 422, "not a complete"),
    ("symbol traversal", {"model_path": "some_strategy/1h_v1", "symbol": "../x"}, 422, "symbol"),
    ("bad date", {"model_path": "some_strategy/1h_v1", "start_date": "soon"}, 422, "start_date"),
    ("bad timeframe", {"model_path": "some_strategy/1h_v1", "timeframe": "1y"}, 422, "timeframe"),
    ("dates reversed", {"model_path": "some_strategy/1h_v1", "start_date": "2018-01-01",
                        "end_date": "2017-01-01"}, 422, "end_date"),
    ("unknown field", {"model_path": "some_strategy/1h_v1", "epochs": 3}, 422, "epochs"),
    ("model path not a string", {"model_path": ["a"]}, 422, "model_path"),
    ("missing data file", {"model_path": "some_strategy/1h_v1", "symbol": "GBPUSD"}, 422, "GBPUSD_1h.csv"),
    ("not the model's timeframe", {"model_path": "some_strategy/1h_v1", "timeframe": "4h"}, 422, "trained on 1h"),
    ("a timeframe with no finer file", {"model_path": "coarse/4h_v1", "symbol": "GOOG"}, 422, "GOOG_1h.csv"),
    ("backtest slippage text", {"model_path": "some_strategy/1h_v1", "backtest": {"slippage": "0.1"}}, 422,
     "backtest.slippage"),
    ("backtest separation negative", {"model_path": "some_strategy/1h_v1",
                                      "backtest": {"min_signal_separation_hours": -1}}, 422, "backtest"),
    ("not json", b"[", 400, "JSON"),
    ("metadata malformed", {"model_path": "broken/malformed"}, 422,
     "metadata.json in 'broken/malformed': is not valid"),
    ("metadata missing", {"model_path": "broken/missing"}, 422, "metadata.json in 'broken/missing': missing"),
    ("metadata a list", {"model_path": "broken/list"}, 422, "must be a JSON object, got an array"),
    ("metadata lacks keys", {"model_path": "broken/lacks_keys"}, 422, "lacks symbol, timeframe, strategy"),
    ("metadata wrong types", {"model_path": "broken/wrong_types"}, 422, "strategy must be an object, got a string"),
    ("metadata bad strategy", {"model_path": "broken/bad_strategy"}, 422, "metadata.json in 'broken/bad_strategy'"),
    ("metadata not utf-8", {"model_path": "broken/not_utf8"}, 422, "not UTF-8"),
    ("metadata nested deep", {"model_path": "broken/nested_deep"}, 422, "not valid JSON"),
    ("metadata a symlink", {"model_path": "broken/symlink"}, 422, "metadata.json in 'broken/symlink': is a symbolic"),
    ("metadata a fifo", {"model_path": "broken/fifo"}, 422, "metadata.json in 'broken/fifo': is a FIFO"),
    ("metadata a directory", {"model_path": "broken/directory"}, 422, "is a directory"),
    ("priority unknown", {"model_path": "some_strategy/1h_v1", "priority": "urgent"}, 422, "priority"),
    *CROSS_SITE_BODIES,
]


@pytest.mark.parametrize(("case", "body", "status", "text"), EVALUATE_CASES, ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate_refuses(client, redis, case, body, status, text):
    assert_refused(post(client, "/training/evaluate", body), status, text, redis)


def test_evaluation_accepts_a_base_timeframe_it_can_resample(client, redis):
    response = post(client, "/training/evaluate", {"model_path": "coarse/4h_v1"})
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["status"] == "queued" and redis.keys("rq:job:*")


STOP_CASES = [
    ("empty", {}, 422, "session_id"),
    ("traversal", {"session_id": "../x"}, 422, "session_id"),
    ("number", {"session_id": 123}, 422, "session_id"),
    ("unknown session", {"session_id": "nope"}, 404, "nope"),
    ("unknown field", {"session_id": "abc", "force": True}, 422, "force"),
    ("not json", b"nope", 400, "JSON"),
    *CROSS_SITE_BODIES,
]


@pytest.mark.parametrize(("case", "body", "status", "text"), STOP_CASES, ids=[c[0] for c in STOP_CASES])
def test_stop_refuses(client, redis, case, body, status, text):
    assert_refused(post(client, "/training/stop", body), status, text, redis)


@pytest.mark.parametrize(("method", "path", "status", "text", "headers"), [
    ("delete", "/training/sessions/has%20space", 400, "session_id", {}),
    ("delete", "/training/sessions/nope", 404, "nope", {}),
    ("get", "/training/status/a%2F..", 404, "not found", {}),
    ("get", "/training/status/" + "x" * 65, 400, "session_id", {}),
    ("get", "/training/result/nope", 404, "nope", {}),
    ("get", "/training/sessions?limit=0", 422, "limit", {}),
    ("get", "/training/sessions?limit=1001", 422, "limit", {}),
    ("get", "/training/sessions?limit=abc", 400, "limit", {}),
    ("get", "/training/sessions?status=exploded", 422, "status", {}),
    ("get", "/training/sessions?offset=-1", 422, "offset", {}),
    ("get", f"/training/sessions?offset={10**30}", 422, "offset", {}),
    ("get", f"/training/sessions?offset={2**63}", 422, "offset", {}),
    ("get", f"/training/sessions?status=queued&offset={2**63}", 422, "offset", {}),
    ("get", "/training/sessions", 421, "allowed_hosts", {"Host": "rebind.evil.example"}),
    ("get", "/training/sessions", 403, "evil.example", {"Origin": "https://evil.example"}),
    ("delete", "/training/sessions/nope", 421, "allowed_hosts", {"Host": "rebind.evil.example"}),
    ("delete", "/training/sessions/nope", 403, "evil.example", {"Origin": "https://evil.example"}),
], ids=lambda value: value[:60] if isinstance(value, str) else ("+".join(value) or "-") if isinstance(value, dict)
   else None)
def test_ids_and_queries_refused(client, redis, method, path, status, text, headers):
    response = getattr(client, method)(path, headers=headers)
    assert response.status_code == status
    assert text.lower() in response.get_json()["error"]["message"].lower()


def test_twenty_megabyte_body_is_refused_with_413(client, redis):
    response = client.post("/training/start", data=b"{" + b" " * 20_000_000 + b"}", content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"]
    assert not redis.keys("rq:*")


def test_a_good_request_after_all_that_is_accepted(client, redis):
    for _, body, _, _ in START_CASES[:10]:
        post(client, "/training/start", body)
    response = post(client, "/training/start", good(task_id="fine"))
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["session_id"] == "fine"
    assert redis.llen("rq:queue:training") == 1


def test_the_corpus_is_big_enough():
    assert len(START_CASES) + len(EVALUATE_CASES) + len(STOP_CASES) >= 60


def test_nul_byte_in_model_path_is_refused(client, redis):
    assert_refused(post(client, "/training/evaluate", {"model_path": "a\u0000b"}), 422, "model_path", redis)


def test_wrong_method_says_which_are_allowed(client):
    response = client.open("/health", method="TRACE")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.get_json()["error"]["code"] == "method_not_allowed"
