"""Errors the pipeline raises: each carries a message a person can act on."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class: anything the pipeline refuses or cannot do, said in words."""


class StrategyError(PipelineError):
    """A strategy (or request override) that cannot be trained; lists every problem found."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("Strategy validation failed:\n  - " + "\n  - ".join(self.errors))


class DataError(PipelineError):
    """Market data that is missing, outside the data root, or unusable."""


class TrainingError(PipelineError):
    """Training could not go on (e.g. the loss became NaN)."""


class TrainingSuspended(PipelineError):
    """Training stopped to be resumed later from its checkpoint (the worker is shutting down)."""
