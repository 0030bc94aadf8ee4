"""Stopping a training run only at a consistent point, and the fault hooks that test it.

`StopSignals` turns SIGINT (Ctrl-C) and SIGTERM into a request the trainer checks between
steps, so a signal never lands between `optimizer.step()` and the step counter: the checkpoint
written on the way out always holds exactly `step` updates. A second signal stops at once
(KeyboardInterrupt) and the last checkpoint on disk is kept as it is.

`fault_point(name)` lets tests kill a real process at a named moment:
EMOGEN_TEST_KILL_AT="name" (or "name:N" for the N-th time it is reached) sends
EMOGEN_TEST_KILL_SIGNAL (KILL by default; INT or TERM) to the process itself there.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from emogen_cli.core.errors import Interrupted

_hits: Counter = Counter()


def fault_point(name: str) -> None:
    """Test hook: signal this process at `name` when EMOGEN_TEST_KILL_AT asks for it (no-op otherwise)."""
    wanted = os.environ.get("EMOGEN_TEST_KILL_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] != int(nth or 1):
        return
    rank = os.environ.get("EMOGEN_TEST_KILL_RANK")
    if rank is not None and os.environ.get("RANK", "0") != rank:
        return
    sig = getattr(signal, "SIG" + os.environ.get("EMOGEN_TEST_KILL_SIGNAL", "KILL").upper())
    os.kill(os.getpid(), sig)


class StopRequested(Exception):
    """Ctrl-C or SIGTERM was received: checkpoint the consistent state and stop."""


class StopSignals:
    """`with StopSignals() as stop:` SIGINT/SIGTERM set `stop.requested`; check it with `stop.now(accelerator)`."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None:  # second signal: stop now, keep the last checkpoint as it is
            self._restore()
            raise KeyboardInterrupt
        self.requested = signum

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc: Any) -> None:
        self._restore()

    @property
    def name(self) -> str:
        return "SIGTERM" if self.requested == signal.SIGTERM else "Ctrl-C"

    def now(self, accelerator: Any = None) -> bool:
        """Whether to stop here; with several processes, all stop together if any was asked to."""
        if accelerator is None or accelerator.num_processes == 1:
            return self.requested is not None
        import torch

        flag = torch.tensor([1.0 if self.requested is not None else 0.0], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    def check(self, accelerator: Any = None) -> None:
        """Raise StopRequested where `now` says to stop."""
        if self.now(accelerator):
            raise StopRequested


@contextmanager
def stop_with_checkpoint(stop: StopSignals, checkpoint: Callable[[], None], ckpt_dir: Path,
                         step: Callable[[], int]) -> Iterator[None]:
    """A trainer's loop: StopRequested writes the checkpoint of the current `step()` and ends the run as
    Interrupted; a second signal (KeyboardInterrupt) ends it at once, keeping the last checkpoint on disk."""
    try:
        yield
    except StopRequested:
        checkpoint()
        raise Interrupted(f"Stopped by {stop.name} at step {step()}; checkpoint saved in {ckpt_dir}.",
                          "Run the same command with --resume to continue.") from None
    except KeyboardInterrupt:
        raise Interrupted(f"Stopped at once by a second signal at step {step()}; the last checkpoint in {ckpt_dir} "
                          "is kept.", "Run the same command with --resume to continue from it.") from None


def step_finished(step: int, total: int, every: int, checkpoint: Callable[[], None], stop: StopSignals,
                  accelerator: Any) -> bool:
    """After optimizer step `step` (counted): checkpoint every `every` steps and at the end; True when the run is
    complete, else StopRequested if a stop was asked for."""
    if step % every == 0 or step >= total:
        checkpoint()
    if step >= total:
        return True
    stop.check(accelerator)
    return False
