"""Fault tests: a real `emogen` process is stopped at a chosen moment (EMOGEN_TEST_KILL_AT), then resumed;
the result must equal an uninterrupted run bit for bit (same shapes, same machine, same code path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emogen_cli.core.config import load_config
from emogen_cli.core.errors import EmogenError


@pytest.fixture(scope="module")
def stage1(tiny_bundle, emoset, tmp_path_factory) -> Path:
    """A config with a prepared set (latents cached) and a trained tiny encoder; outputs go to --out."""
    from emogen_cli.data.prepare import prepare
    from emogen_cli.stage1.train_encoder import train_encoder
    from emogen_cli.testing.chain import tiny_chain_config, write_config

    root, _ = emoset
    base = tmp_path_factory.mktemp("resume")
    path = write_config(base / "tiny.yaml", tiny_chain_config(tiny_bundle, root, base, overrides={
        "encoder.epochs": 2, "encoder.checkpoint_every": 6, "encoder.dropout": 0.5, "mapper.max_steps": 6,
        "mapper.checkpoint_every": 3, "mapper.lambda_emo": 0.1, "runtime.device": "cpu"}))
    cfg = load_config(path, {"encoder.max_steps": 2})
    prepare(cfg, cache_latents=True)
    train_encoder(cfg)
    return path


def run_killed(config: Path, command: str, out: Path, point: str, signal: str = "KILL", *args: str):
    """Run `emogen COMMAND` in a subprocess that signals itself at fault point `point`."""
    env = {**os.environ, "EMOGEN_TEST_KILL_AT": point, "EMOGEN_TEST_KILL_SIGNAL": signal, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "emogen_cli", command, "-c", str(config), "--out", str(out), *args],
                          env=env, capture_output=True, text=True, timeout=300)


def same_tensors(a: Path, b: Path) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    for key in x:
        assert torch.equal(x[key], y[key]), key


# -- train-mapper --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mapper_reference(stage1, tmp_path_factory) -> Path:
    from emogen_cli.stage2.train_mapper import train_mapper

    out = tmp_path_factory.mktemp("mapper-ref") / "full"
    train_mapper(load_config(stage1, {"mapper.output": str(out)}))
    return out


@pytest.mark.parametrize("point, signal, code", [
    ("after_optimizer_step:4", "INT", 130),  # Ctrl-C between optimizer.step() and the step counter
    ("checkpoint_written:2", "KILL", -9),  # killed while writing the step-6 checkpoint (before its rename)
])
def test_mapper_resume_after_a_stop_equals_uninterrupted(stage1, mapper_reference, tmp_path, point, signal, code):
    from emogen_cli.core.checkpoint import list_checkpoints, load_checkpoint
    from emogen_cli.stage2.train_mapper import train_mapper

    out = tmp_path / "part"
    killed = run_killed(stage1, "train-mapper", out, point, signal)
    assert killed.returncode == code, killed.stderr[-2000:]
    assert "Traceback" not in killed.stderr
    assert not (out / "config.json").exists()
    ckpts = list_checkpoints(out / "checkpoints")
    if signal == "INT":
        assert "Stopped by Ctrl-C at step 4" in killed.stderr.replace("\n", " ")
        assert ckpts[-1].name == "checkpoint-0000004"
    else:
        assert [c.name for c in ckpts] == ["checkpoint-0000003"]  # the half-written one never appears
    # The checkpoint's counter matches the updates it holds: AdamW's own step count says so.
    _, optimizer, state = load_checkpoint(ckpts[-1])
    assert all(int(s["step"]) == state["step"] for s in optimizer["state"].values())

    result = train_mapper(load_config(stage1, {"mapper.output": str(out)}), resume=True)
    assert result["steps"] == 6
    same_tensors(mapper_reference / "mapper.safetensors", out / "mapper.safetensors")
    same_tensors(mapper_reference / "checkpoints" / "checkpoint-0000006" / "optimizer.safetensors",
                 out / "checkpoints" / "checkpoint-0000006" / "optimizer.safetensors")


def test_mapper_resume_refuses_other_settings_naming_each(stage1, tmp_path):
    from emogen_cli.stage2.train_mapper import train_mapper

    out = tmp_path / "m"
    train_mapper(load_config(stage1, {"mapper.output": str(out), "mapper.max_steps": 3}))
    (out / "config.json").unlink()
    changed = {"mapper.output": str(out), "mapper.lr": 0.01, "runtime.seed": 7, "mapper.batch_size": 2,
               "mapper.lambda_attr": 0.5}
    with pytest.raises(EmogenError) as info:
        train_mapper(load_config(stage1, changed), resume=True)
    message = str(info.value)
    assert "\n" not in message and "checkpoint-0000003" in message
    for difference in ("mapper.lr: 0.001 -> 0.01", "runtime.seed: 0 -> 7", "mapper.batch_size: 4 -> 2",
                       "mapper.lambda_attr: 0.01 -> 0.5"):
        assert difference in message
    assert "mapper.max_steps" not in message  # a longer run is a legitimate resume
    # a longer run with the same settings resumes
    assert train_mapper(load_config(stage1, {"mapper.output": str(out), "mapper.max_steps": 4}), resume=True)["steps"] == 4


def test_emotion_vectors_are_tied_to_their_encoder(stage1, tmp_path):
    from emogen_cli.core.reporting import Reporter
    from emogen_cli.data.emoset import load_prepared
    from emogen_cli.stage1.encoder import load_encoder
    from emogen_cli.stage2.train_mapper import _emotion_vectors

    class Notes(Reporter):
        def __init__(self):
            self.lines = []

        def info(self, message):
            self.lines.append(message)

        def warn(self, message):
            self.lines.append(message)

    cfg = load_config(stage1)
    encoder, prepared = load_encoder(cfg.mapper.encoder), load_prepared(cfg.data.prepared)
    cache, notes = tmp_path / "emotion_vectors.safetensors", Notes()
    first = _emotion_vectors(encoder, prepared, cache, torch.device("cpu"), notes, "encoder-a")
    # the same encoder reuses the file: poison it to prove it is read, not recomputed
    poisoned = {k: v + 1 for k, v in first.items()}
    from emogen_cli.core.files import atomic_save_safetensors

    atomic_save_safetensors(cache, poisoned, metadata={"encoder": "encoder-a"})
    again = _emotion_vectors(encoder, prepared, cache, torch.device("cpu"), notes, "encoder-a")
    assert all(torch.equal(again[k], poisoned[k]) for k in first)
    # another encoder's cache is recomputed
    other = _emotion_vectors(encoder, prepared, cache, torch.device("cpu"), notes, "encoder-b")
    assert all(torch.equal(other[k], first[k]) for k in first)
    assert any("another encoder" in line for line in notes.lines)
    # a half-written cache is detected and recomputed
    cache.write_bytes(cache.read_bytes()[:100])
    again = _emotion_vectors(encoder, prepared, cache, torch.device("cpu"), notes, "encoder-b")
    assert all(torch.equal(again[k], first[k]) for k in first)
    assert any("damaged or truncated" in line for line in notes.lines)


# -- train-encoder -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder_reference(stage1, tmp_path_factory) -> tuple[Path, dict]:
    from emogen_cli.stage1.train_encoder import train_encoder

    out = tmp_path_factory.mktemp("encoder-ref") / "full"
    result = train_encoder(load_config(stage1, {"encoder.output": str(out)}))
    assert result["steps"] == 12 and [h["step"] for h in result["history"]] == [6, 12]  # 6 steps per epoch
    return out, result


@pytest.mark.parametrize("point, signal, code", [
    ("validation:1", "TERM", 130),  # SIGTERM during the first epoch's validation
    ("after_optimizer_step:7", "KILL", -9),  # killed right after the epoch-boundary checkpoint (step 6)
])
def test_encoder_resume_after_a_stop_equals_uninterrupted(stage1, encoder_reference, tmp_path, point, signal, code):
    from emogen_cli.core.checkpoint import list_checkpoints, load_checkpoint
    from emogen_cli.stage1.train_encoder import train_encoder

    reference, expected = encoder_reference
    out = tmp_path / "part"
    killed = run_killed(stage1, "train-encoder", out, point, signal)
    assert killed.returncode == code, killed.stderr[-2000:]
    assert "Traceback" not in killed.stderr
    ckpts = list_checkpoints(out / "checkpoints")
    assert ckpts[-1].name == "checkpoint-0000006"
    state = load_checkpoint(ckpts[-1])[2]
    if signal == "TERM":
        assert "SIGTERM" in killed.stderr and state["history"] == []  # validation of epoch 1 still to do
    else:
        assert [h["step"] for h in state["history"]] == [6]

    result = train_encoder(load_config(stage1, {"encoder.output": str(out)}), resume=True)
    assert result["history"] == expected["history"]
    assert result["best_val_accuracy"] == expected["best_val_accuracy"]
    same_tensors(reference / "model.safetensors", out / "model.safetensors")
    same_tensors(reference / "emotion_space.safetensors", out / "emotion_space.safetensors")
    bundle = json.loads((out / "config.json").read_text())
    assert bundle["history"] == json.loads((reference / "config.json").read_text())["history"]


def test_encoder_resume_refuses_other_settings(stage1, tmp_path):
    from emogen_cli.stage1.train_encoder import train_encoder

    out = tmp_path / "e"
    train_encoder(load_config(stage1, {"encoder.output": str(out), "encoder.max_steps": 6}))
    (out / "config.json").unlink()
    with pytest.raises(EmogenError) as info:
        train_encoder(load_config(stage1, {"encoder.output": str(out), "encoder.lr": 0.5, "encoder.emotion_dim": 8}),
                      resume=True)
    assert "encoder.lr: 0.001 -> 0.5" in str(info.value) and "encoder.emotion_dim: 16 -> 8" in str(info.value)


def test_second_signal_stops_at_once_and_first_only_asks():
    import signal

    from emogen_cli.core.interrupts import StopSignals

    with StopSignals() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.now() and stop.name == "SIGTERM"  # the first signal only asks
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second stops at once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_damaged_latent_shard_is_detected_and_recomputed(stage1, tmp_path):
    import shutil

    from emogen_cli.data.emoset import load_prepared
    from emogen_cli.data.latents import LatentCache, cache_latents

    cfg = load_config(stage1)
    prepared = load_prepared(cfg.data.prepared)
    cache = tmp_path / "latents"
    shutil.copytree(prepared.path / "latents", cache)
    ids = {r.id for r in prepared.rows}
    (shard,) = [p for p in cache.glob("shard-*.safetensors")]
    whole = LatentCache(cache)[next(iter(ids))]
    shard.write_bytes(shard.read_bytes()[:1000])  # a half-written shard
    opened = LatentCache.open_if_matching(cache, cfg.model.pretrained, cfg.model.revision, cfg.model.resolution)
    assert opened is not None and not any(i in opened for i in ids)  # never read: training encodes on the fly
    result = cache_latents(prepared.rows, prepared.root, cache, cfg.model.pretrained, cfg.model.revision,
                           cfg.model.resolution, device="cpu")
    assert result["new"] == len(ids)
    again = LatentCache(cache)
    assert all(i in again for i in ids) and torch.equal(again[next(iter(ids))], whole)
