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
    from emogen_cli.core.config import load_config
    from emogen_cli.data.prepare import prepare
    from emogen_cli.testing.synthetic import make_synthetic_emoset
    from emogen_cli.testing.tiny import build_tiny_bundle
    from emogen_cli.stage1.train_encoder import train_encoder
    from emogen_cli.stage2.train_mapper import train_mapper

    base = tmp_path_factory.mktemp("gen")
    bundle = build_tiny_bundle(base / "tiny")
    make_synthetic_emoset(base / "EmoSet", broken=False)
    path = base / "tiny.yaml"
    path.write_text(f"""
model: {{pretrained: {bundle}, clip: {bundle / 'clip'}, resolution: 16}}
data: {{root: {base / 'EmoSet'}, prepared: {base / 'prepared'}, num_workers: 0}}
encoder: {{backbone: {bundle / 'resnet'}, emotion_dim: 16, image_size: 32, batch_size: 8, max_steps: 2, output: {base / 'encoder'}}}
mapper: {{encoder: {base / 'encoder'}, hidden_dim: 32, batch_size: 4, max_steps: 2, output: {base / 'mapper'}}}
generate: {{mapper: {base / 'mapper'}, steps: 2, batch_size: 2}}
""")
    cfg = load_config(path)
    prepare(cfg, cache_latents=True)
    train_encoder(cfg)
    train_mapper(cfg)
    return path


@pytest.fixture
def tiny_config(tiny_bundle, emoset, tmp_path) -> Path:
    """A config file pointing every model at the tiny bundle and outputs into tmp_path."""
    root, _ = emoset
    text = f"""
model: {{pretrained: {tiny_bundle}, clip: {tiny_bundle / 'clip'}, resolution: 16}}
data: {{root: {root}, prepared: {tmp_path / 'prepared'}, num_workers: 0}}
encoder: {{backbone: {tiny_bundle / 'resnet'}, emotion_dim: 16, image_size: 32, batch_size: 8, epochs: 2,
          checkpoint_every: 4, output: {tmp_path / 'encoder'}}}
mapper: {{encoder: {tmp_path / 'encoder'}, hidden_dim: 32, batch_size: 4, max_steps: 6, checkpoint_every: 3,
         output: {tmp_path / 'mapper'}}}
generate: {{mapper: {tmp_path / 'mapper'}, steps: 2, batch_size: 2, output: {tmp_path / 'generated'}}}
"""
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


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
