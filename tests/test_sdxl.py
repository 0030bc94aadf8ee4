"""emogen on SDXL (issue 16): the tiny random-weight SDXL chain (tests/conftest.py's `sdxl_config`: prepare ->
train-encoder -> train-mapper, built once per session) through every inference command, the Python API,
the export diffusers loads, and bit-exact resume."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from a1111 import parse_infotext
from PIL import Image
from safetensors.torch import load_file

from emogen_cli.core.config import load_config


@pytest.fixture(scope="module")
def xl(sdxl_config) -> dict:
    cfg = load_config(sdxl_config)
    return {"config": sdxl_config, "cfg": cfg, "mapper": Path(cfg.generate.mapper), "base": cfg.model.pretrained}


@pytest.fixture(scope="module")
def xl_pipe(xl):
    from emogen_cli import EmoGenPipeline

    return EmoGenPipeline.from_pretrained(xl["mapper"], config=xl["config"])


def _grey(path: Path):
    import numpy as np

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB")).astype(int)


def test_tiny_sdxl_is_detected_and_its_bundle_records_the_family(xl):
    from emogen_cli.backbones import detect, get

    base = Path(xl["base"])
    assert json.loads((base / "model_index.json").read_text())["_class_name"] == "StableDiffusionXLPipeline"
    assert detect(base) == "sdxl" and get("sdxl").default_resolution == 1024
    bundle = json.loads((xl["mapper"] / "config.json").read_text())
    assert bundle["family"] == "sdxl"
    assert bundle["text_encoders"] == {"text_encoder": 32, "text_encoder_2": 64}
    assert bundle["out_dim"] == 96 and bundle["semantic_width"] == 64  # one head writes both towers' rows


def test_family_defaults_and_overrides(tmp_path, tiny_bundle, xl):
    from emogen_cli.backbones import detect, resolution, resolve

    assert detect(tiny_bundle) == "sd15"
    cfg = load_config(overrides={"model.pretrained": str(xl["base"])})
    assert resolve(cfg).family == "sdxl" and resolution(cfg, resolve(cfg)) == 1024  # SDXL's default size
    assert resolution(load_config(overrides={"model.pretrained": str(xl["base"]), "model.resolution": 64}),
                      resolve(cfg)) == 64
    forced = load_config(overrides={"model.pretrained": str(xl["base"]), "model.family": "sd15"})
    assert resolve(forced).family == "sd15"
    assert detect("stabilityai/stable-diffusion-xl-base-1.0") == "sdxl"  # offline: told by its name


def test_sdxl_time_ids_follow_the_centre_crop(tmp_path):
    from emogen_cli.core.images import resize_center_crop
    from emogen_cli.stage2.train_mapper import crop_time_ids

    path = tmp_path / "wide.png"
    Image.new("RGB", (60, 30)).save(path)
    ids = crop_time_ids(path, 20).tolist()
    assert ids == [30, 60, 0, 10, 20, 20]  # original (h, w), crop (top, left) in the 40x20 resize, target
    assert resize_center_crop(Image.open(path), 20).size == (20, 20)


def test_every_inference_command_runs_on_sdxl(cli, xl, tmp_path):
    c = ["-c", xl["config"]]

    def run(*args):
        result = cli(*args, *c, "--json")
        assert result.code == 0, result.err
        return result.json

    out = run("generate", "-e", "awe", "-n", "1", "--intensity", "0,1", "--best-of", "2", "--out", tmp_path / "g")
    images = out["images"]
    assert sorted(i["intensity"] for i in images) == [0.0, 1.0]
    assert all(i["family"] == "sdxl" and i["size"] == 32 and i["best_of"]["k"] == 2 for i in images)
    with Image.open(images[0]["path"]) as im:
        assert im.size == (32, 32)
        prompt, _, params = parse_infotext(im.info["parameters"])
    assert prompt == "<awe>"
    assert params["Size"] == "32x32" and params["Model"] == "models" and "Emogen mapper" in params
    run("transfer", "-e", "fear", "a cup", "-n", "1", "--out", tmp_path / "t")
    for mode in ("tokens", "embedding", "space"):
        run("fuse", "amusement", "fear", "--mode", mode, "-n", "1", "--out", tmp_path / f"f-{mode}")
    run("generate", "--va", "0.8,0.3", "-n", "1", "--out", tmp_path / "va")
    grid = run("grid", "va", "--valence", "0.2,0.8", "--arousal", "0.5", "--out", tmp_path / "grid")
    assert grid
    source = tmp_path / "photo.png"
    Image.new("RGB", (40, 24), (120, 80, 40)).save(source)
    edited = run("edit", source, "--emotion", "awe", "--strength", "0.6", "--out", tmp_path / "e")
    with Image.open(edited["images"][0]["path"]) as im:
        assert im.size == (40, 24)
    ranked = run("decompose", "awe", "--top", "3", "--samples", "4")
    assert len(ranked["emotions"][0]["attributes"]) == 3
    report = run("evaluate", tmp_path / "g", "--metrics", "emo-a,sem-d")
    assert report["images"] >= 2


def test_sdxl_export_loads_into_both_text_encoders_with_equal_rows(cli, xl, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from emogen_cli.outputs.export import emotion_embedding
    from emogen_cli.stage2.mapper import load_mapper

    a1111 = cli("export", "awe", "--format", "a1111", "--mapper", xl["mapper"], "--out", tmp_path / "a", "--json")
    assert a1111.code == 0, a1111.err
    assert a1111.json["files"] == [str(tmp_path / "a" / "emogen-awe.safetensors")]
    assert a1111.json["dims"] == {"clip_l": 32, "clip_g": 64} and a1111.json["family"] == "sdxl"
    result = cli("export", "awe", "--samples", "2", "--mapper", xl["mapper"], "--out", tmp_path / "d", "--json")
    assert result.code == 0, result.err
    state = load_file(str(tmp_path / "d" / "emogen-awe" / "learned_embeds.safetensors"))
    assert sorted(state) == ["clip_g", "clip_l"] and state["clip_l"].shape == (2, 32) and state["clip_g"].shape == (2, 64)
    expected = emotion_embedding(load_mapper(xl["mapper"]), "awe", 2, seed=0)
    assert torch.equal(torch.cat([state["clip_l"], state["clip_g"]], 1), expected)

    sd = StableDiffusionXLPipeline.from_pretrained(xl["base"])
    sd.load_textual_inversion(state["clip_l"], token="<emogen-awe>", text_encoder=sd.text_encoder, tokenizer=sd.tokenizer)
    sd.load_textual_inversion(state["clip_g"], token="<emogen-awe>", text_encoder=sd.text_encoder_2, tokenizer=sd.tokenizer_2)
    for tokenizer, encoder, key in ((sd.tokenizer, sd.text_encoder, "clip_l"),
                                    (sd.tokenizer_2, sd.text_encoder_2, "clip_g")):
        text = sd.maybe_convert_prompt("a photo of <emogen-awe>", tokenizer)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        with torch.no_grad():
            rows = encoder.get_input_embeddings()(ids)[0]
        assert torch.equal(rows[-2:], state[key])


def test_encode_prompt_in_a_plain_sdxl_pipeline_gives_emogens_image(xl, xl_pipe):
    import numpy as np
    from diffusers import StableDiffusionXLPipeline, UniPCMultistepScheduler

    out = xl_pipe("awe", prompt="{} street", num_inference_steps=2, seeds=[3], output_type="np")
    embeds, negative, pooled, negative_pooled = xl_pipe.encode_prompt("awe", "{} street", seeds=[3])
    assert embeds.shape == (1, 77, 96) and pooled.shape == (1, 64)
    assert torch.count_nonzero(negative) == 0 and torch.count_nonzero(negative_pooled) == 0  # SDXL's empty negative
    sd = StableDiffusionXLPipeline.from_pretrained(xl["base"])
    sd.scheduler = UniPCMultistepScheduler.from_config(sd.scheduler.config)
    plain = sd(prompt_embeds=embeds, negative_prompt_embeds=negative, pooled_prompt_embeds=pooled,
               negative_pooled_prompt_embeds=negative_pooled, num_inference_steps=2, guidance_scale=7.5,
               height=32, width=32, generator=[torch.Generator().manual_seed(3)], output_type="np").images
    assert np.abs(np.round(plain * 255) - np.round(out.images * 255)).max() <= 1


def test_from_pipe_and_intensity_endpoints_on_sdxl(xl, xl_pipe):
    from dataclasses import replace

    from diffusers import StableDiffusionXLPipeline

    from emogen_cli import EmoGenPipeline

    sd = StableDiffusionXLPipeline.from_pretrained(xl["base"])
    shared = EmoGenPipeline.from_pipe(sd, mapper=xl["mapper"])
    assert shared.pipe.unet is sd.unet and shared.backbone.family == "sdxl"
    a = shared("fear", num_inference_steps=2, seed=1, output_type="np").images
    b = xl_pipe("fear", num_inference_steps=2, seed=1, output_type="np").images
    assert abs(a - b).max() <= 1 / 255
    request = xl_pipe.request("fear", "{} a street")
    full = xl_pipe.conditioning(request, [0, 1])
    assert xl_pipe.conditioning(replace(request, intensity=1.0), [0, 1]).equal(full)
    neutral = xl_pipe.conditioning(replace(request, intensity=0.0), [0, 1])
    assert neutral.equal(xl_pipe.prompts.encode(xl_pipe.prompts.tokenize(["a street"] * 2))[0])
    half = xl_pipe.conditioning(replace(request, intensity=0.5), [0, 1])
    assert torch.allclose(half.pooled_prompt_embeds, (neutral.pooled_prompt_embeds + full.pooled_prompt_embeds) / 2,
                          atol=1e-6)


def test_sdxl_mapper_resume_is_bit_exact(xl, tmp_path):
    from emogen_cli.stage2.train_mapper import train_mapper

    def run(out, steps, resume=False):
        cfg = load_config(xl["config"], {"mapper.output": str(out), "mapper.max_steps": steps,
                                         "mapper.checkpoint_every": 1})
        return train_mapper(cfg, resume=resume)

    run(tmp_path / "whole", 2)
    run(tmp_path / "split", 1)
    assert run(tmp_path / "split", 2, resume=True)["steps"] == 2
    whole = load_file(str(tmp_path / "whole" / "mapper.safetensors"))
    split = load_file(str(tmp_path / "split" / "mapper.safetensors"))
    assert all(torch.equal(whole[k], split[k]) for k in whole)


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed")
def test_two_process_sdxl_mapper_matches_one_process(xl, tmp_path):
    """train-mapper on SDXL under `accelerate launch` (2 CPU processes, gloo) gives the one-process mapper with the
    same global batch (confidence 1: the loss is lambda_attr * L_attr, which draws no noise)."""
    import yaml
    from test_multiprocess import launch, max_difference

    from emogen_cli.core.emotions import EMOTIONS
    from emogen_cli.data.emoset import load_prepared
    from emogen_cli.stage2.train_mapper import train_mapper

    attributes = load_prepared(xl["cfg"].data.prepared).attributes
    (tmp_path / "confidence.json").write_text(json.dumps({"emotions": list(EMOTIONS),
                                                          "attributes": {a: [1.0] * 8 for a in attributes}}))
    data = yaml.safe_load(Path(xl["config"]).read_text())
    data["mapper"].update({"batch_size": 4, "max_steps": 2, "checkpoint_every": 10, "attribute_vocabulary": "all",
                           "confidence": str(tmp_path / "confidence.json")})
    data["runtime"] = {"device": "cpu"}
    config = tmp_path / "multi.yaml"
    config.write_text(yaml.safe_dump(data))
    one = train_mapper(load_config(config, {"mapper.output": str(tmp_path / "one")}))
    assert one["final"]["l_attr"] > 0  # the mapper trains: the agreement is not two untouched copies
    two = launch(config, "train-mapper", tmp_path / "two", "--batch-size", "2")
    assert two.returncode == 0, two.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "config.json").read_text())["family"] == "sdxl"
    assert max_difference(tmp_path / "one" / "mapper.safetensors", tmp_path / "two" / "mapper.safetensors") < 1e-5
