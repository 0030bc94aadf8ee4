"""Writing generated images into a folder: numbering, PNG metadata, index.jsonl, grids, several processes.

Files are named `<stem>-<number>.png`; numbering continues after what the folder holds (unless
`overwrite`), and image seed = base seed + file number, so `-n 2` twice gives the same four images
as `-n 4` once, a re-run after Ctrl-C continues the sequence and nothing is duplicated.

Several `generate` runs may share a folder: numbers are claimed under a lock on the folder with a
hidden claim file per number (`.<stem>-<number>.png.claim`, holding the owner's pid), so every
run's images survive. A claim whose process is gone (kill -9) is reclaimed by the next run.
index.jsonl is updated under the same lock by re-reading, merging and atomically replacing it,
after every batch, so an interruption (Ctrl-C, SIGTERM, a full disk) leaves it describing exactly
the files that were written. PNGs reach their final name only when complete (files.atomic_path).

Under `accelerate launch` the main process claims the numbers and shares them; image j of the
flat list goes to process j % N.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from emogen_cli.core.config import Config
from emogen_cli.core.errors import EmogenError, Interrupted
from emogen_cli.core.files import atomic_save_image, atomic_write_text, disk_error
from emogen_cli.core.reporting import Reporter, progress
from emogen_cli.core.validate import writable_folder

INDEX = "index.jsonl"
LOCK = ".emogen.lock"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("{}", "")).strip("-")[:40]


def file_stem(request: Any, baseline: bool) -> str:
    """`awe`, `awe-a-cup`, `amusement+fear-embedding`, `awe-baseline`, `awe-intensity0.5`, `va-0.8-0.3`:
    what a request's files are called (intensity 1 is plain generation and shares its files)."""
    va = getattr(request, "va", None)
    if va is not None:
        stem = f"va-{va[0]:g}-{va[1]:g}"
    else:
        stem = request.name + (f"-{request.mode}" if len(request.emotions) > 1 and request.mode != "tokens" else "")
    stem += f"-{_slug(request.prompt)}" if _slug(request.prompt) else ""
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


def claim_numbers(out_dir: Path, stems: list[str], counts: list[int], overwrite: bool = False,
                  groups: list[int] | None = None) -> list[int]:
    """The first file number of each request, reserved across processes until its files are written.

    Requests sharing a stem get consecutive ranges. Requests of one group (the intensities of one
    strip) get the same start, the first number free under all their stems, so image i of each has
    the same seed. With `overwrite`, numbering starts at 0 and replaces existing files (nothing is
    reserved)."""
    starts: list[int] = []
    following: dict[str, int] = {}
    group_start: dict[int, int] = {}
    groups = list(range(len(stems))) if groups is None else groups
    owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    with folder_lock(out_dir):
        taken = {} if overwrite else _taken_numbers(out_dir)
        for stem in stems:
            following.setdefault(stem, max(taken.get(stem, ()), default=-1) + 1)
        for stem, count, group in zip(stems, counts, groups):
            if group not in group_start:
                group_start[group] = max(following[s] for s, g in zip(stems, groups) if g == group)
            start = group_start[group]
            if not overwrite:
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


def merge_index(out_dir: Path, records: list[dict[str, Any]]) -> None:
    """Add `records` to index.jsonl: under the folder lock, re-read it, replace entries of the same
    files (a rewrite with --overwrite), append the rest, and replace the file atomically."""
    if not records:
        return
    index = out_dir / INDEX
    new = {r["path"]: r for r in records}
    with folder_lock(out_dir):
        kept: list[str] = []
        if index.is_file():
            for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    path = json.loads(line).get("path") if line.strip() else None
                except (json.JSONDecodeError, AttributeError):
                    path = None  # a damaged line is kept as it is: never drop what we do not understand
                if line.strip() and path not in new:
                    kept.append(line)
        lines = kept + [json.dumps(new[p], allow_nan=False) for p in sorted(new)]
        atomic_write_text(index, "".join(line + "\n" for line in lines))


def save_png(path: Path, image: Any, metadata: dict[str, Any], infotext: str) -> None:
    """A PNG under its final name only once complete, with the `emogen` JSON and A1111 `parameters` chunks."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", infotext)
    info.add_text("emogen", json.dumps(metadata))
    atomic_save_image(path, image, pnginfo=info)


def grid(images: list[Any]) -> Any:
    from PIL import Image

    cols = min(len(images), 4)
    rows = (len(images) + cols - 1) // cols
    w, h = images[0].size
    sheet = Image.new("RGB", (cols * w, rows * h), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % cols) * w, (i // cols) * h))
    return sheet


def plan(requests: list[Any], share: Any, batch_size: int) -> list[tuple[int, list[int]]]:
    """This process's batches as (request index, image indices): image j of the flat list goes to
    process j % count, so N processes each get an even share whatever the requests."""
    jobs = [(r, i) for r, request in enumerate(requests) for i in range(request.count)][share.index::share.count]
    batches: list[tuple[int, list[int]]] = []
    for r, i in jobs:
        if batches and batches[-1][0] == r and len(batches[-1][1]) < batch_size:
            batches[-1][1].append(i)
        else:
            batches.append((r, [i]))
    return batches


def _shared_starts(share: Any, starts: list[int] | None) -> list[int]:
    """The main process's claimed numbers, given to every process of an `accelerate launch`."""
    if share.count == 1:
        return starts or []
    from accelerate.utils import broadcast_object_list

    box = [starts]
    broadcast_object_list(box, from_process=0)
    return box[0]


def generate(config: Config, requests: list[Any], out: str | Path | None = None, mapper: str | Path | None = None,
             overwrite: bool = False, baseline: bool = False, reporter: Reporter | None = None, *,
             intensities: list[float] | None = None, best_of: int | None = None, keep_all: bool = False,
             probe: str | Path | None = None) -> dict[str, Any]:
    """Generate every request's images into `out`; returns the written records (from all processes).

    `intensities`: every request at each strength α (files `<stem>-intensity<α>-N.png`, α = 1 the
    plain files), image i of every α with the same number and seed, and with several α one strip
    `grid-<stem>-intensity-N.png` per number. `best_of` (default generate.best_of): K candidates per
    image, the probe's favourite kept (bestof.py), the others in rejected/ with `keep_all`."""
    from dataclasses import replace

    from emogen_cli.core.images import load_rgb
    from emogen_cli.core.runtime import process_share
    from emogen_cli.inference.bestof import candidate_fields, candidate_seeds, check_best_of, select
    from emogen_cli.pipeline import EmoGenPipeline

    reporter = reporter or Reporter()
    k = check_best_of(config.generate.best_of if best_of is None else best_of, keep_all, probe)
    bases = [file_stem(request, baseline) for request in requests]
    groups = list(range(len(requests)))
    if intensities:
        groups = [g for g in range(len(requests)) for _ in intensities]
        requests = [replace(request, intensity=alpha) for request in requests for alpha in intensities]
    share = process_share(config.runtime.device)
    out_dir = Path(out or config.generate.output)
    writable_folder(out_dir)  # creates nothing: a bundle that fails to load leaves no empty folder behind
    rejected_dir = out_dir / "rejected"
    stems = [file_stem(request, baseline) for request in requests]
    pipe = EmoGenPipeline(config, mapper, baseline, max(r.tokens for r in requests), share.device, reporter=reporter)
    for request in requests:
        pipe.check(request)  # a lost emotion token fails now, before any image is made
    scorer = pipe.scorer(probe) if k > 1 else None  # a missing probe fails now too
    if share.is_main:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise disk_error(out_dir, exc) from None
    starts = claim_numbers(out_dir, stems, [r.count for r in requests], overwrite, groups) if share.is_main else None
    starts = _shared_starts(share, starts)
    seed = config.runtime.seed
    batches = plan(requests, share, config.generate.batch_size)
    mine = [image_name(stems[r], starts[r] + i) for r, indices in batches for i in indices]
    records: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    rejected_pending: list[dict[str, Any]] = []
    written: set[str] = set()
    try:
        task = "Generating" if k == 1 else f"Generating (best of {k})"
        with progress(reporter, task, len(mine)):
            for r, indices in batches:
                request, numbers = requests[r], [starts[r] + i for i in indices]
                if k == 1:
                    kept = [(image, seed + n, None, None)
                            for n, image in zip(numbers, pipe.images(request, [seed + n for n in numbers]))]
                else:
                    kept = []
                    groups_of_seeds = [candidate_seeds(seed, n, k) for n in numbers]
                    for n, sel in zip(numbers, select(pipe, request, groups_of_seeds, scorer, None,
                                                      config.generate.batch_size)):
                        kept.append((sel.kept.image, sel.kept.seed, *candidate_fields(sel, sel.kept)))
                        for cand in sel.rejected if keep_all else []:
                            extra, fields = candidate_fields(sel, cand)
                            path = rejected_dir / f"{stems[r]}-{n:05d}-rank{cand.rank}.png"
                            rejected_dir.mkdir(exist_ok=True)
                            rejected_pending.append(pipe.save(cand.image, path, request, cand.seed, None, extra, fields))
                    merge_index(rejected_dir, rejected_pending)
                    rejected += rejected_pending
                    rejected_pending = []
                for number, (image, image_seed, extra, fields) in zip(numbers, kept):
                    name = image_name(stems[r], number)
                    pending.append(pipe.save(image, out_dir / name, request, image_seed, None, extra, fields))
                    written.add(name)
                    release_claims(out_dir, [name])
                merge_index(out_dir, pending)
                records += pending
                pending = []
                reporter.advance(task, len(indices))
    except KeyboardInterrupt:
        _settle(rejected_dir, rejected_pending, rejected)
        _settle(out_dir, pending, records)
        raise Interrupted(f"Interrupted after {len(records)} images; they are in {out_dir} and {INDEX}.",
                          "Run again to add more: numbering (and seeds) continue after the existing files.") from None
    except EmogenError:
        _settle(rejected_dir, rejected_pending, rejected)
        _settle(out_dir, pending, records)
        raise
    except OSError as exc:
        _settle(rejected_dir, rejected_pending, rejected)
        _settle(out_dir, pending, records)
        raise disk_error(out_dir, exc) from None
    finally:
        release_claims(out_dir, [n for n in mine if n not in written])
    records = sorted(share.gather(records), key=lambda rec: rec["path"])
    rejected_count = len(share.gather(rejected))
    share.wait()
    strips: list[str] = []
    if share.is_main:
        for request, stem, start in zip(requests, stems, starts):
            paths = [out_dir / image_name(stem, start + i) for i in range(request.count)]
            if len(paths) > 1 and all(p.is_file() for p in paths):  # a sheet of one image is that image
                atomic_save_image(out_dir / f"grid-{stem}-{start:05d}.png", grid([load_rgb(p) for p in paths]))
        if intensities and len(intensities) > 1:
            strips = _strips(out_dir, requests, stems, starts, groups, bases)
        release_claims(out_dir, [image_name(s, st + i) for s, st, r in zip(stems, starts, requests)
                                 for i in range(r.count)])
    share.wait()
    result = {"out": str(out_dir), "count": len(records), "processes": share.count, "images": records}
    if intensities:
        result.update(intensities=list(intensities), strips=strips)
    if k > 1:
        result.update(best_of=k, rejected=rejected_count)
    return result


def _strips(out_dir: Path, requests: list[Any], stems: list[str], starts: list[int], groups: list[int],
            bases: list[str]) -> list[str]:
    """One row per file number (= seed) of each group: its image at every intensity, left to right."""
    from emogen_cli.core.images import load_rgb
    from emogen_cli.inference.pngio import save_sheet

    written = []
    for group, base in enumerate(bases):
        members = [r for r, g in enumerate(groups) if g == group]
        for i in range(requests[members[0]].count):
            paths = [out_dir / image_name(stems[r], starts[r] + i) for r in members]
            if all(p.is_file() for p in paths):
                number = starts[members[0]] + i
                written.append(save_sheet(out_dir / f"grid-{base}-intensity-{number:05d}.png",
                                          [[load_rgb(p) for p in paths]]))
    return written


def _settle(out_dir: Path, pending: list[dict[str, Any]], records: list[dict[str, Any]]) -> None:
    """After an interruption: index the images of the unfinished batch that reached the disk."""
    try:
        merge_index(out_dir, pending)
    except (EmogenError, OSError):
        pass  # the disk refuses even the index: it still describes only complete files
    records += pending
    pending.clear()
