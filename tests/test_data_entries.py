"""Dataset entries that are unsafe, repeated, ambiguous or malformed: skipped and counted, never a traceback;
a requested split whose list is missing is an error; evaluate keeps finished work when one metric fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from emogen_cli.core.errors import EmogenError
from emogen_cli.data.emoset import load_prepared, safe_relative, scan_emoset


def _image(root: Path, rel: str, emotion: str, scene: str = "beach") -> list[str]:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(root / rel)
    ann = f"annotation/{emotion}/{Path(rel).stem}.json"
    (root / ann).parent.mkdir(parents=True, exist_ok=True)
    (root / ann).write_text(json.dumps({"emotion": emotion, "scene": scene}))
    return [emotion, rel, ann]


@pytest.fixture
def root(tmp_path) -> Path:
    root = tmp_path / "EmoSet"
    outside = tmp_path / "secret.jpg"
    Image.new("RGB", (8, 8)).save(outside)
    a = _image(root, "image/amusement/x1.jpg", "amusement")
    b = _image(root, "image/fear/x1.jpg", "fear")  # the same file name under another emotion
    c = _image(root, "image/awe/a2.jpg", "awe")
    train = [a, b, c, a,  # a listed twice
             ["awe", str(outside), c[2]],  # absolute path
             ["awe", "image/../../secret.jpg", c[2]],  # leaves the root
             ["awe", "image/awe/a2.jpg", "../annotation/awe/a2.json"],  # annotation outside
             {"emotion": "awe"}, 7, ["awe", 3, None], ["too", "short"]]  # not [emotion, image, annotation]
    (root / "train.json").write_text(json.dumps(train))
    (root / "val.json").write_text(json.dumps([c]))  # also in train: counted once
    return root


def test_unsafe_duplicate_and_malformed_entries_are_skipped_and_counted(root):
    scan = scan_emoset(root, ["train", "val"], verify_images=True, num_workers=1)
    assert sorted(s.image for s in scan.samples) == ["image/amusement/x1.jpg", "image/awe/a2.jpg", "image/fear/x1.jpg"]
    assert scan.skipped == {"duplicate": 2, "unsafe_path": 3, "malformed_entry": 4}
    ids = {s.image: s.id for s in scan.samples}
    assert ids["image/amusement/x1.jpg"] != ids["image/fear/x1.jpg"]  # distinct cache keys
    assert ids["image/awe/a2.jpg"] == "a2"  # unique stems keep their plain id


def test_non_object_annotation_is_a_counted_skip(root):
    (root / "annotation" / "fear" / "x1.json").write_text("[1, 2]")
    (root / "annotation" / "awe" / "a2.json").write_text('{"emotion": ["awe"], "scene": "sky"}')
    scan = scan_emoset(root, ["train", "val"], verify_images=False)
    assert scan.skipped["malformed_annotation"] == 2


def test_a_requested_split_without_its_list_is_an_error(root):
    (root / "train.json").unlink()
    with pytest.raises(EmogenError) as info:
        scan_emoset(root, ["train"], verify_images=False)
    assert "train.json is missing" in str(info.value) and "\n" not in str(info.value)
    (root / "val.json").write_text('{"not": "a list"}')
    with pytest.raises(EmogenError, match="not a list"):
        scan_emoset(root, ["train", "val", "test"], verify_images=False)


@pytest.mark.parametrize("path, ok", [("image/a/b.jpg", True), ("./image/b.jpg", True), ("image/../image/b.jpg", True),
                                      ("/etc/passwd", False), ("../x.jpg", False), ("image/../../x.jpg", False),
                                      ("C:\\x.jpg", False), ("", False), ("image\\..\\..\\x.jpg", False)])
def test_safe_relative(path, ok):
    assert safe_relative(path) is ok


def test_damaged_manifest_is_one_line(tmp_path):
    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "prepared.json").write_text(json.dumps({"root": str(tmp_path)}))
    row = {"id": "a", "image": "image/a.jpg", "emotion": "awe", "attribute": "sky", "kind": "scene", "split": "train"}
    for manifest, needle in [(json.dumps(row) + "\n[1]\n", "line 2"), (b"\xff\n", "not UTF-8"),
                             (json.dumps({**row, "image": "/etc/passwd"}), "unsafe path"),
                             (json.dumps({**row, "copy": "x"}), "wrong type")]:
        (folder / "manifest.jsonl").write_bytes(manifest if isinstance(manifest, bytes) else manifest.encode())
        with pytest.raises(EmogenError) as info:
            load_prepared(folder)
        assert needle in str(info.value) and "\n" not in str(info.value)


def test_evaluate_keeps_finished_metrics_when_one_model_cannot_load(tmp_path, monkeypatch):
    """Sem-C's classifier is missing: Sem-D is still computed and written, Sem-C is reported as failed."""
    from emogen_cli.core.config import Config
    from emogen_cli.evaluation import evaluate as ev

    gallery = tmp_path / "gen"
    for emotion in ("awe", "fear"):
        for i in range(3):
            (gallery / emotion).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (40 * i, 10, 90)).save(gallery / emotion / f"{i}.png")
    (gallery / "evaluation").mkdir()
    Image.new("RGB", (16, 16)).save(gallery / "evaluation" / "metrics.png")  # an earlier report's chart

    def sem_d(self):
        return {"value": 0.5, "per_emotion": {g: 0.5 for g in self.groups}, "backend": "test"}

    def sem_c(self):
        raise EmogenError("Cannot load AutoModelForImageClassification from 'missing/model': not found.")

    monkeypatch.setattr(ev.Evaluation, "sem_d", sem_d)
    monkeypatch.setattr(ev.Evaluation, "sem_c", sem_c)
    with pytest.raises(EmogenError) as info:
        ev.evaluate(Config(), gallery, metrics=["sem-c", "sem-d"])
    assert "sem-c" in str(info.value) and "missing/model" in str(info.value)
    report = json.loads((gallery / "evaluation" / "report.json").read_text())
    assert report["metrics"]["sem-d"]["value"] == 0.5
    assert "missing/model" in report["metrics"]["sem-c"]["failed"]
    assert report["images"] == 6  # its own metrics.png is not an input
