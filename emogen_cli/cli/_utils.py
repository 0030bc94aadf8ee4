"""Shared CLI pieces: the command decorator that turns keyed options (declared once, in options.py) into a
Config, the Rich progress reporter, result output and error rendering.

Heavy libraries (torch, diffusers, transformers) are imported inside commands only, so
`emogen --help` stays fast.

An option states its config key once, in its type (options.py):

    StepsOpt = Annotated[int | None, opt("--steps", key="generate.steps", help="Denoising steps.")]

and a command decorated with `@command(...)` receives `cfg`, the Config built from `--config` and
every keyed option that was given; its --help shows `[default: 50; config: generate.steps]`.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from typer.core import TyperCommand, TyperGroup

from emogen_cli.core.reporting import Reporter

err_console = Console(stderr=True, highlight=False)
out_console = Console(highlight=False)

F = TypeVar("F", bound=Callable[..., Any])


def _keyed(fn: Callable[..., Any]) -> tuple[inspect.Signature, dict[str, tuple[str, str]]]:
    """fn's evaluated signature and {parameter: (config key, flag)} of its keyed options."""
    signature = inspect.signature(fn, eval_str=True)
    keyed: dict[str, tuple[str, str]] = {}
    for name, param in signature.parameters.items():
        for meta in getattr(param.annotation, "__metadata__", ()):
            if key := getattr(meta, "emogen_key", None):
                # in Annotated, Typer reads Option's first argument ("--steps") as a flag, not a default
                decls = [d for d in (meta.default, *meta.param_decls) if isinstance(d, str) and d.startswith("-")]
                keyed[name] = (key, next((d for d in decls if d.startswith("--")), decls[0]))
    return signature, keyed


def _merged(fn: Callable[..., Any], groups: Sequence[Callable[..., Any]]) -> inspect.Signature:
    """The CLI signature: fn's own options, then every group's (a group's parameter that fn also names is the
    group's: fn names it only to receive it). All keyword-only, since Typer passes options by name."""
    own = inspect.signature(fn, eval_str=True)
    shared = [p for group in groups for p in inspect.signature(group, eval_str=True).parameters.values()]
    names = {p.name for p in shared}
    if stray := [n for n, p in own.parameters.items() if p.kind is p.KEYWORD_ONLY and n not in names | {"cfg"}]:
        raise TypeError(f"{fn.__name__} receives {stray}, which no option group declares")
    params = [p for name, p in own.parameters.items()
              if name != "cfg" and name not in names and p.kind is not p.VAR_KEYWORD] + shared
    return own.replace(parameters=[p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in params])


Output = str | Callable[[dict[str, Any], Any], "str | Path | None"]


def command(examples: str = "", writes: Iterable[Output] = (),
            options: Sequence[Callable[..., Any]] = ()) -> Callable[[F], F]:
    """Turn a command's keyed options into its Config and check what can be checked before models load.

    The decorated function may take `cfg` (not a CLI option): the Config from `--config` (the `config`
    parameter) plus every keyed option that was given (None means "not given"). `options` are option groups
    (functions whose parameters are options, such as `runtime_options`) appended to the command's own, so
    commands that share options declare them once; the function receives those of them it names (all of them
    with a `**kwargs` parameter). `writes`
    names the command's output folders - a config key ("generate.output"), a parameter ("out"), or a
    function of (parameters, cfg) - each checked for being writable, as the device is, before the body runs.
    `examples` becomes the --help epilog."""

    def decorate(fn: F) -> F:
        own = inspect.signature(fn).parameters
        takes_all = any(p.kind is p.VAR_KEYWORD for p in own.values())
        signature = _merged(fn, options)
        defaults = {n: p.default for n, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}
        outputs = list(writes)

        @functools.wraps(fn)
        def run(**given_params: Any) -> Any:
            from emogen_cli.core.config import load_config
            from emogen_cli.core.validate import preflight

            params = defaults | given_params
            _check_paths(params, signature)
            given = {name: params[name] for name in keyed if params.get(name) is not None}
            flags: dict[str, str] = {}
            for name in given:  # an alias and its option (--size, --resolution) set one key: one of them wins
                key, flag = keyed[name]
                if key in flags:
                    from emogen_cli.core.errors import EmogenError

                    raise EmogenError(f"{flags[key]} and {flag} set the same value ({key}).", "Give only one of them.")
                flags[key] = flag
            cfg = load_config(params.get("config"), {keyed[n][0]: v for n, v in given.items()},
                              {keyed[n][0]: keyed[n][1] for n in given})
            preflight(cfg.runtime.device, [_output(o, params, cfg) for o in outputs])
            wanted = params if takes_all else {n: v for n, v in params.items() if n in own}
            return fn(**wanted, cfg=cfg) if "cfg" in own else fn(**wanted)

        run.__signature__ = signature  # type: ignore[attr-defined]
        run.__annotations__ = {n: p.annotation for n, p in signature.parameters.items()}
        run.emogen_examples = examples  # type: ignore[attr-defined]
        keyed = _keyed(run)[1]
        return run  # type: ignore[return-value]

    return decorate


def _check_paths(params: dict[str, Any], signature: inspect.Signature) -> None:
    """Every path argument and option is a name a file system takes (a 5000-character paste is one line)."""
    from emogen_cli.core.validate import check_path

    for name, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, Path):
                param = signature.parameters.get(name)
                decls = [d for meta in getattr(getattr(param, "annotation", None), "__metadata__", ())
                         for d in (getattr(meta, "default", None), *(getattr(meta, "param_decls", None) or ()))
                         if isinstance(d, str) and d.startswith("--")]
                check_path(item, decls[0] if decls else name.upper())


def _output(spec: Output, params: dict[str, Any], cfg: Any) -> str | Path | None:
    if callable(spec):
        return spec(params, cfg)
    if "." in spec:
        section, name = spec.split(".")
        return getattr(getattr(cfg, section), name)
    return params.get(spec)


def _no_bool_metavar(params: list[Any]) -> list[Any]:
    """Flags take no value: no `<bool>` beside them in --help (Typer shows one for Click's --help and its
    completion flags too; emogen's own declare metavar="" through options.flag)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A Typer command whose flags show no `<bool>` metavar."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_bool_metavar(super().get_params(ctx))


class Group(TyperGroup):
    """A Typer group whose flags show no `<bool>` metavar."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _no_bool_metavar(super().get_params(ctx))


def epilog(fn: Callable[..., Any]) -> str | None:
    """The examples a command declared with @command, as its --help epilog."""
    text = getattr(fn, "emogen_examples", "")
    return f"[bold]Examples[/bold]\n{escape(text.strip(chr(10)))}" if text else None


def is_main_process() -> bool:
    """False in the extra processes of `accelerate launch`, which stay silent."""
    return os.environ.get("RANK", "0") == "0"


def plural(n: int, word: str) -> str:
    """'1 image', '2 images'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


class _Bar(BarColumn):
    """A bar only where the total is known; work of unknown length shows its elapsed time alone."""

    def render(self, task: Any) -> Any:
        return Text("") if task.total is None else super().render(task)


class _Count(MofNCompleteColumn):
    def render(self, task: Any) -> Text:
        return Text("") if task.total is None else super().render(task)


class _Bars(Progress):
    """Rich progress whose metrics sit on their own line under the bars, so an 80-column terminal keeps
    the bars whole however many loss terms a task reports."""

    def get_renderables(self) -> Iterable[Any]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            if task.fields.get("metrics"):
                yield Text(f"  {task.fields['metrics']}", style="dim", no_wrap=True, overflow="ellipsis")


class RichReporter(Reporter):
    """Renders core progress as Rich bars on stderr (from the main process only)."""

    def __init__(self, console: Console = err_console) -> None:
        self.console = console
        self.quiet = not is_main_process()
        self.progress: Progress | None = None
        self.tasks: dict[str, TaskID] = {}

    def _ensure(self) -> Progress:
        if self.progress is None:
            self.progress = _Bars(
                TextColumn("{task.description}", markup=False, style="bold"), _Bar(bar_width=24), _Count(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console,
                transient=False,
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
            self.console.print(f"[dim]{escape(message)}[/dim]", soft_wrap=True)

    def warn(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[yellow]Warning:[/yellow] {escape(message)}", soft_wrap=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def json_safe(value: Any) -> Any:
    """`value` with every NaN/inf float replaced by None (JSON has no NaN; `json.loads` elsewhere chokes)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(json_safe(payload), indent=2, default=str, allow_nan=False) + "\n")
    sys.stdout.flush()


def emit(result: dict[str, Any], as_json: bool, render: Callable[[dict[str, Any]], None]) -> None:
    """The command's result: JSON on stdout, or a human rendering (once, from the main process)."""
    if not is_main_process():
        return
    if as_json:
        write_json(result)
    else:
        render(result)


def say(text: str) -> None:
    """One plain line of result on stdout; paths and names in it are never read as Rich markup."""
    out_console.print(Text(text), soft_wrap=True)
