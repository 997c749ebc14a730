"""Settings: `default.yaml`, then the file named by TRAINHOST_CONFIG, then TRAINHOST_* env vars
(plus REDIS_URL and PORT), then explicit overrides — highest last."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_YAML = Path(__file__).with_name("default.yaml")
QUEUE_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class ConfigError(ValueError):
    """An invalid setting; the message names the key and the expected form."""


def _aliases(key: str, *conventional: str) -> AliasChoices:
    return AliasChoices(f"TRAINHOST_{key.upper()}", *conventional, key)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRAINHOST_", extra="forbid", populate_by_name=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535, validation_alias=_aliases("port", "PORT"))
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
    redis_url: str = Field(validation_alias=_aliases("redis_url", "REDIS_URL"))
    redis_sentinels: Annotated[list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")]], NoDecode]
    redis_sentinel_master: str = Field(min_length=1, max_length=128)
    # Where sessions are queued; workers serve the high-priority queue first (see `queues`).
    training_queue: str = Field(pattern=QUEUE_NAME)
    evaluation_queue: str = Field(pattern=QUEUE_NAME)
    high_priority_queue: str = Field(pattern=QUEUE_NAME)  # after the two it is checked against
    session_timeout_minutes: float = Field(gt=0, le=7 * 24 * 60)
    training_retries: int = Field(ge=0, le=10)
    max_experiment_sessions: int = Field(ge=1, le=100_000)  # trials × folds of one experiment
    pack_size: int = Field(ge=0, le=4096)  # same-shape experiment children trained at once; 0: by device, 1: never
    experiments_dir: Path
    result_ttl_days: int = Field(ge=1, le=3650)
    stop_grace_seconds: float = Field(ge=0, le=3600)
    data_dir: Path
    models_dir: Path
    logs_dir: Path
    var_dir: Path
    api_token: SecretStr
    max_request_bytes: int = Field(ge=1024, le=1 << 30)
    rq_dashboard: bool
    # Names the web app answers for besides loopback and the bound address (DNS-rebinding guard).
    allowed_hosts: Annotated[list[Annotated[str, Field(pattern=r"^\.?[A-Za-z0-9_.\-\[\]:]{1,253}$")]], NoDecode]
    # Web pages (scheme://host[:port]) that may call the API from a browser besides its own pages.
    allowed_origins: Annotated[list[Annotated[str, Field(pattern=r"^https?://[A-Za-z0-9_.\-\[\]:]{1,260}$")]],
                               NoDecode]
    web_threads: int = Field(ge=1, le=256)
    web_connection_limit: int = Field(ge=10, le=100_000)
    web_channel_timeout: float = Field(ge=1, le=3600)
    extra_job_functions: Annotated[list[str], NoDecode]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        user_file = os.environ.get("TRAINHOST_CONFIG")
        if user_file:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=user_file))
        sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=DEFAULT_YAML))
        return tuple(sources)

    @field_validator("extra_job_functions", "redis_sentinels", "allowed_hosts", "allowed_origins",
                     mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("expected empty (embedded Redis) or a URL redis://host:port/db, rediss://… or unix://…")
        return value

    @field_validator("high_priority_queue")
    @classmethod
    def _high_priority_apart(cls, value: str, info: ValidationInfo) -> str:
        # Sharing a queue with normal sessions, a high-priority one would wait behind them.
        if value in (info.data.get("training_queue"), info.data.get("evaluation_queue")):
            raise ValueError("must differ from training_queue and evaluation_queue")
        return value

    @property
    def queues(self) -> list[str]:
        """The queues a worker listens to, in the order it serves them: high priority first."""
        return list(dict.fromkeys((self.high_priority_queue, self.training_queue, self.evaluation_queue)))

    @property
    def token(self) -> str:
        return self.api_token.get_secret_value()

    @property
    def result_ttl_seconds(self) -> int:
        return self.result_ttl_days * 86400

    @property
    def job_timeout_seconds(self) -> int:
        return max(1, round(self.session_timeout_minutes * 60))


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Load settings, turning any invalid value into a ConfigError naming the key."""
    if os.environ.get("TRAINHOST_CONFIG") and not Path(os.environ["TRAINHOST_CONFIG"]).is_file():
        raise ConfigError(f"TRAINHOST_CONFIG: no such file {os.environ['TRAINHOST_CONFIG']!r}")
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(settings)"
        got = error.get("input")
        shown = "" if isinstance(got, dict) else f", got {got!r}"
        lines.append(f"config key '{key}': {error['msg']}{shown}")
    return "invalid configuration:\n  " + "\n  ".join(lines)
