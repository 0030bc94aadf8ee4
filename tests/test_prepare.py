import json

from emogen_cli.core.emotions import EMOTIONS


def test_prepare_counts_filter_and_balance(cli, emoset, tmp_path):
    root, expected = emoset
    out = tmp_path / "prepared"
    # The synthetic set's expected counts are for balancing the union (per-kind balancing: tests/test_faithful.py).
    result = cli("prepare", "--data", root, "--out", out, "--balance", "union", "--json")
    assert result.code == 0, result.err
    summary = result.json
    assert summary["kept"] == expected["total_kept"] == 48
    assert summary["per_emotion_before"] == expected["kept"]
    assert summary["per_emotion_after"] == expected["balanced"]
    assert summary["total"] == expected["total_balanced"] == 72
    assert summary["skipped"] == expected["skipped"]
    assert summary["attributes"] == dict(sorted(expected["attributes"].items(), key=lambda kv: (-kv[1], kv[0])))
    assert summary["skipped_examples"]["corrupt_image"] == ["amusement_90001"]

    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 72
    # Scene wins over objects; otherwise the first object; names normalised.
    by_id = {r["id"]: r for r in rows if r["copy"] == 0}
    assert by_id["amusement_00001"]["attribute"] == "amusement_park" and by_id["amusement_00001"]["kind"] == "scene"
    assert by_id["amusement_00002"]["attribute"] == "balloon" and by_id["amusement_00002"]["kind"] == "object"
    # Balancing duplicates originals only, never invents images, and is as even as possible.
    originals = {r["id"] for r in rows if r["copy"] == 0}
    assert all(r["id"] in originals for r in rows)
    sadness = [r["id"] for r in rows if r["emotion"] == "sadness"]
    assert len(sadness) == 9 and all(sadness.count(i) == 3 for i in set(sadness))
    assert {r["emotion"] for r in rows} == set(EMOTIONS)


def test_prepare_is_seeded_and_refuses_to_overwrite_other_settings(cli, emoset, tmp_path):
    root, _ = emoset
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("prepare", "--data", root, "--out", a, "--seed", "3", "--json").code == 0
    assert cli("prepare", "--data", root, "--out", b, "--seed", "3", "--json").code == 0
    assert (a / "manifest.jsonl").read_text() == (b / "manifest.jsonl").read_text()
    before = (a / "manifest.jsonl").read_text()
    again = cli("prepare", "--data", root, "--out", a, "--seed", "3", "--json")
    assert again.code == 0  # same settings: reused
    clash = cli("prepare", "--data", root, "--out", a, "--seed", "4")
    assert clash.code == 1 and "--overwrite" in clash.err
    assert (a / "manifest.jsonl").read_text() == before
    assert cli("prepare", "--data", root, "--out", a, "--seed", "4", "--overwrite", "--json").code == 0
    assert (a / "manifest.jsonl").read_text() != before


def test_prepare_without_split_lists_walks_annotations(tmp_path):
    from emogen_cli.core.config import load_config
    from emogen_cli.data.prepare import prepare
    from emogen_cli.testing.synthetic import make_synthetic_emoset

    root = tmp_path / "EmoSet"
    make_synthetic_emoset(root, counts={"awe": 3, "fear": 2}, broken=False)
    for split in ("train", "val", "test"):
        (root / f"{split}.json").unlink()
    cfg = load_config(None, {"data.root": str(root), "data.num_workers": 0})
    summary = prepare(cfg, out=tmp_path / "p")
    assert summary["per_emotion_before"]["awe"] == 3 and summary["per_emotion_after"]["fear"] == 3
    assert summary["per_split"] == {"all": 5}


def test_latent_cache_is_resumable(tiny_config, tmp_path):
    import torch

    from emogen_cli.core.config import load_config
    from emogen_cli.data.latents import INDEX, LatentCache
    from emogen_cli.data.prepare import prepare

    cfg = load_config(tiny_config)
    first = prepare(cfg, cache_latents=True)
    assert first["latents"]["new"] == 48
    latents = tmp_path / "prepared" / "latents"
    index = json.loads((latents / INDEX).read_text())
    cache = LatentCache(latents)
    sample = cache["awe_00001"]
    assert sample.shape == (8, 2, 2)  # mean + logvar of 4 latent channels at 16 px / 8
    # A second run finds everything cached and re-encodes nothing.
    again = prepare(cfg, cache_latents=True)
    assert again["latents"] == {"cached": 48, "new": 0, "path": str(latents)}
    assert json.loads((latents / INDEX).read_text()) == index
    assert torch.equal(LatentCache(latents)["awe_00001"], sample)


def test_prepare_counts_images_listed_under_both_kinds(cli, tmp_path):
    """An image whose scene is its first object is a scene row and an object row (as the official lists): the
    summary gives both counts, and a manifest made with the earlier rule is not reused silently."""
    from PIL import Image

    root = tmp_path / "EmoSet"
    entries = []
    for emotion, stem, annotation in (("awe", "awe_1", {"scene": "Tower", "object": ["tower"]}),
                                      ("awe", "awe_2", {"scene": "beach", "object": ["tower"]}),
                                      ("fear", "fear_1", {"object": ["spider"]})):
        image, ann = f"image/{emotion}/{stem}.jpg", f"annotation/{emotion}/{stem}.json"
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        (root / ann).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (90, 20, 30)).save(root / image)
        (root / ann).write_text(json.dumps({"emotion": emotion, **annotation}))
        entries.append([emotion, image, ann])
    for split in ("train", "val", "test"):
        (root / f"{split}.json").write_text(json.dumps(entries if split == "train" else []))
    out = tmp_path / "prepared"
    result = cli("prepare", "--data", root, "--out", out, "--json")
    assert result.code == 0, result.err
    summary = result.json
    assert summary["kept"] == 4 and summary["kept_images"] == 3 and summary["listed_under_both_kinds"] == 1
    assert summary["scene_is_first_object"] == "both kinds"
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["kind"] for r in rows if r["id"] == "awe_1" and r["copy"] == 0) == ["object", "scene"]
    # A manifest prepared before the rule (no record of it) is not reused as if it were the same.
    info = json.loads((out / "prepared.json").read_text())
    del info["scene_is_first_object"]
    (out / "prepared.json").write_text(json.dumps(info))
    again = cli("prepare", "--data", root, "--out", out)
    assert again.code == 1 and "--overwrite" in again.err
    union = cli("prepare", "--data", root, "--out", tmp_path / "union", "--balance", "union", "--json")
    assert union.json["kept"] == union.json["kept_images"] == 3 and union.json["listed_under_both_kinds"] == 0


def test_latent_cache_batches_and_workers_equal_the_per_image_cache(tiny_config, tmp_path):
    """Issue 18: --cache-latents decodes in DataLoader workers (data.num_workers) and encodes batches of
    data.cache_batch_size. Workers change nothing (bit-equal at one batch size); another batch size changes
    the VAE's convolution shapes, so the values equal the one-image-at-a-time cache up to float rounding
    (float32 VAE, stored float32 here: atol 1e-5). Shards stay whole and in order across batch boundaries."""
    import torch

    from emogen_cli.core.config import load_config
    from emogen_cli.data.latents import INDEX, LatentCache, cache_latents
    from emogen_cli.data.prepare import prepare

    cfg = load_config(tiny_config)
    prepare(cfg)
    from emogen_cli.data.emoset import load_prepared

    prepared = load_prepared(tmp_path / "prepared")
    rows = prepared.unique_rows[:11]
    args = (rows, prepared.root)
    model = (cfg.model.pretrained, cfg.model.revision, cfg.model.resolution)
    cache_latents(*args, tmp_path / "one", *model, batch_size=1, dtype="float32", device="cpu")
    cache_latents(*args, tmp_path / "four", *model, batch_size=4, shard_size=5, dtype="float32", device="cpu")
    cache_latents(*args, tmp_path / "workers", *model, batch_size=4, shard_size=5, dtype="float32", device="cpu",
                  num_workers=2)
    one, four, workers = (LatentCache(tmp_path / name) for name in ("one", "four", "workers"))
    shards = json.loads((tmp_path / "workers" / INDEX).read_text())["shards"]
    assert [len(ids) for ids in shards.values()] == [5, 5, 1]  # shard_size, across batches of 4
    assert [i for ids in shards.values() for i in ids] == [r.id for r in rows]
    for row in rows:
        assert torch.equal(workers[row.id], four[row.id])
        torch.testing.assert_close(four[row.id], one[row.id], atol=1e-5, rtol=1e-5)
