import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emogen_cli.core.config import load_config


def test_generate_files_metadata_determinism_and_no_overwrite(cli, mapper_config, tmp_path):
    out = tmp_path / "gen"
    first = cli("generate", "-c", mapper_config, "-e", "awe,fear", "-n", "3", "--out", out, "--seed", "5", "--json")
    assert first.code == 0, first.err
    assert first.json["count"] == 6
    pngs = sorted(p.name for p in out.glob("*.png") if not p.name.startswith("grid"))
    assert pngs == [f"{e}-{i:05d}.png" for e in ("awe", "fear") for i in range(3)]
    assert (out / "grid-awe-00000.png").is_file()
    meta = json.loads(Image.open(out / "fear-00002.png").text["emogen"])
    assert meta["emotion"] == "fear" and meta["seed"] == 7 and meta["steps"] == 2 and meta["scheduler"] == "unipc"
    assert meta["guidance"] == 7.5 and meta["baseline"] is False
    mapper = Path(load_config(mapper_config).generate.mapper) / "mapper.safetensors"
    assert meta["mapper_sha256"] == hashlib.sha256(mapper.read_bytes()).hexdigest()  # the full digest its name says
    assert len((out / "index.jsonl").read_text().splitlines()) == 6

    # Same command again elsewhere: bit-identical images.
    twin = cli("generate", "-c", mapper_config, "-e", "awe,fear", "-n", "3", "--out", tmp_path / "twin", "--seed", "5",
               "--json")
    assert twin.code == 0, twin.err
    for name in pngs:
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(tmp_path / "twin" / name)))

    # Numbering continues instead of overwriting, and so do the seeds (seed = base seed + file number):
    # with another batch size, the same images as one run of 6 (up to float rounding: other shapes).
    again = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "3", "--out", out, "--seed", "5",
                "--batch-size", "3", "--json")
    assert again.code == 0, again.err
    assert [r["path"].rsplit("/", 1)[1] for r in again.json["images"]] == [f"awe-{i:05d}.png" for i in range(3, 6)]
    assert [r["seed"] for r in again.json["images"]] == [8, 9, 10]
    six = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "6", "--out", tmp_path / "six", "--seed", "5",
              "--json")
    assert six.code == 0, six.err
    for i in range(6):
        a = np.asarray(Image.open(out / f"awe-{i:05d}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "six" / f"awe-{i:05d}.png")).astype(int)
        assert np.abs(a - b).max() <= 2
    assert not np.array_equal(np.asarray(Image.open(out / "awe-00000.png")), np.asarray(Image.open(out / "awe-00001.png")))
    overwrite = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "1", "--out", out, "--overwrite", "--json")
    assert overwrite.json["images"][0]["path"].endswith("awe-00000.png")


def test_conditioning_does_not_depend_on_batch(mapper_config):
    from emogen_cli.pipeline import EmoGenPipeline, Request

    gen = EmoGenPipeline(load_config(mapper_config))
    request = Request(("contentment",))
    together = gen.conditioning(request, [1, 2, 3])
    alone = torch.cat([gen.conditioning(request, [s]) for s in (1, 2, 3)])
    assert torch.allclose(together, alone, atol=1e-6)
    assert not torch.allclose(together[0], together[1])


def test_transfer_and_baseline(cli, mapper_config, tmp_path):
    result = cli("transfer", "-c", mapper_config, "-e", "fear", "a cup", "-t", "{} street", "-n", "1",
                 "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert sorted(r["prompt"] for r in result.json["images"]) == ["{} a cup", "{} street"]
    assert (tmp_path / "fear-a-cup-00000.png").is_file() and (tmp_path / "fear-street-00000.png").is_file()
    base = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "1", "--baseline", "--out", tmp_path, "--json")
    assert base.code == 0 and base.json["images"][0]["baseline"] is True
    assert (tmp_path / "awe-baseline-00000.png").is_file()


def test_generate_errors(cli, mapper_config, tmp_path):
    bad = cli("generate", "-c", mapper_config, "-e", "awf", "--out", tmp_path)
    assert bad.code == 1 and "Did you mean 'awe'?" in bad.err
    missing = cli("generate", "-c", mapper_config, "-e", "awe", "--mapper", tmp_path / "none", "--out", tmp_path)
    assert missing.code == 1 and "not an emogen-mapper folder" in missing.err and "Traceback" not in missing.err
    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = cli("generate", "-c", mapper_config, "-e", "awe", "--out", blocked / "sub")
    assert unwritable.code == 1 and "Cannot write" in unwritable.err


def test_fuse_weights_one_zero_equal_the_single_emotion(mapper_config):
    from emogen_cli.pipeline import EmoGenPipeline, Request, fusion_request

    gen = EmoGenPipeline(load_config(mapper_config), tokens=2)
    seeds = [3, 4]
    single = gen.conditioning(Request(("awe",)), seeds)
    for mode in ("embedding", "space"):
        fused = fusion_request(["awe", "fear"], [1, 0], mode)
        assert torch.equal(gen.conditioning(fused, seeds), single)
        assert not torch.equal(gen.conditioning(fusion_request(["awe", "fear"], [1, 1], mode), seeds), single)
    # Token mode (the default): one placeholder per emotion, each holding that emotion's own embedding.
    tokens = fusion_request(["awe", "fear"])
    assert gen.prompt_text(tokens) == "<emotion> <emotion_2>"
    values = gen.embeddings(tokens, seeds)
    assert values.shape[1] == 2
    assert torch.equal(values[:, :1], gen.embeddings(Request(("awe",)), seeds))
    assert torch.equal(values[:, 1:], gen.embeddings(Request(("fear",)), seeds))


def test_fuse_cli(cli, mapper_config, tmp_path):
    result = cli("fuse", "amusement", "fear", "-n", "2", "-c", mapper_config, "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    assert [r["path"].rsplit("/", 1)[1] for r in result.json["images"]] == ["amusement+fear-00000.png",
                                                                              "amusement+fear-00001.png"]
    meta = json.loads(Image.open(tmp_path / "amusement+fear-00001.png").text["emogen"])
    assert meta["emotions"] == ["amusement", "fear"] and meta["fusion"] == {"mode": "tokens", "weights": None}
    mixed = cli("fuse", "amusement", "fear", "--mode", "embedding", "-w", "3,1", "-n", "1", "-p", "a street",
                "-c", mapper_config, "--out", tmp_path, "--json")
    assert mixed.code == 0, mixed.err
    assert mixed.json["images"][0]["fusion"] == {"mode": "embedding", "weights": [0.75, 0.25]}
    assert (tmp_path / "amusement+fear-embedding-a-street-00000.png").is_file()

    needs_mode = cli("fuse", "amusement", "fear", "-w", "1,0", "-c", mapper_config, "--out", tmp_path)
    assert needs_mode.code == 1 and "--mode embedding" in needs_mode.err
    one = cli("fuse", "amusement", "-c", mapper_config, "--out", tmp_path)
    assert one.code == 1 and "two or more" in one.err
    bad = cli("fuse", "awe", "fear", "--mode", "embedding", "-w", "1,x", "-c", mapper_config, "--out", tmp_path)
    assert bad.code == 1 and "--weights must be numbers" in bad.err
    count = cli("fuse", "awe", "fear", "--mode", "space", "-w", "1", "-c", mapper_config, "--out", tmp_path)
    assert count.code == 1 and "one weight per emotion" in count.err


def test_plan_splits_images_evenly_between_processes():
    from emogen_cli.core.runtime import ProcessShare
    from emogen_cli.outputs.generate import plan
    from emogen_cli.pipeline import Request

    requests = [Request(("awe",), count=5), Request(("fear",), count=4)]
    shares = [plan(requests, ProcessShare(index=p, count=3), batch_size=2) for p in range(3)]
    jobs = [(r, i) for share in shares for r, indices in share for i in indices]
    assert sorted(jobs) == [(0, i) for i in range(5)] + [(1, i) for i in range(4)]
    assert [sum(len(ix) for _, ix in share) for share in shares] == [3, 3, 3]
    assert all(len(ix) <= 2 for share in shares for _, ix in share)
    assert plan(requests, ProcessShare(), batch_size=4) == [(0, [0, 1, 2, 3]), (0, [4]), (1, [0, 1, 2, 3])]


def test_accelerate_launch_splits_images_between_processes(mapper_config, tmp_path):
    """Two CPU processes (gloo) share the images; files and index equal a single-process run's."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_port", str(port), "-m", "emogen_cli"]
    args = ["generate", "-c", str(mapper_config), "-e", "awe", "-n", "3", "--batch-size", "1", "--json", "--device", "cpu"]
    multi = subprocess.run(launch + args + ["--out", str(tmp_path / "multi")], capture_output=True, text=True,
                           env=env, timeout=300)
    assert multi.returncode == 0, multi.stderr[-2000:]
    result = json.loads(multi.stdout)  # one JSON document: only the main process prints
    assert result["processes"] == 2 and result["count"] == 3
    single = subprocess.run([sys.executable, "-m", "emogen_cli"] + args + ["--out", str(tmp_path / "single")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    for i in range(3):
        # Same seeds, same shapes; a process of a gloo group may still round a GEMM differently in the last float
        # bit (BLAS kernels depend on buffer alignment), which can move a pixel by one level of 255 and no more.
        a = np.asarray(Image.open(tmp_path / "multi" / f"awe-{i:05d}.png")).astype(int)
        b = np.asarray(Image.open(tmp_path / "single" / f"awe-{i:05d}.png")).astype(int)
        assert np.abs(a - b).max() <= 1 and (a != b).mean() < 0.1
    assert len((tmp_path / "multi" / "index.jsonl").read_text().splitlines()) == 3
    assert (tmp_path / "multi" / "grid-awe-00000.png").is_file()


def test_interrupted_generation_keeps_what_it_wrote(cli, mapper_config, tmp_path, monkeypatch):
    from emogen_cli.pipeline import EmoGenPipeline

    real, calls = EmoGenPipeline.sample, []

    def flaky(self, request, seeds, *args, **kwargs):
        calls.append(seeds)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, request, seeds, *args, **kwargs)

    monkeypatch.setattr(EmoGenPipeline, "sample", flaky)
    result = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "4", "--batch-size", "2", "--out", tmp_path)
    assert result.code == 130 and "Interrupted after 2 images" in result.err and "Traceback" not in result.err
    assert [json.loads(line)["path"].rsplit("/", 1)[1] for line in (tmp_path / "index.jsonl").read_text().splitlines()] \
        == ["awe-00000.png", "awe-00001.png"]
    monkeypatch.setattr(EmoGenPipeline, "sample", real)
    again = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "2", "--out", tmp_path, "--json")
    assert [r["path"].rsplit("/", 1)[1] for r in again.json["images"]] == ["awe-00002.png", "awe-00003.png"]
    assert len((tmp_path / "index.jsonl").read_text().splitlines()) == 4


def test_one_seed_rule_no_duplicates_and_overwrite_replaces(cli, mapper_config, tmp_path):
    """Issue 19.7 / 19.16: -n 1, then --best-of 2, then -n 2 into one folder give no byte-identical images
    (best-of candidates live above the plain seeds); --overwrite -n 1 leaves one image, one index entry and
    no stale evaluation/."""
    out = tmp_path / "mixed"
    for extra in ([], ["--best-of", "2"], ["-n", "2"]):
        args = ["-n", "1", *extra] if extra[:1] != ["-n"] else extra
        r = cli("generate", "-c", mapper_config, "-e", "awe", "--out", out, "--json", *args)
        assert r.code == 0, r.err
    pngs = sorted(p for p in out.glob("awe-*.png"))
    seeds = [json.loads(Image.open(p).text["emogen"])["seed"] for p in pngs]
    assert len(pngs) == 4 and len(set(seeds)) == 4
    assert len({Image.open(p).tobytes() for p in pngs}) == 4
    (out / "evaluation").mkdir()
    r = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "1", "--out", out, "--overwrite", "--json")
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.glob("awe-*.png")) == ["awe-00000.png"] and not (out / "evaluation").exists()
    assert len((out / "index.jsonl").read_text().splitlines()) == 1
