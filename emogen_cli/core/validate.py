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


NAME_MAX = 255  # bytes per file name (ext4, XFS, APFS, NTFS: 255)
PATH_MAX = 4096  # bytes per path (Linux)


def path_length(path: str | Path) -> str | None:
    """Why no file system takes `path` as a name (a part over NAME_MAX bytes, or the whole over PATH_MAX), else None.

    Checked before a path is used, so that a pasted 5000-character path is one line naming the option, not an
    OSError (ENAMETOOLONG) from wherever it is first touched."""
    text = os.fspath(path)
    encoded = os.fsencode(text)
    if len(encoded) > PATH_MAX:
        return f"too long to be a path ({len(encoded)} bytes; at most {PATH_MAX})"
    longest = max(Path(text).parts or ("",), key=lambda part: len(os.fsencode(part)))
    if len(os.fsencode(longest)) > NAME_MAX:
        return (f"not a usable path: one of its names is {len(os.fsencode(longest))} bytes long "
                f"(at most {NAME_MAX})")
    return None


def check_path(path: str | Path, what: str) -> None:
    """EmogenError naming `what` (an option, "the image ...") when `path_length` refuses `path`."""
    if (why := path_length(path)) is not None:
        from emogen_cli.core.files import short_path

        raise EmogenError(f"{what} '{short_path(path)}' is {why}.", "Check the path: was text pasted in by mistake?")


def writable_folder(path: str | Path, what: str = "output folder") -> None:
    """Refuse an output folder that cannot be created or written, without creating anything: the nearest
    existing ancestor must be a folder in which a file can be made (probed with a temporary file)."""
    check_path(path, f"The {what}")
    path = Path(path)
    existing = path
    try:
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
    except OSError as exc:  # e.g. a symlink loop, or a name the file system refuses
        raise EmogenError(f"Cannot write the {what} '{path}' ({exc.strerror or exc}).",
                          "Choose another output folder.") from None
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
