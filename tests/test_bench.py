"""The benchmarks run (quick mode, tiny model), interleave their pairs and report median per-pair ratios with
min/max; timings are never asserted."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PAIRED = {"ratio", "ratio_min", "ratio_max", "pairs"}


@pytest.mark.parametrize("script, keys", [
    ("startup.py", {"python_s", "emogen_help_s", "command", "script"} | PAIRED),
    ("generate.py", {"ours_s", "diffusers_s", "overhead_percent"} | PAIRED),
    ("edit.py", {"strength_1", "strength_default", "ratio_default_strength"} | PAIRED),
    ("train_mapper.py", {"batch_1", "batch_2", "variants"} | PAIRED),
    ("serve.py", {"served_s", "pipeline_s", "overhead_ms", "requests_per_minute"} | PAIRED),
    ("prepare.py", {"decode", "scan", "cache", "count"}),
    pytest.param("scale.py", {"time_per_image_ratio", "rss_peak_ratio", "python_heap_peak_ratio"},
                 marks=pytest.mark.skipif(not os.environ.get("EMOGEN_SLOW_TESTS"),
                                          reason="slow (minutes: 220 images in four processes); EMOGEN_SLOW_TESTS=1")),
    ("sdxl.py", {"ours_s", "diffusers_s", "generate_peak_mb", "train_steps_per_s", "train_peak_mb"}),
])
def test_benchmark_quick_mode(script, keys):
    run = subprocess.run([sys.executable, str(BENCH / script), "--quick", "--json"], capture_output=True, text=True,
                         timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert keys <= set(result) and result["ratio"] > 0
    assert result["machine"]["torch_threads"] == 1  # --threads: the same on both sides, 1 by default
    if "ratio_min" in result:
        assert result["ratio_min"] <= result["ratio"] <= result["ratio_max"]
    assert f"[{result['benchmark']}]" in run.stderr  # the human summary
    if script == "train_mapper.py":  # both variants at both (equal) batch sizes, each a paired comparison
        for batch in ("batch_1", "batch_2"):
            assert set(result[batch]) == {"as_written", "frozen"}
            assert all(v["pairs"] == 3 and v["ratio_min"] <= v["ratio"] <= v["ratio_max"] for v in result[batch].values())


def test_official_style_step_trains_the_mapper_through_the_embedding_table(tmp_path):
    """The official-style peer really trains: its mapper changes through the table-gradient hand-over, and only
    the as-written variant computes UNet and encoder weight gradients (the frozen one freezes them)."""
    sys.path.insert(0, str(BENCH))
    try:
        import torch
        from _common import workspace
        from train_mapper import OfficialStyle

        from emogen_cli.core.config import load_config
    finally:
        sys.path.remove(str(BENCH))
    cfg = load_config(workspace(tmp_path, "tiny"))
    for frozen in (False, True):
        peer = OfficialStyle(cfg, batch=2, frozen=frozen)
        before = [p.detach().clone() for p in peer.mapper.parameters()]
        peer()
        assert any(not torch.equal(a, b) for a, b in zip(before, peer.mapper.parameters()))
        unet_grads = any(p.grad is not None for p in peer.unet.parameters())
        encoder_grads = any(p.grad is not None for p in peer.encoder.parameters())
        assert unet_grads == encoder_grads == (not frozen)


def test_runner_writes_one_json(tmp_path):
    """`python -m bench` runs the named benchmarks (here the cheapest) and writes one file with the machine."""
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--quick", "--only", "startup", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["machine"]["cpus"] >= 1
    assert result["benchmarks"]["startup"]["benchmark"] == "startup"
    assert "sd15_generate" in result["benchmarks"]  # skipped without CUDA, run with it
