"""Files: atomic writers, checkpoints replaced without a gap, bundles replaced only when complete, and a
battery of damaged or mismatched files, each refused with one line naming the file."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError


def small_encoder(path: Path, classes: int = 8):
    from transformers import ResNetConfig

    from emogen_cli.stage1.encoder import EmotionClassifier, EmotionSpace, EncoderBundle, encoder_config

    backbone = ResNetConfig(embedding_size=4, hidden_sizes=[4, 8], depths=[1, 1], layer_type="basic")
    torch.manual_seed(0)
    model = EmotionClassifier(backbone, 6, classes)
    space = EmotionSpace(EMOTIONS, torch.randn(8, 6), torch.rand(8, 6), torch.arange(8))
    EncoderBundle(encoder_config(backbone, "tiny", 6, 0.5, 32), space, model).save(path)
    return model


def small_mapper(path: Path):
    from emogen_cli.stage1.encoder import EmotionSpace
    from emogen_cli.stage2.mapper import FORMAT, MapperBundle, MappingNetwork

    torch.manual_seed(0)
    config = {"format": FORMAT, "version": 1, "emotions": list(EMOTIONS), "placeholder": "<emotion>",
              "base_model": "sd", "clip_model": "clip", "in_dim": 6, "hidden_dim": 5, "out_dim": 4, "layers": 2}
    bundle = MapperBundle(config, MappingNetwork(6, 5, 4, 2),
                          EmotionSpace(EMOTIONS, torch.randn(8, 6), torch.rand(8, 6), torch.arange(8)),
                          torch.randn(3, 4), {"names": ["beach"], "confidence": {"beach": [0.125] * 8}})
    bundle.save(path)
    return bundle


def one_line(exc: pytest.ExceptionInfo, *needles: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text, text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


# -- atomic writers -------------------------------------------------------------------------------------------------

def test_atomic_writers_leave_old_file_on_failure(tmp_path):
    from emogen_cli.core.files import atomic_path, atomic_write_json, atomic_write_text

    target = tmp_path / "report.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["report.json"]  # temp file removed
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})  # never a bare NaN in JSON
    assert target.read_text() == "old"


def test_disk_full_is_one_line(tmp_path, monkeypatch):
    import errno

    from emogen_cli.core.files import atomic_write_bytes

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(EmogenError) as info:
        atomic_write_bytes(tmp_path / "x.bin", b"data")
    one_line(info, "disk is full", "x.bin")
    assert not list(tmp_path.iterdir())


def _save_in_subprocess(run_dir: Path, step: int, value: float, kill_at: str | None) -> int:
    code = (f"import torch; from emogen_cli.core.checkpoint import save_checkpoint\n"
            f"m = torch.nn.Linear(2, 2); torch.nn.init.constant_(m.weight, {value})\n"
            f"o = torch.optim.AdamW(m.parameters()); m(torch.ones(1, 2)).sum().backward(); o.step()\n"
            f"save_checkpoint({str(run_dir)!r}, {step}, m.state_dict(), o, {{'value': {value}}})\n")
    env = {**os.environ, "EMOGEN_TEST_KILL_AT": kill_at or "", "EMOGEN_TEST_KILL_SIGNAL": "KILL"}
    return subprocess.run([sys.executable, "-c", code], env=env, timeout=120).returncode


@pytest.mark.parametrize("kill_at", ["checkpoint_written", "checkpoint_old_moved"])
def test_checkpoint_of_an_existing_step_is_replaced_without_a_gap(tmp_path, kill_at):
    """max_steps % checkpoint_every == 0 writes the last step twice: a kill in between keeps one whole copy."""
    from emogen_cli.core.checkpoint import list_checkpoints, load_checkpoint

    run = tmp_path / "checkpoints"
    assert _save_in_subprocess(run, 6, 1.0, None) == 0
    assert _save_in_subprocess(run, 6, 2.0, kill_at) == -9
    (ckpt,) = list_checkpoints(run)  # a copy moved aside is put back
    assert ckpt.name == "checkpoint-0000006" and load_checkpoint(ckpt)[2]["value"] == 1.0
    assert _save_in_subprocess(run, 6, 2.0, None) == 0
    (ckpt,) = list_checkpoints(run)
    assert load_checkpoint(ckpt)[2]["value"] == 2.0
    assert [p.name for p in run.iterdir()] == ["checkpoint-0000006"]


def test_bundle_replaced_only_once_complete(tmp_path, monkeypatch):
    from emogen_cli.stage2.mapper import load_mapper

    small_mapper(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    from emogen_cli.stage1.encoder import EmotionSpace

    def crash(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(EmotionSpace, "write", crash)
    with pytest.raises(EmogenError, match="disk is full"):
        small_mapper(tmp_path / "m")
    after = {p.name: p.read_bytes() for p in (tmp_path / "m").iterdir()}
    assert after == before  # nothing replaced, no temp file left
    monkeypatch.undo()
    assert load_mapper(tmp_path / "m").config["hidden_dim"] == 5


# -- damaged or mismatched files: one line each ---------------------------------------------------------------------

def _rewrite_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


MAPPER_CASES = {
    "truncated weights": (lambda d: (d / "mapper.safetensors").write_bytes((d / "mapper.safetensors").read_bytes()[:60]),
                          "mapper.safetensors"),
    "truncated weights, old bundle without sizes": (
        lambda d: (_rewrite_config(d, files=None),
                   (d / "mapper.safetensors").write_bytes((d / "mapper.safetensors").read_bytes()[:60])),
        "damaged or truncated"),
    "wrong hidden_dim": (lambda d: _rewrite_config(d, hidden_dim=7, files=None), "shape"),
    "dim not a number": (lambda d: _rewrite_config(d, in_dim="six"), "in_dim"),
    "NaN in the mapper": (lambda d: (_rewrite_config(d, files=None), save_file(
        {**load_file(str(d / "mapper.safetensors")), "mlp.0.bias": torch.tensor([float("nan")] * 5)},
        str(d / "mapper.safetensors"))), "NaN"),
    "NaN in the emotion space": (lambda d: (_rewrite_config(d, files=None), save_file(
        {"mean": torch.full((8, 6), float("inf")), "std": torch.ones(8, 6), "count": torch.arange(8)},
        str(d / "emotion_space.safetensors"), metadata={"emotions": json.dumps(list(EMOTIONS))})), "NaN"),
    "emotion space of another dim": (lambda d: (_rewrite_config(d, files=None), save_file(
        {"mean": torch.ones(8, 9), "std": torch.ones(8, 9), "count": torch.arange(8)},
        str(d / "emotion_space.safetensors"), metadata={"emotions": json.dumps(list(EMOTIONS))})), "(8, 6)"),
    "attributes not UTF-8": (lambda d: (_rewrite_config(d, files=None),
                                        (d / "attributes.json").write_bytes(b"\xff\xfe{")), "not UTF-8"),
    "attributes confidence of 3 values": (lambda d: (_rewrite_config(d, files=None), (d / "attributes.json").write_text(
        json.dumps({"names": ["beach"], "confidence": {"beach": [1, 2, 3]}}))), "not 8 numbers"),
    "config not UTF-8": (lambda d: (d / "config.json").write_bytes(b"\x80abc"), "not UTF-8"),
    "config not an object": (lambda d: (d / "config.json").write_text("[1, 2]"), "not a JSON object"),
    "projection of another width": (lambda d: (_rewrite_config(d, files=None), save_file(
        {"weight": torch.ones(3, 9)}, str(d / "text_projection.safetensors"))), "text_projection.safetensors"),
}


@pytest.mark.parametrize("case", MAPPER_CASES)
def test_damaged_mapper_bundle_is_one_line(tmp_path, case):
    from emogen_cli.stage2.mapper import load_mapper

    folder = tmp_path / "mapper"
    small_mapper(folder)
    damage, needle = MAPPER_CASES[case]
    damage(folder)
    with pytest.raises(EmogenError) as info:
        load_mapper(folder)
    one_line(info, needle, str(folder))


def test_damaged_encoder_bundle_is_one_line(tmp_path):
    from emogen_cli.stage1.encoder import load_encoder

    small_encoder(tmp_path / "ok")
    assert load_encoder(tmp_path / "ok").model is not None
    small_encoder(tmp_path / "three", classes=3)  # a classifier with 3 outputs for 8 emotions
    with pytest.raises(EmogenError) as info:
        load_encoder(tmp_path / "three")
    one_line(info, "fc_2.weight", "(3, 6)", "(8, 6)")
    small_encoder(tmp_path / "cut")
    data = (tmp_path / "cut" / "model.safetensors").read_bytes()
    (tmp_path / "cut" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(EmogenError) as info:
        load_encoder(tmp_path / "cut")
    one_line(info, "model.safetensors", "truncated")


def test_probe_checks(tmp_path):
    from emogen_cli.stage2.confidence import load_probe

    save_file({"fc.weight": torch.zeros(3, 4), "fc.bias": torch.zeros(3)}, str(tmp_path / "p3.safetensors"))
    with pytest.raises(EmogenError) as info:
        load_probe(tmp_path / "p3.safetensors", classes=8)
    one_line(info, "3 outputs, expected 8", "p3.safetensors")
    save_file({"fc.weight": torch.zeros(8, 4), "fc.bias": torch.zeros(8)}, str(tmp_path / "p.safetensors"))
    with pytest.raises(EmogenError) as info:
        load_probe(tmp_path / "p.safetensors", classes=8, in_dim=768)
    one_line(info, "4-d features", "768-d")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"fc.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(EmogenError) as info:
        load_probe(tmp_path / "evil.pth")
    one_line(info, "would run code")


def test_confidence_table_checks(tmp_path):
    from emogen_cli.stage2.confidence import load_confidence

    for content, needle in [(b"\xff\xff", "not UTF-8"),
                            (b'{"attributes": {"beach": [NaN, 0, 0, 0, 0, 0, 0, 0]}}', "NaN"),
                            (b'{"attributes": {"beach": [1, 2]}}', "one number per emotion"),
                            (b'[1]', "no 'attributes' object")]:
        (tmp_path / "c.json").write_bytes(content)
        with pytest.raises(EmogenError) as info:
            load_confidence(tmp_path / "c.json")
        one_line(info, needle, "c.json")


def test_crafted_pickles_are_one_line(tmp_path):
    from emogen_cli.stage2.confidence import read_official_pickle

    huge = b"\x80\x04\x8e" + struct.pack("<Q", 2 ** 62) + b"abc."  # BINBYTES8 declaring 4 EiB
    shape = pickle.dumps(np.zeros(3)).replace(b"K\x03\x85", b"J\x00\x00\x00\x40\x85")  # 1 G elements, 24 bytes
    for name, data in [("huge.pkl", huge), ("shape.pkl", shape), ("cut.pkl", pickle.dumps({"a": [1] * 50})[:20])]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(EmogenError) as info:
            read_official_pickle(tmp_path / name)
        one_line(info, name)


def test_damaged_checkpoint_is_one_line(tmp_path):
    from emogen_cli.core.checkpoint import load_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    ckpt = save_checkpoint(tmp_path, 1, model.state_dict(), opt)
    data = (ckpt / "optimizer.safetensors").read_bytes()
    (ckpt / "optimizer.safetensors").write_bytes(data[:-8])
    with pytest.raises(EmogenError) as info:
        load_checkpoint(ckpt)
    one_line(info, "optimizer.safetensors", "truncated")
    (ckpt / "state.json").write_bytes(b"\xfe\x00")
    with pytest.raises(EmogenError) as info:
        load_checkpoint(ckpt)
    one_line(info, "state.json", "not UTF-8")


def test_missing_or_empty_tokenizer_folder_is_caught(tmp_path):
    from transformers import CLIPTokenizer

    from emogen_cli.core.pretrained import load

    (tmp_path / "model" / "tokenizer").mkdir(parents=True)
    with pytest.raises(EmogenError) as info:
        load(CLIPTokenizer, str(tmp_path / "model"), "tokenizer")
    one_line(info, "no tokenizer files")
    with pytest.raises(EmogenError) as info:
        load(CLIPTokenizer, str(tmp_path), "tokenizer")
    one_line(info, "does not exist")


def test_imports_never_overwrite_without_overwrite(tmp_path, cli):
    folder = tmp_path / "dataset_balance"
    folder.mkdir()
    (folder / "attr_coefficient_emotion_scene.pkl").write_bytes(pickle.dumps({"beach": np.full(8, 0.125)}))
    out = tmp_path / "mapper"
    out.mkdir()
    (out / "confidence.json").write_text("mine")
    refused = cli("train-mapper", "--import-official-confidence", tmp_path, "--out", out)
    assert refused.code == 1 and "already exists" in refused.err and "--overwrite" in refused.err
    assert (out / "confidence.json").read_text() == "mine"
    done = cli("train-mapper", "--import-official-confidence", tmp_path, "--out", out, "--overwrite")
    assert done.code == 0, done.err
    assert json.loads((out / "confidence.json").read_text())["attributes"]["beach"] == [0.125] * 8

    space = tmp_path / "emo_space"
    space.mkdir()
    for emotion in EMOTIONS:
        torch.save(torch.zeros(6), space / f"{emotion}_mean_v2.pt")
        torch.save(torch.ones(6), space / f"{emotion}_std_v2.pt")
    enc = tmp_path / "encoder"
    enc.mkdir()
    (enc / "emotion_space.safetensors").write_bytes(b"mine")
    refused = cli("train-encoder", "--import-official", tmp_path, "--out", enc)
    assert refused.code == 1 and "already holds emotion_space.safetensors" in refused.err
    assert (enc / "emotion_space.safetensors").read_bytes() == b"mine"
    assert cli("train-encoder", "--import-official", tmp_path, "--out", enc, "--overwrite").code == 0


# -- permissions: every file is written as a plain open() would (issue 19, point 10) -------------------------------

def _umask_run(code: str, mask: int) -> subprocess.CompletedProcess:
    """`code` in a fresh process whose umask is `mask` (a test must not change the umask of the test process)."""
    return subprocess.run([sys.executable, "-c", f"import os; os.umask({mask:#o})\n{code}"], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_written_files_honour_the_umask(tmp_path, mask):
    code = f"""
import torch
from pathlib import Path
from PIL import Image
from emogen_cli.core.files import atomic_save_image, atomic_save_safetensors, atomic_write_json, atomic_write_text, write_bundle
from emogen_cli.core.checkpoint import save_checkpoint
out = Path({str(tmp_path)!r})
atomic_write_text(out / "index.jsonl", "{{}}\\n")
atomic_write_json(out / "report.json", {{"x": 1}})
atomic_save_image(out / "awe-00000.png", Image.new("RGB", (4, 4)))
atomic_save_safetensors(out / "learned_embeds.safetensors", {{"t": torch.zeros(2)}})
write_bundle(out / "bundle", {{"a.safetensors": lambda p: p.write_bytes(b"x"), "b.json": lambda p: p.write_text("[]")}},
             {{"format": "test"}})
m = torch.nn.Linear(2, 2)
save_checkpoint(out / "run", 1, m.state_dict(), torch.optim.SGD(m.parameters(), lr=0.1))
"""
    result = _umask_run(code, mask)
    assert result.returncode == 0, result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) >= 9
    for path in files:
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_replacing_a_file_keeps_its_permissions(tmp_path):
    from emogen_cli.core.files import atomic_write_text

    target = tmp_path / "index.jsonl"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and target.stat().st_mode & 0o777 == 0o640


# -- a full disk, whichever library writes (issue 19, point 25) ----------------------------------------------------

@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs filled to the last byte: a real ENOSPC for every writer (needs root to mount; skipped else)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with open(mount / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_during_a_checkpoint_is_one_line(full_disk):
    from emogen_cli.core.checkpoint import list_checkpoints, save_checkpoint

    model = torch.nn.Linear(64, 64)
    with pytest.raises(EmogenError) as info:  # safetensors' own error type, not an OSError
        save_checkpoint(full_disk / "run", 10, model.state_dict(), torch.optim.SGD(model.parameters(), lr=0.1))
    one_line(info, "The disk is full", "checkpoint-0000010")
    assert not list_checkpoints(full_disk / "run") and not list((full_disk / "run").iterdir())


@pytest.mark.parametrize("writer", ["torch", "safetensors", "image"])
def test_full_disk_in_any_library_writer_is_one_line(full_disk, writer):
    from PIL import Image

    from emogen_cli.core.files import atomic_path, atomic_save_image, atomic_save_safetensors

    target = full_disk / "out" / "awe.pt"
    with pytest.raises(EmogenError) as info:
        if writer == "torch":  # torch's C++ stream names no cause ("unexpected pos ..."): free space tells
            with atomic_path(target) as tmp:
                torch.save({"string_to_param": {"*": torch.zeros(4096)}}, tmp)
        elif writer == "safetensors":
            atomic_save_safetensors(target, {"t": torch.zeros(4096)})
        else:
            atomic_save_image(target.with_suffix(".png"), Image.effect_noise((128, 128), 50))
    one_line(info, "The disk is full", "awe.")
    assert not list((full_disk / "out").iterdir())  # no temporary file left behind


def test_a_failed_library_write_that_is_not_a_full_disk_is_one_line(tmp_path):
    """A file size limit (EFBIG) makes safetensors and torch fail with their own error types: one line each,
    without a root-only mount."""
    code = f"""
import resource, signal, torch
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.files import atomic_path, atomic_save_safetensors
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192))
for name, write in [("a.safetensors", lambda p: atomic_save_safetensors(p, {{"t": torch.zeros(65536)}})),
                    ("b.pt", lambda p: torch.save({{"t": torch.zeros(65536)}}, p))]:
    try:
        if name.endswith(".pt"):
            with atomic_path({str(tmp_path)!r} + "/" + name) as tmp:
                write(tmp)
        else:
            write({str(tmp_path)!r} + "/" + name)
    except EmogenError as exc:
        print(exc.message)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and len(lines) == 2, result.stderr
    assert lines[0].startswith(f"Cannot write '{tmp_path / 'a.safetensors'}' (File too large)")
    assert lines[1].startswith(f"Cannot write '{tmp_path / 'b.pt'}': the write failed")
    assert sorted(os.listdir(tmp_path)) == []
