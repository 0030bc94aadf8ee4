"""Image folders: file names, numbering, PNGs with their metadata, index.jsonl, contact sheets.

The one module that writes emogen's PNGs (generate, transfer, fuse, grid --va, edit). Files are named
`<stem>-<number>.png`; numbering continues after what the folder holds, and every image's seed
follows its number (conditioning/seeds.py), so `-n 2` twice gives the same four images as `-n 4`
once, a re-run after Ctrl-C continues the sequence and nothing is duplicated.

PNGs carry their parameters as JSON in the "emogen" text chunk (what `emogen evaluate` reads) and
AUTOMATIC1111's "parameters" infotext; contact sheets (rows of images scaled to one height) are named
`grid-*` so galleries skip them. index.jsonl lists the folder's images by their resolved path:
`reconcile` at the start of every run that writes into a folder makes it true again after a kill -9
or a full disk (an entry per PNG, from the PNG's own metadata; none for a missing file) and removes
the temporary files of killed writes.

Several runs may share a folder: numbers are claimed under a lock on the folder with a hidden
claim file per number (`.<stem>-<number>.png.claim`, holding the owner's pid), so every run's
images survive. A claim whose process is gone (kill -9) is reclaimed by the next run.
index.jsonl grows by appending under the same lock (`append_index`: O(1) per image, the new lines
written in one call and fsynced), so a run of n images costs O(n) in index writes, not O(n^2). A line
torn by a kill -9 or a full disk mid-append is cut off by the next append and by `reconcile`, which
then indexes that image from its PNG: an interrupted run's index still matches its files.

Contact sheets are paged (`write_sheets`): one sheet per `generate.sheet_size` images of a request,
at most `generate.max_sheets` of them, built from the files one page at a time, so memory is bounded
by a page whatever the run's size.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_save_image, atomic_write_text, disk_error, temp_writer_alive

INDEX = "index.jsonl"
LOCK = ".emogen.lock"


SHEET_HEIGHT = 256  # pixels per row of a contact sheet (big photos are shown scaled down)


def slug(text: str) -> str:
    """A short file-name-safe form of `text` ("My Photo (1)" -> "my-photo-1"; "" for no letters or digits)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("{}", "")).strip("-")[:40]


def file_stem(request: Any, baseline: bool) -> str:
    """`awe`, `awe-a-cup`, `amusement+fear-embedding`, `awe-baseline`, `awe-intensity0.5`, `va-0.8-0.3`:
    what a request's files are called (intensity 1 is plain generation and shares its files)."""
    va = getattr(request, "va", None)
    if va is not None:
        stem = f"va-{va[0]:g}-{va[1]:g}"
    else:
        stem = request.name + (f"-{request.mode}" if len(request.emotions) > 1 and request.mode != "tokens" else "")
    stem += f"-{slug(request.prompt)}" if slug(request.prompt) else ""
    alpha = getattr(request, "alpha", 1.0)
    stem += f"-intensity{alpha:g}" if alpha != 1 else ""
    return stem + ("-baseline" if baseline else "")


def image_name(stem: str, number: int) -> str:
    return f"{stem}-{number:05d}.png"


@contextlib.contextmanager
def folder_lock(out_dir: Path, timeout: float = 600.0) -> Iterator[None]:
    """An exclusive lock on `out_dir` between processes (flock; an exclusive lock file where flock is missing)."""
    path = out_dir / LOCK
    try:
        import fcntl
    except ImportError:  # Windows: O_EXCL lock file, waited for
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise EmogenError(f"'{out_dir}' stayed locked by another emogen run.",
                                      f"Delete '{path}' if no other run is writing there.") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            os.close(fd)
            path.unlink(missing_ok=True)
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _claim_path(out_dir: Path, stem: str, number: int) -> Path:
    return out_dir / f".{image_name(stem, number)}.claim"


def _claim_alive(path: Path) -> bool:
    """A claim belongs to a live process (or one on another host, which we cannot check)."""
    try:
        owner = json.loads(path.read_text())
        pid, host = int(owner["pid"]), owner["host"]
    except (OSError, ValueError, KeyError, TypeError):
        return time.time() - path.stat().st_mtime < 60 if path.exists() else False  # being written right now
    if host != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but owned by someone else
    return True


_NUMBERED = re.compile(r"(\.?)(.+)-(\d+)\.png(\.claim)?")


def _taken_numbers(out_dir: Path) -> dict[str, set[int]]:
    """Per file stem, the numbers held by finished files or live claims (one scan); stale claims are removed."""
    taken: dict[str, set[int]] = {}
    for p in out_dir.iterdir():
        m = _NUMBERED.fullmatch(p.name)
        if not m or bool(m[1]) != bool(m[4]):
            continue
        if m[4] and not _claim_alive(p):
            p.unlink(missing_ok=True)
            continue
        taken.setdefault(m[2], set()).add(int(m[3]))
    return taken


def claim_numbers(out_dir: Path, stems: list[str], counts: list[int],
                  groups: list[int] | None = None) -> list[int]:
    """The first file number of each request, reserved across processes until its files are written.

    Requests sharing a stem get consecutive ranges. Requests of one group (the intensities of one
    strip) get the same start, the first number free under all their stems, so image i of each has
    the same seed."""
    starts: list[int] = []
    following: dict[str, int] = {}
    group_start: dict[int, int] = {}
    groups = list(range(len(stems))) if groups is None else groups
    owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    with folder_lock(out_dir):
        taken = _taken_numbers(out_dir)
        for stem in stems:
            following.setdefault(stem, max(taken.get(stem, ()), default=-1) + 1)
        for stem, count, group in zip(stems, counts, groups):
            if group not in group_start:
                group_start[group] = max(following[s] for s, g in zip(stems, groups) if g == group)
            start = group_start[group]
            for number in range(start, start + count):
                try:
                    _claim_path(out_dir, stem, number).write_text(owner)
                except OSError as exc:
                    raise disk_error(_claim_path(out_dir, stem, number), exc) from None
            starts.append(start)
            following[stem] = start + count
    return starts


def release_claims(out_dir: Path, names: list[str]) -> None:
    for name in names:
        (out_dir / f".{name}.claim").unlink(missing_ok=True)


def _key(path: Any) -> str | None:
    """An index entry's file: its name inside the folder, however the folder was spelled when written."""
    return Path(path).name if isinstance(path, str) and path else None


def _read_index(out_dir: Path) -> list[tuple[str | None, str]]:
    """index.jsonl's lines as (file name or None, line)."""
    index = out_dir / INDEX
    if not index.is_file():
        return []
    entries = []
    text = index.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    for k, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            name = _key(entry.get("path")) if isinstance(entry, dict) else None
        except json.JSONDecodeError:
            if k == len(lines) - 1 and not text.endswith("\n"):
                continue  # the torn last line of a killed append: its PNG is indexed again from its metadata
            name = None  # a damaged line is kept as it is: never drop what we do not understand
        entries.append((name, line))
    return entries


def _write_index(out_dir: Path, lines: list[str]) -> None:
    atomic_write_text(out_dir / INDEX, "".join(line + "\n" for line in lines))


def _index_line(out_dir: Path, record: dict[str, Any]) -> str:
    return json.dumps({**record, "path": str(out_dir.resolve() / Path(record["path"]).name)}, allow_nan=False)


def _cut_torn_tail(fd: int) -> None:
    """Truncate a line that a killed append left unfinished (every complete line ends with a newline)."""
    size = os.fstat(fd).st_size
    if not size or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        block = os.pread(fd, min(65536, end), max(0, end - 65536))
        cut = block.rfind(b"\n")
        if cut >= 0:
            end = end - len(block) + cut + 1
            break
        end -= len(block)
    os.ftruncate(fd, max(end, 0))


def append_index(out_dir: Path, records: list[dict[str, Any]]) -> None:
    """Add the entries of newly written files (names this run claimed) to index.jsonl by appending:
    O(len(records)) whatever the index's length. Under the folder lock: a torn last line of a killed
    append is cut off first, then the new lines are written in one call and fsynced."""
    if not records:
        return
    data = "".join(_index_line(out_dir, r) + "\n" for r in records).encode("utf-8")
    with folder_lock(out_dir):
        fd = os.open(out_dir / INDEX, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _cut_torn_tail(fd)
            offset = os.lseek(fd, 0, os.SEEK_END)
            view = memoryview(data)
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            os.fsync(fd)
        except OSError as exc:
            raise disk_error(out_dir / INDEX, exc) from None
        finally:
            os.close(fd)


def merge_index(out_dir: Path, records: list[dict[str, Any]]) -> None:
    """Add `records` to index.jsonl: under the folder lock, re-read it, replace entries of the same
    files (however the folder was spelled), append the rest, and replace the file atomically.
    O(index length): for files that may already be listed; new files go through `append_index`."""
    if not records:
        return
    new = {Path(r["path"]).name: _index_line(out_dir, r) for r in records}
    with folder_lock(out_dir):
        kept = [line for name, line in _read_index(out_dir) if name not in new]
        _write_index(out_dir, kept + [new[n] for n in sorted(new)])


def reconcile(out_dir: Path) -> dict[str, int]:
    """Make index.jsonl describe exactly the folder's images (run at the start of every run that writes
    into it): entries of missing files and repeated entries of one file are dropped, a PNG written by
    emogen without an entry gets one from its own metadata, and temporary files of killed writes go.
    Returns what changed, counted."""
    from PIL import Image

    counts = {"dropped": 0, "added": 0, "temporary": 0}
    if not out_dir.is_dir():
        return counts
    with folder_lock(out_dir):
        for tmp in out_dir.glob(".*.tmp"):  # core.files.atomic_path's names: ".<name>.emogen-<pid>-<host>.<random>.tmp"
            if _killed_write(out_dir, tmp):
                tmp.unlink(missing_ok=True)
                counts["temporary"] += 1
        lines, seen = [], set()
        for name, line in _read_index(out_dir):
            if name is not None and (name in seen or not (out_dir / name).is_file()):
                counts["dropped"] += 1
                continue
            seen.add(name)
            lines.append(line)
        for png in sorted(out_dir.glob("*.png")):
            if png.name in seen or png.name.startswith("grid-"):
                continue
            try:
                with Image.open(png) as image:
                    meta = json.loads(image.text.get("emogen", "null"))
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(meta, dict):
                lines.append(json.dumps({"path": str(png.resolve()), **{k: v for k, v in meta.items()
                                                                         if k != "path"}}, allow_nan=False))
                counts["added"] += 1
        if any(counts.values()) or _torn(out_dir / INDEX):
            _write_index(out_dir, lines)
    return counts


def _torn(index: Path) -> bool:
    """index.jsonl ends in an unfinished line (an append was killed)."""
    try:
        with open(index, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def _killed_write(out_dir: Path, tmp: Path) -> bool:
    """A temporary file nobody will finish: its writer on this host is gone, or (a writer this host cannot see:
    another machine sharing the folder, an untagged file) it is over a minute old or no live run holds a claim.
    A live writer's file is never taken, even between its claims (e.g. while it writes a contact sheet)."""
    try:
        age = time.time() - tmp.stat().st_mtime
    except FileNotFoundError:
        return False  # finished meanwhile
    alive = temp_writer_alive(tmp)
    if alive is not None:
        return not alive or age > 24 * 3600  # a day: the pid was reused
    return age > 60 or not _write_in_progress(out_dir)


def _write_in_progress(out_dir: Path) -> bool:
    """Whether a live emogen run holds a claim in the folder (its temporary files are being written)."""
    return any(_claim_alive(p) for p in out_dir.glob(".*.claim"))


def remove_outputs(out_dir: Path, stems: list[str]) -> list[str]:
    """--overwrite: delete the folder's earlier outputs of these file stems (their PNGs, contact sheets,
    rejected/ candidates and index entries) and the evaluation/ report that described them."""
    import shutil

    numbered = [re.compile(re.escape(stem) + r"-\d+(-rank\d+)?\.png") for stem in set(stems)]
    sheets = [re.compile(r"grid-" + re.escape(stem) + r"(-intensity)?-\d+\.png") for stem in set(stems)]
    removed: list[str] = []
    with folder_lock(out_dir):
        for folder in (out_dir, out_dir / "rejected"):
            if not folder.is_dir():
                continue
            for p in folder.iterdir():
                if any(r.fullmatch(p.name) for r in numbered) or any(r.fullmatch(p.name) for r in sheets):
                    p.unlink(missing_ok=True)
                    removed.append(str(p))
            kept = [line for name, line in _read_index(folder) if name is None or (folder / name).is_file()]
            if (folder / INDEX).is_file():
                _write_index(folder, kept)
        if removed and (out_dir / "evaluation").is_dir():
            shutil.rmtree(out_dir / "evaluation")
            removed.append(str(out_dir / "evaluation"))
    return removed


def save_png(path: Path, image: Any, metadata: dict[str, Any], infotext: str = "") -> dict[str, Any]:
    """A PNG under its final name only once complete, with the `emogen` JSON and A1111 `parameters`
    chunks; returns its index record (its resolved path + the metadata)."""
    from PIL.PngImagePlugin import PngInfo

    path.parent.mkdir(parents=True, exist_ok=True)
    info = PngInfo()
    info.add_text("parameters", infotext)
    info.add_text("emogen", json.dumps(metadata))
    atomic_save_image(path, image, pnginfo=info)
    return {"path": str(path.resolve()), **metadata}


def _fit(image: Any, height: int) -> Any:
    from PIL import Image

    w, h = image.size
    if h == height:
        return image.convert("RGB")
    return image.convert("RGB").resize((max(1, round(w * height / h)), height), Image.LANCZOS)


def sheet(rows: list[list[Any]], height: int = SHEET_HEIGHT, gap: int = 4) -> Any:
    """A contact sheet: each row's images side by side, scaled to `height` pixels, on white."""
    from PIL import Image

    height = min(height, max(im.size[1] for row in rows for im in row))
    fitted = [[_fit(im, height) for im in row] for row in rows]
    width = max(sum(im.size[0] for im in row) + gap * (len(row) - 1) for row in fitted)
    canvas = Image.new("RGB", (width, len(fitted) * height + gap * (len(fitted) - 1)), "white")
    for r, row in enumerate(fitted):
        x = 0
        for im in row:
            canvas.paste(im, (x, r * (height + gap)))
            x += im.size[0] + gap
    return canvas


def save_sheet(path: Path, rows: list[list[Any]], height: int = SHEET_HEIGHT) -> str:
    """Write a contact sheet (atomically); returns its path."""
    atomic_save_image(path, sheet(rows, height), format="PNG")
    return str(path)


def sheet_columns(count: int) -> int:
    """Images per row of a contact sheet page: 4 up to 16 images, then about square (64 -> 8 x 8)."""
    return 4 if count <= 16 else math.ceil(math.sqrt(count))


def write_sheets(out_dir: Path, stem: str, start: int, count: int, sheet_size: int,
                 max_sheets: int | None) -> tuple[list[str], int]:
    """The contact sheets of one request's files `<stem>-<start>.png` .. (count of them): one sheet
    `grid-<stem>-<first number>.png` per page of `sheet_size` images, at most `max_sheets` (None: every
    page; 0: none). A page is read from disk and scaled down one image at a time, so memory is one page
    of thumbnails; a page with a missing file or a single image gets no sheet. Returns the sheets
    written and the number of pages left without one because of `max_sheets`."""
    from PIL import Image

    from emogen_cli.core.images import load_rgb

    written: list[str] = []
    pages = range(start, start + count, sheet_size)
    for page, first in enumerate(pages):
        if max_sheets is not None and page >= max_sheets:
            return written, len(pages) - page
        paths = [out_dir / image_name(stem, n) for n in range(first, min(first + sheet_size, start + count))]
        if len(paths) < 2 or not all(p.is_file() for p in paths):  # a sheet of one image is that image
            continue
        heights = []
        for p in paths:
            with Image.open(p) as im:
                heights.append(im.size[1])
        height = min(SHEET_HEIGHT, max(heights))
        thumbs = [_fit(load_rgb(p), height) for p in paths]
        columns = sheet_columns(len(thumbs))
        written.append(save_sheet(out_dir / f"grid-{stem}-{first:05d}.png",
                                  [thumbs[i:i + columns] for i in range(0, len(thumbs), columns)], height))
    return written, 0


