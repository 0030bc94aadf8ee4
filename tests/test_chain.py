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
