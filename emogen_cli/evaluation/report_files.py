"""The evaluation report: report.json, a Markdown table (with the paper's Table 1 for reference)
and a bar chart of the per-emotion values, drawn with PIL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from emogen_cli.core.files import atomic_save_image, atomic_write_text

LABELS = {"fid": "FID (lower is better)", "lpips": "LPIPS", "emo-a": "Emo-A", "sem-c": "Sem-C", "sem-d": "Sem-D"}


FORMATS = {"fid": "{:.2f}", "lpips": "{:.3f}", "emo-a": "{:.2%}", "sem-c": "{:.3f}", "sem-d": "{:.4f}"}


FEATURES = {"inception": "Inception", "clip": "CLIP"}
MIN_FID_IMAGES = 50  # below this many images a FID is mostly small-sample bias (FIDs want thousands)


def fmt(name: str, value: float | None) -> str:
    return "-" if value is None else FORMATS[name].format(value)


def label(name: str, metric: dict[str, Any]) -> str:
    """A column's header: the FID names its feature extractor (the paper's FIDs are Inception FIDs)."""
    if name == "fid" and metric.get("features") in FEATURES:
        return f"FID ({FEATURES[metric['features']]})"
    return LABELS[name]


def paper_cell(name: str, value: float | None, metric: dict[str, Any]) -> str:
    """The paper's value; its FID is marked as an Inception FID when this run's FID is not one."""
    if name == "fid" and value is not None and metric.get("features") not in (None, "inception"):
        return f"{fmt(name, value)} (Inception)"
    return fmt(name, value)


def fid_note(result: dict[str, Any]) -> str | None:
    """Which reference each FID is measured against (one line), or None without a FID."""
    fid = result["metrics"].get("fid") or {}
    if fid.get("value") is None or "reference_per_emotion" not in fid:
        return None
    own = ", ".join(f"{g} {n}" for g, n in fid["reference_per_emotion"].items())
    note = (f"FID: each emotion's row against that emotion's reference images ({own}); overall against all "
            f"{fid['reference_images']} reference images of {fid['reference']}")
    if fid.get("features") != "inception":
        note += "; CLIP features, not comparable with the paper's Inception FIDs"
    if fid.get("few_images"):
        note += f"; under {MIN_FID_IMAGES} images (unreliable): {', '.join(fid['few_images'])}"
    return note + "."


def markdown(result: dict[str, Any]) -> str:
    names = list(result["metrics"])
    metrics = result["metrics"]
    head = "| group | images | " + " | ".join(label(n, metrics[n]) for n in names) + " |"
    lines = [f"# emogen evaluation of `{result['folder']}`", "", head, "|" + "---|" * (len(names) + 2)]
    for group, count in result["groups"].items():
        cells = [fmt(n, (metrics[n].get("per_emotion") or {}).get(group)) for n in names]
        lines.append(f"| {group} | {count} | " + " | ".join(cells) + " |")
    lines.append(f"| **overall** | {result['images']} | "
                 + " | ".join(f"**{fmt(n, metrics[n]['value'])}**" for n in names) + " |")
    for model, values in result["paper"].items():
        lines.append(f"| paper: {model} | | " + " | ".join(paper_cell(n, values.get(n), metrics[n]) for n in names)
                     + " |")
    if note := fid_note(result):
        lines += ["", note]
    lines += ["", "How each metric was computed:", ""]
    for name in names:
        m = result["metrics"][name]
        lines.append(f"- **{LABELS[name]}**: " + (m.get("backend") or m.get("unavailable") or (f"failed: {m['failed']}" if m.get("failed") else "")) +
                     (f" ({m['note']})" if m.get("note") else ""))
    return "\n".join(lines) + "\n"


def bar_chart(result: dict[str, Any]) -> Image.Image:
    """One panel per metric with a bar per group (scaled to the panel's largest value)."""
    panels = [(n, m["per_emotion"]) for n, m in result["metrics"].items() if m.get("per_emotion")]
    font = ImageFont.load_default()
    width, panel_h, bar_area = 720, 150, 100
    image = Image.new("RGB", (width, max(1, len(panels)) * panel_h + 10), "white")
    draw = ImageDraw.Draw(image)
    for p, (name, values) in enumerate(panels):
        top = p * panel_h + 10
        draw.text((10, top), label(name, result["metrics"][name]), fill="black", font=font)
        peak = max(abs(v) for v in values.values()) or 1.0
        step = (width - 20) / max(1, len(values))
        for i, (group, value) in enumerate(values.items()):
            h = bar_area * abs(value) / peak
            x0, base = 10 + i * step + 4, top + 18 + bar_area
            draw.rectangle([x0, base - h, x0 + step - 8, base], fill=(70, 110, 190))
            draw.text((x0, base - h - 12), fmt(name, value), fill="black", font=font)
            draw.text((x0, base + 4), group[:14], fill="black", font=font)
    return image


def write_report(result: dict[str, Any], out_dir: Path) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "chart": out_dir / "metrics.png"}
    atomic_write_text(files["markdown"], markdown(result))
    atomic_save_image(files["chart"], bar_chart(result))
    atomic_write_text(files["json"], json.dumps({**result, "files": {k: str(v) for k, v in files.items()}}, indent=2))
    return {k: str(v) for k, v in files.items()}
