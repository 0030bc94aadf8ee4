"""`--best-of K` (generate and edit): K candidates per requested image, the one the emotion probe rates
highest kept. The candidates' seeds follow seeds.image_seeds (the first is the plain image's).
The score is the CLIP-space probe's probability of the target emotion (for a mix, the weighted sum over its emotions). Kept images record their score,
their rank among the K (always 1) and the seeds of all candidates; with `keep_all` the others are
written to the `rejected/` subfolder with their own score and rank (2..K), listed in its own
index.jsonl (outputs/folder.py; `emogen evaluate` skips rejected/). The pipeline's generation loop
and outputs/edit.py both rank with `rank` and record with `candidate_fields`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emogen_cli.core.choices import MAX_BEST_OF
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError


@dataclass
class Candidate:
    image: Any
    seed: int
    score: float | None = None  # the probe's score (None when nothing was ranked)
    rank: int = 1  # 1 = best of its group
    metadata: dict[str, Any] = field(default_factory=dict)  # what its PNG records (EmoGenPipeline.metadata)
    infotext: str = ""  # its A1111 infotext


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


def target_score(probabilities: np.ndarray, emotions: tuple[str, ...], weights: tuple[float, ...] | None) -> np.ndarray:
    """[N] score per image: the probability of the target emotion (weighted over a mix)."""
    w = weights or tuple(1 / len(emotions) for _ in emotions)
    return sum(wi * probabilities[:, EMOTIONS.index(e)] for e, wi in zip(emotions, w))


def rank(images: list, seeds: list[int], scores: np.ndarray | list[float], index: int = 0) -> Selection:
    """Order candidates by score, best first (ties keep seed order); ranks start at 1."""
    order = sorted(range(len(images)), key=lambda j: (-float(scores[j]), j))
    return Selection(index, [Candidate(images[j], seeds[j], float(scores[j]), r + 1) for r, j in enumerate(order)])


MAX_K = MAX_BEST_OF  # generate.best_of's upper bound


def check_best_of(k: int, keep_all: bool = False, probe: Any = None) -> int:
    """K as an int in 1..MAX_K; `keep_all` and `probe` need K > 1 (there is nothing to keep or rank otherwise)."""
    if isinstance(k, bool) or not isinstance(k, int) and not (isinstance(k, float) and k.is_integer()):
        raise EmogenError(f"best_of must be a whole number, got {k!r}.", "For example: best_of=4.")
    if not 1 <= int(k) <= MAX_K:
        raise EmogenError(f"--best-of needs K in 1..{MAX_K}, got {k}.", "For example: --best-of 4.")
    if keep_all and int(k) == 1:
        raise EmogenError("--keep-all keeps the rejected best-of candidates, and there are none without --best-of.",
                          "Add --best-of K (K of 2 or more), or drop --keep-all.")
    if probe is not None and int(k) == 1:
        raise EmogenError("--probe ranks the --best-of candidates, and there are none without --best-of.",
                          "Add --best-of K (K of 2 or more), or drop --probe.")
    return int(k)


def candidate_fields(selection: Selection, candidate: Candidate) -> tuple[dict[str, Any], dict[str, str]]:
    """The metadata entry and A1111 infotext field recording a candidate's rank and probe score."""
    k = len(selection.candidates)
    meta = {"best_of": {"k": k, "rank": candidate.rank, "probe_score": candidate.score,
                        "candidate_seeds": sorted(c.seed for c in selection.candidates), "kept": candidate.rank == 1}}
    return meta, {"Emogen best of": f"{candidate.rank}/{k} ({candidate.score:.3f})"}
