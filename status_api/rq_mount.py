"""Optional: rq-dashboard's own UI under /rq, on our Redis, JSON serializer, behind the api_token;
read-only without one."""

from __future__ import annotations

from flask import Flask, Response, current_app, request

from trainhost.config import ConfigError
from trainhost.jobs.connection import resolve_redis_url
from trainhost.jobs.producer import RequestError
from trainhost.status_api import services
from trainhost.status_api.guards import request_is_same_origin


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


# rq-dashboard's views that only read. Anything else (requeue, delete, empty, compact, and any view a
# later rq-dashboard adds) counts as an action: refused without an api_token, and with one it also
# needs a request from our own pages. Its `GET /requeue/<queue>` re-runs every failed job, and a
# browser sends a cross-site GET (an <img>) with the cached Basic credentials and without an Origin.
READ_ONLY_VIEWS = frozenset(f"rq_dashboard.{view}" for view in (
    "static", "favicon", "queues_overview", "workers_overview", "jobs_overview", "job_view",
    "list_queues", "list_jobs", "job_info", "list_workers"))


def _before_rq_dashboard() -> Response | None:
    """Checks the token (Bearer, or Basic with the token as password so a browser can ask for it)
    and, for actions, that there is one and that the request comes from our own pages; then points
    rq-dashboard at our Redis: its views read `app.redis_conn`, or a URL per instance."""
    if request.blueprint != "rq_dashboard":
        return None
    settings = services.settings()
    auth = request.authorization
    if not services.token_matches((auth.token if auth.type == "bearer" else auth.password) if auth else None):
        return Response("rq-dashboard needs the api_token (as the password, any user name)\n", 401,
                        {"WWW-Authenticate": 'Basic realm="trainhost rq-dashboard"'})
    if request.endpoint not in READ_ONLY_VIEWS or request.method not in ("GET", "HEAD"):
        if not settings.token:
            raise RequestError(403, "read_only", "rq-dashboard is read-only without an api_token: set api_token "
                                                 "(TRAINHOST_API_TOKEN) to requeue, delete or empty jobs from it")
        if not request_is_same_origin():
            raise RequestError(403, "cross_origin_refused", "rq-dashboard actions must come from its own pages "
                                                            "(a same-origin request with an Origin or Referer)")
    current_app.redis_conn = services.redis(reads_only=False)  # its GET /requeue writes
    if settings.redis_sentinels:
        url = f"redis+sentinel://{','.join(settings.redis_sentinels)}/{settings.redis_sentinel_master}"
    else:
        url = resolve_redis_url(settings)
    current_app.config["RQ_DASHBOARD_REDIS_URL"] = (url,)
    return None
