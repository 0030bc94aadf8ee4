"""Shared CLI pieces: option types, the Rich progress reporter, result output and error rendering.

Heavy libraries (torch, diffusers, transformers) are imported inside commands only, so
`emogen --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from emogen_cli.reporting import Reporter

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (see configs/default.yaml).", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (progress stays on stderr).")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed (default: runtime.seed = 0).", show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", show_default=False)]
PrecisionOpt = Annotated[
    str | None, typer.Option("--mixed-precision", help="auto, no, fp16 or bf16 (auto: bf16 on CUDA).", show_default=False)
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Stable Diffusion hub id or local diffusers folder (model.pretrained).", show_default=False),
]
ClipOpt = Annotated[
    str | None, typer.Option("--clip", help="CLIP hub id or local folder (model.clip).", show_default=False)
]
ResolutionOpt = Annotated[int | None, typer.Option("--resolution", help="Image size in pixels.", show_default=False)]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace existing outputs instead of refusing.")]


def is_main_process() -> bool:
    """False in the extra processes of `accelerate launch`, which stay silent."""
    return os.environ.get("RANK", "0") == "0"


class RichReporter(Reporter):
    """Renders core progress as Rich bars on stderr (from the main process only)."""

    def __init__(self, console: Console = err_console) -> None:
        self.console = console
        self.quiet = not is_main_process()
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def _ensure(self) -> Progress:
        if self.progress is None:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"), console=self.console, transient=False,
            )
            self.progress.start()
        return self.progress

    def start(self, task: str, total: int | None = None) -> None:
        if self.quiet:
            return
        self.tasks[task] = self._ensure().add_task(task, total=total, metrics="")

    def advance(self, task: str, n: int = 1, **metrics: float) -> None:
        if task not in self.tasks:
            return
        text = "  ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        self._ensure().update(self.tasks[task], advance=n, **({"metrics": text} if metrics else {}))

    def finish(self, task: str) -> None:
        if task in self.tasks and self.progress is not None:
            self.progress.stop_task(self.tasks.pop(task))
            if not self.tasks:
                self.progress.stop()
                self.progress = None

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]{message}[/dim]")

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[yellow]Warning:[/yellow] {message}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __enter__(self) -> "RichReporter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None]) -> None:
    """The command's result: JSON on stdout, or a human rendering (once, from the main process)."""
    if not is_main_process():
        return
    if as_json:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
        sys.stdout.flush()
    else:
        render(result)


def overrides(**values: Any) -> dict[str, Any]:
    """CLI option values keyed by config key ('mapper__lr' -> 'mapper.lr'); unset (None) options drop out."""
    return {k.replace("__", "."): v for k, v in values.items() if v is not None}
