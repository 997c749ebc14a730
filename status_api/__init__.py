"""The status app: health, sessions and the host-service HTTP API (Flask)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from flask import Flask

from trainhost.config import ConfigError, load_settings


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app. Lower-case keys of `config` override settings (see config/default.yaml);
    upper-case keys go to Flask's config (e.g. TESTING, or REDIS_CLIENT to inject a client)."""
    config = dict(config or {})
    flask_config = {key: config.pop(key) for key in list(config) if key.isupper()}
    settings = load_settings(config)
    if not is_loopback(settings.host) and not settings.token:
        raise ConfigError(
            f"config key 'host': refusing to serve on non-loopback address {settings.host!r} "
            "without an api_token (set TRAINHOST_API_TOKEN)"
        )
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=settings.max_request_bytes, **flask_config)
    app.extensions["trainhost.settings"] = settings

    from trainhost.status_api import dashboard, errors, experiments, guards, health, metrics, openapi, training

    errors.register(app)
    guards.install(app, settings)  # first: Host and Origin are checked before anything else runs
    app.register_blueprint(health.bp)
    app.register_blueprint(training.bp)
    app.register_blueprint(experiments.bp)
    for blueprint in (dashboard.bp, metrics.bp, openapi.bp):
        app.register_blueprint(blueprint)
    if settings.rq_dashboard:
        from trainhost.status_api.rq_mount import mount_rq_dashboard

        mount_rq_dashboard(app)
    return app


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
