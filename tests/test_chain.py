"""The tiny chain's config has one writer (emogen_cli/testing/chain.py): configs/tiny.yaml and
`emogen dev tiny-config` are its output, and what it builds loads as a valid Config."""

from __future__ import annotations

from pathlib import Path

import yaml

from emogen_cli.core.config import load_config
from emogen_cli.testing.chain import DEMO_HEADER, DEMO_HEADER_SDXL, demo_config, tiny_chain_config, write_config

REPO = Path(__file__).resolve().parents[1]


def test_demo_yaml_is_the_builders_output(tmp_path):
    shipped = (REPO / "configs" / "tiny.yaml").read_text()
    assert yaml.safe_load(shipped) == demo_config()
    assert shipped == write_config(tmp_path / "tiny.yaml", demo_config(), DEMO_HEADER).read_text()


def test_sdxl_demo_yaml_is_the_builders_output(cli, tmp_path):
    shipped = (REPO / "configs" / "tiny-sdxl.yaml").read_text()
    assert yaml.safe_load(shipped) == demo_config(family="sdxl")
    assert shipped == write_config(tmp_path / "x.yaml", demo_config(family="sdxl"), DEMO_HEADER_SDXL).read_text()
    result = cli("dev", "tiny-config", tmp_path / "tiny-sdxl.yaml", "--family", "sdxl", "--json")
    assert result.code == 0, result.err
    assert (tmp_path / "tiny-sdxl.yaml").read_text() == shipped
    cfg = load_config(REPO / "configs" / "tiny-sdxl.yaml")
    assert cfg.model.pretrained == "runs/tiny-sdxl" and cfg.model.resolution == 32 and cfg.model.family == "auto"


def test_dev_tiny_config_writes_the_demo_file(cli, tmp_path):
    out = tmp_path / "nested" / "tiny.yaml"
    result = cli("dev", "tiny-config", out, "--json")
    assert result.code == 0, result.err
    assert result.json["path"] == str(out)
    assert out.read_text() == (REPO / "configs" / "tiny.yaml").read_text()
    other = tmp_path / "other.yaml"
    assert cli("dev", "tiny-config", other, "--models", "m", "--data", "d", "--runs", "r").code == 0
    cfg = load_config(other)
    assert (cfg.model.pretrained, cfg.data.root, cfg.mapper.output, cfg.evaluate.object_model) == (
        "m", "d", str(Path("r") / "mapper"), str(Path("m") / "classifier"))


def test_overrides_set_and_add_keys_and_the_result_loads(tmp_path):
    config = tiny_chain_config(tmp_path / "models", tmp_path / "EmoSet", tmp_path / "out", resolution=64,
                               overrides={"mapper.max_steps": 3, "runtime.device": "cpu",
                                          "mapper.confidence": tmp_path / "c.json"})
    cfg = load_config(write_config(tmp_path / "chain.yaml", config))
    assert cfg.model.resolution == 64 and cfg.mapper.max_steps == 3 and cfg.runtime.device == "cpu"
    assert cfg.mapper.confidence == str(tmp_path / "c.json")
    assert cfg.model.clip == str(tmp_path / "models" / "clip")
    assert cfg.mapper.encoder == cfg.encoder.output == str(tmp_path / "out" / "encoder")
    assert cfg.generate.mapper == cfg.mapper.output


def test_the_quick_start_can_run_twice(cli, stage1, tmp_path):
    """The README one-liner again: dev commands accept their own identical output, prepare reuses its manifest,
    a trainer whose --out holds the finished output of the same run says so; another run there is refused."""
    for args in (["dev", "tiny-bundle", tmp_path / "tiny"], ["dev", "synthetic-emoset", tmp_path / "synthetic"]):
        first = cli(*args, "--json")
        assert first.code == 0 and first.json["already_there"] is False, first.err
        files = {p: p.read_bytes() for p in Path(args[-1]).rglob("*") if p.is_file()}
        again = cli(*args, "--json")
        assert again.code == 0 and again.json["already_there"] is True, again.err
        assert {p: p.read_bytes() for p in Path(args[-1]).rglob("*") if p.is_file()} == files
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no scratch left
    (tmp_path / "tiny" / "unet" / "config.json").write_text("{}")  # not what tiny-bundle writes: refused
    changed = cli("dev", "tiny-bundle", tmp_path / "tiny")
    assert changed.code == 1 and "does not hold what this command writes" in changed.err

    assert cli("prepare", "-c", stage1, "--cache-latents").code == 0
    encoder = tmp_path / "encoder" / "config.json"
    before = encoder.read_bytes()
    done = cli("train-encoder", "-c", stage1, "--max-steps", "2", "--json")
    assert done.code == 0 and done.json["already_done"] is True and done.json["steps"] == 2, done.err
    assert encoder.read_bytes() == before
    mapper = cli("train-mapper", "-c", stage1, "--max-steps", "2", "--json")
    assert mapper.code == 0 and "already_done" not in mapper.json, mapper.err
    bundle = (tmp_path / "mapper" / "mapper.safetensors").read_bytes()
    again = cli("train-mapper", "-c", stage1, "--max-steps", "2", "--json")
    assert again.code == 0 and again.json["already_done"] is True and again.json["steps"] == 2, again.err
    assert (tmp_path / "mapper" / "mapper.safetensors").read_bytes() == bundle
    other = cli("train-mapper", "-c", stage1, "--max-steps", "3")
    assert other.code == 1 and "from other settings or data" in other.err and "rm -rf" in other.err
