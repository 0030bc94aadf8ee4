"""`emogen evaluate` on a folder holding both generated images and edits: the generation metrics
(compared with the paper's) must not count edited photos; the edits get the edit section."""

from __future__ import annotations

import numpy as np
from PIL import Image

from emogen_cli.core.config import load_config


def test_mixed_folder_separates_generations_and_edits(mapper_config, tmp_path):
    from emogen_cli.evaluation.evaluate import evaluate
    from emogen_cli.outputs.edit import edit_images
    from emogen_cli.pipeline import EmoGenPipeline

    config = load_config(mapper_config)
    generator = EmoGenPipeline(config)
    out = tmp_path / "mixed"
    out.mkdir()
    request = generator.request("awe")
    from emogen_cli.outputs.folder import merge_index as append_index
    from emogen_cli.outputs.folder import save_png

    records = [save_png(out / f"awe-{k:05d}.png", s.kept.image, s.kept.metadata, s.kept.infotext)
               for k, s in enumerate(generator.generate(request, [[0], [1]]))]

    append_index(out, records)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(photo)
    edit_images(generator, [photo], out, request, "awe", steps=2)
    result = evaluate(config, out, tmp_path / "report", metrics=["emo-a"])
    assert result["images"] == 2 and result["edits"] == 1
    assert sum(result["groups"].values()) == 2
    assert result["edit"]["edits"] == 1
