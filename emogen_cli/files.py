"""Atomic file writing: a file under its final name is always complete.

Every writer goes through `atomic_path`: the data is written to a temporary file in the same
folder, flushed and fsynced, then renamed over the final name (`os.replace` is atomic on POSIX
and Windows). A crash, a kill or a full disk leaves either the old file or the new one, never a
truncated mix; the temporary file is removed on failure.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emogen_cli.errors import EmogenError


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not supported (e.g. Windows): the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def disk_error(path: Path, exc: OSError) -> EmogenError:
    """One clear line for an OSError while writing `path` (full disk, permissions, ...)."""
    if exc.errno == errno.ENOSPC:
        return EmogenError(f"The disk is full: could not write '{path}'.", "Free some space and run the command again.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return EmogenError(f"Cannot write '{path}' ({exc.strerror}).", "Choose a writable output folder.")
    return EmogenError(f"Cannot write '{path}' ({exc.strerror or exc}).")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed to `path`.

    Use it for writers that need a file name (safetensors, PIL, torch): write to the yielded path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise disk_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    """JSON with NaN/inf refused (they are not JSON): callers turn them into null first."""
    atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False, default=str) + "\n")


def atomic_save_safetensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def atomic_save_image(path: str | Path, image: Any, **kwargs: Any) -> None:
    """A PIL image under its final name only once it is completely written."""
    fmt = kwargs.pop("format", None) or (Path(path).suffix.lstrip(".").upper().replace("JPG", "JPEG") or "PNG")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **kwargs)
