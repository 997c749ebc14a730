"""Response bodies of the HTTP API, for the OpenAPI document (the request bodies are jobs/schemas.py).

Objects allow extra fields: the API may add fields without breaking a client."""

from __future__ import annotations

from typing import Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, create_model

from trainhost.jobs.meta import VIEW_FIELDS, SessionMeta
from trainhost.jobs.sessions import STATUSES

SessionStatus = Literal[STATUSES]  # type: ignore[valid-type]


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Body):
    code: str
    message: str
    details: Any = None


class ErrorResponse(_Body):
    error: ErrorDetail


class Health(_Body):
    healthy: bool
    service: str
    status: Literal["healthy", "degraded", "unhealthy"]
    workers: int | None = None
    worker_status: Literal["busy", "idle"] | None = None
    current_session: str | None = None
    error: ErrorDetail | None = None


class GpuDevice(_Body):
    index: int
    name: str
    memory_used_mb: int
    memory_total_mb: int
    utilization_percent: float
    temperature_c: float


class GpuSummary(_Body):
    available: bool
    reason: str | None = None
    devices: list[GpuDevice]


class WorkerInfo(_Body):
    name: str
    state: str
    queues: list[str]
    current_session: str | None
    heartbeat_age_seconds: float | None
    successful_jobs: int | None
    failed_jobs: int | None


class QueueCounts(_Body):
    queued: int
    started: int
    failed: int


class HealthDetailed(_Body):
    service: str
    timestamp: str
    healthy: bool
    status: Literal["healthy", "degraded", "unhealthy"]
    system: dict[str, Any]
    gpu: GpuSummary
    redis: dict[str, Any]
    workers: list[WorkerInfo] | None = None
    queues: dict[str, QueueCounts] | None = None
    error: ErrorDetail | None = None


class Submitted(_Body):
    session_id: str
    operation_id: str
    status: Literal["queued"]
    message: str
    gpu_allocated: bool | None = None
    warnings: list[str] | None = None


class StopAnswer(_Body):
    session_id: str
    status: Literal["cancelled", "stopping"]
    message: str


def _session_fields() -> dict[str, Any]:
    """A session view's fields: its meta's (jobs/meta.py, shown as they are stored, each possibly
    absent: null) between what RQ's record says."""
    meta = get_type_hints(SessionMeta)
    return {"session_id": (str, ...), "status": (SessionStatus, ...),
            **{name: (meta[name] | None, ...) for name in VIEW_FIELDS},
            "created_at": (str | None, ...), "started_at": (str | None, ...), "ended_at": (str | None, ...),
            "worker": (str | None, ...), "error": (str | None, ...), "result": (dict[str, Any] | None, None)}


Session = create_model("Session", __base__=_Body, __doc__="A session: GET /training/status/<id>.",
                       **_session_fields())


class SessionList(_Body):
    total: int
    sessions: list[Session]
    limit: int
    offset: int


class EpochRecord(_Body):
    epoch: int
    train_loss: float | None
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None
    learning_rate: float | None
    duration_s: float
    samples_per_second: float | None = None
    timestamp: str


class History(_Body):
    session_id: str
    history: list[EpochRecord]


class Backtest(_Body):
    """The trader's figures of a session's model on its test split (training) or range (evaluation)."""

    config: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    warnings: list[str] = []
    skipped: str | None = None


class Result(_Body):
    session_id: str
    status: Literal["completed", "stopped"]
    model_path: str
    backtest: Backtest | None = None


class Trades(_Body):
    session_id: str
    total: int
    limit: int
    offset: int
    trades: list[dict[str, Any]]


class EquityCurve(_Body):
    session_id: str
    total_points: int
    step: int
    points: list[dict[str, Any]]


class Deleted(_Body):
    session_id: str
    deleted: bool


class Document(_Body):
    """An OpenAPI document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


ExperimentStatus = Literal["queued", "running", "stopping", "summarizing", "completed", "stopped"]


class ExperimentSubmitted(_Body):
    experiment_id: str
    status: Literal["queued"]
    children: list[str]  # the sessions enqueued (a tpe search's come batch by batch)
    trials: int
    folds: int
    sessions: int
    message: str


class ExperimentChildren(_Body):
    total: int
    done: int
    by_status: dict[str, int]


class ExperimentRow(_Body):
    """One trial: its parameters, sessions (one per fold), status, validation metrics (a walk-forward's:
    the mean over its folds), the objective, and a walk-forward's stitched out-of-sample metrics."""

    trial: int
    fold: int | None  # rows are trials: a walk-forward trial's folds are its `sessions`
    session_id: str | None  # its first session
    params: dict[str, Any]
    status: str
    sessions: list[str]
    errors: list[str]
    validation: dict[str, float]
    metrics: dict[str, float]  # the validation metrics
    objective: float | None
    oos: dict[str, Any] | None
    backtest: dict[str, Any] | None  # a walk-forward trial's stitched out-of-sample metrics


class ExperimentBest(_Body):
    trial: int
    params: dict[str, Any]
    objective: float
    test_backtest: dict[str, Any] | None  # the chosen trial's test-split (or stitched) backtest metrics


class ExperimentSummary(_Body):
    experiment_id: str
    name: str
    created_at: str
    status: ExperimentStatus
    search: str | None
    objective: dict[str, str]
    children: ExperimentChildren
    eta_seconds: float | None
    best: ExperimentBest | None


class ExperimentProgress(_Body):
    done: int
    total: int
    eta_seconds: float | None


class Experiment(ExperimentSummary):
    kind: Literal["sweep", "walk_forward", "sweep_walk_forward"]
    progress: ExperimentProgress
    walk_forward: dict[str, Any] | None  # {folds, metrics: the best trial's stitched out-of-sample metrics}
    rows: list[ExperimentRow]
    folds: list[dict[str, Any]]
    summary_folder: str | None


class ExperimentList(_Body):
    experiments: list[ExperimentSummary]
    total: int
    limit: int
    offset: int


class ExperimentStopAnswer(_Body):
    experiment_id: str
    status: Literal["stopping"]
    sessions_stopped: int


class ExperimentCurve(_Body):
    experiment_id: str
    trial: int
    total_points: int
    step: int
    points: list[dict[str, Any]]


class ExperimentDeleted(_Body):
    experiment_id: str
    deleted: bool
