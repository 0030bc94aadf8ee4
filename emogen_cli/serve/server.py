"""Running `emogen serve`: check the extra is installed and the bind is safe, load the models once,
and serve the app on uvicorn until SIGINT/SIGTERM.

Shutdown: the first signal drains (no new jobs, queued ones cancelled, the running job finishes and
its images are written and indexed; open requests get their answer), a second one also stops the
running job at the end of its current denoising step. Either way the folder's index stays true.

Several servers may share one output folder (one per GPU, or per machine behind a load balancer):
the writer claims file numbers under a lock (outputs/folder.py). Under `accelerate launch` each
process serves on its own device (cuda:LOCAL_RANK) and port (--port + RANK).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emogen_cli.core.config import Config
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter

EXTRA_HINT = 'Install the serve extra: pip install "emogen-cli[serve]"'


def check_installed() -> None:
    """One line naming the extra when fastapi, uvicorn or python-multipart is missing."""
    import importlib

    missing = []
    for name, module in (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("python-multipart", "multipart")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(name)
    if missing:
        raise EmogenError(f"emogen serve needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                          "installed.", EXTRA_HINT)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, insecure: bool, reporter: Reporter) -> None:
    """Loopback needs nothing; any other address needs a token, or --insecure (with a warning)."""
    if is_loopback(host) or token:
        return
    if not insecure:
        raise EmogenError(f"Serving on {host} lets anyone who can reach it run jobs and read the images; it needs "
                          "--token.", "Add --token SECRET (or set EMOGEN_TOKEN), or --insecure if the network is "
                                      "trusted, or serve on 127.0.0.1.")
    reporter.warn(f"--insecure: serving on {host} without a token; anyone who can reach it can run jobs and read "
                  "the images.")


def launched_process() -> tuple[int, int, int]:
    """(rank, local rank, world size) under `accelerate launch` / torchrun; (0, 0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise EmogenError(f"Cannot listen on {host}:{port} ({exc.strerror or exc}).",
                          "Choose another --port (0 picks a free one) or stop what uses it.") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(config: Config, mapper: str | Path | None = None, *, insecure: bool = False, reporter: Reporter | None = None,
          on_ready: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Load the pipeline, then serve until a signal; returns what was served."""
    check_installed()
    import uvicorn

    from emogen_cli.pipeline import EmoGenPipeline
    from emogen_cli.serve.app import create_app
    from emogen_cli.serve.jobs import JobManager
    from emogen_cli.serve.service import Service

    reporter = reporter or Reporter()
    s = config.serve
    token = s.token or os.environ.get("EMOGEN_TOKEN") or None
    check_bind(s.host, token, insecure, reporter)
    rank, local_rank, world = launched_process()
    device: Any = None
    port = s.port
    if world > 1:  # one independent server per process: its own device and port, no collective work
        import torch

        device = f"cuda:{local_rank}" if torch.cuda.is_available() else config.runtime.device
        port = s.port + rank if s.port else 0
        os.environ["WORLD_SIZE"] = "1"  # the writers then treat this server as the one process it is
    sock = bind(s.host, port)
    try:
        pipe = EmoGenPipeline(config, mapper, device=device, reporter=reporter)
        manager = JobManager([pipe], s.queue_size)
        service = Service(config, manager, s.output)
        app = create_app(service, token)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    info = {"url": f"http://{shown}:{port}/", "host": host, "port": port, "out": str(service.out),
            "devices": [str(p.device) for p in manager.pipes], "queue_size": s.queue_size, "auth": bool(token),
            "pid": os.getpid(), "rank": rank}

    class DrainingServer(uvicorn.Server):
        """uvicorn's server whose first signal drains the job queue, the second also stops the running job;
        the signal is not raised again after the shutdown (a drained exit is a clean one)."""

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.should_exit:
                manager.stop_running()
                self.force_exit = True
                return
            manager.drain()
            self.should_exit = True

    server = DrainingServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                           timeout_keep_alive=5))
    if on_ready is not None:
        on_ready(info)
    try:
        server.run(sockets=[sock])
    finally:
        manager.drain()
        manager.close()
        sock.close()
    served = [job for job in manager.jobs.values()]
    return {**info, "jobs": len(served), "succeeded": sum(job.state == "succeeded" for job in served),
            "cancelled": sum(job.state == "cancelled" for job in served)}
