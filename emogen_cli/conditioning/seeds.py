"""The one seed rule of every command that writes into a folder, and of the Python API.

Image number n of a run with base seed S gets seed S + n: file numbers continue after what a folder
holds, so two runs of `-n 2` equal one of `-n 4`, and a second `edit` or `grid --va` into the same
folder makes new images instead of byte-identical copies. `--best-of K` draws K candidates for
image n: the first has seed S + n (what a plain run would make for that number), the others
S + n + j * 2**32 (j = 1..K-1), above the 32-bit range of plain seeds, so a candidate never repeats
an image another run in the folder made or will make, whatever K each run used.
"""

from __future__ import annotations

from typing import Any

from emogen_cli.core.choices import MAX_BEST_OF, MAX_SEED
from emogen_cli.core.errors import EmogenError

CANDIDATE_STRIDE = MAX_SEED + 1  # 2**32: candidates j >= 1 live above every plain seed
MAX_CANDIDATE_SEED = MAX_SEED + (MAX_BEST_OF - 1) * CANDIDATE_STRIDE  # the largest seed a best-of run records


def image_seeds(seed: int, number: int, k: int = 1) -> list[int]:
    """The seeds of image `number` of a run with base `seed`: [S + n] or its K best-of candidates."""
    return [seed + number + j * CANDIDATE_STRIDE for j in range(k)]


def check_seeds(seeds: Any) -> list[int]:
    """A seed or a non-empty list of seeds as ints: 0..MAX_SEED (the CLI's range), or the seed a best-of
    candidate recorded (up to MAX_CANDIDATE_SEED), so any image's metadata seed makes it again."""
    from emogen_cli.conditioning.request import whole

    if isinstance(seeds, (int, float)) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple, range)) or not len(seeds):
        raise EmogenError(f"seeds must be a non-empty list of whole numbers, got {seeds!r}.",
                          "For example: seeds=[0, 1].")
    return [whole(s, "seed", 0, MAX_CANDIDATE_SEED) for s in seeds]
