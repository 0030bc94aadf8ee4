"""Jobs of `emogen serve`: a bounded queue, one worker thread per loaded pipeline (one per device),
job states, cancellation at the end of a UNet step, and progress listeners for server-sent events.

A job is queued -> running -> succeeded | failed | cancelled. `JobManager.submit` refuses a job when
the queue is full (`QueueFull`, with a Retry-After estimate) or the server is draining (`Draining`).
Cancelling a queued job drops it; cancelling a running one sets its flag, which the step callback
(outputs.generate.StepWatch) reads at the end of the current UNet step: the images finished before
it are written and indexed, the unfinished batch is dropped, nothing half-written stays.

Listeners (the events route) are asyncio events on their own loop, set thread-safely whenever the
job changes; a job's `version` counts its changes, so a slow listener sees the latest state without
a queue that could grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from emogen_cli.core.errors import EmogenError, Interrupted
from emogen_cli.core.reporting import Reporter

log = logging.getLogger("emogen.serve")

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
DONE = frozenset({"succeeded", "failed", "cancelled"})
STEP_TASK = "Denoising steps"  # outputs.generate.StepWatch.TASK


class QueueFull(Exception):
    """No room in the queue; `retry_after` estimates the seconds until there is."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("queue full")
        self.retry_after = retry_after


class Draining(Exception):
    """The server is shutting down and takes no new jobs."""


class Job:
    """One request's work: `work(job, pipe)` returns the result dict (raising EmogenError on a bad request,
    Interrupted when cancelled)."""

    def __init__(self, kind: str, params: dict[str, Any], work: Callable[["Job", Any], dict[str, Any]]) -> None:
        self.id = uuid.uuid4().hex
        self.kind, self.params, self.work = kind, params, work
        self.state = "queued"
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.step, self.total = 0, None
        self.result: dict[str, Any] | None = None
        self.error: dict[str, Any] | None = None
        self.notes: list[str] = []
        self.version = 0
        self.cancel_requested = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, bool]] = []  # (loop, event, every change)

    # ------------------------------------------------------------------ state changes (any thread)
    def _changed(self) -> None:
        with self._lock:
            self.version += 1
            listeners = [(loop, event) for loop, event, every in self._listeners if every or self.done.is_set()]
        for loop, event in listeners:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the listener's loop is closed
                pass

    def start(self) -> None:
        self.state, self.started = "running", time.time()
        self._changed()

    def finish(self, state: str, result: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> None:
        self.state, self.result, self.error, self.finished = state, result, error, time.time()
        self.done.set()
        self._changed()

    def progress(self, step: int | None = None, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        if step is not None:
            self.step = step
        self._changed()

    def cancel(self) -> None:
        self.cancel_requested.set()

    @property
    def stopping(self) -> bool:
        return self.cancel_requested.is_set()

    # ------------------------------------------------------------------ listeners (asyncio side)
    def listen(self, every_change: bool = True) -> asyncio.Event:
        """An asyncio event of the running loop, set whenever the job changes (until `unlisten`), or with
        `every_change=False` only when it is done (waking the event loop at every denoising step costs time)."""
        event = asyncio.Event()
        with self._lock:
            self._listeners.append((asyncio.get_running_loop(), event, every_change))
        return event

    def unlisten(self, event: asyncio.Event) -> None:
        with self._lock:
            self._listeners = [entry for entry in self._listeners if entry[1] is not event]

    async def wait(self) -> None:
        """Until the job is done (succeeded, failed or cancelled)."""
        event = self.listen(every_change=False)
        try:
            while not self.done.is_set():
                await event.wait()
                event.clear()
        finally:
            self.unlisten(event)

    def describe(self) -> dict[str, Any]:
        """The job as the API shows it."""
        return {"id": self.id, "object": "job", "kind": self.kind, "state": self.state,
                "created": self.created, "started": self.started, "finished": self.finished,
                "progress": {"step": self.step, "total": self.total}, "params": self.params,
                "result": self.result, "error": self.error, "notes": list(self.notes[-20:])}


class JobReporter(Reporter):
    """The core's progress reports as job progress: denoising steps advance the job; notes are kept."""

    def __init__(self, job: Job) -> None:
        self.job = job

    def start(self, task: str, total: int | None = None) -> None:
        if task == STEP_TASK:
            self.job.progress(0, total)

    def advance(self, task: str, n: int = 1, **metrics: float) -> None:
        if task == STEP_TASK:
            self.job.progress(self.job.step + n)

    def info(self, message: str) -> None:
        self.job.notes.append(message)

    def warn(self, message: str) -> None:
        self.job.notes.append(message)


class JobManager:
    """A bounded queue served by one worker thread per pipeline (one pipeline per device)."""

    def __init__(self, pipes: list[Any], queue_size: int = 16, history: int = 1000) -> None:
        if not pipes:
            raise ValueError("JobManager needs at least one pipeline")
        self.pipes = pipes
        self.queue: queue.Queue[Job | None] = queue.Queue(maxsize=queue_size)
        self.queue_size = queue_size
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.history = history
        self.draining = False
        self.durations: deque[float] = deque(maxlen=20)
        self._lock = threading.Lock()
        self._running: dict[int, Job] = {}
        self.workers = [threading.Thread(target=self._work, args=(i, pipe), name=f"emogen-worker-{i}", daemon=True)
                        for i, pipe in enumerate(pipes)]
        for worker in self.workers:
            worker.start()

    # ------------------------------------------------------------------ the API side
    def submit(self, job: Job) -> Job:
        with self._lock:
            if self.draining:
                raise Draining
            try:
                self.queue.put_nowait(job)
            except queue.Full:
                raise QueueFull(self.retry_after()) from None
            self.jobs[job.id] = job
            self._forget_old()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        job.cancel()
        if job.state == "queued":  # the worker skips it; say so now
            job.finish("cancelled")
        return job

    def retry_after(self) -> int:
        """Seconds until a queue slot is likely free: the mean recent job time x jobs ahead / workers."""
        mean = sum(self.durations) / len(self.durations) if self.durations else 5.0
        ahead = self.queue.qsize() + len(self._running)
        return max(1, math.ceil(mean * max(ahead, 1) / len(self.workers)))

    def counts(self) -> dict[str, int]:
        running = len(self._running)
        queued = sum(1 for job in list(self.jobs.values()) if job.state == "queued")
        return {"queued": queued, "running": running, "workers": len(self.workers), "queue_size": self.queue_size}

    def _forget_old(self) -> None:
        """Keep at most `history` jobs; the oldest finished ones go first."""
        while len(self.jobs) > self.history:
            for job_id, job in self.jobs.items():
                if job.state in DONE:
                    del self.jobs[job_id]
                    break
            else:
                return

    # ------------------------------------------------------------------ shutdown
    def drain(self) -> None:
        """Take no new jobs and cancel the queued ones; running jobs finish."""
        with self._lock:
            self.draining = True
            for job in list(self.jobs.values()):
                if job.state == "queued":
                    job.cancel()
                    job.finish("cancelled", error={"message": "The server is shutting down; the job was not started.",
                                                   "hint": "Send it again to another server or after the restart."})

    def stop_running(self) -> None:
        """Cancel the running jobs too (at the end of their current step)."""
        for job in list(self._running.values()):
            job.cancel()

    def close(self, timeout: float | None = None) -> None:
        """Drain, let the running jobs finish, and stop the workers."""
        self.drain()
        for _ in self.workers:
            while True:
                try:
                    self.queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    try:  # make room: every queued job is cancelled already
                        self.queue.get_nowait()
                    except queue.Empty:
                        pass
        for worker in self.workers:
            worker.join(timeout)

    # ------------------------------------------------------------------ the worker side
    def _work(self, index: int, pipe: Any) -> None:
        while True:
            job = self.queue.get()
            if job is None:
                return
            if job.stopping or job.state != "queued":
                continue
            self._running[index] = job
            job.start()
            begin = time.perf_counter()
            try:
                result = job.work(job, pipe)
                job.finish("succeeded", result)
            except Interrupted:
                job.finish("cancelled", None,
                           {"message": "Cancelled at the end of a denoising step; the images finished before it "
                                       "are written and indexed.", "hint": None})
            except EmogenError as exc:
                job.finish("failed", error={"message": exc.message, "hint": exc.hint, "status": 422})
            except Exception as exc:  # a bug: the job fails, the server keeps serving
                log.exception("Job %s failed with an internal error", job.id)
                text = str(exc).strip().splitlines()
                job.finish("failed", error={"message": f"Internal error: {type(exc).__name__}"
                                                       f"{': ' + text[0][:200] if text else ''}",
                                            "hint": "This is a bug in emogen; the server log has the traceback.",
                                            "status": 500})
            finally:
                self._running.pop(index, None)
                self.durations.append(time.perf_counter() - begin)
