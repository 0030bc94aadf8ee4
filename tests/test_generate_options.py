"""generate / transfer / fuse with --intensity, --best-of, --keep-all and --va, the same in the Python API,
and galleries that skip rejected/ and evaluation/."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from a1111 import parse_infotext
from PIL import Image

from emogen_cli.core.config import load_config
from emogen_cli.core.emotions import EMOTIONS


def pixels(path: Path | str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def index(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pipe(mapper_config):
    from emogen_cli import EmoGenPipeline

    return EmoGenPipeline(load_config(mapper_config))


# -- --intensity ----------------------------------------------------------------------------------------------
def test_generate_intensity_strips_alpha_recorded_and_alpha_one_is_plain(cli, mapper_config, tmp_path):
    plain = cli("generate", "-e", "fear", "-n", "2", "--out", tmp_path / "plain", "-c", mapper_config, "--json")
    assert plain.code == 0, plain.err
    out = tmp_path / "strips"
    r = cli("generate", "-e", "fear", "-n", "2", "--intensity", "0,1,1.5", "--out", out, "-c", mapper_config, "--json")
    assert r.code == 0, r.err
    assert r.json["count"] == 6 and r.json["intensities"] == [0.0, 1.0, 1.5] and len(r.json["strips"]) == 2
    # alpha = 1 is plain generation: same files, same pixels, same seeds
    for i in range(2):
        assert np.array_equal(pixels(out / f"fear-{i:05d}.png"), pixels(tmp_path / "plain" / f"fear-{i:05d}.png"))
    records = {Path(rec["path"]).name: rec for rec in index(out)}
    assert set(records) == {f"fear{s}-{i:05d}.png" for s in ("-intensity0", "", "-intensity1.5") for i in range(2)}
    for name, rec in records.items():
        meta = json.loads(Image.open(out / name).text["emogen"])
        assert meta["intensity"] == rec["intensity"] and meta["seed"] == int(name[-9:-4])  # seed = base + number
        assert parse_infotext(Image.open(out / name).text["parameters"])[2]["Emogen intensity"] == f"{meta['intensity']:g}"
    assert records["fear-intensity0-00001.png"]["neutral_prompt"] == ""  # generate's alpha = 0: the empty prompt
    strip = Image.open(r.json["strips"][1])
    assert Path(r.json["strips"][1]).name == "grid-fear-intensity-00001.png" and strip.size == (3 * 16 + 2 * 4, 16)
    assert np.array_equal(np.asarray(strip.convert("RGB"))[:, 20:36], pixels(out / "fear-00001.png"))  # 2nd cell: alpha 1

    # a second run continues the numbering of every strength together (same number, same seed)
    again = cli("generate", "-e", "fear", "-n", "1", "--intensity", "0.5,1", "--out", out, "-c", mapper_config, "--json")
    assert again.code == 0, again.err
    names = sorted(Path(rec["path"]).name for rec in again.json["images"])
    assert names == ["fear-00002.png", "fear-intensity0.5-00002.png"]  # 2: the first number free under both stems


def test_single_intensity_transfer_and_fuse(cli, mapper_config, tmp_path):
    r = cli("transfer", "-e", "awe", "a cup", "-n", "1", "--intensity", "0.5", "--out", tmp_path, "-c", mapper_config,
            "--json")
    assert r.code == 0, r.err
    assert r.json["count"] == 1 and r.json["strips"] == []  # one strength: no strip
    meta = r.json["images"][0]
    assert Path(meta["path"]).name == "awe-a-cup-intensity0.5-00000.png"
    assert meta["intensity"] == 0.5 and meta["neutral_prompt"] == "a cup"
    r = cli("fuse", "amusement", "fear", "--mode", "space", "-n", "1", "--intensity", "0,2", "--out", tmp_path,
            "-c", mapper_config, "--json")
    assert r.code == 0, r.err
    assert sorted(m["intensity"] for m in r.json["images"]) == [0.0, 2.0] and len(r.json["strips"]) == 1


def test_api_intensity_endpoints_and_prompt_embeds(pipe):
    request = pipe.request("awe", "{} a street", 2)
    full = pipe.conditioning(request, [3, 4])
    one = pipe.encode_prompt("awe", "{} a street", seeds=[3, 4], intensity=1)[0]
    zero = pipe.encode_prompt("awe", "{} a street", seeds=[3, 4], intensity=0)[0]
    half = pipe.encode_prompt("awe", "{} a street", seeds=[3, 4], intensity=0.5)[0]
    assert torch.equal(one, full)
    assert torch.equal(zero, pipe.prompts.encode(pipe.prompts.tokenize(["a street"] * 2))[0].to(pipe.dtype))
    assert torch.allclose(half, (full + zero) / 2, atol=1e-6)
    out = pipe(emotion="awe", intensity=0, num_inference_steps=2)
    assert out.metadata[0]["intensity"] == 0 and parse_infotext(out.infotexts[0])[2]["Emogen intensity"] == "0"
    with pytest.raises(Exception, match="intensity must lie in"):
        pipe(emotion="awe", intensity=float("nan"))


# -- --best-of ------------------------------------------------------------------------------------------------
def test_best_of_select_keeps_the_probes_favourite(pipe):
    request = pipe.request("awe", count=2)
    scorer = pipe.scorer()
    selections = list(pipe.generate(request, [[5, 6, 7], [8, 9, 10]], scorer=scorer, batch_size=2))
    for sel, seeds in zip(selections, ([5, 6, 7], [8, 9, 10])):
        assert sorted(c.seed for c in sel.candidates) == seeds and [c.rank for c in sel.candidates] == [1, 2, 3]
        assert sel.kept.score == max(c.score for c in sel.candidates)
        direct = scorer.probabilities([sel.kept.image])[0, EMOTIONS.index("awe")]
        assert sel.kept.score == pytest.approx(direct, abs=1e-5)


def test_generate_best_of_keep_all_and_evaluate_skips_rejected(cli, mapper_config, tmp_path):
    from emogen_cli.evaluation.gallery import scan_gallery

    out = tmp_path / "best"
    r = cli("generate", "-e", "fear", "-n", "2", "--best-of", "3", "--keep-all", "--out", out, "-c", mapper_config,
            "--json")
    assert r.code == 0, r.err
    assert r.json["count"] == 2 and r.json["best_of"] == 3 and r.json["rejected"] == 4
    kept = index(out)
    assert sorted(Path(k["path"]).name for k in kept) == ["fear-00000.png", "fear-00001.png"]
    for n, rec in enumerate(sorted(kept, key=lambda k: k["path"])):
        assert rec["best_of"]["rank"] == 1 and rec["best_of"]["k"] == 3
        assert rec["best_of"]["candidate_seeds"] == [n, n + 2**32, n + 2 * 2**32]  # seed + n + j * 2**32
        assert rec["seed"] in rec["best_of"]["candidate_seeds"]
        meta = json.loads(Image.open(rec["path"]).text["emogen"])
        assert meta["best_of"] == rec["best_of"]
        params = parse_infotext(Image.open(rec["path"]).text["parameters"])[2]
        assert params["Seed"] == str(rec["seed"]) and params["Emogen best of"].startswith("1/3 (")
    rejected = index(out / "rejected")
    assert len(rejected) == 4 and sorted(r["best_of"]["rank"] for r in rejected) == [2, 2, 3, 3]
    for rec in rejected:  # every rejected score is at most its image's kept score
        keeper = next(k for k in kept if k["best_of"]["candidate_seeds"] == rec["best_of"]["candidate_seeds"])
        assert rec["best_of"]["probe_score"] <= keeper["best_of"]["probe_score"]
    # the kept image is the one plain generation gives for its seed (candidates were made in batches of
    # another shape, so float rounding may differ by a level or two)
    # (a candidate's seed may lie above the CLI's --seed range: the API takes any seed an image records)
    from emogen_cli.pipeline import EmoGenPipeline

    plain = EmoGenPipeline(load_config(mapper_config))("fear", seeds=[kept[0]["seed"]]).images[0]
    difference = np.asarray(plain).astype(int) - pixels(kept[0]["path"]).astype(int)
    assert np.abs(difference).max() <= 2
    # evaluate (scan_gallery) sees the kept images only
    images, broken = scan_gallery(out)
    assert sorted(im.path.name for im in images) == ["fear-00000.png", "fear-00001.png"] and not broken


def test_api_best_of(pipe):
    out = pipe(emotion="fear", num_images_per_prompt=2, seed=0, best_of=2, keep_all=True, num_inference_steps=2)
    assert len(out.images) == 2 and len(out.rejected) == 2
    assert [m["best_of"]["candidate_seeds"] for m in out.metadata] == [[0, 2**32], [1, 1 + 2**32]]
    assert all(m["best_of"]["rank"] == 2 for m in out.rejected_metadata)
    with pytest.raises(Exception, match="keep-all"):
        pipe(emotion="fear", keep_all=True)


# -- --va -----------------------------------------------------------------------------------------------------
def test_generate_va_point(cli, mapper_config, tmp_path, pipe):
    from emogen_cli.conditioning.va import va_weights

    r = cli("generate", "--va", "0.8,0.3", "-n", "1", "--out", tmp_path, "-c", mapper_config, "--json")
    assert r.code == 0, r.err
    meta = r.json["images"][0]
    assert Path(meta["path"]).name == "va-0.8-0.3-00000.png"
    weights = va_weights(0.8, 0.3)
    assert meta["va"]["valence"] == 0.8 and meta["va"]["weights"] == pytest.approx(weights)
    assert meta["emotion"] == max(weights, key=weights.get) and meta["fusion"]["mode"] == "space"
    assert parse_infotext(Image.open(meta["path"]).text["parameters"])[2]["Emogen valence-arousal"] == "0.8/0.3"
    api = pipe(va=(0.8, 0.3), num_inference_steps=pipe.config.generate.steps)
    assert np.array_equal(np.asarray(api.images[0]), pixels(meta["path"]))  # CLI and API agree
    with pytest.raises(Exception, match="not both"):
        pipe(emotion="awe", va=(0.5, 0.5))


# -- galleries ------------------------------------------------------------------------------------------------
def test_scan_gallery_skips_rejected_and_evaluation_folders(tmp_path):
    from emogen_cli.evaluation.gallery import scan_gallery

    for rel in ("awe-00000.png", "awe/x.png", "rejected/awe-00000-rank2.png", "evaluation/metrics.png",
                "sub/rejected/y.png", "grid-awe-00000.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / rel)
    images, broken = scan_gallery(tmp_path)
    assert sorted(str(im.path.relative_to(tmp_path)) for im in images) == ["awe-00000.png", "awe/x.png"]
    assert not broken
    # a folder that is itself called rejected/ can still be scanned on purpose
    assert len(scan_gallery(tmp_path / "rejected")[0]) == 1


def test_intensity_minus_zero_is_intensity_zero(cli, mapper_config, tmp_path):
    """`--intensity=-0` wrote `fear-intensity-0-*.png` beside intensity 0's `fear-intensity0-*.png`."""
    import math

    from emogen_cli.conditioning.intensity import check_intensity, parse_intensities

    assert [math.copysign(1, v) for v in parse_intensities("-0,1")] == [1.0, 1.0]
    assert math.copysign(1, check_intensity(-0.0)) == 1.0  # the API's intensity=-0.0 too
    r = cli("generate", "-e", "fear", "-n", "1", "--intensity=-0", "--out", tmp_path, "-c", mapper_config, "--json")
    assert r.code == 0, r.err
    (meta,) = r.json["images"]
    assert Path(meta["path"]).name == "fear-intensity0-00000.png"
    assert math.copysign(1, meta["intensity"]) == 1.0
    assert parse_infotext(Image.open(meta["path"]).text["parameters"])[2]["Emogen intensity"] == "0"
