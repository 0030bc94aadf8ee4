import json
import math
import random
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy import linalg

from emogen_cli.core.config import load_config
from emogen_cli.evaluation import metrics as M


def test_frechet_distance_matches_the_formula():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(80, 4, generator=g), torch.randn(60, 4, generator=g) * 1.5 + 0.3
    mu1, mu2 = real.double().numpy().mean(0), fake.double().numpy().mean(0)
    s1, s2 = np.cov(real.double().numpy(), rowvar=False), np.cov(fake.double().numpy(), rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert M.frechet_distance(real, fake) == pytest.approx(expected, rel=1e-4)
    assert M.frechet_distance(real, real) == pytest.approx(0, abs=1e-6)


def test_pair_metrics_and_classification_metrics():
    feats = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert M.pair_mse(feats, [(0, 1)]).item() == 0  # identical embeddings: no diversity
    assert M.pair_mse(feats, [(0, 2)]).item() == pytest.approx((1 + 4) / 2)
    assert M.pair_cosine_distance(feats, [(0, 2)]).item() == pytest.approx(1.0)
    assert all(a != b for a, b in M.random_pairs(5, 50, random.Random(0)))
    assert M.random_pairs(1, 10, random.Random(0)) == []

    logits = torch.tensor([[0.0, 5.0], [0.0, 5.0], [0.0, 5.0], [0.0, 5.0]])  # forced to class 1
    assert M.emotion_accuracy(logits, torch.tensor([1, 0, 1, 0])) == 0.5
    objects, scenes = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 0.0, 3.0]])
    assert M.semantic_clarity(objects).item() == pytest.approx(math.exp(2) / (math.exp(2) + 2))
    assert M.semantic_clarity(objects, scenes).item() == pytest.approx(math.exp(3) / (math.exp(3) + 3))


@pytest.fixture
def fake_lpips(monkeypatch):
    """Stands in for the `lpips` package (it needs torchvision): mean squared difference, inputs checked."""

    class LPIPS(torch.nn.Module):
        def __init__(self, net="alex", verbose=True):
            super().__init__()

        def forward(self, a, b):
            assert a.shape == b.shape and a.min() >= -1 and a.max() <= 1
            return (a - b).pow(2).mean((1, 2, 3), keepdim=True)

    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=LPIPS))


def _planted_classifier(tiny_dir, out, bias):
    from transformers import ResNetForImageClassification

    model = ResNetForImageClassification.from_pretrained(str(tiny_dir / "classifier"))
    with torch.no_grad():
        model.classifier[1].weight.zero_()
        model.classifier[1].bias.copy_(torch.tensor(bias))
    model.save_pretrained(str(out))
    return out


def test_evaluate_planted_models(cli, mapper_config, tmp_path, fake_lpips):
    tiny = Path(load_config(mapper_config).model.pretrained)
    gen = tmp_path / "gen"
    assert cli("generate", "-e", "awe,fear", "-n", "3", "-c", mapper_config, "--out", gen).code == 0
    # A gallery where every emotion's images are copies of one image: zero diversity.
    same = tmp_path / "same"
    for emotion in ("awe", "fear"):
        (same / emotion).mkdir(parents=True)
        for i in range(3):
            shutil.copy(gen / f"{emotion}-00000.png", same / emotion / f"{i}.png")
    probe = tmp_path / "probe.safetensors"  # forced to predict fear (index 6)
    save_file({"fc.weight": torch.zeros(8, 32), "fc.bias": torch.eye(8)[6] * 5}, str(probe))
    objects = _planted_classifier(tiny, tmp_path / "objects", [2.0, 0, 0, 0, 0])
    scenes = _planted_classifier(tiny, tmp_path / "scenes", [0, 0, 3.0, 0, 0])
    common = ["-c", mapper_config, "--probe", probe, "--object-model", objects, "--scene-model", scenes,
              "--pairs", "5", "--json"]

    result = cli("evaluate", same, *common)
    assert result.code == 0, result.err
    m = result.json["metrics"]
    assert result.json["groups"] == {"awe": 3, "fear": 3}
    assert m["emo-a"]["value"] == 0.5 and m["emo-a"]["per_emotion"] == {"awe": 0.0, "fear": 1.0}
    assert m["sem-c"]["value"] == pytest.approx(math.exp(3) / (math.exp(3) + 4), rel=1e-5)
    assert m["sem-d"]["value"] == pytest.approx(0, abs=1e-10) and m["lpips"]["value"] == 0
    assert m["fid"]["value"] >= 0 and "CLIP image features" in m["fid"]["backend"]
    report = same / "evaluation"
    assert json.loads((report / "report.json").read_text())["metrics"]["emo-a"]["value"] == 0.5
    assert "| fear | 3 |" in (report / "report.md").read_text() and (report / "metrics.png").is_file()

    varied = cli("evaluate", gen, *common)
    assert varied.code == 0, varied.err
    assert varied.json["metrics"]["sem-d"]["value"] > 0 and varied.json["metrics"]["lpips"]["value"] > 0

    again = cli("evaluate", same, *common)
    assert again.code == 1 and "already holds an evaluation report" in again.err


def test_evaluate_missing_backends_and_bad_input(cli, mapper_config, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    gen = tmp_path / "gen"
    assert cli("generate", "-e", "awe", "-n", "2", "-c", mapper_config, "--out", gen).code == 0
    asked = cli("evaluate", gen, "-c", mapper_config, "--metrics", "lpips")
    assert asked.code == 1 and "pip install lpips" in asked.err and "Traceback" not in asked.err
    default = cli("evaluate", gen, "-c", mapper_config, "--metrics", "sem-d,emo-a", "--out", tmp_path / "r", "--json")
    assert default.code == 0, default.err
    assert set(default.json["metrics"]) == {"sem-d", "emo-a"}
    stage1 = cli("evaluate", gen, "-c", mapper_config, "--metrics", "emo-a", "--emotion-classifier", "encoder",
                 "--out", tmp_path / "r1", "--json")
    assert stage1.code == 0, stage1.err
    assert 0 <= stage1.json["metrics"]["emo-a"]["value"] <= 1 and "stage-1" in stage1.json["metrics"]["emo-a"]["backend"]
    unknown = cli("evaluate", gen, "-c", mapper_config, "--metrics", "fidd")
    assert unknown.code == 1 and "must be one of" in unknown.err
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = cli("evaluate", empty, "-c", mapper_config)
    assert nothing.code == 1 and "No readable images" in nothing.err


def test_evaluate_labels_fid_features_and_references_and_says_a_missing_package_once(cli, mapper_config, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    monkeypatch.setenv("COLUMNS", "250")  # a wide terminal: one table row per line
    classifier = Path(load_config(mapper_config).model.pretrained) / "classifier"
    gen = tmp_path / "gen"
    assert cli("generate", "-e", "awe,fear", "-n", "3", "-c", mapper_config, "--out", gen).code == 0
    shown = cli("evaluate", gen, "-c", mapper_config, "--object-model", classifier, "--scene-model", classifier,
                "--pairs", "3")
    assert shown.code == 0, shown.err
    text = shown.out + shown.err
    assert text.count("pip install lpips") == 1  # the missing package is said once
    # the FID column names its features; the paper's (Inception) FIDs are marked as such beside a CLIP FID
    table = " ".join(shown.out.split())
    assert "FID (CLIP)" in table and "41.60 (Inception)" in table
    assert "each emotion's row against that emotion's reference images" in table
    assert "comes from under 50 images" in shown.err and "awe (3)" in shown.err
    report = json.loads((gen / "evaluation" / "report.json").read_text())
    fid = report["metrics"]["fid"]
    assert fid["features"] == "clip" and fid["few_images"] == {"awe": 3, "fear": 3}
    prepared = load_config(mapper_config).data.prepared
    assert fid["reference"] == prepared and set(fid["reference_per_emotion"]) == {"awe", "fear"}
    assert 0 < sum(fid["reference_per_emotion"].values()) < fid["reference_images"]  # own emotion's vs all
    md = (gen / "evaluation" / "report.md").read_text()
    assert "| FID (CLIP) |" in md and "41.60 (Inception)" in md
    assert f"overall against all {fid['reference_images']} reference images of {prepared}" in md
    assert report["metrics"]["lpips"]["unavailable"].startswith("LPIPS needs the lpips package")
