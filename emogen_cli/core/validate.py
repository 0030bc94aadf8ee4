"""Checks that run before any model loads, so a bad input costs the user nothing but one clear line.

Value ranges of config keys live in config.py; this module holds what a key's type cannot say:
prompt templates, numbers typed into free-form options, output folders and the device.
"""

from __future__ import annotations

import math
import os
import string
import tempfile
from collections.abc import Iterable
from pathlib import Path

from emogen_cli.core.errors import EmogenError


def template(text: str, option: str = "--template") -> str:
    """A prompt with exactly one `{}` where the emotion goes; text without one gets the emotion in front.

    Literal braces are written `{{` and `}}` (Python's format escapes)."""
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise EmogenError(f"{option} '{text}' is not a valid template ({exc}).",
                          "Use {} where the emotion goes; write {{ and }} for literal braces.") from None
    for name, spec, conv in fields:
        if name or spec or conv:
            raise EmogenError(f"{option} '{text}' has the placeholder '{{{name}{'!' + conv if conv else ''}"
                              f"{':' + spec if spec else ''}}}'; only an empty {{}} marks the emotion.",
                              "Use {} where the emotion goes; write {{ and }} for literal braces.")
    if len(fields) > 1:
        raise EmogenError(f"{option} '{text}' has {len(fields)} {{}} placeholders; the emotion goes in one.",
                          "Keep one {}; write {{ and }} for literal braces.")
    return text if fields else "{} " + text


def numbers(text: str, option: str) -> list[float]:
    """Comma-separated finite numbers ("0.7,0.3")."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise EmogenError(f"{option} must be numbers separated by commas, got '{text}'.",
                          f"For example: {option} 0.7,0.3.") from None
    if bad := [v for v in values if not math.isfinite(v)]:
        raise EmogenError(f"{option} must be finite numbers; got {bad[0]} in '{text}'.", f"For example: {option} 0.7,0.3.")
    return values


def writable_folder(path: str | Path, what: str = "output folder") -> None:
    """Refuse an output folder that cannot be created or written, without creating anything: the nearest
    existing ancestor must be a folder in which a file can be made (probed with a temporary file)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "it" if existing == path else f"'{existing}'"
        raise EmogenError(f"Cannot write the {what} '{path}': {where} is a file, not a folder.",
                          "Choose another output folder.")
    try:
        fd, probe = tempfile.mkstemp(prefix=".emogen-write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise EmogenError(f"Cannot write the {what} '{path}' ({exc.strerror or exc} in '{existing}').",
                          "Choose a writable output folder.") from None


def device(name: str) -> None:
    """`cuda` on a machine without CUDA, `cuda:3` with two GPUs, or a name torch does not know."""
    if name in ("auto", "cpu"):
        return
    from emogen_cli.core.runtime import resolve_device

    resolve_device(name)


def preflight(device_name: str, outputs: Iterable[str | Path | None] = ()) -> None:
    """Every check a command can make before loading models: its device and its output folders."""
    device(device_name)
    for out in outputs:
        if out is not None:
            writable_folder(out)
