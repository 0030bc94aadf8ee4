"""The model card (README.md) a mapper bundle carries, so `hf upload USER/NAME runs/mapper` publishes a
self-describing model that `EmoGenPipeline.from_pretrained("USER/NAME")` and `--mapper USER/NAME` load.

Everything comes from the bundle itself (config.json, attributes.json), the prepared dataset it names
(prepared.json, when still there), the training's last logged losses, and an evaluate report
(report.json) in the bundle folder when present: the card can be rewritten at any time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from emogen_cli.core.files import atomic_write_text


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _metric_values(report: dict[str, Any]) -> dict[str, float]:
    """{metric: value} from an `emogen evaluate` report.json (metrics hold {"value": ...}; missing ones None)."""
    metrics = report.get("metrics", {})
    values = {k: (v.get("value") if isinstance(v, dict) else v) for k, v in metrics.items()} if isinstance(
        metrics, dict) else {}
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def model_card_text(bundle_dir: str | Path, final: dict[str, float] | None = None,
                    report: str | Path | None = None, repo_id: str = "USER/NAME") -> str:
    """The card's text: YAML metadata (huggingface_hub ModelCardData) and a Markdown body.

    `report`: an `emogen evaluate` report.json; by default the bundle's `evaluation/report.json` or
    `report.json` when present."""
    from huggingface_hub import ModelCard, ModelCardData

    bundle_dir = Path(bundle_dir)
    cfg = _read_json(bundle_dir / "config.json") or {}
    attributes = _read_json(bundle_dir / "attributes.json") or {}
    prepared = _read_json(Path(cfg.get("prepared", "")) / "prepared.json") if cfg.get("prepared") else None
    candidates = [Path(report)] if report else [bundle_dir / "evaluation" / "report.json", bundle_dir / "report.json"]
    report_data = next((data for p in candidates if (data := _read_json(p)) is not None), None)
    base, steps, emotions = cfg.get("base_model", "unknown"), cfg.get("steps", "unknown"), cfg.get("emotions", [])
    losses = cfg.get("losses", {})
    data_size = prepared.get("kept") if prepared else None
    data = ModelCardData(
        base_model=base if "/" in base and not Path(base).exists() else None,
        library_name="emogen", pipeline_tag="text-to-image", license="other",
        tags=["emogen", "emotion", "stable-diffusion", "text-to-image", "textual-inversion"]
        + (["stable-diffusion-xl"] if cfg.get("family") == "sdxl" else []),
        datasets=["EmoSet-118K"],
    )
    lines = [
        f"# EmoGen emotion mapper ({len(emotions)} emotions)", "",
        "An [EmoGen](https://arxiv.org/abs/2401.04608) (CVPR 2024) mapping network trained with "
        "[emogen](https://pypi.org/project/emogen-cli/): it maps a sample of an emotion's Gaussian in the "
        "image-emotion space to a CLIP token embedding that Stable Diffusion reads in place of the "
        f"placeholder `{cfg.get('placeholder', '<emotion>')}`.", "",
        "## Training", "",
        f"- Base model: `{base}`" + (f" (revision `{cfg['revision']}`)" if cfg.get("revision") else ""),
        f"- CLIP model: `{cfg.get('clip_model', 'unknown')}`",
        f"- Model family: {cfg.get('family', 'sd15')}"
        + (f" (text encoders: {', '.join(f'{k} {v}-d' for k, v in cfg['text_encoders'].items())})"
           if isinstance(cfg.get("text_encoders"), dict) else ""),
        f"- Data: EmoSet (prepared in `{cfg.get('prepared', 'unknown')}`)"
        + (f", {data_size} images kept ({prepared.get('total', data_size)} after balancing)" if data_size else ""),
        f"- Steps: {steps}, seed {cfg.get('seed', 'unknown')}, resolution {cfg.get('resolution', 'unknown')} px",
        f"- Mapper: {cfg.get('layers', '?')} layers, {cfg.get('in_dim', '?')} -> {cfg.get('hidden_dim', '?')} -> "
        f"{cfg.get('out_dim', '?')}",
        "- Loss: (1 - c) L_ldm + lambda_attr c L_attr + lambda_emo L_emo with "
        + ", ".join(f"{k} = {_fmt(v)}" for k, v in losses.items()),
        f"- Attributes: {len(attributes.get('names', []))} "
        f"(confidence: {attributes.get('confidence_method') or 'n/a'})",
        f"- Class order: {', '.join(emotions)}",
    ]
    if final:
        lines.append("- Final logged losses: " + ", ".join(f"{k} {_fmt(v)}" for k, v in final.items() if k != "step"))
    if report_data:
        lines += ["", "## Evaluation", "",
                  f"`emogen evaluate` on {report_data.get('images', '?')} generated images:", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in _metric_values(report_data).items()] or ["| (none computed) | |"]
    lines += [
        "", "## Use", "",
        "Command line (`pip install emogen-cli`):", "", "```bash",
        f"emogen generate --mapper {repo_id} --emotion awe -n 8",
        f"emogen transfer --mapper {repo_id} --emotion fear \"a cup\"",
        f"emogen fuse amusement fear --mapper {repo_id}",
        "```", "", "Python:", "", "```python",
        "from emogen_cli import EmoGenPipeline", "",
        f"pipe = EmoGenPipeline.from_pretrained(\"{repo_id}\")",
        "out = pipe(emotion=\"awe\", prompt=\"{} street\", num_images=4, seed=0)",
        "out.images[0].save(\"awe.png\")",
        "```", "",
        "Elsewhere (AUTOMATIC1111, ComfyUI, diffusers' `load_textual_inversion`):", "", "```bash",
        f"emogen export all --mapper {repo_id} --format a1111 --out stable-diffusion-webui/embeddings",
        f"emogen export awe --mapper {repo_id} --format diffusers --out embeddings",
        "```", "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines)).content


def write_model_card(bundle_dir: str | Path, final: dict[str, float] | None = None,
                     report: str | Path | None = None) -> Path:
    """Write (or rewrite, e.g. after an evaluation) README.md in the bundle folder atomically."""
    path = Path(bundle_dir) / "README.md"
    atomic_write_text(path, model_card_text(bundle_dir, final, report))
    return path
