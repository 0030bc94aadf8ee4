"""`emogen generate`, `transfer`, `fuse` and `decompose`.

Usage examples:
    emogen generate --emotion awe -n 8
    emogen transfer --emotion fear "a cup"
    emogen fuse amusement fear
    emogen decompose awe --top 6
"""

from __future__ import annotations

from typing import Annotated

import typer

from emogen_cli.cli._utils import JsonOpt


def _pending(command: str) -> None:
    from emogen_cli.errors import NotYetAvailable

    raise NotYetAvailable(f"`emogen {command}` is not available yet (tracked in issue 4).",
                          "It needs a stage-2 mapper bundle from `emogen train-mapper`.")


def generate(
    emotion: Annotated[str, typer.Option("--emotion", "-e", help="Emotion name or 'all'.")] = "all",
    json_: JsonOpt = False,
) -> None:
    """Generate images that evoke an emotion."""
    _pending("generate")


def transfer(
    prompts: Annotated[list[str] | None, typer.Argument(help="Neutral content, e.g. 'a cup'.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Put an emotion onto neutral objects or scenes."""
    _pending("transfer")


def fuse(
    emotions: Annotated[list[str] | None, typer.Argument(help="Two or more emotions.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Blend two or more emotions in one image."""
    _pending("fuse")


def decompose(
    emotion: Annotated[str | None, typer.Argument(help="Emotion to decompose.")] = None,
    json_: JsonOpt = False,
) -> None:
    """List the semantics (EmoSet objects and scenes) an emotion is made of."""
    _pending("decompose")
