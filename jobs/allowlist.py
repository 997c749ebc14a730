"""The only functions a worker will run (by dotted path); anything else is refused unread."""

from __future__ import annotations

JOB_FUNCTIONS: tuple[str, ...] = (
    "trainhost.jobs.training.run_training",
    "trainhost.jobs.evaluation.run_evaluation",
)


def allowed_functions(extra: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """The product's job functions plus `extra` (test helpers named in the config)."""
    return frozenset(JOB_FUNCTIONS) | frozenset(extra)
