"""Atomic file writing: a file under its final name is always complete.

Every writer goes through `atomic_path`: the data is written to a temporary file in the same
folder, flushed and fsynced, then renamed over the final name (`os.replace` is atomic on POSIX
and Windows). A crash, a kill or a full disk leaves either the old file or the new one, never a
truncated mix; the temporary file is removed on failure.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emogen_cli.core.errors import EmogenError


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
    if exc.errno == errno.ENAMETOOLONG:
        return EmogenError(f"Cannot write '{short_path(path)}': the path is too long.", "Choose a shorter output path.")
    return EmogenError(f"Cannot write '{path}' ({exc.strerror or exc}).")


# What the libraries that write through their own I/O (safetensors' Rust, torch's C++ streams) raise instead of an
# OSError: "I/O error: No space left on device (os error 28)", "[enforce fail ...] unexpected pos 576 vs 534" with
# "basic_ios::clear: iostream error" as its context, "PytorchStreamWriter failed writing file".
_OS_ERROR = re.compile(r"\(os error (\d+)\)|Os \{ code: (\d+)")
_IO_FAILURE = ("I/O error", "IoError", "iostream error", "file write failed", "failed writing file", "unexpected pos")
_NEARLY_FULL = 4 << 20  # bytes: a write failing with less free space than this failed for lack of it


def write_failure(path: str | Path, exc: BaseException, where: str | Path | None = None) -> EmogenError | None:
    """The one-line error for an exception raised while writing `path`, or None when it is not a write failure
    (a bug stays a bug). Any writer counts, not only Python's own files: an OSError, an "(os error N)" of
    safetensors, or torch's stream failure, which names no cause (then free space on `where`, the folder written
    into, tells a full disk from other failures). Call it before removing what the failed write left: that file
    is what filled the disk."""
    path = Path(path)
    if isinstance(exc, EmogenError):
        return None
    if isinstance(exc, OSError):
        return disk_error(path, exc)
    texts = [str(e) for e in _chain(exc)]
    for text in texts:
        if m := _OS_ERROR.search(text):
            code = int(m[1] or m[2])
            return disk_error(path, OSError(code, os.strerror(code)))
    if not any(marker in text for text in texts for marker in _IO_FAILURE):
        return None
    try:
        stats = os.statvfs(where or path.parent)
        if stats.f_bavail * stats.f_frsize < _NEARLY_FULL:
            return disk_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    except (OSError, AttributeError):  # no statvfs (Windows): the cause stays unknown
        pass
    reason = texts[0].splitlines()[0][:160] if texts[0].strip() else type(exc).__name__
    return EmogenError(f"Cannot write '{path}': the write failed ({reason}).",
                       "Check the disk (free space, quota, a removed drive) and run the command again.")


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and the exceptions it was raised from or during (torch hides its I/O error in the context)."""
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 8:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def short_path(path: str | Path, keep: int = 80) -> str:
    """A path for an error line: whole when short, else its start and end around an ellipsis."""
    text = str(path)
    return text if len(text) <= keep else f"{text[:keep // 2]}…{text[-keep // 2:]} ({len(text)} characters)"


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore it (other threads do not create files meanwhile)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def new_file_mode(path: str | Path | None = None) -> int:
    """The permissions a plain `open(path, "w")` gives: those of the file it replaces, else 0o666 less the umask."""
    try:
        if path is not None:
            return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        pass
    return 0o666 & ~_umask()


def set_plain_mode(path: str | Path, final: str | Path | None = None) -> None:
    """Give `path` the permissions `new_file_mode(final)`: some writers (safetensors) create their files 0600."""
    if os.name == "posix":
        os.chmod(path, new_file_mode(final))


def temp_beside(path: str | Path) -> Path:
    """An empty temporary file in `path`'s folder, named after it (`.NAME.XXXX.tmp`), with the permissions the
    final file gets (mkstemp's are 0600: renamed in as they are, files would be unreadable to a teammate, a web
    server or a container)."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{_writer_tag()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, new_file_mode(path))
    finally:
        os.close(fd)
    return Path(tmp_name)


TEMP_SUFFIX = ".tmp"
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_WRITER = re.compile(r"\.emogen-(\d+)-([0-9a-f]{8})\.[^.]+\.tmp$")


def _writer_tag() -> str:
    """Who writes a temporary file (process and host), so a clean-up elsewhere can tell a live write from a
    killed one: `emogen-<pid>-<host hash>`."""
    return f"emogen-{os.getpid()}-{_HOST}"


def temp_writer_alive(tmp: Path) -> bool | None:
    """Whether the process that is writing the temporary file `tmp` still runs: True or False for a writer on
    this host, None when that cannot be told (another host sharing the folder, or a file without the tag)."""
    match = _WRITER.search(tmp.name)
    if match is None or match.group(2) != _HOST:
        return None
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # alive, another user's
    return True


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed to `path`.

    Use it for writers that need a file name (safetensors, PIL, torch): write to the yielded path. A failed
    write of any library (full disk, quota, I/O error) is one line (`write_failure`), the temporary file removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_beside(path)
    except OSError as exc:
        raise disk_error(path, exc) from None
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        set_plain_mode(tmp, path)  # again: a writer may have replaced the file (safetensors writes its own temp file)
        os.replace(tmp, path)
    except BaseException as exc:
        failure = write_failure(path, exc) if isinstance(exc, Exception) else None
        tmp.unlink(missing_ok=True)
        if failure is not None:
            raise failure from None
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


# --- reading what emogen wrote, with one clear line when a file is damaged -----------------------------------------


def file_digest(*paths: str | Path) -> str:
    """sha256 over the names and bytes of `paths` (missing files count as empty): ties a cache to its source."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        digest.update(path.name.encode() + b"\0")
        if path.is_file():
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def read_json(path: str | Path, what: str, hint: str | None = None) -> Any:
    """Parsed JSON of `path`; missing, non-UTF-8 or invalid JSON is one line naming the file."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise EmogenError(f"{what} '{path}' does not exist.", hint) from None
    except UnicodeDecodeError as exc:
        raise EmogenError(f"{what} '{path}' is not UTF-8 text (byte {exc.start}).", hint) from None
    except json.JSONDecodeError as exc:
        raise EmogenError(f"{what} '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}).", hint) from None
    except OSError as exc:
        raise EmogenError(f"Cannot read {what.lower()} '{path}' ({exc.strerror or exc}).", hint) from None


def read_safetensors(path: str | Path, what: str, hint: str | None = None,
                     with_metadata: bool = False) -> Any:
    """All tensors of a safetensors file (and its metadata); truncated or foreign files are one line."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise EmogenError(f"{what} '{path}' is missing.", hint)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no items()
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types for damaged files
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise EmogenError(f"{what} '{path}' is damaged or truncated ({first}).", hint) from None
    return (tensors, metadata) if with_metadata else tensors


def check_finite(tensors: dict[str, Any], path: str | Path, what: str, hint: str | None = None) -> None:
    """Refuse NaN/inf in stored weights: they would silently turn every output into noise."""
    import torch

    for name, value in tensors.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise EmogenError(f"{what} '{path}' holds NaN or infinite values in '{name}'.", hint)


def check_shapes(tensors: dict[str, Any], expected: dict[str, tuple[int, ...]], path: str | Path, what: str,
                 hint: str | None = None) -> None:
    """Every expected tensor present with its expected shape; the first difference is the message."""
    for name, shape in expected.items():
        if name not in tensors:
            raise EmogenError(f"{what} '{path}' has no tensor '{name}'.", hint)
        if tuple(tensors[name].shape) != tuple(shape):
            raise EmogenError(f"{what} '{path}' has '{name}' of shape {tuple(tensors[name].shape)}, "
                              f"expected {tuple(shape)}.", hint)
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise EmogenError(f"{what} '{path}' has unexpected tensors ({', '.join(extra[:3])}).", hint)


def write_bundle(folder: str | Path, files: dict[str, Any], config: dict[str, Any]) -> None:
    """Replace a bundle folder's files only once every new file is complete on disk.

    `files` maps file names to writers `fn(tmp_path)`. Each is written to a temporary file beside
    its final name and fsynced; only then are they renamed in, config.json last (it marks the bundle
    complete and records each weights file's size, so a copy mixed by a crash between renames, or
    truncated later, is detected).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged: dict[str, Path] = {}
    try:
        for name, write in files.items():
            staged[name] = temp_beside(folder / name)
            write(staged[name])
            set_plain_mode(staged[name], folder / name)
            with open(staged[name], "rb+") as f:
                os.fsync(f.fileno())
        config = {**config, "files": {name: tmp.stat().st_size for name, tmp in staged.items()
                                      if name.endswith(".safetensors")}}  # text files are checked by parsing
        with atomic_path(folder / "config.json") as tmp_config:
            staged["config.json"] = tmp_config
            tmp_config.write_text(json.dumps(config, indent=2, allow_nan=False, default=str) + "\n")
            for name, tmp in staged.items():
                if name != "config.json":
                    os.replace(tmp, folder / name)
    except Exception as exc:
        failure = write_failure(folder, exc, where=folder)
        if failure is None:
            raise
        raise failure from None
    finally:
        for name, tmp in staged.items():
            if name != "config.json":
                tmp.unlink(missing_ok=True)
    _fsync_dir(folder)


def check_bundle_files(folder: str | Path, config: dict[str, Any], what: str, hint: str | None = None) -> None:
    """Each file config.json lists exists with the size it was written with (a bundle mixed by a crash,
    or truncated later, is one line)."""
    folder = Path(folder)
    for name, size in (config.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            raise EmogenError(f"{what} '{folder}' lacks '{name}'.", hint)
        if isinstance(size, int) and path.stat().st_size != size:
            raise EmogenError(f"{what} file '{path}' is {path.stat().st_size} bytes, but the bundle recorded "
                              f"{size}: it is truncated or from another run.", hint)


def read_bundle_config(path: Path, expected: str, producer: str) -> dict[str, Any]:
    """config.json of an emogen output folder, checked to be of the `expected` format."""
    hint = f"Pass the folder written by `{producer}`."
    if not (path / "config.json").is_file():
        raise EmogenError(f"'{path}' is not an {expected} folder (no config.json).", hint)
    config = read_json(path / "config.json", "Bundle config", hint)
    if not isinstance(config, dict):
        raise EmogenError(f"Bundle config '{path / 'config.json'}' is not a JSON object.", hint)
    if config.get("format") != expected:
        kind = config.get("format")
        kind = f"an {kind}" if isinstance(kind, str) and kind.startswith("emogen-") else "another kind of"
        raise EmogenError(f"'{path}' is {kind} folder, not an {expected} folder.",
                          f"Pass the folder written by `{producer}`.")
    return config


LFS_HEADER = b"version https://git-lfs"


def is_lfs_pointer(path: str | Path) -> bool:
    """A Git LFS pointer file (what a clone without `git lfs` holds instead of the data): tiny, text, fixed header."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LFS_HEADER)) == LFS_HEADER and Path(path).stat().st_size < 1024
    except OSError:
        return False


def check_not_lfs_pointer(path: str | Path) -> None:
    """One line instead of an unpickling error when an official file is an LFS pointer."""
    if is_lfs_pointer(path):
        raise EmogenError(f"'{path}' is a Git LFS pointer, not the weights: run `git lfs pull` in the EmoGen clone.")
