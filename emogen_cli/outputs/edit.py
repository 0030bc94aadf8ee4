"""`emogen edit`: move existing photographs toward an emotion (SDEdit / img2img).

Each image is noised to `strength` of the schedule and denoised by Stable Diffusion conditioned on
the mapped emotion token (the same prompt_embeds as `generate`, optionally at an `--intensity` or
a valence-arousal mix), through `StableDiffusionImg2ImgPipeline.from_pipe` of the loaded pipeline
(SDXL: `StableDiffusionXLImg2ImgPipeline`, with the pooled embeddings; the weights are shared, not copied). Strength 0 keeps the image, 1 regenerates it; the model
runs int(steps × strength) denoising steps, and when that is 0 the source is returned exactly
(no VAE round trip). Outputs keep the input's size: the model sees it rounded to a multiple of 8
and the result is resized back.

The seed of the edit numbered n (its file number) follows conditioning/seeds.py: runtime.seed + n,
so a second edit of one photo into the same folder is a new edit, not a copy; `--best-of K` draws
the same K candidate seeds as generate's and ranks them with the same code (conditioning/selection.py).

`--until-confident P` re-edits with strength start, start + step, ... 1.0 (same seed) until the
bundle's CLIP-space emotion probe gives the target probability >= P, or the SSIM to the source
falls below `--min-ssim`, in which case the last edit that stayed above it is kept. An edit below
`--min-ssim` is never kept: when even the first one (at the start strength) falls below it, the
image is skipped with a note and nothing is written for it.

Inputs: files or folders (every file directly inside, sorted; sub-folders and hidden files skipped).
Refused, with one line each and nothing written: missing files, files that do not decode,
non-image files in a folder, images under 16 x 16 pixels, pixel formats without a faithful RGB form (32-bit float), and images
above `max_pixels` (default 2048 × 2048 = 4,194,304 pixels: the UNet's memory grows with the area).
Converted, with a note: CMYK (PIL's conversion, no ICC colour management), 16-bit grayscale
(scaled to 8 bits), grayscale/palette, and images with transparency — the colour is composited over
white for the model and the source's alpha channel is put back on the output. EXIF rotation is
applied first; animated images use their first frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from emogen_cli.conditioning.intensity import MAX_INTENSITY, neutral_prompt
from emogen_cli.conditioning.request import Request, template, whole
from emogen_cli.conditioning.seeds import image_seeds
from emogen_cli.conditioning.selection import Candidate, check_best_of, rank
from emogen_cli.conditioning.va import DEFAULT_SIGMA, dominant, va_request
from emogen_cli.core.choices import MAX_STEPS, MIN_STRENGTH_STEP
from emogen_cli.core.errors import EmogenError, Interrupted
from emogen_cli.core.reporting import Reporter, progress
from emogen_cli.outputs.folder import append_index, claim_numbers, reconcile, release_claims, save_png, save_sheet, slug
from emogen_cli.outputs.generate import StepWatch
from emogen_cli.pipeline import EmoGenPipeline

DEFAULT_STRENGTH = 0.5
DEFAULT_STEP = 0.1
DEFAULT_MIN_SSIM = 0.5
MAX_PIXELS = 2048 * 2048
MIN_SIDE = 16  # smaller images have no room for SSIM's 11-pixel window and mean nothing to SD
MULTIPLE = 8  # the VAE downsamples by 8 in SD 1.5
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class Skip(Exception):
    """An input that cannot be edited; the message says why."""


@dataclass
class Source:
    path: Path
    rgb: Image.Image  # what the model edits
    alpha: Image.Image | None  # the source's transparency, put back on the output
    sha256: str
    notes: list[str] = field(default_factory=list)


@dataclass
class Attempt:
    strength: float
    image: Image.Image
    ssim: float
    probability: float | None = None


@dataclass
class LoopResult:
    """The kept attempt of an --until-confident loop and why it stopped (kept is None when even the
    first edit fell below --min-ssim: no edit qualifies)."""

    kept: Attempt | None
    attempts: list[Attempt]
    stop: str  # "confident", "min_ssim", "max_strength"


def collect_inputs(inputs: list[str | Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Files to edit (folders expanded to their image files, sorted) and the skipped entries."""
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            for p in sorted(item.iterdir()):
                # emogen's own contact sheets and index (an --out that is also the input folder) are not inputs
                if p.name.startswith((".", "grid-")) or p.name == "index.jsonl" or p.is_dir():
                    continue
                if p.suffix.lower() in IMAGE_SUFFIXES:
                    files.append(p)
                else:
                    skipped.append({"path": str(p), "reason": f"not an image file ('{p.suffix or p.name}')"})
        elif item.is_file():
            files.append(item)
        else:
            skipped.append({"path": str(item), "reason": "no such file or folder"})
    return files, skipped


def _rgb(image: Image.Image) -> tuple[Image.Image, Image.Image | None, list[str]]:
    """(RGB image, alpha channel or None, notes) for any PIL mode we accept; raises Skip otherwise."""
    mode = image.mode
    if mode == "RGB":
        return image, None, []
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        flat = Image.new("RGB", rgba.size, "white")
        flat.paste(rgba.convert("RGB"), mask=alpha)
        return flat, alpha, ["has transparency: edited over white, alpha channel restored on the output"]
    if mode == "CMYK":
        return image.convert("RGB"), None, ["CMYK converted to RGB (no ICC colour management)"]
    if mode.startswith("I"):
        values = np.asarray(image, dtype=np.float64)
        scale = 257.0 if mode.startswith("I;16") or values.max() > 255 else 1.0
        gray = np.clip(np.round(values / scale), 0, 255).astype(np.uint8)
        note = "16-bit grayscale scaled to 8 bits" if scale > 1 else "32-bit integer grayscale read as 8 bits"
        return Image.fromarray(gray, "L").convert("RGB"), None, [note + ", converted to RGB"]
    if mode in ("L", "1", "P", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB"), None, [f"{mode} image converted to RGB"]
    raise Skip(f"unsupported pixel format '{mode}' (convert it to 8-bit RGB first)")


def load_source(path: Path, max_pixels: int = MAX_PIXELS) -> Source:
    """Read and check one input; raises Skip with a one-line reason."""
    from emogen_cli.evaluation.edit_metrics import file_sha256

    try:
        with Image.open(path) as image:
            w, h = image.size
            if w * h > max_pixels:
                raise Skip(f"{w}x{h} = {w * h:,} pixels is above the limit of {max_pixels:,} "
                           "(resize it, or raise --max-pixels if the GPU has the memory)")
            frames = getattr(image, "n_frames", 1)
            image.load()
            image = ImageOps.exif_transpose(image)
    except Skip:
        raise
    except UnidentifiedImageError:
        raise Skip("not an image (no decoder recognises the file)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise Skip(f"cannot decode the image ({str(exc).splitlines()[0][:120]})") from None
    if min(image.size) < MIN_SIDE:
        raise Skip(f"{image.size[0]}x{image.size[1]} pixels is too small (at least {MIN_SIDE}x{MIN_SIDE})")
    rgb, alpha, notes = _rgb(image)
    if frames > 1:
        notes.append(f"animated ({frames} frames): the first frame is edited")
    return Source(path, rgb, alpha, file_sha256(path), notes)


def model_size(size: tuple[int, int], multiple: int = MULTIPLE) -> tuple[int, int]:
    """The nearest size whose sides are multiples of `multiple` (at least one multiple)."""
    return tuple(max(multiple, int(round(s / multiple)) * multiple) for s in size)  # type: ignore[return-value]


def denoising_steps(steps: int, strength: float) -> int:
    """How many denoising steps diffusers' img2img runs at `strength` (its own rule)."""
    return min(int(steps * strength), steps)


def strength_schedule(start: float, step: float) -> list[float]:
    """start, start + step, ..., ending with 1.0 exactly."""
    if step <= 0:
        raise EmogenError(f"--strength-step must be positive, got {step}.")
    values, k = [], 0
    while start + k * step < 1 - 1e-9:
        values.append(round(start + k * step, 6))
        k += 1
    return values + [1.0]


def until_confident(edit: Callable[[float], Image.Image], score: Callable[[Image.Image], float],
                    similarity: Callable[[Image.Image], float], start: float, step: float, threshold: float,
                    min_ssim: float) -> LoopResult:
    """Raise the strength until score >= threshold (keep that edit) or similarity < min_ssim (keep the
    previous edit, or none when the first already fell below: an edit below min_ssim is never kept);
    at strength 1 without either, keep the last. The stop reason says which happened."""
    attempts: list[Attempt] = []
    for strength in strength_schedule(start, step):
        image = edit(strength)
        attempt = Attempt(strength, image, similarity(image))
        attempts.append(attempt)
        if attempt.ssim < min_ssim:
            return LoopResult(attempts[-2] if len(attempts) > 1 else None, attempts, "min_ssim")
        attempt.probability = score(image)
        if attempt.probability >= threshold:
            return LoopResult(attempt, attempts, "confident")
    return LoopResult(attempts[-1], attempts, "max_strength")


class Editor:
    """img2img on a loaded EmoGenPipeline's SD pipeline (shared weights) with its emotion conditioning."""

    def __init__(self, pipe: EmoGenPipeline, steps: int | None = None, guidance: float | None = None,
                 watch: StepWatch | None = None) -> None:
        import diffusers

        self.emogen = pipe
        self.pipe = getattr(diffusers, pipe.backbone.img2img_class).from_pipe(pipe.pipe)
        self.pipe.set_progress_bar_config(disable=True)
        self.steps = whole(steps or pipe.config.generate.steps, "--steps", 1, MAX_STEPS)
        self.guidance = pipe.config.generate.guidance if guidance is None else guidance
        self.watch = watch  # per-step progress and Ctrl-C at the end of a step

    def __call__(self, source: Image.Image, prompt_embeds, strength: float, seed: int) -> Image.Image:
        """`source` edited at `strength`, at the source's own size."""
        import torch

        if denoising_steps(self.steps, strength) == 0:
            return source.copy()  # nothing to denoise: exactly the source
        size = model_size(source.size)
        image = source if size == source.size else source.resize(size, Image.LANCZOS)
        generator = torch.Generator(self.emogen.device).manual_seed(seed)
        out = self.pipe(**self.emogen.backbone.call_kwargs(prompt_embeds, self.emogen.negative),
                        image=image, strength=strength, num_inference_steps=self.steps,
                        guidance_scale=self.guidance, generator=[generator], output_type="pil",
                        callback_on_step_end=self.watch).images[0]
        return out if out.size == source.size else out.resize(source.size, Image.LANCZOS)


def _check(strength: float, threshold: float | None, min_ssim: float, best_of: int, max_pixels: int,
           intensity: float = 1.0, strength_step: float = DEFAULT_STEP, keep_all: bool = False,
           probe: str | Path | None = None) -> None:
    # bounded like generate's: a tiny step meant up to 500,001 edits per image, --best-of 1000000 as many
    if not MIN_STRENGTH_STEP <= strength_step <= 1:  # False for NaN too (a NaN step ran to an internal JSON error)
        raise EmogenError(f"--strength-step must lie in [{MIN_STRENGTH_STEP:g}, 1], got {strength_step}.",
                          f"For example: 0.1 (each step is one more edit per image, at most "
                          f"{round(1 / MIN_STRENGTH_STEP) + 1}).")
    check_best_of(best_of, keep_all)  # 1..MAX_BEST_OF, and --keep-all needs K > 1

    if not 0 <= intensity <= MAX_INTENSITY:
        raise EmogenError(f"--intensity must lie in [0, {MAX_INTENSITY:g}], got {intensity}.",
                          "0 = no emotion, 1 = EmoGen's emotion, above 1 = stronger.")
    if not 0 <= strength <= 1:
        raise EmogenError(f"--strength must lie in [0, 1], got {strength}.", "0 keeps the image, 1 regenerates it.")
    if threshold is not None and not 0 < threshold <= 1:
        raise EmogenError(f"--until-confident takes a probability in (0, 1], got {threshold}.")
    if not -1 <= min_ssim <= 1:  # SSIM's own range: -1 never stops the loop
        raise EmogenError(f"--min-ssim must lie in [-1, 1] (SSIM's range), got {min_ssim}.",
                          "For example: 0.5; -1 disables the floor.")
    if threshold is not None and best_of > 1:
        raise EmogenError("--until-confident and --best-of cannot be combined.", "Use one of them.")
    if probe is not None and threshold is None and best_of < 2:
        raise EmogenError("--probe scores the --until-confident loop or ranks --best-of candidates, and this edit "
                          "uses neither.", "Add --until-confident P or --best-of K, or drop --probe.")
    if max_pixels < 64:
        raise EmogenError(f"--max-pixels must be at least 64, got {max_pixels}.")


@dataclass
class Outcome:
    """One input's kept edit and how it was chosen."""

    kept: Attempt
    seed: int
    p_before: float | None
    loop: LoopResult | None = None
    candidates: list[Candidate] = field(default_factory=list)  # best-of, best first


def _edit_one(editor: Editor, pipe: EmoGenPipeline, source: Source, request: Request, target: str, seeds: list[int],
              strength: float, intensity: float, until: float | None, min_ssim: float, strength_step: float,
              scorer) -> Outcome:
    """Edit one source: once, by the --until-confident loop, or best of the K candidate `seeds`."""
    from emogen_cli.evaluation.edit_metrics import ssim

    request = replace(request, intensity=intensity)

    def similarity(image: Image.Image) -> float:
        return ssim(source.rgb, image.convert("RGB"))

    def probability(image: Image.Image) -> float:
        return float(scorer.target_probability([image], target)[0])

    p_before = probability(source.rgb) if scorer is not None else None
    seed = seeds[0]
    if until is not None:
        embeds = pipe.conditioning(request, [seed])
        loop = until_confident(lambda s: editor(source.rgb, embeds, s, seed), probability, similarity, strength,
                               strength_step, until, min_ssim)
        if loop.kept is None:  # an edit below --min-ssim is never kept
            first = loop.attempts[0]
            raise Skip(f"no edit kept: the first edit (strength {first.strength:g}) already has SSIM "
                       f"{first.ssim:.3f}, below --min-ssim {min_ssim:g} (lower --strength or --min-ssim)")
        outcome = Outcome(loop.kept, seed, p_before, loop)
    elif len(seeds) > 1:
        images = [editor(source.rgb, pipe.conditioning(request, [s]), strength, s) for s in seeds]
        selection = rank(images, seeds, [probability(im) for im in images])
        best = selection.kept
        outcome = Outcome(Attempt(strength, best.image, similarity(best.image), best.score), best.seed, p_before,
                          candidates=selection.candidates)
    else:
        image = editor(source.rgb, pipe.conditioning(request, [seed]), strength, seed)
        outcome = Outcome(Attempt(strength, image, similarity(image)), seed, p_before)
    if scorer is not None and outcome.kept.probability is None:
        outcome.kept.probability = probability(outcome.kept.image)
    return outcome


def _metadata(pipe: EmoGenPipeline, request: Request, source: Source, outcome: Outcome, editor: Editor, target: str, label: str,
              strength: float, intensity: float, until: float | None, min_ssim: float, strength_step: float,
              extra: dict[str, Any] | None) -> dict[str, Any]:
    """The PNG metadata of an edit: the pipeline's fields, the source, and how the edit was made."""
    kept, loop = outcome.kept, outcome.loop
    return {**pipe.metadata(request, outcome.seed), **(extra or {}),
            "kind": "edit", "emotion": target, "label": label, "target": target, "prompt": request.prompt,
            "neutral_prompt": neutral_prompt(request.prompt), "source": str(source.path.resolve()),
            "source_sha256": source.sha256, "size": list(source.rgb.size),
            "model_size": list(model_size(source.rgb.size)), "strength": kept.strength,
            "requested_strength": strength, "steps": editor.steps,
            "denoising_steps": denoising_steps(editor.steps, kept.strength), "guidance": editor.guidance,
            "seed": outcome.seed, "intensity": intensity, "ssim": kept.ssim, "notes": source.notes,
            "probe": None if outcome.p_before is None else {"before": outcome.p_before, "after": kept.probability},
            "until_confident": None if loop is None else {
                "threshold": until, "min_ssim": min_ssim, "step": strength_step, "stop": loop.stop,
                "attempts": [{"strength": a.strength, "ssim": a.ssim, "probability": a.probability}
                             for a in loop.attempts]},
            "best_of": None if not outcome.candidates else {
                "k": len(outcome.candidates), "rank": 1, "probe_score": kept.probability,
                "candidate_seeds": [c.seed for c in outcome.candidates]}}


def edit_images(pipe: EmoGenPipeline, inputs: list[str | Path], out_dir: str | Path, request: Request, target: str,
                *, label: str | None = None, strength: float = DEFAULT_STRENGTH, seed: int = 0,
                steps: int | None = None, guidance: float | None = None, intensity: float = 1.0,
                until: float | None = None, min_ssim: float = DEFAULT_MIN_SSIM, strength_step: float = DEFAULT_STEP,
                best_of: int = 1, keep_all: bool = False, max_pixels: int = MAX_PIXELS, probe: str | Path | None = None,
                scorer=None, extra_meta: dict[str, Any] | None = None,
                reporter: Reporter | None = None, stop: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Edit every input toward `request` (target emotion `target`, used by the probe); write the
    edits, their before/after sheets and index.jsonl into `out_dir`. Bad inputs are skipped.
    `stop` (a served job's cancel flag) stops at a step's end as Ctrl-C does."""
    from emogen_cli.evaluation.edit_metrics import ssim

    _check(strength, until, min_ssim, best_of, max_pixels, intensity, strength_step, keep_all, probe)
    from emogen_cli.conditioning.intensity import check_intensity

    intensity = check_intensity(intensity, "--intensity")  # -0 recorded as 0
    reporter = reporter or Reporter()
    out = Path(out_dir).resolve()
    files, skipped = collect_inputs(inputs)
    for entry in skipped:
        reporter.warn(f"Skipped {entry['path']}: {entry['reason']}.")
    if not files:
        return {"out": str(out), "count": 0, "images": [], "edited": [], "skipped": skipped, "sheets": []}
    out.mkdir(parents=True, exist_ok=True)
    for folder in (out, out / "rejected"):
        reconcile(folder)
    if (until is not None or best_of > 1) and scorer is None:
        scorer = pipe.scorer(probe)
    label = label or request.name
    edited, records, sheets, claimed = [], [], [], []
    rejected = 0
    per_edit = None if until is not None else best_of * denoising_steps(
        whole(steps or pipe.config.generate.steps, "--steps", 1, MAX_STEPS), strength)
    try:
        with progress(reporter, "Editing", len(files)), \
                StepWatch(reporter, None if per_edit is None else per_edit * len(files), stop) as watch:
            editor = Editor(pipe, steps, guidance, watch)
            # every input's number claimed at once (one folder scan, not one per input: O(n) for n inputs), reserved
            # across processes so concurrent runs never collide; each claim goes when its input is done
            stems = [f"{slug(path.stem) or 'image'}-{slug(label) or 'image'}" for path in files]
            numbers = claim_numbers(out, stems, [1] * len(files))
            claimed = [f"{stem}-{n:05d}.png" for stem, n in zip(stems, numbers)]
            for path, stem, n in zip(files, stems, numbers):
                try:
                    source = load_source(path, max_pixels)
                except Skip as exc:
                    skipped.append({"path": str(path), "reason": str(exc)})
                    reporter.warn(f"Skipped {path}: {exc}.")
                    reporter.advance("Editing")
                    continue
                for note in source.notes:
                    reporter.info(f"{path}: {note}.")
                try:
                    outcome = _edit_one(editor, pipe, source, request, target, image_seeds(seed, n, best_of), strength,
                                        intensity, until, min_ssim, strength_step, scorer)
                except Skip as exc:  # no edit qualifies (--min-ssim): nothing written for this input
                    skipped.append({"path": str(path), "reason": str(exc)})
                    reporter.warn(f"Skipped {path}: {exc}.")
                    reporter.advance("Editing")
                    continue
                kept = outcome.kept
                result = kept.image.convert("RGB")
                if source.alpha is not None:
                    result.putalpha(source.alpha)
                meta = _metadata(pipe, request, source, outcome, editor, target, label, strength, intensity,
                                 until, min_ssim, strength_step, extra_meta)
                fields = {"Size": f"{result.width}x{result.height}",  # A1111's img2img fields
                          "Denoising strength": f"{kept.strength:g}", "Emogen source": path.name}
                records.append(save_png(out / f"{stem}-{n:05d}.png", result, meta,
                                        pipe.infotext(request, outcome.seed, extra=fields)))
                append_index(out, records[-1:])  # indexed at once (O(1)): any later failure leaves a true index
                release_claims(out, [f"{stem}-{n:05d}.png"])
                others = [save_png(
                    out / "rejected" / f"{stem}-{n:05d}-rank{cand.rank}.png", cand.image,
                    {**meta, "seed": cand.seed, "ssim": ssim(source.rgb, cand.image.convert("RGB")),
                     "best_of": {**meta["best_of"], "rank": cand.rank, "probe_score": cand.score}},
                    pipe.infotext(request, cand.seed, extra=fields))
                    for cand in (outcome.candidates[1:] if keep_all else [])]
                if others:
                    append_index(out / "rejected", others)
                    rejected += len(others)
                sheets.append(save_sheet(out / f"grid-edit-{stem}-{n:05d}.png", [[source.rgb, kept.image]]))
                edited.append({"source": str(path), "output": records[-1]["path"], "strength": kept.strength,
                               "ssim": kept.ssim, "p_target_before": outcome.p_before,
                               "p_target_after": kept.probability, "stop": outcome.loop.stop if outcome.loop else None,
                               "attempts": len(outcome.loop.attempts) if outcome.loop else 1, "seed": outcome.seed,
                               "notes": source.notes})
                reporter.advance("Editing")
                watch.check()
    except KeyboardInterrupt:  # every edit written so far (and its rejected candidates) is already indexed
        raise Interrupted(f"Interrupted after {len(records)} edits; they are in {out} and index.jsonl.",
                          "Run again on the remaining images: numbering continues after the existing files.") from None
    finally:
        release_claims(out, claimed)
    return {"out": str(out), "count": len(records), "images": records, "target": target, "label": label, "edited": edited,
            "skipped": skipped, "sheets": sheets, "rejected": rejected}


def edit(config, inputs: list[str | Path], out: str | Path | None = None, emotion: str | None = None,
         va: tuple[float, float] | None = None, sigma: float | None = None, prompt: str = "{}",
         mapper: str | Path | None = None, reporter: Reporter | None = None, **options: Any) -> dict[str, Any]:
    """`emogen edit`: load the mapper bundle + SD once and edit `inputs` toward `emotion` or a
    valence-arousal point `va`; `options` are edit_images' keyword arguments."""
    from emogen_cli.core.emotions import validate_emotion

    reporter = reporter or Reporter()
    if (emotion is None) == (va is None):
        raise EmogenError("Give the target as --emotion NAME or --va V,A (one of them).",
                          "For example: emogen edit photo.jpg --emotion awe.")
    _check(options.get("strength", DEFAULT_STRENGTH), options.get("until"), options.get("min_ssim", DEFAULT_MIN_SSIM),
           options.get("best_of", 1), options.get("max_pixels", MAX_PIXELS), options.get("intensity", 1.0),
           options.get("strength_step", DEFAULT_STEP), options.get("keep_all", False), options.get("probe"))
    if sigma is not None and va is None:
        raise EmogenError("--sigma sets the kernel width of a valence-arousal target; it needs --va.",
                          "Add --va V,A, or drop --sigma.")
    files, skipped = collect_inputs(inputs)
    unreadable: list[dict[str, str]] = []
    for path in files:  # before the models load: at least one input must decode
        try:
            load_source(path, options.get("max_pixels", MAX_PIXELS))
            break
        except Skip as exc:
            unreadable.append({"path": str(path), "reason": str(exc)})
    else:
        raise _nothing(skipped + unreadable)
    prompt = template(prompt, "--prompt")
    extra = None
    if emotion is not None:
        target = validate_emotion(emotion)
        request, label = Request((target,), prompt), target
    else:
        sigma = DEFAULT_SIGMA if sigma is None else sigma
        request = va_request(va[0], va[1], sigma, prompt)
        weights = dict(zip(request.emotions, request.weights))
        target, label = dominant(weights), f"va-{va[0]:.2f}-{va[1]:.2f}"
        extra = {"va": {"valence": va[0], "arousal": va[1], "sigma": sigma, "weights": weights}}
    out = Path(out) if out is not None else Path(config.generate.output).parent / "edits"
    pipe = EmoGenPipeline(config, mapper, reporter=reporter)
    result = edit_images(pipe, inputs, out, request, target, label=label, seed=config.runtime.seed,
                         extra_meta=extra, reporter=reporter, **options)
    if not result["count"]:
        raise _nothing(result["skipped"])
    return result


def _nothing(skipped: list[dict[str, str]]) -> EmogenError:
    if not skipped:
        return EmogenError("Nothing to edit: the inputs hold no image files.",
                           "Pass image files, or folders that hold images.")
    reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in skipped[:3])
    return EmogenError(f"Nothing to edit ({len(skipped)} input(s) skipped: {reasons}).",
                       "Pass image files, or folders that hold images.")
