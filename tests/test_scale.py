"""Issue 18: a run's cost per image does not grow with the run (index appends, paged contact sheets,
claims in one scan, streaming evaluation). Behaviour only: timings are measured by bench/scale.py."""

import json
from pathlib import Path

import pytest
from PIL import Image

from emogen_cli.core.config import load_config


def _names(folder: Path) -> list[str]:
    return [Path(json.loads(line)["path"]).name for line in (folder / "index.jsonl").read_text().splitlines()]


def test_append_index_appends_in_place_instead_of_rewriting(tmp_path):
    """Before: every batch re-read and atomically replaced the whole index (a new file, O(index) per batch)."""
    from emogen_cli.outputs.folder import append_index

    append_index(tmp_path, [{"path": f"awe-{i:05d}.png", "seed": i} for i in range(2000)])
    index = tmp_path / "index.jsonl"
    before, inode = index.read_bytes(), index.stat().st_ino
    append_index(tmp_path, [{"path": "awe-02000.png", "seed": 2000}])
    assert index.stat().st_ino == inode  # the same file, grown: not a rewrite
    after = index.read_bytes()
    assert after.startswith(before) and json.loads(after[len(before):]) == {
        "path": str(tmp_path.resolve() / "awe-02000.png"), "seed": 2000}


def test_a_torn_append_is_cut_and_reconciled(tmp_path):
    """kill -9 in the middle of an append leaves half a line: the next append cuts it off, and the next run's
    reconcile drops it and indexes that image from its PNG, so the index matches the files again."""
    from emogen_cli.outputs.folder import append_index, reconcile, save_png

    image = Image.new("RGB", (8, 8))
    append_index(tmp_path, [save_png(tmp_path / "awe-00000.png", image, {"seed": 0})])
    save_png(tmp_path / "awe-00001.png", image, {"seed": 1})
    with open(tmp_path / "index.jsonl", "a") as f:
        f.write('{"path": "' + str(tmp_path / "awe-00001.png") + '", "se')  # the killed append
    append_index(tmp_path, [save_png(tmp_path / "awe-00002.png", image, {"seed": 2})])
    assert _names(tmp_path) == ["awe-00000.png", "awe-00002.png"]  # every line whole again

    with open(tmp_path / "index.jsonl", "a") as f:
        f.write('{"path": "x')  # killed again, then the next run starts
    assert reconcile(tmp_path)["added"] == 1
    assert sorted(_names(tmp_path)) == ["awe-00000.png", "awe-00001.png", "awe-00002.png"]
    assert (tmp_path / "index.jsonl").read_text().endswith("\n") and reconcile(tmp_path) == {
        "dropped": 0, "added": 0, "temporary": 0}


def test_contact_sheets_are_paged_and_capped(tmp_path):
    """Before: one sheet per request held every image in memory (400 images at 512 px: a 300 MiB sheet)."""
    from emogen_cli.outputs.folder import save_png, sheet_columns, write_sheets

    for i in range(7):
        save_png(tmp_path / f"awe-{i:05d}.png", Image.new("RGB", (16, 16), (i * 30, 0, 0)), {"seed": i})
    sheets, left = write_sheets(tmp_path, "awe", 0, 7, 3, None)
    # pages 0-2 and 3-5 get a sheet; page 6 is a single image (a sheet of one image is that image)
    assert [Path(s).name for s in sheets] == ["grid-awe-00000.png", "grid-awe-00003.png"] and left == 0
    assert Image.open(sheets[0]).size == (3 * 16 + 2 * 4, 16)  # one row of three
    for p in tmp_path.glob("grid-*"):
        p.unlink()
    sheets, left = write_sheets(tmp_path, "awe", 0, 7, 3, 1)
    assert [Path(s).name for s in sheets] == ["grid-awe-00000.png"] and left == 2
    assert write_sheets(tmp_path, "awe", 0, 7, 3, 0) == ([], 3)
    assert [sheet_columns(n) for n in (2, 16, 17, 64, 100)] == [4, 4, 5, 8, 10]


def test_generate_pages_its_sheets_and_appends_its_index(cli, mapper_config, tmp_path):
    out = tmp_path / "gen"
    first = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "2", "--out", out, "--json")
    assert first.code == 0, first.err
    inode = (out / "index.jsonl").stat().st_ino
    cfg = tmp_path / "paged.yaml"
    cfg.write_text(Path(mapper_config).read_text() + "\n")
    data = load_config(cfg).to_dict()
    data["generate"].update(sheet_size=2, max_sheets=1, batch_size=1)
    cfg.write_text(json.dumps(data))  # YAML is a superset of JSON
    second = cli("generate", "-c", cfg, "-e", "awe", "-n", "5", "--out", out, "--json")
    assert second.code == 0, second.err
    assert (out / "index.jsonl").stat().st_ino == inode  # appended to, never replaced
    assert _names(out) == [f"awe-{i:05d}.png" for i in range(7)]
    # the first run's sheet, then the second run's first page only (max_sheets 1): pages 2-3, 4-5, 6 get none
    assert sorted(p.name for p in out.glob("grid-*")) == ["grid-awe-00000.png", "grid-awe-00002.png"]
    assert "max_sheets" in second.err
    assert not list(out.glob(".*.claim"))


def test_edit_claims_every_number_in_one_folder_scan(cli, mapper_config, tmp_path, monkeypatch):
    """Before: one claim (a scan of the whole output folder) per input: O(n^2) over a folder of n photos."""
    from emogen_cli.outputs import folder

    scans = []
    real = folder._taken_numbers
    monkeypatch.setattr(folder, "_taken_numbers", lambda out_dir: scans.append(out_dir) or real(out_dir))
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (80 * i, 40, 0)).save(photos / f"p{i}.png")
    out = tmp_path / "edits"
    r = cli("edit", photos, "--emotion", "awe", "--strength", "0.5", "--out", out, "--config", mapper_config, "--json")
    assert r.code == 0, r.err
    assert r.json["count"] == 3 and len(scans) == 1
    assert sorted(_names(out)) == [f"p{i}-awe-00000.png" for i in range(3)] and not list(out.glob(".*.claim"))


def test_streamed_metrics_equal_the_in_memory_ones(mapper_config, tmp_path):
    """Evaluate keeps per-image features in a file, Emo-A/Sem-C as counts and FID as running sums (before:
    [N, D] tensors of every image in memory); the values equal the in-memory arithmetic (float64 sums in
    another order, the reference a shuffle of the same folder: rtol 1e-5)."""
    import numpy as np
    import torch

    from emogen_cli.core.clipspace import clip_image_features
    from emogen_cli.core.emotions import EMOTIONS
    from emogen_cli.core.reporting import Reporter
    from emogen_cli.evaluation import metrics as M
    from emogen_cli.evaluation.evaluate import Evaluation, FeatureFile
    from emogen_cli.evaluation.gallery import scan_gallery
    from emogen_cli.outputs.folder import save_png

    rng = np.random.default_rng(0)
    folder = tmp_path / "gallery"
    for i in range(10):
        pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        save_png(folder / f"img-{i:05d}.png", Image.fromarray(pixels), {"emotion": EMOTIONS[i % 2], "seed": i})
    cfg = load_config(mapper_config, {"evaluate.pairs": 6, "evaluate.batch_size": 3, "runtime.device": "cpu",
                                      "evaluate.reference": str(folder), "evaluate.fid_features": "clip"})
    images, _ = scan_gallery(folder)
    run = Evaluation(cfg, images, None, None, Reporter())
    feats = clip_image_features(run.clip(), [im.path for im in images], run.device, 3)  # same batches: same values
    stored = run.clip_features()
    assert torch.equal(torch.cat([block for _, block in stored.chunks(4)]), feats)
    assert torch.equal(stored.rows([7, 2, 7]), feats[[7, 2, 7]])

    sem_d = run.sem_d()
    for group in ("amusement", "awe"):
        assert sem_d["per_emotion"][group] == pytest.approx(M.pair_mse(feats, run.pairs(group)).mean().item(), rel=1e-6)

    emo_a = run.emo_a()
    from emogen_cli.evaluation.edit_metrics import checked_probe

    probe = checked_probe(Path(cfg.generate.mapper) / "emotion_probe.safetensors", run.clip())
    targets = torch.tensor([EMOTIONS.index(im.emotion) for im in images])
    with torch.no_grad():
        assert emo_a["value"] == pytest.approx(M.emotion_accuracy(probe(feats), targets))

    fid = run.fid()
    real = clip_image_features(run.clip(), [im.path for im in images], run.device, 3)
    assert fid["value"] == pytest.approx(M.frechet_distance(real, feats), rel=1e-5, abs=1e-6)
    for group in ("amusement", "awe"):
        rows = [i for i, im in enumerate(images) if im.emotion == group]
        assert fid["per_emotion"][group] == pytest.approx(M.frechet_distance(real[rows], feats[rows]), rel=1e-5, abs=1e-6)

    features = FeatureFile()
    x = torch.randn(50, 6, dtype=torch.float64).float()
    for k in range(0, 50, 7):
        features.append(x[k:k + 7])
    y = torch.randn(40, 6)
    other = FeatureFile()
    other.append(y)
    assert M.frechet_from_stats(features.stats(), other.stats()) == pytest.approx(M.frechet_distance(x, y), rel=1e-5)
