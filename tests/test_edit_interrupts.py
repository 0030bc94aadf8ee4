"""edit and grid va when interrupted or run side by side: index.jsonl (and rejected/index.jsonl) list
exactly the complete files, and numbers are reserved across runs so nothing is overwritten."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emogen_cli.core.config import load_config
from emogen_cli.core.errors import EmogenError, Interrupted


@pytest.fixture(scope="module")
def generator(mapper_config):
    from emogen_cli.pipeline import EmoGenPipeline

    return EmoGenPipeline(load_config(mapper_config))


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for k in range(3):
        path = tmp_path / "in" / f"p{k}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


class StubScorer:
    """A probe that scores by mean brightness (deterministic, no CLIP)."""

    def target_probability(self, images, emotion):
        return np.array([np.asarray(im.convert("L"), dtype=float).mean() / 255 for im in images])


def _indexed(folder: Path) -> list[str]:
    index = folder / "index.jsonl"
    return sorted(Path(json.loads(line)["path"]).name for line in index.read_text().splitlines()) if index.exists() else []


def _pngs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.png") if not p.name.startswith("grid-"))


def test_ctrl_c_during_best_of_edit_indexes_exactly_the_written_files(generator, photos, tmp_path, monkeypatch):
    from emogen_cli.outputs import edit as edit_module
    from emogen_cli.pipeline import Request

    calls = {"n": 0}
    real = edit_module.Editor.__call__

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # the second photo's second candidate
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(edit_module.Editor, "__call__", interrupted)
    out = tmp_path / "edits"
    with pytest.raises(Interrupted, match="after 1 edits"):
        edit_module.edit_images(generator, photos, out, Request(("awe",)), "awe", strength=0.5, steps=2,
                                best_of=2, keep_all=True, scorer=StubScorer())
    assert _pngs(out) == _indexed(out) == ["p0-awe-00000.png"]
    assert _pngs(out / "rejected") == _indexed(out / "rejected") == ["p0-awe-00000-rank2.png"]
    assert not list(out.glob(".*.claim"))


def test_edit_leaves_numbers_claimed_by_a_live_run_alone(generator, photos, tmp_path):
    from emogen_cli.outputs.edit import edit_images
    from emogen_cli.pipeline import Request

    out = tmp_path / "edits"
    out.mkdir()
    claim = out / ".p0-awe-00000.png.claim"  # another (live) run is writing p0-awe-00000.png right now
    claim.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    edit_images(generator, photos[:1], out, Request(("awe",)), "awe", steps=2)
    assert _pngs(out) == _indexed(out) == ["p0-awe-00001.png"] and claim.exists()


@pytest.mark.parametrize(("options", "text"), [
    ({"strength_step": math.nan, "until": 0.5}, "strength-step"), ({"strength_step": 0.0, "until": 0.5}, "strength-step"),
    ({"strength_step": 2.0, "until": 0.5}, "strength-step"), ({"keep_all": True}, "keep-all"),
    ({"keep_all": True, "best_of": 1}, "keep-all"),
])
def test_edit_options_refused_before_models_load(mapper_config, photos, tmp_path, options, text):
    from emogen_cli.outputs.edit import edit

    with pytest.raises(EmogenError, match=text):
        edit(load_config(mapper_config), photos, tmp_path / "o", emotion="awe", **options)
    assert not (tmp_path / "o").exists()


def test_edit_sigma_needs_va(mapper_config, photos, tmp_path):
    from emogen_cli.outputs.edit import edit

    with pytest.raises(EmogenError, match="needs --va"):
        edit(load_config(mapper_config), photos, tmp_path / "o", emotion="awe", sigma=0.3)


def test_edit_steps_beyond_any_scheduler_are_refused(generator):
    from emogen_cli.outputs.edit import Editor

    with pytest.raises(EmogenError, match="--steps must lie"):
        Editor(generator, steps=10**9)


def test_ctrl_c_during_grid_va_indexes_the_cells_written(generator, tmp_path, monkeypatch):
    from emogen_cli.outputs.generate import va_grid

    calls = {"n": 0}
    real = type(generator).sample

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(generator), "sample", interrupted)
    out = tmp_path / "grid"
    with pytest.raises(Interrupted, match="after 2 of 4"):
        va_grid(generator, out, valences=(0.2, 0.8), arousals=(0.2, 0.8))
    assert _pngs(out) == _indexed(out) == ["va-00000.png", "va-00001.png"]
    monkeypatch.undo()
    again = va_grid(generator, out, valences=(0.2, 0.8), arousals=(0.2, 0.8))
    assert again["count"] == 4 and len(_pngs(out)) == len(_indexed(out)) == 6
    assert not list(out.glob(".*.claim"))


def test_va_edit_records_its_dominant_emotion_like_generate(mapper_config, photos, tmp_path):
    """evaluate groups by "emotion": a --va edit names the dominant emotion there (as generate --va does)."""
    from emogen_cli.core.emotions import EMOTIONS
    from emogen_cli.outputs.edit import edit

    result = edit(load_config(mapper_config), photos[:1], tmp_path / "o", va=(0.9, 0.1), steps=2)
    record = json.loads((tmp_path / "o" / "index.jsonl").read_text().splitlines()[0])
    assert record["emotion"] in EMOTIONS and record["emotion"] == record["target"] == result["target"]
    assert record["label"] == "va-0.90-0.10" and Path(record["path"]).name.startswith("p0-va-0-90-0-10-")
