import json

import numpy as np
import pytest
import torch
from PIL import Image

from emogen_cli.config import load_config


@pytest.fixture(scope="module")
def mapper_config(tmp_path_factory):
    """A trained tiny mapper bundle and a config pointing at it (built once for this module)."""
    from emogen_cli.prepare import prepare
    from emogen_cli.synthetic import make_synthetic_emoset
    from emogen_cli.tiny import build_tiny_bundle
    from emogen_cli.train_encoder import train_encoder
    from emogen_cli.train_mapper import train_mapper

    base = tmp_path_factory.mktemp("gen")
    bundle = build_tiny_bundle(base / "tiny")
    make_synthetic_emoset(base / "EmoSet", broken=False)
    path = base / "tiny.yaml"
    path.write_text(f"""
model: {{pretrained: {bundle}, clip: {bundle / 'clip'}, resolution: 16}}
data: {{root: {base / 'EmoSet'}, prepared: {base / 'prepared'}, num_workers: 0}}
encoder: {{backbone: {bundle / 'resnet'}, emotion_dim: 16, image_size: 32, batch_size: 8, max_steps: 2, output: {base / 'encoder'}}}
mapper: {{encoder: {base / 'encoder'}, hidden_dim: 32, batch_size: 4, max_steps: 2, output: {base / 'mapper'}}}
generate: {{mapper: {base / 'mapper'}, steps: 2, batch_size: 2}}
""")
    cfg = load_config(path)
    prepare(cfg, cache_latents=True)
    train_encoder(cfg)
    train_mapper(cfg)
    return path


def test_generate_files_metadata_determinism_and_no_overwrite(cli, mapper_config, tmp_path):
    out = tmp_path / "gen"
    first = cli("generate", "-c", mapper_config, "-e", "awe,fear", "-n", "3", "--out", out, "--seed", "5", "--json")
    assert first.code == 0, first.err
    assert first.json["count"] == 6
    pngs = sorted(p.name for p in out.glob("*.png") if not p.name.startswith("grid"))
    assert pngs == [f"{e}-{i:05d}.png" for e in ("awe", "fear") for i in range(3)]
    assert (out / "grid-awe-00000.png").is_file()
    meta = json.loads(Image.open(out / "fear-00002.png").text["emogen"])
    assert meta["emotion"] == "fear" and meta["seed"] == 7 and meta["steps"] == 2 and meta["scheduler"] == "unipc"
    assert meta["guidance"] == 7.5 and len(meta["mapper_sha256"]) == 16 and meta["baseline"] is False
    assert len((out / "index.jsonl").read_text().splitlines()) == 6

    # Same command again elsewhere: bit-identical images.
    twin = cli("generate", "-c", mapper_config, "-e", "awe,fear", "-n", "3", "--out", tmp_path / "twin", "--seed", "5",
               "--json")
    assert twin.code == 0, twin.err
    for name in pngs:
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(tmp_path / "twin" / name)))

    # Other batch size: same images up to float rounding; numbering continues instead of overwriting.
    again = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "3", "--out", out, "--seed", "5",
                "--batch-size", "3", "--json")
    assert again.code == 0, again.err
    assert [r["path"].rsplit("/", 1)[1] for r in again.json["images"]] == [f"awe-{i:05d}.png" for i in range(3, 6)]
    for i in range(3):
        a = np.asarray(Image.open(out / f"awe-{i:05d}.png")).astype(int)
        b = np.asarray(Image.open(out / f"awe-{i + 3:05d}.png")).astype(int)
        assert np.abs(a - b).max() <= 2
    assert not np.array_equal(np.asarray(Image.open(out / "awe-00000.png")), np.asarray(Image.open(out / "awe-00001.png")))
    overwrite = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "1", "--out", out, "--overwrite", "--json")
    assert overwrite.json["images"][0]["path"].endswith("awe-00000.png")


def test_conditioning_does_not_depend_on_batch(mapper_config):
    from emogen_cli.generate import EmoGenerator, Request

    gen = EmoGenerator(load_config(mapper_config))
    request = Request("contentment")
    together = gen.conditioning(request, [1, 2, 3])
    alone = torch.cat([gen.conditioning(request, [s]) for s in (1, 2, 3)])
    assert torch.allclose(together, alone, atol=1e-6)
    assert not torch.allclose(together[0], together[1])


def test_transfer_and_baseline(cli, mapper_config, tmp_path):
    result = cli("transfer", "-c", mapper_config, "-e", "fear", "a cup", "-t", "{} street", "-n", "1",
                 "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert sorted(r["prompt"] for r in result.json["images"]) == ["{} a cup", "{} street"]
    assert (tmp_path / "fear-a-cup-00000.png").is_file() and (tmp_path / "fear-street-00000.png").is_file()
    base = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "1", "--baseline", "--out", tmp_path, "--json")
    assert base.code == 0 and base.json["images"][0]["baseline"] is True
    assert (tmp_path / "awe-baseline-00000.png").is_file()


def test_generate_errors(cli, mapper_config, tmp_path):
    bad = cli("generate", "-c", mapper_config, "-e", "awf", "--out", tmp_path)
    assert bad.code == 1 and "Did you mean 'awe'?" in bad.err
    missing = cli("generate", "-c", mapper_config, "-e", "awe", "--mapper", tmp_path / "none", "--out", tmp_path)
    assert missing.code == 1 and "not an emogen-mapper folder" in missing.err and "Traceback" not in missing.err
    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = cli("generate", "-c", mapper_config, "-e", "awe", "--out", blocked / "sub")
    assert unwritable.code == 1 and "Cannot write" in unwritable.err
