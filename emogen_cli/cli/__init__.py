"""The `emogen` command line.

Usage examples:
    emogen prepare --data data/EmoSet --out runs/prepared
    emogen train-encoder --data data/EmoSet --out runs/encoder
    emogen train-mapper --prepared runs/prepared --encoder runs/encoder --out runs/mapper
    emogen generate --emotion awe -n 8
    emogen transfer --emotion fear "a cup"
    emogen fuse amusement fear
    emogen decompose awe
    emogen evaluate runs/generated
    emogen serve --mapper runs/mapper
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
import warnings
from typing import Any

import typer
from rich.markup import escape

from emogen_cli.cli import data, dev, infer, train
from emogen_cli.cli import edit as edit_cli
from emogen_cli.cli import evaluate as evaluate_cli
from emogen_cli.cli import export as export_cli
from emogen_cli.cli import serve as serve_cli
from emogen_cli.cli._utils import Command, Group, epilog, err_console, write_json
from emogen_cli.core.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, EmogenError

app = typer.Typer(
    cls=Group,
    name="emogen",
    help="Generate emotional image content with Stable Diffusion (EmoGen, CVPR 2024).",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command(name="prepare", cls=Command, epilog=epilog(data.prepare))(data.prepare)
app.command(name="train-encoder", cls=Command, epilog=epilog(train.train_encoder))(train.train_encoder)
app.command(name="train-mapper", cls=Command, epilog=epilog(train.train_mapper))(train.train_mapper)
app.command(name="generate", cls=Command, epilog=epilog(infer.generate))(infer.generate)
app.command(name="transfer", cls=Command, epilog=epilog(infer.transfer))(infer.transfer)
app.command(name="fuse", cls=Command, epilog=epilog(infer.fuse))(infer.fuse)
app.command(name="decompose", cls=Command, epilog=epilog(infer.decompose))(infer.decompose)
app.command(name="evaluate", cls=Command, epilog=epilog(evaluate_cli.evaluate))(evaluate_cli.evaluate)
app.command(name="export", cls=Command, epilog=epilog(export_cli.export))(export_cli.export)
edit_cli.register(app)
app.command(name="serve", cls=Command, epilog=epilog(serve_cli.serve))(serve_cli.serve)
app.add_typer(dev.app, name="dev", hidden=True)


def _print_version(value: bool) -> None:
    if value:
        from emogen_cli import __version__

        typer.echo(f"emogen {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Show the version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Generate emotional image content with Stable Diffusion (EmoGen, CVPR 2024)."""


def _debug() -> bool:
    return os.environ.get("EMOGEN_DEBUG", "") not in ("", "0", "false", "no")


def _one_line(text: str) -> str:
    """Messages are one line; torch's advice to load a file with weights_only=False (which would run the
    code it carries) is cut and replaced by the reason the file is refused."""
    for marker in ("Weights only load failed", "weights_only=False"):  # torch's phrases, not a user's file name
        if marker in text:
            from emogen_cli.core.errors import load_failure

            head = text.split(marker)[0].rstrip(" :(.")
            text = f"{head}: {load_failure(Exception(marker))}" if head else load_failure(Exception(marker))
            break
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _report(message: str, hint: str | None, code: int, as_json: bool) -> int:
    """One line (plus a hint line) on stderr; with --json also {"error", "hint", "exit_code"} on stdout.
    Interruptions are not errors: their line says what was kept ("Interrupted after 3 images; ...")."""
    message, hint = _one_line(message), _one_line(hint) if hint else None
    if as_json:
        write_json({"error": message, "hint": hint, "exit_code": code})
    if code == EXIT_INTERRUPTED:
        err_console.print(f"[yellow]{escape(message)}[/yellow]", soft_wrap=True)
    else:
        err_console.print(f"[bold red]Error:[/bold red] {escape(message)}", soft_wrap=True)
    if hint:
        err_console.print(f"[dim]{escape(hint)}[/dim]", soft_wrap=True)
    return code


def _traceback(exc: BaseException) -> None:
    """The full traceback for EMOGEN_DEBUG=1, with the causes our `raise ... from None` hide put back."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__suppress_context__ = False
        current = current.__cause__ or current.__context__
    sys.stderr.write("".join(traceback.format_exception(exc)))


def _is_click_error(exc: BaseException) -> bool:
    """Click's usage errors (Typer vendors Click in recent versions, so match by shape and origin)."""
    return (hasattr(exc, "format_message") and isinstance(getattr(exc, "exit_code", None), int)
            and type(exc).__module__.split(".")[0] in ("click", "typer"))


def _on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM takes the Ctrl-C path: generate indexes what it wrote, training checkpoints."""
    raise KeyboardInterrupt


def _run(args: list[str], as_json: bool) -> int:
    try:
        code = app(args=args, prog_name="emogen", standalone_mode=False)
        if code == EXIT_INTERRUPTED:  # Typer turns a KeyboardInterrupt outside our handlers into Exit(130)
            return _report("Interrupted.", None, EXIT_INTERRUPTED, as_json)
        return code if isinstance(code, int) else 0
    except EmogenError as exc:
        if _debug():
            _traceback(exc)
        return _report(exc.message, exc.hint, exc.exit_code, as_json)
    except (typer.Abort, KeyboardInterrupt):
        return _report("Interrupted.", None, EXIT_INTERRUPTED, as_json)
    except Exception as exc:
        if _is_click_error(exc):  # usage: unknown option, wrong type, missing argument
            if type(exc).__name__ == "NoArgsIsHelpError":
                return EXIT_USAGE  # the help was printed
            ctx = getattr(exc, "ctx", None)
            hint = f"Run '{ctx.command_path if ctx is not None else 'emogen'} --help' for usage."
            return _report(exc.format_message(), hint, exc.exit_code, as_json)  # type: ignore[attr-defined]
        # anything else is a bug: one line, the traceback only on request
        if _debug():
            _traceback(exc)
        text = str(exc).strip().splitlines()
        return _report(f"Internal error: {type(exc).__name__}{': ' + text[0][:300] if text else ''}",
                       "This is a bug in emogen. Run again with EMOGEN_DEBUG=1 to see the traceback, and report it.",
                       EXIT_INTERNAL, as_json)


def _legacy_spellings(args: list[str]) -> list[str]:
    """`emogen grid --va` (the spelling the docs and issues use) is `emogen grid va`: --va elsewhere takes a
    V,A point, so grid's sheet is named by its KIND argument and the old switch is read as that word."""
    if args[:1] == ["grid"] and "--va" in args[1:]:
        return ["grid", "va", *(a for a in args[1:] if a != "--va")]
    return args


def main(argv: list[str] | None = None) -> None:
    """Console entry point: exit codes per errors.py, one line per error, SIGTERM handled as Ctrl-C."""
    args = _legacy_spellings([str(a) for a in (sys.argv[1:] if argv is None else argv)])
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # e.g. torchvision fallback notices
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        previous = None
    try:
        with warnings.catch_warnings():
            if not _debug():
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
            code = _run(args, "--json" in args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if code:
        sys.exit(code)
