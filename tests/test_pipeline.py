"""The Python API (EmoGenPipeline) on the tiny chain: loading, calling, fusion, prompt_embeds, infotext."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from a1111 import parse_infotext
from PIL import Image

from emogen_cli.core.config import load_config


@pytest.fixture(scope="module")
def mapper_dir(mapper_config) -> Path:
    return Path(load_config(mapper_config).generate.mapper)


@pytest.fixture(scope="module")
def pipe(mapper_dir):
    from emogen_cli import EmoGenPipeline

    return EmoGenPipeline.from_pretrained(mapper_dir, device="cpu")


def test_lazy_export_imports_no_torch():
    code = ("import sys, emogen_cli; assert 'torch' not in sys.modules; "
            "assert 'EmoGenPipeline' in dir(emogen_cli); from emogen_cli import EmoGenPipeline; "
            "assert 'torch' in sys.modules and EmoGenPipeline.__name__ == 'EmoGenPipeline'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_call_fusion_and_metadata(pipe, mapper_dir):
    assert pipe.config.model.resolution == 16  # the bundle's training size when no config is given
    assert pipe.to("cpu") is pipe and pipe.device.type == "cpu" and pipe.to(torch.float32).dtype == torch.float32
    assert pipe.pipe.unet.dtype == torch.float32 and pipe.negative.dtype == torch.float32
    out = pipe(emotion="awe", prompt="{} street", num_images_per_prompt=3, seed=4, num_inference_steps=2, batch_size=2)
    assert len(out.images) == 3 and all(im.size == (16, 16) for im in out.images)
    assert [m["seed"] for m in out.metadata] == [4, 5, 6]
    meta = out.metadata[0]
    assert meta["emotion"] == "awe" and meta["prompt"] == "{} street" and meta["steps"] == 2
    assert meta["mapper"] == str(mapper_dir) and len(meta["mapper_sha256"]) == 64
    prompt, negative, params = parse_infotext(out.infotexts[1])
    assert prompt == "<awe> street" and negative == ""
    assert params["Seed"] == "5" and params["Steps"] == "2" and params["Emotion"] == "awe"
    # Image i has seed seed+i whatever the batch: the second image alone equals it in the batch of 2.
    alone = pipe(emotion="awe", prompt="{} street", seed=5, num_inference_steps=2)
    a, b = np.asarray(alone.images[0]).astype(int), np.asarray(out.images[1]).astype(int)
    assert np.abs(a - b).max() <= 2  # batch of 1 vs 2: other tensor shapes, so float rounding may differ

    negative = pipe(emotion="awe", num_inference_steps=2, negative_prompt="blurry, dark")
    assert negative.metadata[0]["negative_prompt"] == "blurry, dark"
    assert parse_infotext(negative.infotexts[0])[1] == "blurry, dark"

    fused = pipe(emotion=["amusement", "fear"], fusion="embedding", weights=[0.7, 0.3], num_inference_steps=2)
    assert fused.metadata[0]["fusion"] == {"mode": "embedding", "weights": [0.7, 0.3]}
    assert parse_infotext(fused.infotexts[0])[2]["Emotion"] == "amusement+fear"
    tokens = pipe(emotion="amusement,fear,awe", num_inference_steps=2)  # three side-by-side tokens: placeholders grow
    assert tokens.metadata[0]["emotions"] == ["amusement", "fear", "awe"]
    assert parse_infotext(tokens.infotexts[0])[0] == "<amusement> <fear> <awe>"

    from emogen_cli.core.errors import EmogenError

    with pytest.raises(EmogenError, match="Did you mean 'awe'"):
        pipe(emotion="awf")
    with pytest.raises(EmogenError, match="mode embedding"):
        pipe(emotion=["awe", "fear"], weights=[1, 0])
    with pytest.raises(EmogenError, match="only an empty"):
        pipe(emotion="awe", prompt="{red} {}")
    assert pipe.display_prompt(pipe.request("awe", "{{logo}} {}")) == "{logo} <awe>"


def test_encode_prompt_in_a_plain_diffusers_pipeline_matches_emogen_generate(pipe, mapper_config, tmp_path):
    """encode_prompt's embeddings fed to an ordinary StableDiffusionPipeline give the images `emogen generate` writes."""
    from diffusers import StableDiffusionPipeline, UniPCMultistepScheduler

    from emogen_cli.outputs.generate import generate

    cfg = load_config(mapper_config)
    result = generate(cfg, [pipe.request("awe", "{} cup", 2)], out=tmp_path)
    assert [r["seed"] for r in result["images"]] == [0, 1]

    sd = StableDiffusionPipeline.from_pretrained(pipe.base_model, safety_checker=None, requires_safety_checker=False)
    sd.scheduler = UniPCMultistepScheduler.from_config(sd.scheduler.config)
    sd.set_progress_bar_config(disable=True)
    prompt_embeds, negative_prompt_embeds = pipe.encode_prompt("awe", "{} cup", seeds=[0, 1])
    assert prompt_embeds.shape == (2, 77, 32) and negative_prompt_embeds.shape == (2, 77, 32)
    images = sd(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds, generator=[torch.Generator().manual_seed(s) for s in (0, 1)], num_inference_steps=2,
                guidance_scale=7.5, height=16, width=16).images
    for i, image in enumerate(images):
        written = np.asarray(Image.open(tmp_path / f"awe-cup-{i:05d}.png")).astype(int)
        # Same shapes and the same computation; a tolerance of 1 level covers PNG-vs-PIL rounding paths only.
        assert np.abs(np.asarray(image).astype(int) - written).max() <= 1


def test_hub_repo_id_offline_error_and_cached_snapshot(mapper_dir, mapper_config, tmp_path, monkeypatch, cli):
    import shutil

    import huggingface_hub.constants

    from emogen_cli import EmoGenPipeline
    from emogen_cli.core.errors import EmogenError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(EmogenError) as missing:
        EmoGenPipeline.from_pretrained("someone/emogen-nothing")
    assert "'someone/emogen-nothing'" in missing.value.message
    assert "hf download someone/emogen-nothing" in missing.value.hint

    # A published bundle in the hub cache (as `hf download` leaves it) loads by its repo id.
    repo = tmp_path / "hub" / "models--someone--emogen-tiny"
    shutil.copytree(mapper_dir, repo / "snapshots" / ("0" * 40), ignore=shutil.ignore_patterns("checkpoints"))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    loaded = EmoGenPipeline.from_pretrained("someone/emogen-tiny", config=load_config(mapper_config))
    assert loaded.pipe is not None and loaded.metadata(loaded.request("awe"), 0)["mapper"] == "someone/emogen-tiny"
    result = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "1", "--mapper", "someone/emogen-tiny",
                 "--out", tmp_path / "gen", "--json")
    assert result.code == 0, result.err
    assert result.json["images"][0]["mapper"] == "someone/emogen-tiny"


def test_emotion_token_is_never_silently_cut(pipe, cli, mapper_config, tmp_path):
    """The tiny tokenizer is character-level: a 100-letter word is 100 tokens (CLIP reads 75)."""
    from emogen_cli.core.errors import EmogenError

    warned = []
    pipe.reporter.warn = warned.append
    pipe.check(pipe.request("awe", "{} " + "x" * 100))
    assert len(warned) == 1 and "101 tokens long" in warned[0] and "x" * 26 in warned[0]
    with pytest.raises(EmogenError, match=r"101 tokens long and its emotion token <emotion> is token 101"):
        pipe(emotion="awe", prompt="y" * 100 + " {}", num_inference_steps=2)
    result = cli("transfer", "-c", mapper_config, "-e", "awe", "z" * 100 + " {}", "-n", "1", "--out", tmp_path)
    assert result.code == 1 and "tokens long" in result.err and "Traceback" not in result.err
    assert not list(tmp_path.glob("*.png"))
    braces = cli("transfer", "-c", mapper_config, "-e", "awe", "-t", "{red} {}", "-n", "1", "--out", tmp_path)
    assert braces.code == 1 and "braces" in braces.err and "Traceback" not in braces.err


def test_model_card_names_base_model_and_steps(mapper_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(mapper_dir / "README.md")
    config = json.loads((mapper_dir / "config.json").read_text())
    assert card.data.library_name == "emogen" and "emogen" in card.data.tags
    assert f"Base model: `{config['base_model']}`" in card.text
    assert f"Steps: {config['steps']}," in card.text and "Class order: amusement, awe" in card.text
    assert "EmoGenPipeline.from_pretrained" in card.text and "emogen export" in card.text
    assert "lambda_attr = 0.01" in card.text and "## Evaluation" not in card.text


def test_model_card_shows_an_evaluate_report(mapper_dir, tmp_path):
    import shutil

    from huggingface_hub import ModelCard

    from emogen_cli.stage2.card import write_model_card

    bundle = tmp_path / "bundle"
    shutil.copytree(mapper_dir, bundle, ignore=shutil.ignore_patterns("checkpoints"))
    report = {"images": 40, "metrics": {"fid": {"value": 41.5}, "lpips": {"value": 0.7125},
                                        "sem-c": {"value": None, "unavailable": "no scene model"}}}
    (bundle / "evaluation").mkdir()
    (bundle / "evaluation" / "report.json").write_text(json.dumps(report))
    card = ModelCard.load(write_model_card(bundle))
    assert "on 40 generated images" in card.text and "| fid | 41.5 |" in card.text and "| lpips | 0.7125 |" in card.text
    assert "sem-c" not in card.text


def test_call_docstring_example_runs(mapper_dir, tmp_path, monkeypatch):
    """The example in `EmoGenPipeline.__call__`'s docstring runs as written (on the quick start's bundle path)."""
    import doctest

    from emogen_cli.pipeline import EmoGenPipeline

    (tmp_path / "runs" / "demo").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "mapper").symlink_to(mapper_dir)
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestFinder().find(EmoGenPipeline.__call__, "EmoGenPipeline.__call__", globs={})[0]
    assert len(test.examples) >= 5
    result = doctest.DocTestRunner(verbose=False).run(test)
    assert result.failed == 0 and result.attempted == len(test.examples)


def test_from_pipe_output_types_and_step_callback(pipe):
    """from_pipe on a plain StableDiffusionPipeline gives from_pretrained's image; output_type and the
    step callback behave as in diffusers (the callback can stop the loop and edit the latents)."""
    from diffusers import StableDiffusionPipeline

    from emogen_cli.pipeline import EmoGenPipeline

    sd = StableDiffusionPipeline.from_pretrained(pipe.base_model, safety_checker=None, requires_safety_checker=False)
    scheduler = type(sd.scheduler)
    other = EmoGenPipeline.from_pipe(sd, mapper=pipe.mapper_path)
    assert type(sd.scheduler) is scheduler  # the user's pipeline keeps its own sampler
    a = np.asarray(pipe("awe", num_inference_steps=2, seed=3).images[0]).astype(int)
    b = np.asarray(other("awe", num_inference_steps=2, seed=3).images[0]).astype(int)
    assert np.abs(a - b).max() <= 1
    arr = pipe("awe", num_images_per_prompt=2, num_inference_steps=2, output_type="np").images
    assert arr.shape == (2, 16, 16, 3) and 0 <= arr.min() and arr.max() <= 1
    assert pipe("awe", num_inference_steps=2, output_type="pt").images.shape == (1, 3, 16, 16)
    assert pipe("awe", num_inference_steps=2, output_type="latent").images.shape[:2] == (1, 4)

    steps = []

    def stop_after_first(p, step, timestep, tensors):
        steps.append(step)
        p._interrupt = True
        return tensors

    pipe("awe", num_inference_steps=4, callback_on_step_end=stop_after_first)
    assert steps == [0]

    def zero_latents(p, step, timestep, tensors):
        return {"latents": torch.zeros_like(tensors["latents"])}

    zeroed = pipe("awe", num_inference_steps=2, output_type="latent", callback_on_step_end=zero_latents).images
    assert torch.count_nonzero(zeroed) == 0


@pytest.mark.skipif("torch.cuda.is_available()")
def test_a_diffusers_users_script_runs_unchanged_on_cpu(mapper_dir):
    """Issue 15's script, as a diffusers user writes it: from_pretrained, enable_model_cpu_offload (a warned
    no-op without a GPU, where diffusers raises), the positional emotion, diffusers' argument names and a
    torch.Generator; the images equal the same call without offload."""
    import torch

    from emogen_cli import EmoGenPipeline
    from emogen_cli.core.reporting import Reporter

    class Notes(Reporter):
        def __init__(self) -> None:
            self.warnings: list[str] = []

        def warn(self, message: str) -> None:
            self.warnings.append(message)

    notes = Notes()
    pipe = EmoGenPipeline.from_pretrained(mapper_dir, reporter=notes)
    pipe.enable_model_cpu_offload()
    assert any("enable_model_cpu_offload() needs a GPU" in w for w in notes.warnings)
    images = pipe("awe", prompt="a {} lake", num_inference_steps=3, generator=torch.Generator().manual_seed(0)).images
    again = pipe("awe", prompt="a {} lake", num_inference_steps=3, seed=0).images
    assert len(images) == 1 and images[0].tobytes() == again[0].tobytes()
