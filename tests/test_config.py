import dataclasses
from pathlib import Path

import pytest
import yaml

from emogen_cli.core.config import Config, load_config
from emogen_cli.core.emotions import EMOTIONS, normalise_attribute, parse_emotions, validate_emotion
from emogen_cli.core.errors import EmogenError

REPO = Path(__file__).resolve().parents[1]


def test_default_yaml_matches_built_in_defaults():
    from_file = load_config(REPO / "configs" / "default.yaml")
    assert from_file == Config()
    assert from_file.model.pretrained == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert from_file.model.clip == "openai/clip-vit-large-patch14"
    assert (from_file.mapper.lambda_attr, from_file.mapper.lambda_emo, from_file.mapper.threshold) == (0.01, 0.0, 0.0)
    assert (from_file.encoder.lr, from_file.encoder.batch_size, from_file.encoder.dropout) == (1e-3, 32, 0.5)
    assert (from_file.generate.steps, from_file.generate.guidance, from_file.generate.scheduler) == (50, 7.5, "unipc")


def test_tiny_yaml_is_valid():
    cfg = load_config(REPO / "configs" / "tiny.yaml")
    assert cfg.model.resolution == 16 and cfg.mapper.max_steps == 20


def test_overrides_win_and_none_is_ignored(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"mapper": {"lr": 0.5, "batch_size": 3}}))
    cfg = load_config(path, {"mapper.lr": 0.25, "mapper.batch_size": None, "runtime.seed": "7"})
    assert cfg.mapper.lr == 0.25 and cfg.mapper.batch_size == 3 and cfg.runtime.seed == 7


@pytest.mark.parametrize(
    "data, message",
    [
        ({"mapper": {"lamda_attr": 1}}, "Unknown config key 'mapper.lamda_attr'"),
        ({"mapper": {"lr": "fast"}}, "'mapper.lr' must be a number"),
        ({"encoder": {"batch_size": 1.5}}, "'encoder.batch_size' must be an integer"),
        ({"data": {"balance": "maybe"}}, "'data.balance' must be one of per_kind, union, none"),
        ({"generate": {"scheduler": "magic"}}, "'generate.scheduler' must be one of"),
        ({"generate": {"steps": 0}}, "'generate.steps' must be positive"),
        ({"bogus": {"x": 1}}, "Unknown config key 'bogus.x'"),
        ({"mapper": 3}, "section 'mapper' must be a mapping"),
    ],
)
def test_bad_config_is_rejected_with_the_key_name(tmp_path, data, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(EmogenError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(path)


def test_unknown_key_gets_a_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("mapper:\n  lamda_attr: 1\n")
    with pytest.raises(EmogenError) as info:
        load_config(path)
    assert info.value.hint == "Did you mean 'mapper.lambda_attr'?"


def test_missing_config_file():
    with pytest.raises(EmogenError, match="does not exist"):
        load_config("nope.yaml")


def test_every_config_field_has_a_type_the_loader_understands():
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(getattr(Config(), section.name)):
            load_config(None, {f"{section.name}.{f.name}": getattr(getattr(Config(), section.name), f.name)})


def test_emotion_validation():
    assert EMOTIONS[:4] == ("amusement", "awe", "contentment", "excitement")
    assert validate_emotion(" Awe ") == "awe"
    with pytest.raises(EmogenError) as info:
        validate_emotion("sadnes")
    assert "Unknown emotion 'sadnes'" in info.value.message and "Did you mean 'sadness'?" == info.value.hint
    with pytest.raises(EmogenError) as info:
        validate_emotion("xyzzy")
    assert "Choose one of" in info.value.hint
    assert parse_emotions(["all"]) == list(EMOTIONS)
    assert parse_emotions(["fear,awe"]) == ["fear", "awe"]
    assert parse_emotions(["all", "awe"]) == list(EMOTIONS)  # 'all' overlaps by design
    with pytest.raises(EmogenError, match="'fear' is named twice"):
        parse_emotions(["fear,awe", "fear"])  # would silently make half the images asked for


def test_attribute_normalisation():
    assert normalise_attribute("  Amusement Park ") == "amusement_park"
    assert normalise_attribute("mountain   snowy") == "mountain_snowy"
