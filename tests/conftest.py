"""Shared fixtures: tiny random-weight models and a synthetic EmoSet, built once per session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    from emogen_cli.testing.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture(scope="session")
def emoset(tmp_path_factory) -> tuple[Path, dict]:
    from emogen_cli.testing.synthetic import make_synthetic_emoset

    root = tmp_path_factory.mktemp("emoset") / "EmoSet"
    return root, make_synthetic_emoset(root)


@pytest.fixture(scope="session")
def mapper_config(tmp_path_factory) -> Path:
    """A config whose generate.mapper is a trained tiny mapper bundle (built once per session)."""
    from emogen_cli.testing.chain import build_tiny_chain

    return build_tiny_chain(tmp_path_factory.mktemp("gen"), overrides={
        "encoder.max_steps": 2, "mapper.max_steps": 2, "generate.steps": 2, "generate.batch_size": 2})


@pytest.fixture(scope="session")
def sdxl_config(tmp_path_factory) -> Path:
    """mapper_config's chain on the tiny SDXL (both text towers, model_index.json: StableDiffusionXLPipeline),
    built once per session: prepare -> train-encoder -> train-mapper, then every inference command reads it."""
    from emogen_cli.testing.chain import build_tiny_chain

    return build_tiny_chain(tmp_path_factory.mktemp("sdxl"), family="sdxl", overrides={
        "encoder.max_steps": 2, "mapper.max_steps": 2, "generate.steps": 2, "generate.batch_size": 2})


@pytest.fixture
def tiny_config(tiny_bundle, emoset, tmp_path) -> Path:
    """A config file pointing every model at the tiny bundle and outputs into tmp_path."""
    from emogen_cli.testing.chain import tiny_chain_config, write_config

    root, _ = emoset
    return write_config(tmp_path / "tiny.yaml", tiny_chain_config(tiny_bundle, root, tmp_path, overrides={
        "encoder.epochs": 2, "encoder.checkpoint_every": 4, "mapper.max_steps": 6, "mapper.checkpoint_every": 3,
        "generate.steps": 2, "generate.batch_size": 2}))


@pytest.fixture
def stage1(tiny_config) -> Path:
    """tiny_config with a prepared set (cached latents) and a 2-step stage-1 encoder, ready for train-mapper."""
    from emogen_cli.core.config import load_config
    from emogen_cli.data.prepare import prepare
    from emogen_cli.stage1.train_encoder import train_encoder

    cfg = load_config(tiny_config, {"encoder.max_steps": 2})
    prepare(cfg, cache_latents=True)
    train_encoder(cfg)
    return tiny_config


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self):
        return json.loads(self.out)


@pytest.fixture
def cli(capsys):
    """Run `emogen ARGS` in-process through the real entry point (error rendering included)."""
    from emogen_cli.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
