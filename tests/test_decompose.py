import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from emogen_cli.core.config import load_config


def _planted_bundle(mapper_config, tmp_path, word: str):
    """A copy of the trained bundle whose mapper always outputs `word`'s token embedding."""
    from safetensors.torch import load_file

    from emogen_cli.core.pretrained import load_sd_components

    cfg = load_config(mapper_config)
    bundle = tmp_path / "planted"
    shutil.copytree(cfg.generate.mapper, bundle)
    parts = load_sd_components(cfg.model.pretrained, vae=False, unet=False)
    (token,) = parts["tokenizer"](word, add_special_tokens=False).input_ids
    target = parts["text_encoder"].get_input_embeddings().weight[token].detach()
    weights = load_file(str(bundle / "mapper.safetensors"))
    last = max(k for k in weights if k.endswith(".weight"))
    weights[last] = torch.zeros_like(weights[last])
    weights[last.replace("weight", "bias")] = target.clone()
    save_file(weights, str(bundle / "mapper.safetensors"))
    # A planted word matches its own text exactly only where both pool at end-of-text (the default
    # placeholder pooling reads the state at the placeholder, one position earlier than "q"'s end-of-text).
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**config, "semantic_token": "eos"}))
    return bundle


def test_decompose_ranks_the_planted_attribute_first(cli, mapper_config, tmp_path):
    bundle = _planted_bundle(mapper_config, tmp_path, "q")
    names = tmp_path / "attributes.txt"
    names.write_text("mountain snowy\nvalley  # a comment\nq\nflower_field\nx\n\n")
    result = cli("decompose", "awe,fear", "--attributes", names, "--mapper", bundle, "-c", mapper_config,
                 "--samples", "4", "--top", "3", "--json")
    assert result.code == 0, result.err
    for entry in result.json["emotions"]:
        ranked = entry["attributes"]
        assert [a["rank"] for a in ranked] == [1, 2, 3]
        assert ranked[0]["name"] == "q" and abs(ranked[0]["similarity"] - 1) < 1e-4
        assert ranked[0]["similarity"] > ranked[1]["similarity"] >= ranked[2]["similarity"]
    assert result.json["attributes"] == 5


def test_decompose_bundle_attributes_and_table(cli, mapper_config):
    result = cli("decompose", "awe", "-c", mapper_config, "--samples", "3", "--json")
    assert result.code == 0, result.err
    attributes = json.loads((Path(load_config(mapper_config).generate.mapper) / "attributes.json").read_text())
    names = attributes["vocabulary"]["names"]  # by default the L_attr vocabulary (the official lists for EmoSet)
    ranked = result.json["emotions"][0]["attributes"]
    assert len(ranked) == min(6, len(names)) and all(a["name"] in names for a in ranked)
    for a in ranked:  # the confidence where the table has the attribute, else none
        row = attributes["confidence"].get(a["name"])
        assert (a["confidence"] is None) if row is None else isinstance(a["confidence"], float)
    human = cli("decompose", "awe", "-c", mapper_config, "--samples", "3")
    assert human.code == 0 and "awe: closest of" in human.out and "similarity" in human.out


def test_decompose_labels_generated_images(cli, mapper_config, tmp_path):
    out = tmp_path / "gen"
    assert cli("generate", "-e", "awe,fear", "-n", "2", "-c", mapper_config, "--out", out).code == 0
    result = cli("decompose", "--images", out, "-c", mapper_config, "--json")
    assert result.code == 0, result.err
    labels = result.json["labels"]
    assert labels["count"] == 4 and set(labels["by_emotion"]) == {"awe", "fear"}
    lines = [json.loads(line) for line in (out / "attribute_labels.jsonl").read_text().splitlines()]
    assert sorted(r["path"] for r in lines) == ["awe-00000.png", "awe-00001.png", "fear-00000.png", "fear-00001.png"]
    assert all(r["attribute"] == r["top"][0][0] and r["score"] >= r["top"][-1][1] for r in lines)


def test_decompose_errors(cli, mapper_config, tmp_path):
    nothing = cli("decompose", "-c", mapper_config)
    assert nothing.code == 1 and "Nothing to decompose" in nothing.err
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    no_names = cli("decompose", "awe", "--attributes", empty, "-c", mapper_config)
    assert no_names.code == 1 and "lists no names" in no_names.err
    bad_json = tmp_path / "names.json"
    bad_json.write_text("{oops")
    broken = cli("decompose", "awe", "--attributes", bad_json, "-c", mapper_config)
    assert broken.code == 1 and "not valid JSON" in broken.err and "Traceback" not in broken.err
    no_images = cli("decompose", "--images", tmp_path / "none", "-c", mapper_config)
    assert no_images.code == 1 and "is not a folder of images" in no_images.err
