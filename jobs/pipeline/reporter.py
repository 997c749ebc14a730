"""What the pipeline tells whoever runs it (progress, the device, each epoch), and asks it (stop?
suspend?): the RQ job's reporter, the command line's progress bar and the tests implement it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the trainer imports torch; a reporter needs none of it
    from trainhost.jobs.pipeline.trainer import BatchProgress


class Reporter(Protocol):
    """What the pipeline tells its caller, and asks it."""

    def phase(self, name: str, message: str = "") -> None: ...
    def info(self, **fields: Any) -> None: ...
    def batch(self, progress: BatchProgress) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def resumed(self, history: list[dict[str, Any]]) -> None: ...
    def should_stop(self) -> bool: ...
    def should_suspend(self) -> bool: ...


class NullReporter:
    """Tells nobody anything; never stops or suspends."""

    def phase(self, name: str, message: str = "") -> None:
        pass

    def info(self, **fields: Any) -> None:
        pass

    def batch(self, progress: BatchProgress) -> None:
        pass

    def epoch(self, record: dict[str, Any]) -> None:
        pass

    def resumed(self, history: list[dict[str, Any]]) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def should_suspend(self) -> bool:
        return False
