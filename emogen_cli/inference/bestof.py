"""`--best-of K`: draw K candidates per requested image, keep the one the emotion probe rates highest.

Candidate j of requested image i uses seed `seed + i*K + j` (candidate 0 of image 0 is plain
generation's first image). The score is the CLIP-space probe's probability of the target emotion
(for a mix, the weighted sum over its emotions). Kept images record their score, their rank among
the K (always 1) and the seeds of all candidates; with `keep_all` the others are written to the
`rejected/` subfolder with their own score and rank (2..K), and listed in its own index.jsonl.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter, progress


@dataclass
class Candidate:
    image: Any
    seed: int
    score: float
    rank: int = 0  # 1 = best of its group


@dataclass
class Selection:
    """The K candidates of one requested image, best first."""

    index: int
    candidates: list[Candidate] = field(default_factory=list)

    @property
    def kept(self) -> Candidate:
        return self.candidates[0]

    @property
    def rejected(self) -> list[Candidate]:
        return self.candidates[1:]


def candidate_seeds(seed: int, index: int, k: int) -> list[int]:
    return [seed + index * k + j for j in range(k)]


def target_score(probabilities: np.ndarray, emotions: tuple[str, ...], weights: tuple[float, ...] | None) -> np.ndarray:
    """[N] score per image: the probability of the target emotion (weighted over a mix)."""
    w = weights or tuple(1 / len(emotions) for _ in emotions)
    return sum(wi * probabilities[:, EMOTIONS.index(e)] for e, wi in zip(emotions, w))


def rank(images: list, seeds: list[int], scores: np.ndarray | list[float], index: int = 0) -> Selection:
    """Order candidates by score, best first (ties keep seed order); ranks start at 1."""
    order = sorted(range(len(images)), key=lambda j: (-float(scores[j]), j))
    return Selection(index, [Candidate(images[j], seeds[j], float(scores[j]), r + 1) for r, j in enumerate(order)])


def best_of(generator, request, k: int, scorer, seed: int = 0, reporter: Reporter | None = None) -> list[Selection]:
    """K candidates for each of the request's `count` images, ranked by the probe."""
    if k < 1:
        raise EmogenError(f"--best-of needs K >= 1, got {k}.")
    unknown = [e for e in request.emotions if e not in EMOTIONS]
    if unknown:
        raise EmogenError(f"The emotion probe knows the eight Mikels emotions, not {unknown}.")
    reporter = reporter or Reporter()
    batch = max(1, generator.config.generate.batch_size)
    selections = []
    with progress(reporter, f"Best of {k}", request.count * k):
        for i in range(request.count):
            seeds = candidate_seeds(seed, i, k)
            images = []
            for b in range(0, k, batch):
                images += generator.images(request, seeds[b:b + batch])
                reporter.advance(f"Best of {k}", len(seeds[b:b + batch]))
            scores = target_score(scorer.probabilities(images), request.emotions, request.weights)
            selections.append(rank(images, seeds, scores, i))
    return selections


def write_best_of(generator, request, selections: list[Selection], out_dir: str | Path, keep_all: bool = False,
                  stem: str | None = None) -> dict[str, Any]:
    """Kept images in `out_dir` (index.jsonl + a grid), rejected ones in `out_dir/rejected/` if `keep_all`."""
    from emogen_cli.inference.pngio import append_index, next_number, save_png, save_sheet, slug

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = stem or f"{slug(request.name)}-best"
    start = next_number(out, stem)
    kept_records, rejected_records = [], []
    reject_dir = out / "rejected"
    for n, sel in enumerate(selections):
        k = len(sel.candidates)
        for cand in sel.candidates if keep_all else [sel.kept]:
            meta = {**generator.metadata(request, cand.seed),
                    "best_of": {"k": k, "rank": cand.rank, "probe_score": cand.score,
                                "candidate_seeds": sorted(c.seed for c in sel.candidates), "kept": cand.rank == 1}}
            infotext = f"{generator.infotext(request, cand.seed)}, Emogen best of: {cand.rank}/{k} ({cand.score:.3f})"
            if cand.rank == 1:
                kept_records.append(save_png(out / f"{stem}-{start + n:05d}.png", cand.image, meta, infotext))
            else:
                rejected_records.append(save_png(reject_dir / f"{stem}-{start + n:05d}-rank{cand.rank}.png", cand.image,
                                                 meta, infotext))
    append_index(out, kept_records)
    if rejected_records:
        append_index(reject_dir, rejected_records)
    grid = save_sheet(out / f"grid-{stem}-{start:05d}.png", [[s.kept.image for s in selections]]) if selections else None
    return {"out": str(out), "count": len(kept_records), "rejected": len(rejected_records), "grid": grid,
            "images": kept_records}


def generate_best_of(config, requests: list, k: int, out: str | Path | None = None, keep_all: bool = False,
                     mapper: str | Path | None = None, probe: str | Path | None = None,
                     reporter: Reporter | None = None) -> dict[str, Any]:
    """`emogen best-of` (generate --best-of K): every request's images, each the best of K candidates."""
    from emogen_cli.evaluation.edit_metrics import scorer_for
    from emogen_cli.pipeline import EmoGenPipeline

    if k < 1:
        raise EmogenError(f"--best-of needs K >= 1, got {k}.")
    out = Path(out) if out is not None else Path(config.generate.output)
    generator = EmoGenPipeline(config, mapper, tokens=max(r.tokens for r in requests))
    scorer = scorer_for(generator, probe)
    results = []
    for request in requests:
        selections = best_of(generator, request, k, scorer, config.runtime.seed, reporter)
        results.append(write_best_of(generator, request, selections, out, keep_all))
    return {"out": str(out), "k": k, "count": sum(r["count"] for r in results),
            "rejected": sum(r["rejected"] for r in results), "grids": [r["grid"] for r in results],
            "images": [im for r in results for im in r["images"]]}
