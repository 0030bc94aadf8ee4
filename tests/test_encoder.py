import re

import pytest
import torch
from safetensors.torch import load_file

from emogen_cli.core.config import load_config
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError
from emogen_cli.core.reporting import Reporter
from emogen_cli.stage1.encoder import EmotionClassifier, EmotionSpace, import_official, load_encoder


class Recorder(Reporter):
    def __init__(self):
        self.metrics = []

    def advance(self, task, n=1, **metrics):
        if metrics:
            self.metrics.append(metrics)


def test_stage1_training_loss_falls_and_space_is_saved(tiny_config, tmp_path):
    from emogen_cli.stage1.train_encoder import train_encoder

    cfg = load_config(tiny_config, {"encoder.optimizer": "adam", "encoder.lr": 3e-3, "encoder.max_steps": 30,
                                    "encoder.dropout": 0.0})
    recorder = Recorder()
    result = train_encoder(cfg, reporter=recorder)
    losses = [m["loss"] for m in recorder.metrics]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 * 0.8
    assert result["train_accuracy"] > 0.25  # chance is 0.125 (noise images, 30 steps)
    assert result["history"] and all("val_accuracy" in h for h in result["history"])

    bundle = load_encoder(tmp_path / "encoder")
    assert bundle.emotions == EMOTIONS
    assert bundle.space.mean.shape == bundle.space.std.shape == (8, 16)
    assert bundle.space.count.sum() == result["space_images"]  # encoder.space_splits: all splits by default
    assert (bundle.space.std > 0).all()
    # The stored Gaussians are exactly the features' statistics.
    weights = load_file(str(tmp_path / "encoder" / "model.safetensors"))
    assert "fc_1.weight" in weights and weights["fc_1.weight"].shape == (16, 32)
    assert (tmp_path / "encoder" / "checkpoints" / "best.safetensors").is_file()


def test_stage1_resume_equals_uninterrupted_run(tiny_config, tmp_path):
    from emogen_cli.stage1.train_encoder import train_encoder

    base = {"encoder.max_steps": 8, "encoder.checkpoint_every": 3, "encoder.dropout": 0.5}
    full = train_encoder(load_config(tiny_config, {**base, "encoder.output": str(tmp_path / "full")}))
    # Stop after 3 steps (one checkpoint), then resume to 8.
    part = tmp_path / "part"
    train_encoder(load_config(tiny_config, {**base, "encoder.max_steps": 3, "encoder.output": str(part)}))
    (part / "config.json").unlink()  # as if the run had been killed after its checkpoint
    resumed = train_encoder(load_config(tiny_config, {**base, "encoder.output": str(part)}), resume=True)
    assert resumed["steps"] == full["steps"] == 8
    a = load_file(str(tmp_path / "full" / "checkpoints" / "checkpoint-0000008" / "model.safetensors"))
    b = load_file(str(part / "checkpoints" / "checkpoint-0000008" / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_existing_encoder_is_not_overwritten(tiny_config, tmp_path):
    from emogen_cli.stage1.train_encoder import train_encoder

    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "config.json").write_text("{}")
    with pytest.raises(EmogenError, match="already holds"):
        train_encoder(load_config(tiny_config))
    assert (tmp_path / "encoder" / "config.json").read_text() == "{}"


def _hf_to_torchvision(key):
    rules = [
        (r"embedder\.embedder\.convolution\.(\w+)", r"conv1.\1"),
        (r"embedder\.embedder\.normalization\.(\w+)", r"bn1.\1"),
        (r"encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.convolution\.(\w+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.0.{m[3]}"),
        (r"encoder\.stages\.(\d)\.layers\.(\d+)\.shortcut\.normalization\.(\w+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.1.{m[3]}"),
        (r"encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.convolution\.(\w+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.conv{int(m[3]) + 1}.{m[4]}"),
        (r"encoder\.stages\.(\d)\.layers\.(\d+)\.layer\.(\d)\.normalization\.(\w+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn{int(m[3]) + 1}.{m[4]}"),
    ]
    for pattern, repl in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, repl, key)
    raise AssertionError(key)


@pytest.mark.parametrize("layout", ["cnn", "sequential"])
def test_import_official_artefacts(tmp_path, layout):
    from transformers import ResNetConfig

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[16, 32], depths=[2, 1], layer_type="bottleneck")
    model = EmotionClassifier(config, emotion_dim=12).eval()
    with torch.no_grad():  # non-trivial BN statistics so a wrong mapping shows
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    tv = {_hf_to_torchvision(k.removeprefix("backbone.")): v for k, v in model.state_dict().items()
          if k.startswith("backbone.")}
    official = {"fc_1.weight": model.fc_1.weight, "fc_1.bias": model.fc_1.bias,
                "fc_2.2.weight": model.fc_2.weight, "fc_2.2.bias": model.fc_2.bias}
    if layout == "cnn":  # the official BackBone saves torchvision's resnet under cnn.* (and its ImageNet fc)
        official.update({f"cnn.{k}": v for k, v in tv.items()})
        official["cnn.fc.weight"] = torch.zeros(1000, 32)
    else:
        index = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}
        official.update({f"module.backbone.{index[k.split('.')[0]]}.{k.split('.', 1)[1]}": v for k, v in tv.items()})
        official = {k if k.startswith("module.") else f"module.{k}": v for k, v in official.items()}
    src = tmp_path / "EmoGen"
    (src / "weights" / "image_encoder").mkdir(parents=True)
    (src / "emo_space").mkdir()
    torch.save(official, src / "weights" / "image_encoder" / "2023-08-22-best.pth")
    means = torch.randn(8, 12)
    for i, emotion in enumerate(EMOTIONS):
        torch.save(means[i], src / "emo_space" / f"{emotion}_mean_v2.pt")
        torch.save(means[i].abs() + 0.1, src / "emo_space" / f"{emotion}_std_v2.pt")

    import_official(src, tmp_path / "encoder")
    bundle = load_encoder(tmp_path / "encoder")
    assert bundle.emotions == EMOTIONS
    assert torch.equal(bundle.space.mean, means)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bundle.model(x), model(x), atol=1e-5)
        assert torch.allclose(bundle.model.encode(x), model.encode(x), atol=1e-5)


def test_import_official_space_only_and_refuses_pickles(tmp_path):
    src = tmp_path / "emo_space"
    src.mkdir()
    for emotion in EMOTIONS:
        torch.save(torch.ones(768), src / f"{emotion}_mean_v2.pt")
        torch.save(torch.ones(768), src / f"{emotion}_std_v2.pt")
    bundle = import_official(src, tmp_path / "out")
    assert bundle.model is None and bundle.space.dim == 768
    assert load_encoder(tmp_path / "out", with_model=False).space.mean.shape == (8, 768)
    with pytest.raises(EmogenError, match="no classifier weights"):
        load_encoder(tmp_path / "out")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save(Evil(), src / "amusement_mean_v2.pt")
    with pytest.raises(EmogenError, match="plain tensor file"):
        import_official(src, tmp_path / "out2")


def test_emotion_space_sampling_is_seeded():
    space = EmotionSpace(EMOTIONS, torch.randn(8, 4), torch.rand(8, 4), torch.ones(8))
    a = space.sample("fear", torch.Generator().manual_seed(1))
    b = space.sample("fear", torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.equal(a, space.sample("fear", torch.Generator().manual_seed(2)))


def test_cli_import_official(cli, tmp_path):
    src = tmp_path / "emo_space"
    src.mkdir()
    for emotion in EMOTIONS:
        torch.save(torch.zeros(768), src / f"{emotion}_mean_v2.pt")
        torch.save(torch.ones(768), src / f"{emotion}_std_v2.pt")
    result = cli("train-encoder", "--import-official", src, "--out", tmp_path / "enc", "--json")
    assert result.code == 0, result.err
    assert result.json["emotion_dim"] == 768 and result.json["has_classifier"] is False
    again = cli("train-encoder", "--import-official", src, "--out", tmp_path / "enc")
    assert again.code == 1 and "already holds" in again.err


def test_train_encoder_says_how_many_images_each_accuracy_comes_from(cli, tiny_config, tmp_path):
    out = tmp_path / "counted"
    shown = cli("train-encoder", "-c", tiny_config, "--max-steps", "2", "--out", out)
    assert shown.code == 0, shown.err
    result = cli("train-encoder", "-c", tiny_config, "--max-steps", "2", "--out", tmp_path / "json", "--json").json
    val, counted = result["val_images"], result["train_accuracy_images"]
    assert 0 < val < 50 and 0 < counted <= result["train_images"]
    assert all(h["val_images"] == val for h in result["history"])
    text = " ".join(shown.out.split())
    assert f"val accuracy ({val} images)" in text or f"val accuracy ({val} image)" in text
    assert f"on {counted} training images" in text and f"on {val} validation image" in text
    assert f"The validation split has {val} image" in shown.err  # a small split is said to be small
