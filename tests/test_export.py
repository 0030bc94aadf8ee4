"""`emogen export`: embeddings that diffusers, AUTOMATIC1111 and ComfyUI load."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emogen_cli.core.config import load_config


@pytest.fixture(scope="module")
def mapper_dir(mapper_config) -> Path:
    return Path(load_config(mapper_config).generate.mapper)


def _sd(base: str):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(base, safety_checker=None, requires_safety_checker=False)


def _input_rows(sd, prompt: str) -> tuple[list[int], torch.Tensor]:
    """The token ids of `prompt` (after diffusers' multi-vector expansion) and their input-embedding rows."""
    text = sd.maybe_convert_prompt(prompt, sd.tokenizer)
    ids = sd.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        return ids[0].tolist(), sd.text_encoder.get_input_embeddings()(ids)[0]


@pytest.mark.parametrize("samples", [None, 3])
def test_diffusers_export_round_trips_through_load_textual_inversion(cli, mapper_config, mapper_dir, tmp_path, samples):
    from emogen_cli.outputs.export import emotion_embedding
    from emogen_cli.stage2.mapper import load_mapper

    args = ["--samples", str(samples)] if samples else []
    result = cli("export", "awe", "--mapper", mapper_dir, "--out", tmp_path, "--seed", "3", "--json", *args)
    assert result.code == 0, result.err
    path = tmp_path / "emogen-awe" / "learned_embeds.safetensors"
    assert result.json["files"] == [str(path)] and result.json["prompt_words"] == {"awe": "<emogen-awe>"}
    saved = load_file(str(path))
    n = samples or 1
    word = "<emogen-awe>"
    assert list(saved) == [word] and saved[word].shape == (n, 32) and saved[word].dtype == torch.float32
    bundle = load_mapper(mapper_dir)
    expected = emotion_embedding(bundle, "awe", samples, seed=3)
    assert torch.equal(saved[word], expected)
    if samples is None:  # the mapping of the Gaussian's mean
        with torch.no_grad():
            assert torch.equal(expected, bundle.mapper(bundle.space.mean[bundle.space.index("awe")][None]))

    sd = _sd(bundle.config["base_model"])
    sd.load_textual_inversion(str(tmp_path / "emogen-awe"))  # the real client, from the folder
    ids, rows = _input_rows(sd, "a photo of <emogen-awe>")
    awe_ids = sd.tokenizer.convert_tokens_to_ids([word] + [f"{word}_{k}" for k in range(1, n)])
    assert ids[-n:] == awe_ids
    assert torch.equal(rows[-n:], saved[word])
    assert f'load_textual_inversion("{tmp_path / "emogen-awe"}")' in result.json["example"]


def test_a1111_export_follows_the_webui_loader_rules(cli, mapper_dir, tmp_path):
    result = cli("export", "all", "--format", "a1111", "--mapper", mapper_dir, "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert len(result.json["emotions"]) == 8 and len(result.json["files"]) == 16
    # A1111 names an embedding after its file and replaces that word in every prompt: never an ordinary word
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"emogen-{e}{ext}" for e in result.json["emotions"] for ext in (".pt", ".safetensors"))
    assert result.json["prompt_words_by_tool"]["a1111"]["awe"] == "emogen-awe"
    assert result.json["prompt_words_by_tool"]["comfyui"]["awe"] == "embedding:emogen-awe"
    for emotion in result.json["emotions"]:
        # AUTOMATIC1111's create_embedding_from_data: exactly one string_to_param entry, [n, text width].
        data = torch.load(tmp_path / f"emogen-{emotion}.pt", weights_only=True)
        assert len(data["string_to_param"]) == 1 and data["name"] == f"emogen-{emotion}"
        vectors = next(iter(data["string_to_param"].values()))
        assert vectors.ndim == 2 and vectors.shape[-1] == 32  # 32: the tiny text width (SD 1.x: 768)
        assert set(data["string_to_token"]) == set(data["string_to_param"]) == {"*"}
        assert isinstance(data["step"], int) and isinstance(data["sd_checkpoint_name"], str)
        # The .safetensors: one tensor (the "emb_params" layout A1111, ComfyUI and diffusers read).
        flat = load_file(str(tmp_path / f"emogen-{emotion}.safetensors"))
        assert list(flat) == ["emb_params"] and torch.equal(flat["emb_params"], vectors)

    sd = _sd(json.loads((mapper_dir / "config.json").read_text())["base_model"])
    sd.load_textual_inversion(str(tmp_path / "emogen-fear.safetensors"), token="emogen-fear")
    _, rows = _input_rows(sd, "a man in fear of emogen-fear")
    assert torch.equal(rows[-1:], load_file(str(tmp_path / "emogen-fear.safetensors"))["emb_params"])
    plain = sd.tokenizer("a man in fear of", add_special_tokens=False).input_ids  # the ordinary word is untouched
    assert sd.tokenizer(sd.maybe_convert_prompt("a man in fear of", sd.tokenizer), add_special_tokens=False).input_ids == plain

    again = cli("export", "all", "--format", "a1111", "--mapper", mapper_dir, "--out", tmp_path)
    assert again.code == 1 and "already exists" in again.err and "--overwrite" in again.err
    assert cli("export", "all", "--format", "a1111", "--mapper", mapper_dir, "--out", tmp_path, "--overwrite").code == 0
    bad = cli("export", "awe", "--format", "ckpt", "--mapper", mapper_dir, "--out", tmp_path)
    assert bad.code == 1 and "--format must be one of diffusers, a1111; got 'ckpt'" in bad.err


def test_export_name_template(cli, mapper_dir, tmp_path):
    one = cli("export", "awe", "--format", "a1111", "--name", "my_awe", "--mapper", mapper_dir, "--out", tmp_path,
              "--json")
    assert one.code == 0, one.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_awe.pt", "my_awe.safetensors"]
    assert torch.load(tmp_path / "my_awe.pt", weights_only=True)["name"] == "my_awe"
    many = cli("export", "awe,fear", "--name", "mood-{emotion}", "--mapper", mapper_dir, "--out", tmp_path / "d")
    assert many.code == 0, many.err
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["mood-awe", "mood-fear"]
    assert "Prompt words (diffusers): <mood-awe>, <mood-fear>" in many.out and "For example:" in many.out
