"""`emogen generate`, `transfer`, `fuse` and `decompose`.

Usage examples:
    emogen generate --emotion awe -n 8
    emogen transfer --emotion fear "a cup"
    emogen fuse amusement fear
    emogen fuse amusement fear --mode embedding --weights 0.7,0.3
    emogen generate --emotion awe --intensity 0,0.5,1,1.5   # one strip per seed, weak to strong
    emogen generate --emotion fear --best-of 4 --keep-all   # the probe's favourite of 4 per image
    emogen generate --va 0.8,0.3                            # a valence-arousal point
    emogen decompose awe --top 6
    emogen decompose --images runs/generated
    accelerate launch -m emogen_cli generate --emotion all -n 1000   # images split across GPUs
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from emogen_cli.cli._utils import RichReporter, command, emit, out_console, plural, say
from emogen_cli.cli.options import (
    ClipOpt,
    EmotionOpt,
    MapperOpt,
    ModelOpt,
    PromptOpt,
    SamplesOpt,
    SigmaOpt,
    VaOpt,
    precision_options,
    runtime_options,
    sampling_options,
)
from emogen_cli.core.choices import FUSION_MODES
from emogen_cli.core.config import Config


def _run(requests: list, cfg: Config, options: dict[str, Any]) -> None:
    """Generate `requests` with the command's Config and `sampling_options`; print the result."""
    from emogen_cli.conditioning.intensity import parse_intensities
    from emogen_cli.conditioning.selection import check_best_of
    from emogen_cli.outputs.generate import generate as run

    intensity, keep_all = options["intensity"], options["keep_all"]
    alphas = parse_intensities(intensity) if intensity is not None else None
    check_best_of(cfg.generate.best_of, keep_all, options["probe"])  # before models load
    with RichReporter() as reporter:
        result = run(cfg, requests, overwrite=options["overwrite"], baseline=options["baseline"], reporter=reporter,
                     intensities=alphas, keep_all=keep_all,
                     probe=cfg.evaluate.probe if cfg.generate.best_of > 1 else None)  # a config file's: only when used
    emit(result, options["json_"], _render_generated)


def _render_generated(r: dict) -> None:
    extras = [plural(len(r["strips"]), "intensity strip")] if r.get("strips") else []
    if r.get("best_of"):
        extras.append(f"each the best of {r['best_of']}" + (f", {r['rejected']} rejected in rejected/"
                                                             if r["rejected"] else ""))
    say(f"Wrote {plural(r['count'], 'image')} to {r['out']} (index.jsonl, grid-*.png)"
        + (f"; {'; '.join(extras)}" if extras else ""))


@command(examples="""
emogen generate --emotion awe -n 8 --mapper runs/mapper --out runs/awe
emogen generate -e amusement,fear --steps 30 --scheduler ddim --seed 7
emogen generate --emotion all --baseline --json
emogen generate --emotion awe --intensity 0,0.5,1,1.5 -n 2
emogen generate --emotion fear --best-of 4 --keep-all
emogen generate --va 0.8,0.3 -n 4
accelerate launch -m emogen_cli generate --emotion all -n 1000
""", writes=["generate.output"], options=[sampling_options, precision_options, runtime_options])
def generate(
    emotion: EmotionOpt = None,
    va: VaOpt = None,
    sigma: SigmaOpt = None,
    *,
    num_images: int,
    cfg: Config,
    **options: Any,
) -> None:
    """Generate images that evoke an emotion (or a valence-arousal point)."""
    from emogen_cli.core.emotions import parse_emotions
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.conditioning.request import Request

    if sigma is not None and va is None:
        raise EmogenError("--sigma sets the kernel width of --va; it does nothing without it.", "Add --va V,A.")
    if va is not None:
        from emogen_cli.conditioning.va import DEFAULT_SIGMA, parse_point, va_request

        if emotion is not None:
            raise EmogenError("Give either --emotion or --va, not both.", "Drop one of them.")
        requests = [va_request(*parse_point(va), DEFAULT_SIGMA if sigma is None else sigma, "{}", num_images)]
    else:
        requests = [Request((e,), "{}", num_images) for e in parse_emotions(["all" if emotion is None else emotion])]
    _run(requests, cfg, options)


@command(examples="""
emogen transfer --emotion fear "a cup"
emogen transfer -e awe,sadness --template "{} street at night" --template "a {} bag"
emogen transfer -e all --prompt-file prompts.txt -n 2
emogen transfer -e fear "a cup" --intensity 0.5 --best-of 4
""", writes=["generate.output"], options=[sampling_options, precision_options, runtime_options])
def transfer(
    prompts: Annotated[list[str] | None, typer.Argument(help="Neutral content, e.g. 'a cup' or '{} street'.", show_default=False)] = None,
    emotion: EmotionOpt = None,
    template: Annotated[list[str] | None, typer.Option("--template", "-t", help="Template with {} for the emotion, e.g. "
                                                       "'{} bag' ({{ and }} for literal braces).", show_default=False)] = None,
    prompt_file: Annotated[Path | None, typer.Option("--prompt-file", help="One prompt per line.", show_default=False)] = None,
    *,
    num_images: int,
    cfg: Config,
    **options: Any,
) -> None:
    """Put an emotion onto neutral objects or scenes ('{} cup'; text without {} gets the emotion in front)."""
    from emogen_cli.core import validate
    from emogen_cli.core.emotions import parse_emotions
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.conditioning.request import Request

    texts = [(t, "Prompt") for t in prompts or []] + [(t, "--template") for t in template or []]
    if prompt_file is not None:
        if not prompt_file.is_file():
            what = "is a folder, not a file" if prompt_file.is_dir() else "does not exist"
            raise EmogenError(f"Prompt file '{prompt_file}' {what}.", "Pass a text file with one prompt per line.")
        try:
            lines = prompt_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise EmogenError(f"Cannot read the prompt file '{prompt_file}' ({exc}).",
                              "Pass a UTF-8 text file with one prompt per line.") from None
        texts += [(line.strip(), f"Line {i} of '{prompt_file}'") for i, line in enumerate(lines, 1) if line.strip()]
    if not texts:
        empty = f" (the prompt file '{prompt_file}' holds no prompt)" if prompt_file is not None else ""
        raise EmogenError(f"No prompt given{empty}.",
                          "Pass one like 'a cup', or --template '{} bag', or --prompt-file FILE.")
    templates = [validate.template(text, where) for text, where in texts]
    requests = [Request((e,), t, num_images) for e in parse_emotions([emotion or "all"]) for t in templates]
    _run(requests, cfg, options)


@command(examples="""
emogen fuse amusement fear
emogen fuse amusement fear --mode embedding --weights 0.7,0.3
emogen fuse awe contentment --prompt "{} lake at dawn" -n 8
emogen fuse amusement fear --mode space --intensity 0,1,2
""", writes=["generate.output"], options=[sampling_options, precision_options, runtime_options])
def fuse(
    emotions: Annotated[list[str], typer.Argument(help="Two or more emotions, e.g. amusement fear.", show_default=False)],
    mode: Annotated[str, typer.Option("--mode", help="tokens: one token per emotion, side by side (each emotion in its own token "
                                      "slot; not the official script's mechanism, see docs/faithfulness.md); "
                                      "embedding / space: one token, weighted mix of mapped embeddings / emotion "
                                      f"vectors. One of: {', '.join(FUSION_MODES)}.",
                                      autocompletion=lambda incomplete: [m for m in FUSION_MODES
                                                                          if m.startswith(incomplete)])] = "tokens",
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="Mixing weights for embedding/space, "
                                                "e.g. 0.7,0.3 (normalised; default equal).", show_default=False)] = None,
    prompt: PromptOpt = "{}",
    *,
    num_images: int,
    cfg: Config,
    **options: Any,
) -> None:
    """Blend two or more emotions in one image."""
    from emogen_cli.core import validate
    from emogen_cli.conditioning.request import fusion_request
    from emogen_cli.core.emotions import split_names, validate_emotion

    names = [validate_emotion(part) for e in emotions for part in split_names(e)]
    values = validate.numbers(weights, "--weights") if weights is not None else None
    request = fusion_request(names, values, mode, validate.template(prompt, "--prompt"), num_images)
    _run([request], cfg, options)


@command(examples="""
emogen decompose awe --mapper runs/mapper --top 6
emogen decompose all --attributes my_attributes.txt --json
emogen decompose --images runs/awe
""", writes=["images"], options=[runtime_options])
def decompose(
    emotion: Annotated[str | None, typer.Argument(help="Emotion name, a comma-separated list, or 'all'.",
                                                  show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", help="How many attributes to list per emotion.", min=1)] = 6,
    attributes: Annotated[Path | None, typer.Option("--attributes", help="Attribute names to rank: one per line, or a "
                                                    "JSON list (default: the mapper bundle's).", show_default=False)] = None,
    images: Annotated[Path | None, typer.Option("--images", help="Also label every image in this folder with its "
                                                "best-matching attribute (written to attribute_labels.jsonl).",
                                                show_default=False)] = None,
    samples: SamplesOpt = None,
    mapper: MapperOpt = None,
    model: ModelOpt = None,
    clip: ClipOpt = None,
    *,
    json_: bool,
    cfg: Config,
) -> None:
    """List the semantics (EmoSet objects and scenes) an emotion is made of."""
    from emogen_cli.core.emotions import parse_emotions
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.evaluation.decompose import decompose as run

    if samples is not None and samples > MAX_DECOMPOSE_SAMPLES:
        raise EmogenError(f"--samples must lie in 1..{MAX_DECOMPOSE_SAMPLES} for decompose, got {samples}.",
                          f"The default, {DECOMPOSE_SAMPLES}, is plenty for a stable ranking.")

    with RichReporter() as reporter:
        result = run(cfg, parse_emotions([emotion]) if emotion is not None else [], top, attributes, images,
                     DECOMPOSE_SAMPLES if samples is None else samples, None,
                     reporter)
    emit(result, json_, _render_decomposition)


DECOMPOSE_SAMPLES = 64  # emotion-space samples averaged per emotion when --samples is not given
MAX_DECOMPOSE_SAMPLES = 100_000


def _render_decomposition(result: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    for entry in result.get("emotions", []):
        table = Table(title=escape(f"{entry['emotion']}: closest of {result['attributes']} attributes "
                                   f"({entry['samples']} samples)"), title_justify="left")
        for column in ("#", "attribute", "similarity", "confidence"):
            table.add_column(column, justify="left" if column == "attribute" else "right")
        for a in entry["attributes"]:
            c = "-" if a["confidence"] is None else f"{a['confidence']:.3f}"
            table.add_row(str(a["rank"]), escape(a["name"].replace("_", " ")), f"{a['similarity']:.4f}", c)
        out_console.print(table)
    if labels := result.get("labels"):
        table = Table(title=f"Labelled {plural(labels['count'], 'image')}", caption=escape(f"written to {labels['file']}"),
                      title_justify="left", caption_justify="left")
        table.add_column("emotion")
        table.add_column("most frequent attributes")
        for emotion, counts in labels["by_emotion"].items():
            table.add_row(escape(emotion), escape(", ".join(f"{name.replace('_', ' ')} ({n})" for name, n in counts)))
        out_console.print(table)
