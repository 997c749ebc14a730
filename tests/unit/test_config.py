from pathlib import Path

import pytest

from trainhost.config import ConfigError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in ("TRAINHOST_CONFIG", "REDIS_URL", "PORT", "TRAINHOST_PORT", "TRAINHOST_REDIS_URL",
                "TRAINHOST_TRAINING_QUEUE", "TRAINHOST_HIGH_PRIORITY_QUEUE", "TRAINHOST_DATA_DIR",
                "TRAINHOST_SESSION_TIMEOUT_MINUTES"):
        monkeypatch.delenv(key, raising=False)


def test_defaults_come_from_default_yaml():
    settings = load_settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 5002
    assert settings.redis_url == ""
    assert settings.session_timeout_minutes == 60
    assert settings.job_timeout_seconds == 3600
    assert settings.queues == ["high", "training", "evaluation"]


def test_precedence_yaml_then_env_then_overrides(tmp_path, monkeypatch):
    user = tmp_path / "mine.yaml"
    user.write_text("port: 6000\ndata_dir: /srv/data\nsession_timeout_minutes: 5\n")
    monkeypatch.setenv("TRAINHOST_CONFIG", str(user))
    assert load_settings().port == 6000
    assert load_settings().data_dir == Path("/srv/data")
    monkeypatch.setenv("TRAINHOST_PORT", "6100")
    monkeypatch.setenv("TRAINHOST_SESSION_TIMEOUT_MINUTES", "7")
    assert load_settings().port == 6100
    assert load_settings().session_timeout_minutes == 7
    assert load_settings({"port": 6200}).port == 6200


def test_conventional_redis_url_and_port(monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:7777/1")
    monkeypatch.setenv("PORT", "8080")
    settings = load_settings()
    assert settings.redis_url == "redis://127.0.0.1:7777/1"
    assert settings.port == 8080
    monkeypatch.setenv("TRAINHOST_REDIS_URL", "redis://127.0.0.1:7778/0")
    assert load_settings().redis_url == "redis://127.0.0.1:7778/0"


def test_renamed_queues_are_what_a_worker_listens_to_high_priority_first(monkeypatch):
    monkeypatch.setenv("TRAINHOST_TRAINING_QUEUE", "gpu-train")
    monkeypatch.setenv("TRAINHOST_HIGH_PRIORITY_QUEUE", "urgent")
    assert load_settings().queues == ["urgent", "gpu-train", "evaluation"]
    # One queue for both kinds is fine: it is listened to once.
    assert load_settings({"evaluation_queue": "gpu-train"}).queues == ["urgent", "gpu-train"]


@pytest.mark.parametrize(
    ("overrides", "key", "expected"),
    [
        ({"port": "abc"}, "port", "valid integer"),
        ({"port": 70000}, "port", "less than or equal to 65535"),
        ({"session_timeout_minutes": 0}, "session_timeout_minutes", "greater than 0"),
        ({"log_level": "chatty"}, "log_level", "DEBUG"),
        ({"redis_url": "http://x"}, "redis_url", "redis://"),
        ({"training_queue": "not ok!"}, "training_queue", "pattern"),
        ({"high_priority_queue": "training"}, "high_priority_queue", "must differ"),
        ({"high_priority_queue": "evals", "evaluation_queue": "evals"}, "high_priority_queue", "must differ"),
        ({"pack_size": -1}, "pack_size", "greater than or equal to 0"),
        ({"pack_size": 5000}, "pack_size", "less than or equal to 4096"),
        ({"pack_size": "many"}, "pack_size", "valid integer"),
        ({"no_such_key": 1}, "no_such_key", "Extra inputs"),
    ],
)
def test_invalid_values_name_the_key(overrides, key, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(overrides)
    assert f"'{key}'" in str(err.value)
    assert expected in str(err.value)


def test_invalid_env_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("TRAINHOST_SESSION_TIMEOUT_MINUTES", "soon")
    with pytest.raises(ConfigError, match="session_timeout_minutes"):
        load_settings()


def test_missing_config_file_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINHOST_CONFIG", str(tmp_path / "absent.yaml"))
    with pytest.raises(ConfigError, match="TRAINHOST_CONFIG"):
        load_settings()


def test_cli_reports_bad_config_and_exits_2(monkeypatch, capsys):
    from trainhost.worker.cli import main

    monkeypatch.setenv("TRAINHOST_PORT", "-1")
    assert main(["sample-data", "--data-dir", "/nonexistent"]) == 2
    assert "TRAINHOST_PORT" in capsys.readouterr().err
