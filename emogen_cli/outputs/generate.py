"""`emogen generate`, `transfer`, `fuse` and `grid --va`: requests -> a folder of numbered PNGs.

Each run goes through `EmoGenPipeline.generate`, the one generation loop (best-of included), and
through folder.py for names, numbers, PNG metadata, index.jsonl and contact sheets. Image number n
gets its seeds from conditioning/seeds.py. Every run starts by reconciling the folder's index with
its files. Progress is reported per denoising step, and Ctrl-C (or SIGTERM) stops at the end of the
current UNet step: the images finished so far are written and indexed.

Under `accelerate launch` the main process claims the numbers and shares them; image j of the
flat list goes to process j % N.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from emogen_cli.conditioning.request import Request
from emogen_cli.conditioning.seeds import image_seeds
from emogen_cli.conditioning.selection import check_best_of
from emogen_cli.conditioning.va import DEFAULT_SIGMA, GRID, check_axes, va_request, va_weights
from emogen_cli.core.config import Config
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import Interrupted
from emogen_cli.core.files import disk_error
from emogen_cli.core.interrupts import StopSignals
from emogen_cli.core.reporting import Reporter, progress
from emogen_cli.core.validate import writable_folder
from emogen_cli.outputs.folder import (
    INDEX,
    append_index,
    claim_numbers,
    file_stem,
    image_name,
    reconcile,
    release_claims,
    remove_outputs,
    save_png,
    save_sheet,
    write_sheets,
)
from emogen_cli.pipeline import EmoGenPipeline


class StepWatch:
    """A step callback for long commands: per-step progress through the Reporter ("Denoising steps"),
    and Ctrl-C / SIGTERM honoured at the end of the current UNet step (a second signal stops at once).
    `stop` (optional, e.g. a served job's cancel flag) asks for the same stop when it returns True."""

    TASK = "Denoising steps"

    def __init__(self, reporter: Reporter, total: int, stop: Callable[[], bool] | None = None) -> None:
        self.reporter, self.total, self.stop = reporter, total, stop
        self.signals = StopSignals()

    def __enter__(self) -> "StepWatch":
        self.reporter.start(self.TASK, self.total)
        self.signals.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.signals.__exit__(*exc)
        self.reporter.finish(self.TASK)

    def check(self) -> None:
        """Raise KeyboardInterrupt where a stop was asked for."""
        if self.signals.requested is not None or (self.stop is not None and self.stop()):
            raise KeyboardInterrupt

    def __call__(self, pipe: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        self.reporter.advance(self.TASK)
        self.check()
        return tensors


def plan(requests: list[Request], share: Any, batch_size: int) -> list[tuple[int, list[int]]]:
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


def _open_folder(out_dir: Path, is_main: bool = True) -> None:
    """Create the folder and reconcile its index with its files (main process only)."""
    if not is_main:
        return
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise disk_error(out_dir, exc) from None
    reconcile(out_dir)
    if (out_dir / "rejected").is_dir():
        reconcile(out_dir / "rejected")


def generate(config: Config, requests: list[Request], out: str | Path | None = None, mapper: str | Path | None = None,
             overwrite: bool = False, baseline: bool = False, reporter: Reporter | None = None, *,
             intensities: list[float] | None = None, best_of: int | None = None, keep_all: bool = False,
             probe: str | Path | None = None, pipe: EmoGenPipeline | None = None, settings: Any = None,
             first_seed: int | None = None, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Generate every request's images into `out`; returns the written records (from all processes).

    `overwrite`: first delete the folder's earlier images of the same file stems (with their contact
    sheets, rejected/ candidates and index entries) and its evaluation/ report, then number from 0.
    `intensities`: every request at each strength α (files `<stem>-intensity<α>-N.png`, α = 1 the
    plain files), image i of every α with the same number and seed, and with several α one strip
    `grid-<stem>-intensity-N.png` per number. `best_of` (default generate.best_of): K candidates per
    image, the probe's favourite kept, the others in rejected/ with `keep_all`.

    For a long-running caller (`emogen serve`): `pipe` a pipeline already loaded (then `mapper` and
    `baseline` are the pipeline's), `settings` this call's sampling settings (`pipe.settings(...)`;
    default the config's), `first_seed` image i of each request seeded first_seed + i (the Python API's
    `seed=`) instead of runtime.seed + its file number, `stop` a cancel flag checked at each step's end."""
    from emogen_cli.core.runtime import process_share

    reporter = reporter or Reporter()
    k = check_best_of(config.generate.best_of if best_of is None else best_of, keep_all, probe)
    bases = [file_stem(request, baseline) for request in requests]
    groups = list(range(len(requests)))
    if intensities:
        groups = [g for g in range(len(requests)) for _ in intensities]
        requests = [replace(request, intensity=alpha) for request in requests for alpha in intensities]
    share = process_share(config.runtime.device)
    out_dir = Path(out or config.generate.output).resolve()
    writable_folder(out_dir)  # creates nothing: a bundle that fails to load leaves no empty folder behind
    rejected_dir = out_dir / "rejected"
    stems = [file_stem(request, baseline) for request in requests]
    if pipe is None:
        pipe = EmoGenPipeline(config, mapper, baseline, max(r.tokens for r in requests), share.device,
                              reporter=reporter)
    settings = settings or pipe.settings()
    for request in requests:
        pipe.check(request)  # a lost emotion token fails now, before any image is made
    scorer = pipe.scorer(probe) if k > 1 else None  # a missing probe fails now too
    _open_folder(out_dir, share.is_main)
    if overwrite and share.is_main:
        removed = remove_outputs(out_dir, stems)
        if removed:
            reporter.info(f"--overwrite: removed {len(removed)} earlier output(s) of this run's kind from {out_dir}.")
    starts = claim_numbers(out_dir, stems, [r.count for r in requests], groups) if share.is_main else None
    starts = _shared_starts(share, starts)
    seed, batch = config.runtime.seed, config.generate.batch_size
    batches = plan(requests, share, batch)
    mine = [image_name(stems[r], starts[r] + i) for r, indices in batches for i in indices]
    records: list[dict[str, Any]] = []
    rejected_count = 0
    written: set[str] = set()
    calls = sum(math.ceil(len(indices) * k / batch) for _, indices in batches)
    try:
        task = "Generating" if k == 1 else f"Generating (best of {k})"
        with progress(reporter, task, len(mine)), StepWatch(reporter, calls * settings.steps, stop) as watch:
            for r, indices in batches:
                request, numbers = requests[r], [starts[r] + i for i in indices]
                seed_groups = ([image_seeds(seed, n, k) for n in numbers] if first_seed is None else
                               [image_seeds(first_seed, i, k) for i in indices])
                for n, selection in zip(numbers, pipe.generate(request, seed_groups, settings, scorer=scorer,
                                                               batch_size=batch, callback_on_step_end=watch)):
                    others = [save_png(rejected_dir / f"{stems[r]}-{n:05d}-rank{cand.rank}.png", cand.image,
                                       cand.metadata, cand.infotext) for cand in (selection.rejected if keep_all else [])]
                    append_index(rejected_dir, others)
                    rejected_count += len(others)
                    name = image_name(stems[r], n)
                    kept = selection.kept
                    record = save_png(out_dir / name, kept.image, kept.metadata, kept.infotext)
                    append_index(out_dir, [record])  # indexed at once (O(1)): a later stop leaves a true index
                    records.append(record)
                    written.add(name)
                    release_claims(out_dir, [name])
                reporter.advance(task, len(indices))
                watch.check()
    except KeyboardInterrupt:
        raise Interrupted(f"Interrupted after {len(records)} images; they are in {out_dir} and {INDEX}.",
                          "Run again to add more: numbering (and seeds) continue after the existing files.") from None
    except OSError as exc:
        raise disk_error(out_dir, exc) from None
    finally:
        release_claims(out_dir, [n for n in mine if n not in written])
    records = sorted(share.gather(records), key=lambda rec: rec["path"])
    rejected_count = sum(share.gather([rejected_count]))
    share.wait()
    strips: list[str] = []
    if share.is_main:
        unsheeted = 0
        for request, stem, start in zip(requests, stems, starts):  # paged: memory is one page of thumbnails
            unsheeted += write_sheets(out_dir, stem, start, request.count, config.generate.sheet_size,
                                      config.generate.max_sheets)[1]
        if unsheeted and config.generate.max_sheets:
            reporter.info(f"Contact sheets: the first {config.generate.max_sheets} per request "
                          f"({config.generate.sheet_size} images each); {unsheeted} more page(s) without one "
                          "(generate.max_sheets, generate.sheet_size).")
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


def _strips(out_dir: Path, requests: list[Request], stems: list[str], starts: list[int], groups: list[int],
            bases: list[str]) -> list[str]:
    """One row per file number (= seed) of each group: its image at every intensity, left to right."""
    from emogen_cli.core.images import load_rgb

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


def va_grid(pipe: EmoGenPipeline, out_dir: str | Path, seed: int = 0, valences: tuple[float, ...] = GRID,
            arousals: tuple[float, ...] = GRID, sigma: float = DEFAULT_SIGMA, prompt: str = "{}",
            reporter: Reporter | None = None) -> dict[str, Any]:
    """One image per (valence, arousal) cell, all with one seed (the seed rule's for the sheet's first
    cell number, so a second sheet in the folder differs), and the contact sheet
    grid-va-seed<S>-NNNNN.png: valence grows left to right, arousal bottom to top."""
    reporter = reporter or Reporter()
    out = Path(out_dir).resolve()
    _open_folder(out)
    emotions = tuple(e for e in EMOTIONS if e in pipe.bundle.emotions)
    cells_total = len(valences) * len(arousals)
    start = claim_numbers(out, ["va"], [cells_total])[0]  # reserved across processes
    cell_seed = image_seeds(seed, start)[0]
    records, cells = [], {}
    try:
        with progress(reporter, "Valence-arousal grid", cells_total), \
                StepWatch(reporter, cells_total * pipe.settings().steps) as watch:
            n = start
            for a in sorted(arousals, reverse=True):
                for v in sorted(valences):
                    request = va_request(v, a, sigma, prompt, 1, emotions)
                    kept = next(pipe.generate(request, [[cell_seed]], callback_on_step_end=watch)).kept
                    records.append(save_png(out / f"va-{n:05d}.png", kept.image, kept.metadata, kept.infotext))
                    append_index(out, records[-1:])  # indexed at once: any later failure leaves a true index
                    cells[(v, a)] = kept.image
                    n += 1
                    reporter.advance("Valence-arousal grid")
                    watch.check()
    except KeyboardInterrupt:  # the cells written are indexed; the sheet needs them all
        raise Interrupted(f"Interrupted after {len(records)} of {cells_total} grid cells; they "
                          f"are in {out} and index.jsonl (no contact sheet).", "Run it again for the sheet.") from None
    finally:  # every number this run reserved (the written files keep theirs)
        release_claims(out, [f"va-{k:05d}.png" for k in range(start, start + cells_total)])
    rows = [[cells[(v, a)] for v in sorted(valences)] for a in sorted(arousals, reverse=True)]
    sheet = save_sheet(out / f"grid-va-seed{cell_seed}-{start:05d}.png", rows)
    return {"out": str(out), "count": len(records), "sheet": sheet, "valences": sorted(valences),
            "arousals": sorted(arousals, reverse=True), "sigma": sigma, "seed": cell_seed, "images": records}


def grid(config: Config, out: str | Path | None = None, valences: tuple[float, ...] = GRID,
         arousals: tuple[float, ...] = GRID, sigma: float = DEFAULT_SIGMA, prompt: str = "{}",
         mapper: str | Path | None = None, reporter: Reporter | None = None) -> dict[str, Any]:
    """`emogen grid --va`: the valence x arousal contact sheet with seed runtime.seed (+ its number)."""
    from emogen_cli.core import validate

    check_axes((*valences, *arousals))
    template = validate.template(prompt, "--prompt")
    va_weights(0.5, 0.5, sigma)  # a bad --sigma fails here, before the models load
    out = Path(out) if out is not None else Path(config.generate.output).parent / "va-grid"
    pipe = EmoGenPipeline(config, mapper, reporter=reporter)
    return va_grid(pipe, out, config.runtime.seed, tuple(valences), tuple(arousals), sigma, template, reporter)
