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
"""

from __future__ import annotations

import sys

import typer

from emogen_cli.cli import data, dev, infer, train
from emogen_cli.cli import edit as edit_cli
from emogen_cli.cli import evaluate as evaluate_cli
from emogen_cli.cli._utils import err_console
from emogen_cli.errors import EmogenError

app = typer.Typer(
    name="emogen",
    help="Generate emotional image content with Stable Diffusion (EmoGen, CVPR 2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command(name="prepare")(data.prepare)
app.command(name="train-encoder")(train.train_encoder)
app.command(name="train-mapper")(train.train_mapper)
app.command(name="generate")(infer.generate)
app.command(name="transfer")(infer.transfer)
app.command(name="fuse")(infer.fuse)
app.command(name="decompose")(infer.decompose)
app.command(name="evaluate")(evaluate_cli.evaluate)
edit_cli.register(app)
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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the app and renders EmogenError as one line, no traceback."""
    try:
        app(args=argv, prog_name="emogen")
    except EmogenError as exc:
        err_console.print(f"[bold red]Error:[/bold red] {exc.message}", soft_wrap=True)
        if exc.hint:
            err_console.print(f"[dim]{exc.hint}[/dim]", soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[yellow]Interrupted.[/yellow]")
        sys.exit(130)
