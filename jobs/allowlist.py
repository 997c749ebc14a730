"""The only functions a worker will run (by dotted path); anything else is refused unread. The
producer enqueues each kind of session by the path held here."""

from __future__ import annotations

from collections.abc import Iterable

# Session kind (the `kind` in a job's meta) → the function that runs it.
JOB_FUNCTIONS: dict[str, str] = {
    "training": "trainhost.jobs.training.run_training",
    "evaluation": "trainhost.jobs.evaluation.run_evaluation",
    "experiment": "trainhost.jobs.experiment_summary.summarize_experiment",  # an experiment's comparison
    "pack": "trainhost.jobs.training_pack.run_training_pack",  # same-shape trainings of an experiment, at once
}


def allowed_functions(extra: Iterable[str] = ()) -> frozenset[str]:
    """The product's job functions plus `extra` (test helpers named in the config)."""
    return frozenset(JOB_FUNCTIONS.values()) | frozenset(extra)
