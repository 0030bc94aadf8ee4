"""`emogen evaluate`: FID, LPIPS, Emo-A, Sem-C and Sem-D over generated images.

Usage examples:
    emogen evaluate runs/generated --reference runs/prepared
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from emogen_cli.cli._utils import JsonOpt


def evaluate(
    images: Annotated[Path | None, typer.Argument(help="Folder of generated images.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Compute the paper's five metrics over a folder of generated images."""
    from emogen_cli.errors import NotYetAvailable

    raise NotYetAvailable("`emogen evaluate` is not available yet (tracked in issue 5).")
