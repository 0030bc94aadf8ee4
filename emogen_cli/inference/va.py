"""Valence-arousal control on a category model: a (V, A) point -> weights over the eight emotions.

The emotions sit at their published coordinates (resources/mikels_va.json: the NRC VAD Lexicon v1.0,
Mohammad 2018, both axes on 0..1). A point's weights are a Gaussian kernel over its Euclidean
distances to them, normalised to sum to 1:
    w_e ∝ exp(-|p - p_e|² / (2 σ²)),   σ = 0.15 by default
(a softmax of negative squared distances, computed stably so no point gives all-zero weights).
A small σ snaps to the nearest emotion, a large one blends many. The weights mix the emotions in
the emotion space (the `space` fusion: one token holding the mapping of the weighted mean of the
emotions' samples). Note the lexicon's arousal spans 0.29 (sadness) to 0.87 (anger), so the
low-arousal half of the plane is dominated by sadness and contentment.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter, progress

DEFAULT_SIGMA = 0.15
MIN_SIGMA, MAX_SIGMA = 1e-3, 1e3  # the kernel widths accepted
GRID = (0.1, 0.3, 0.5, 0.7, 0.9)  # centres of five equal bins of [0, 1]


@lru_cache(maxsize=1)
def coordinates() -> dict[str, tuple[float, float]]:
    """{emotion: (valence, arousal)} from the packaged data file."""
    data = json.loads(resources.files("emogen_cli").joinpath("resources/mikels_va.json").read_text())
    return {e: (float(v["valence"]), float(v["arousal"])) for e, v in data["emotions"].items()}


def parse_point(text: str) -> tuple[float, float]:
    """'0.8,0.3' -> (0.8, 0.3), each in [0, 1]."""
    try:
        v, a = (float(x) for x in text.split(","))
    except ValueError:
        raise EmogenError(f"--va must be two numbers 'V,A', got '{text}'.", "For example: --va 0.8,0.3.") from None
    return check_point((v, a))


def check_point(point: Any) -> tuple[float, float]:
    """A (valence, arousal) pair of numbers in [0, 1] (NaN refused), as floats."""
    try:
        v, a = (float(x) for x in point)
    except (TypeError, ValueError):
        raise EmogenError(f"A valence-arousal point is two numbers (V, A), got {point!r}.",
                          "For example: va=(0.8, 0.3) or --va 0.8,0.3.") from None
    if not (0 <= v <= 1 and 0 <= a <= 1):
        raise EmogenError(f"Valence and arousal lie in [0, 1] (the NRC VAD scale), got {v}, {a}.",
                          "For example: --va 0.8,0.3 (pleasant, calm).")
    return v, a


def va_weights(valence: float, arousal: float, sigma: float = DEFAULT_SIGMA,
               emotions: tuple[str, ...] = EMOTIONS) -> dict[str, float]:
    """Kernel weights over `emotions` for the point (valence, arousal); they sum to 1."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not MIN_SIGMA <= sigma <= MAX_SIGMA:
        # below MIN_SIGMA, 2σ² underflows to 0 (a division by zero); above MAX_SIGMA every weight is equal
        raise EmogenError(f"--sigma must be a number in [{MIN_SIGMA:g}, {MAX_SIGMA:g}], got {sigma}.",
                          "For example: --sigma 0.15.")
    coords = coordinates()
    logits = {e: -((valence - coords[e][0]) ** 2 + (arousal - coords[e][1]) ** 2) / (2 * sigma ** 2) for e in emotions}
    top = max(logits.values())
    raw = {e: math.exp(v - top) for e, v in logits.items()}
    total = sum(raw.values())
    return {e: w / total for e, w in raw.items()}


def va_request(valence: float, arousal: float, sigma: float = DEFAULT_SIGMA, prompt: str = "{}", count: int = 1,
               emotions: tuple[str, ...] = EMOTIONS):
    """A `space`-fusion Request mixing every emotion with the point's kernel weights."""
    from emogen_cli.pipeline import Request

    weights = va_weights(valence, arousal, sigma, emotions)
    return Request(tuple(weights), prompt, count, "space", tuple(weights.values()),
                   va=(float(valence), float(arousal), float(sigma)))


def va_metadata(request) -> dict[str, Any]:
    """What a V-A image records: the dominant emotion as its label (what `evaluate` groups by) and the point."""
    v, a, sigma = request.va
    weights = dict(zip(request.emotions, request.weights))
    return {"emotion": dominant(weights),
            "va": {"valence": v, "arousal": a, "sigma": sigma, "weights": weights,
                   "coordinates": "NRC VAD Lexicon v1.0 (Mohammad 2018)"}}


def dominant(weights: dict[str, float]) -> str:
    return max(weights, key=weights.get)


def va_grid(generator, out_dir: str | Path, seed: int = 0, valences: tuple[float, ...] = GRID,
            arousals: tuple[float, ...] = GRID, sigma: float = DEFAULT_SIGMA, prompt: str = "{}",
            reporter: Reporter | None = None) -> dict[str, Any]:
    """One image per (valence, arousal) cell, all with the same seed, and the contact sheet
    grid-va-seed<S>-NNNNN.png: valence grows left to right, arousal bottom to top."""
    from emogen_cli.inference.pngio import append_index, save_png, save_sheet
    from emogen_cli.inference.writer import claim_numbers, release_claims

    reporter = reporter or Reporter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    emotions = tuple(e for e in EMOTIONS if e in generator.bundle.emotions)
    start = claim_numbers(out, ["va"], [len(valences) * len(arousals)])[0]  # reserved across processes
    records, cells = [], {}
    try:
        with progress(reporter, "Valence-arousal grid", len(valences) * len(arousals)):
            n = start
            for a in sorted(arousals, reverse=True):
                for v in sorted(valences):
                    request = va_request(v, a, sigma, prompt, 1, emotions)
                    image = generator.images(request, [seed])[0]
                    records.append(save_png(out / f"va-{n:05d}.png", image, generator.metadata(request, seed),
                                            generator.infotext(request, seed)))
                    append_index(out, records[-1:])  # indexed at once: any later failure leaves a true index
                    cells[(v, a)] = image
                    n += 1
                    reporter.advance("Valence-arousal grid")
    except KeyboardInterrupt:  # the cells written are indexed; the sheet needs them all
        from emogen_cli.core.errors import Interrupted

        raise Interrupted(f"Interrupted after {len(records)} of {len(valences) * len(arousals)} grid cells; they "
                          f"are in {out} and index.jsonl (no contact sheet).", "Run it again for the sheet.") from None
    finally:  # every number this run reserved (the written files keep theirs)
        release_claims(out, [f"va-{k:05d}.png" for k in range(start, start + len(valences) * len(arousals))])
    rows = [[cells[(v, a)] for v in sorted(valences)] for a in sorted(arousals, reverse=True)]
    sheet = save_sheet(out / f"grid-va-seed{seed}-{start:05d}.png", rows)
    return {"out": str(out), "count": len(records), "sheet": sheet, "valences": sorted(valences),
            "arousals": sorted(arousals, reverse=True), "sigma": sigma, "seed": seed, "images": records}


def grid(config, out: str | Path | None = None, valences: tuple[float, ...] = GRID, arousals: tuple[float, ...] = GRID,
         sigma: float = DEFAULT_SIGMA, prompt: str = "{}", mapper: str | Path | None = None,
         reporter: Reporter | None = None) -> dict[str, Any]:
    """`emogen grid --va`: the valence x arousal contact sheet with seed runtime.seed."""
    from emogen_cli.pipeline import EmoGenPipeline

    for value in (*valences, *arousals):
        if not 0 <= value <= 1:
            raise EmogenError(f"Valence and arousal lie in [0, 1] (the NRC VAD scale), got {value}.")
    from emogen_cli.core import validate

    template = validate.template(prompt, "--prompt")
    va_weights(0.5, 0.5, sigma)  # a bad --sigma fails here, before the models load
    out = Path(out) if out is not None else Path(config.generate.output).parent / "va-grid"
    generator = EmoGenPipeline(config, mapper, reporter=reporter)
    return va_grid(generator, out, config.runtime.seed, tuple(valences), tuple(arousals), sigma, template, reporter)
