"""Optional: rq-dashboard's own UI under /rq, on our Redis, JSON serializer, behind the api_token."""

from __future__ import annotations

from flask import Flask, Response, current_app, request

from trainhost.config import ConfigError
from trainhost.jobs.connection import resolve_redis_url
from trainhost.status_api import services


def mount_rq_dashboard(app: Flask) -> None:
    """rq-dashboard's blueprint under /rq, on our Redis with the JSON serializer, behind api_token."""
    from rq.serializers import JSONSerializer

    try:
        import rq_dashboard
    except ImportError:
        raise ConfigError("config key 'rq_dashboard': needs the rq-dashboard package "
                          "(pip install rq-dashboard six)") from None
    rq_dashboard.web.config.serializer = JSONSerializer
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    app.before_request(_before_rq_dashboard)


def _before_rq_dashboard() -> Response | None:
    """Checks the token (Bearer, or Basic with the token as password so a browser can ask for it),
    then points rq-dashboard at our Redis: its views read `app.redis_conn`, or a URL per instance."""
    if request.blueprint != "rq_dashboard":
        return None
    settings = services.settings()
    auth = request.authorization
    if not services.token_matches((auth.token if auth.type == "bearer" else auth.password) if auth else None):
        return Response("rq-dashboard needs the api_token (as the password, any user name)\n", 401,
                        {"WWW-Authenticate": 'Basic realm="trainhost rq-dashboard"'})
    current_app.redis_conn = services.redis()
    if settings.redis_sentinels:
        url = f"redis+sentinel://{','.join(settings.redis_sentinels)}/{settings.redis_sentinel_master}"
    else:
        url = resolve_redis_url(settings)
    current_app.config["RQ_DASHBOARD_REDIS_URL"] = (url,)
    return None
