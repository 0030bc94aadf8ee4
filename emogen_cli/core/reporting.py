"""Progress reporting from the core, rendered by the CLI (the core never prints)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class Reporter:
    """No-op base; the CLI passes a Rich implementation. Subclass to capture progress elsewhere."""

    def start(self, task: str, total: int | None = None) -> None:
        """A unit of work with an optional known length begins."""

    def advance(self, task: str, n: int = 1, **metrics: float) -> None:
        """`n` more units of `task` are done; `metrics` (e.g. loss terms) describe the latest."""

    def finish(self, task: str) -> None:
        """`task` is complete."""

    def info(self, message: str) -> None:
        """A one-line status message."""

    def warn(self, message: str) -> None:
        """Something the user should know about but that does not stop the work."""


@contextmanager
def progress(reporter: Reporter, task: str, total: int | None = None) -> Iterator[None]:
    reporter.start(task, total)
    try:
        yield
    finally:
        reporter.finish(task)
