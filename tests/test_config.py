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


def test_a_verbatim_copy_of_default_yaml_sets_nothing_explicitly(tmp_path):
    """A config copied from configs/default.yaml behaves as no config: the bundle's base model is used and evaluate
    computes what is available (issue 19, point 9). An option is explicit even at its default."""
    from emogen_cli.stage2.mapper import trained_model

    copy = tmp_path / "copy.yaml"
    copy.write_text((REPO / "configs" / "default.yaml").read_text())
    cfg = load_config(copy)
    assert cfg == Config()
    assert not [key for key in _keys() if cfg.is_explicit(key)]
    bundle = {"base_model": "runs/tiny", "clip_model": "runs/tiny/clip"}
    assert trained_model(cfg, "pretrained", bundle) == "runs/tiny" and trained_model(cfg, "clip", bundle) == "runs/tiny/clip"
    # a file value other than the default, and any option, count
    copy.write_text("model: {pretrained: other/model}\nevaluate: {metrics: [fid, lpips, emo-a, sem-c, sem-d]}\n")
    cfg = load_config(copy, {"model.clip": Config().model.clip})
    assert cfg.is_explicit("model.pretrained") and cfg.is_explicit("model.clip")
    assert not cfg.is_explicit("evaluate.metrics")
    assert trained_model(cfg, "pretrained", bundle) == "other/model"
    assert load_config(copy, {"evaluate.metrics": "fid,lpips,emo-a,sem-c,sem-d"}).is_explicit("evaluate.metrics")


def test_evaluate_with_a_copy_of_default_yaml_skips_what_is_missing(cli, tmp_path, monkeypatch):
    """`evaluate -c copy.yaml` treats the copied metric list as "all that are available": a metric whose package
    is missing is noted, not a failure."""
    from PIL import Image

    from emogen_cli.evaluation import evaluate as module
    from emogen_cli.evaluation.evaluate import Unavailable

    images = tmp_path / "imgs"
    images.mkdir()
    for k in range(2):
        Image.new("RGB", (16, 16), (60 * k, 0, 0)).save(images / f"awe-{k:05d}.png")
    copy = tmp_path / "copy.yaml"
    copy.write_text((REPO / "configs" / "default.yaml").read_text())

    def missing(self):
        raise Unavailable("LPIPS needs the lpips package.", "pip install lpips")

    for name in ("fid", "emo_a", "sem_c"):  # the models of the other metrics are not on this machine
        monkeypatch.setattr(module.Evaluation, name, missing)
    monkeypatch.setattr(module.Evaluation, "lpips", missing)
    monkeypatch.setattr(module.Evaluation, "sem_d", lambda self: {"value": 0.5, "per_emotion": {"awe": 0.5}})
    result = cli("evaluate", images, "-c", copy, "--out", tmp_path / "ev", "--json")
    assert result.code == 0, result.err
    assert result.json["metrics"]["lpips"]["value"] is None and "unavailable" in result.json["metrics"]["lpips"]
    named = cli("evaluate", images, "-c", copy, "--metrics", "lpips,sem-d", "--out", tmp_path / "ev2", "--json")
    assert named.code != 0  # asked for by name: its absence is a failure


def _keys() -> list[str]:
    return [f"{s.name}.{f.name}" for s in dataclasses.fields(Config) for f in dataclasses.fields(s.type if isinstance(
        s.type, type) else type(getattr(Config(), s.name)))]


@pytest.mark.parametrize("text, message", [
    ("a: " + "[" * 20000 + "]" * 20000 + "\n", "nest"),  # libyaml's scanner may refuse it first ("nesting depth")
    ("a: " + "[" * 100 + "]" * 100 + "\n", "nests more than 32 levels deep"),
    ("a:\n" + "".join(" " * i + "k:\n" for i in range(1, 1000)), "nests more than 32 levels deep"),
    ("generate: {negative_prompt: '" + "x" * (1 << 20) + "'}\n", "a config file is at most 1 MiB"),
])
def test_config_file_size_and_nesting_are_bounded_before_parsing(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(EmogenError) as info:
        load_config(path)
    assert message in info.value.message and "\n" not in str(info.value)


def test_a_huge_config_file_is_refused_without_being_read(tmp_path):
    import time

    path = tmp_path / "huge.yaml"
    with open(path, "wb") as f:  # 4 GiB, sparse: no disk space used, and never read past the first MiB
        f.truncate(4 << 30)
    start = time.perf_counter()
    with pytest.raises(EmogenError, match=r"is 4096\.0 MiB; a config file is at most 1 MiB"):
        load_config(path)
    assert time.perf_counter() - start < 5
