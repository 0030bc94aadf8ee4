"""`emogen export`: a trained emotion as a textual-inversion embedding other SD 1.x tools load.

The exported vector is the mapper's output for the emotion Gaussian's mean (one vector). With
`samples=K`, it is K seeded samples of the Gaussian (seeds seed..seed+K-1), mapped, as the K
vectors of one multi-vector embedding: the prompt word then stands for K tokens, which carries
some of the emotion's variety (each vector is one image's worth of emotion under `emogen generate`).

Names. AUTOMATIC1111 names an embedding after its file and replaces that word in every prompt, so an
embedding called "awe" would also rewrite "a man in awe of the mountains". Each embedding is therefore
named `emogen-<emotion>` by default, a word no ordinary prompt holds; `name` (`--name`) sets another
template (`{emotion}` stands for the emotion; a plain name is allowed for a single emotion).

Formats (one embedding per emotion, NAME = emogen-awe by default):
- "diffusers": `OUT/NAME/learned_embeds.safetensors` = {"<NAME>": float32[n, D]}, loaded by
  `pipe.load_textual_inversion("OUT/emogen-awe")`; the prompt word is "<emogen-awe>".
- "a1111": `OUT/NAME.pt` (AUTOMATIC1111's own layout: string_to_param = {"*": [n, D]},
  string_to_token, name, step, sd_checkpoint_name; plain tensors and dicts, loadable with
  `torch.load(weights_only=True)`) and `OUT/NAME.safetensors` ({"emb_params": [n, D]}, the
  single-tensor layout A1111, ComfyUI and diffusers all read). Put either in A1111's `embeddings/`
  folder (prompt word "emogen-awe") or ComfyUI's `models/embeddings/` (prompt "embedding:emogen-awe").
D is the text encoder's width (768 for SD 1.x). Every file is checked to land inside OUT before anything
is written (emotion names come from the bundle, which may come from the Hub).
On SDXL (a bundle trained on it) both formats write the SDXL embedding layout, one safetensors file
with one tensor per text encoder: {"clip_l": [n, 768], "clip_g": [n, 1280]} (what AUTOMATIC1111 and
ComfyUI read for SDXL): "diffusers" as `OUT/<name>/learned_embeds.safetensors`, loaded with
`pipe.load_textual_inversion(state["clip_l"], token="<emogen-awe>", text_encoder=pipe.text_encoder,
tokenizer=pipe.tokenizer)` and the same with "clip_g" into text_encoder_2/tokenizer_2; "a1111" as
`OUT/<name>.safetensors` (A1111's `embeddings/`, ComfyUI's `models/embeddings/`). SDXL has no .pt layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from emogen_cli.core.choices import EXPORT_FORMATS
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_path, atomic_save_safetensors
from emogen_cli.core.reporting import Reporter, progress

FORMATS = EXPORT_FORMATS
A1111_STAR_TOKEN = 265  # CLIP's id of "*", the key A1111 writes in string_to_token


MAX_SAMPLES = 75  # vectors of one embedding: each fills one of CLIP's 77 tokens (75 between BOS and EOS)
DEFAULT_NAME = "emogen-{emotion}"
# An embedding name is a file name and a prompt word in every tool: letters, digits, "_" and "-" only.
EXPORT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


@torch.no_grad()
def emotion_embedding(bundle: Any, emotion: str, samples: int | None = None, seed: int = 0) -> torch.Tensor:
    """float32 [n, D]: the mapped Gaussian mean (n = 1), or `samples` seeded samples, mapped."""
    space = bundle.space
    if samples is None:
        vectors = space.mean[space.index(emotion)].unsqueeze(0).float()
    else:
        vectors = space.samples(emotion, [seed + k for k in range(samples)])
    mapper = bundle.mapper.float().cpu().eval()
    return mapper(vectors).float().contiguous()


def _model_name(base_model: str) -> str:
    return Path(base_model).name if Path(base_model).exists() else base_model


def embedding_names(emotions: list[str], name: str | None = None) -> dict[str, str]:
    """Each emotion's embedding name from the template `name` (default "emogen-{emotion}"), checked: a safe word,
    one per emotion."""
    template = DEFAULT_NAME if name is None else name
    if "{emotion}" not in template and len(emotions) > 1:
        raise EmogenError(f"--name '{template}' would give all {len(emotions)} emotions the same name.",
                          "Put {emotion} in it (for example --name 'my-{emotion}'), or export one emotion.")
    names = {e: template.replace("{emotion}", e) for e in emotions}
    for emotion, word in names.items():
        if not EXPORT_NAME.fullmatch(word):
            raise EmogenError(f"--name gives the embedding name '{word}', which is not a plain word.",
                              "Use letters, digits, '_' and '-' (at most 64, starting with a letter or digit), "
                              "for example --name 'emogen-{emotion}'.")
    return names


def _inside(out_dir: Path, path: Path) -> Path:
    """`path`, refused unless it lies strictly inside `out_dir` (symbolic links followed)."""
    root, target = out_dir.resolve(), path.resolve()
    if target == root or root not in target.parents:
        raise EmogenError(f"Refusing to write '{path}': it lies outside the output folder '{out_dir}'.",
                          "The bundle's emotion names or --name must be plain words.")
    return path


def _refuse_existing(paths: list[Path], overwrite: bool) -> None:
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise EmogenError(f"'{existing[0]}' already exists ({len(existing)} of the files to write do).",
                          "Pass --overwrite to replace them, or choose another --out.")


def export_embeddings(mapper: str | Path, emotions: list[str] | None = None, fmt: str = "diffusers",
                      out: str | Path = "runs/embeddings", samples: int | None = None, seed: int = 0,
                      overwrite: bool = False, reporter: Reporter | None = None,
                      name: str | None = None) -> dict[str, Any]:
    """Write each emotion's embedding in `fmt` into `out`; returns the files written and the prompt words.

    `emotions` None means all of the bundle's emotions; `name` is the embedding name template
    (default "emogen-{emotion}").
    """
    from emogen_cli.backbones import get
    from emogen_cli.core.emotions import parse_emotions
    from emogen_cli.stage2.mapper import load_mapper, resolve_bundle

    reporter = reporter or Reporter()
    if fmt not in FORMATS:
        raise EmogenError(f"Unknown export format '{fmt}'.", f"Choose one of: {', '.join(FORMATS)}.")
    if samples is not None and not 1 <= samples <= MAX_SAMPLES:
        raise EmogenError(f"--samples must lie in 1..{MAX_SAMPLES}, got {samples}.",
                          "Each vector takes one of CLIP's 77 prompt tokens; for example --samples 4.")
    if name is not None:  # a bad template is refused before the bundle loads
        embedding_names(["emotion"] if "{emotion}" in name else ["x"], name)
    bundle = load_mapper(resolve_bundle(mapper))
    names = parse_emotions(emotions or ["all"], bundle.emotions)
    words = embedding_names(names, name)
    out_dir = Path(out)
    backbone = get(bundle.family)
    widths = bundle.config.get("text_encoders") or {backbone.towers[0].text_encoder: bundle.config["out_dim"]}
    layered = len(backbone.towers) > 1  # SDXL: one tensor per text encoder (clip_l, clip_g), safetensors only
    plans = {e: ([out_dir / words[e] / "learned_embeds.safetensors"] if fmt == "diffusers" else
                 [out_dir / f"{words[e]}.safetensors"] if layered else
                 [out_dir / f"{words[e]}.pt", out_dir / f"{words[e]}.safetensors"]) for e in names}
    for paths in plans.values():
        for path in paths:
            _inside(out_dir, path)
    _refuse_existing([p for paths in plans.values() for p in paths], overwrite)
    base = str(bundle.config.get("base_model", ""))
    info = {"emogen_emotion": "", "emogen_base_model": base, "emogen_steps": str(bundle.config.get("steps", 0)),
            "emogen_vector": "mean" if samples is None else f"{samples} samples from seed {seed}"}
    written: list[str] = []
    dim = 0
    with progress(reporter, "Exporting", len(names)):
        for emotion in names:
            vectors = emotion_embedding(bundle, emotion, samples, seed)
            dim = vectors.shape[-1]
            meta = {**info, "emogen_emotion": emotion, "emogen_name": words[emotion]}
            if layered:
                atomic_save_safetensors(plans[emotion][0], backbone.export_tensors(vectors, widths),
                                        metadata={**meta, "emogen_family": backbone.family})
            elif fmt == "diffusers":
                atomic_save_safetensors(plans[emotion][0], {f"<{words[emotion]}>": vectors}, metadata=meta)
            else:
                pt, st = plans[emotion]
                data = {"string_to_token": {"*": A1111_STAR_TOKEN}, "string_to_param": {"*": vectors},
                        "name": words[emotion], "step": int(bundle.config.get("steps", 0)), "sd_checkpoint": None,
                        "sd_checkpoint_name": _model_name(base)}
                with atomic_path(pt) as tmp:
                    torch.save(data, tmp)
                atomic_save_safetensors(st, {"emb_params": vectors}, metadata=meta)
            written += [str(p) for p in plans[emotion]]
            reporter.advance("Exporting")
    prompt = {e: (f"<{w}>" if fmt == "diffusers" else w) for e, w in words.items()}
    tools = ({"diffusers": prompt} if fmt == "diffusers" else
             {"a1111": prompt, "comfyui": {e: f"embedding:{w}" for e, w in words.items()}})
    first = next(iter(names))
    example = (f'pipe.load_textual_inversion("{out_dir / words[first]}"); prompt "a photo of {prompt[first]}"'
               if fmt == "diffusers" else
               f'AUTOMATIC1111: "a street at night, {prompt[first]}"; ComfyUI: "a street at night, '
               f'{tools["comfyui"][first]}"')
    return {"format": fmt, "out": str(out_dir), "emotions": names, "names": words, "files": written,
            "prompt_words": prompt, "prompt_words_by_tool": tools, "example": example,
            "vectors": 1 if samples is None else samples, "dim": dim, "base_model": base, "family": backbone.family,
            "dims": {t.export_key: int(widths[t.text_encoder]) for t in backbone.towers}}
