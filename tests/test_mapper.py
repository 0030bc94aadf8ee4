import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from emogen_cli.core.config import load_config
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError
from emogen_cli.stage2.mapper import MappingNetwork, load_mapper, mapper_loss


def test_mapper_architecture():
    net = MappingNetwork(768, 1024, 768, 2)
    shapes = [tuple(p.shape) for p in net.parameters()]
    assert shapes == [(1024, 768), (1024,), (768, 1024), (768,)]
    assert isinstance(net.mlp[1], torch.nn.ReLU) and len(net.mlp) == 3
    assert len(MappingNetwork(8, 16, 4, 3).mlp) == 5


def test_loss_gating_by_confidence_hand_computed():
    l_ldm = torch.tensor([1.0, 2.0, 3.0])
    l_attr = torch.tensor([4.0, 5.0, 6.0])
    l_emo = torch.tensor([0.5, 0.5, 0.5])
    c = torch.tensor([0.0, 0.5, 0.2])
    got = mapper_loss(l_ldm, l_attr, l_emo, c, lambda_attr=0.01, lambda_emo=0.1, threshold=0.0)
    expected = torch.tensor([1.0 + 0 + 0.05, 0.5 * 2 + 0.01 * 0.5 * 5 + 0.05, 0.8 * 3 + 0.01 * 0.2 * 6 + 0.05])
    assert torch.allclose(got, expected)
    # Below the threshold, c counts as 0: pure LDM loss (plus the emotion term).
    gated = mapper_loss(l_ldm, l_attr, l_emo, c, lambda_attr=0.01, lambda_emo=0.0, threshold=0.3)
    assert torch.allclose(gated, torch.tensor([1.0, 0.5 * 2 + 0.01 * 0.5 * 5, 3.0]))


def _components(tiny_bundle):
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    from emogen_cli.stage2.conditioning import EmotionPromptEncoder

    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_bundle / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(tiny_bundle / "text_encoder")).requires_grad_(False).eval()
    unet = UNet2DConditionModel.from_pretrained(str(tiny_bundle / "unet")).requires_grad_(False).eval()
    scheduler = DDPMScheduler.from_pretrained(str(tiny_bundle / "scheduler"))
    proj = CLIPModel.from_pretrained(str(tiny_bundle / "clip")).text_projection.weight.detach()
    prompts = EmotionPromptEncoder(tokenizer, text_encoder, ["<emotion>"])
    return prompts, text_encoder, unet, scheduler, proj


def test_placeholder_injection_equals_writing_the_embedding_table(tiny_bundle):
    from transformers import CLIPTextModel

    prompts, text_encoder, *_ = _components(tiny_bundle)
    ids = prompts.tokenize(["<emotion> cup", "a <emotion>"])
    values = torch.randn(2, 1, 32)
    hidden, pooled = prompts.encode(ids, values)
    # Reference: the official way, a resized table with the vector written into the new row.
    ref = CLIPTextModel.from_pretrained(str(tiny_bundle / "text_encoder"))
    ref.resize_token_embeddings(len(prompts.tokenizer))
    for b in range(2):
        with torch.no_grad():
            ref.get_input_embeddings().weight[prompts.placeholder_ids[0]] = values[b, 0]
            expected = ref(ids[b:b + 1])[0]
        assert torch.allclose(hidden[b:b + 1], expected, atol=1e-5)
    # The semantic state is pooled at the placeholder by default (the official code's pooling).
    at = (ids == prompts.placeholder_ids[0]).int().argmax(-1)
    assert torch.equal(pooled, hidden[torch.arange(2), at])
    # Without a placeholder the wrapper is the plain encoder; with one but no values, it refuses.
    plain = prompts.tokenize(["a cup"])
    assert torch.allclose(prompts.encode(plain)[0], ref(plain)[0], atol=1e-6)
    with pytest.raises(RuntimeError):
        prompts.encode(ids)


def test_fixed_batch_losses_fall_and_only_the_mapper_learns(tiny_bundle):
    import torch.nn.functional as F

    from emogen_cli.core.emotions import attribute_text
    from emogen_cli.core.runtime import step_generator
    from emogen_cli.stage2.train_mapper import _loss_terms

    prompts, text_encoder, unet, scheduler, proj = _components(tiny_bundle)
    frozen_before = {**{f"te.{k}": v.clone() for k, v in text_encoder.state_dict().items()},
                     **{f"unet.{k}": v.clone() for k, v in unet.state_dict().items()}}
    attributes = ["mountain_snowy", "spider", "balloon", "cemetery"]
    with torch.no_grad():
        _, pooled = prompts.encode(prompts.tokenize([attribute_text(a) for a in attributes]))
        attribute_features = F.normalize(pooled @ proj.T, dim=-1)
    torch.manual_seed(0)
    batch = {"vector": torch.randn(4, 16), "latent_params": torch.cat([torch.randn(4, 4, 8, 8), torch.full((4, 4, 8, 8), -4.0)], 1),
             "attribute": torch.tensor([0, 1, 2, 3]), "emotion": torch.tensor([1, 6, 0, 7]),
             "confidence": torch.tensor([0.9, 0.8, 0.7, 0.6])}
    mapper = MappingNetwork(16, 32, 32, 2)
    opt = torch.optim.Adam(mapper.parameters(), lr=3e-3)
    ids = prompts.tokenize(["<emotion>"])
    history = []
    for _ in range(40):
        terms = _loss_terms(batch, step_generator(0, 0), mapper, prompts, ids, unet, None, scheduler, 0.18215, proj,
                            attribute_features, None, torch.float32, torch.device("cpu"))
        loss = (terms["ldm"] + terms["attr"]).mean()
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mapper.parameters())
        assert all(p.grad is None for p in list(text_encoder.parameters()) + list(unet.parameters()))
        opt.step()
        history.append({k: v.mean().item() for k, v in terms.items()})
    assert history[-1]["ldm"] < history[0]["ldm"]
    assert history[-1]["attr"] < history[0]["attr"] * 0.9
    after = {**{f"te.{k}": v for k, v in text_encoder.state_dict().items() if not k.endswith("placeholder_ids")},
             **{f"unet.{k}": v for k, v in unet.state_dict().items()}}
    for key, value in frozen_before.items():
        match = key.replace("te.embeddings.token_embedding.weight", "te.embeddings.token_embedding.base.weight")
        assert torch.equal(after[match], value), key


def test_train_mapper_bundle_resume_and_cli(stage1, tmp_path, cli):
    from emogen_cli.stage2.train_mapper import train_mapper

    full = train_mapper(load_config(stage1, {"mapper.output": str(tmp_path / "full"), "mapper.lambda_emo": 0.1}))
    assert full["steps"] == 6 and full["cached_latents"]
    bundle = load_mapper(tmp_path / "full")
    assert bundle.emotions == EMOTIONS and bundle.config["placeholder"] == "<emotion>"
    assert bundle.config["in_dim"] == 16 and bundle.config["out_dim"] == 32
    # Every prepared attribute has its probe confidence; L_attr classes that no image has (the official lists hold
    # names the data may lack) are listed without one.
    confidence = bundle.attributes["confidence"]
    assert set(confidence) == set(bundle.attributes["names"]) | set(bundle.vocabulary)
    assert all(len(confidence[a]) == 8 and abs(sum(confidence[a]) - 1) < 1e-4 for a in bundle.attributes["names"])
    assert all(confidence[a] is None for a in set(bundle.vocabulary) - set(bundle.attributes["names"]))
    assert torch.equal(bundle.space.mean, load_file(str(tmp_path / "encoder" / "emotion_space.safetensors"))["mean"])

    # Interrupt after 3 steps (one checkpoint), resume to 6: identical weights.
    part = tmp_path / "part"
    train_mapper(load_config(stage1, {"mapper.output": str(part), "mapper.max_steps": 3, "mapper.lambda_emo": 0.1}))
    (part / "config.json").unlink()
    resumed = cli("train-mapper", "-c", stage1, "--out", part, "--lambda-emo", "0.1", "--resume", "--json")
    assert resumed.code == 0, resumed.err
    assert resumed.json["steps"] == 6
    a = load_file(str(tmp_path / "full" / "mapper.safetensors"))
    b = load_file(str(part / "mapper.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    again = cli("train-mapper", "-c", stage1, "--out", tmp_path / "full")
    assert again.code == 1 and "already holds" in again.err


def test_nan_loss_stops_cleanly_and_keeps_checkpoints(stage1, tmp_path):
    from emogen_cli.core.errors import TrainingDiverged
    from emogen_cli.stage2.train_mapper import train_mapper

    with pytest.raises(TrainingDiverged, match="loss became"):
        train_mapper(load_config(stage1, {"mapper.output": str(tmp_path / "nan"), "mapper.lr": 1e30,
                                          "mapper.max_steps": 6, "mapper.checkpoint_every": 1}))
    assert not (tmp_path / "nan" / "config.json").exists()


def test_official_confidence_import_is_restricted(tmp_path, cli):
    from emogen_cli.stage2.confidence import import_official_confidence, load_confidence

    folder = tmp_path / "dataset_balance"
    folder.mkdir()
    (folder / "attr_coefficient_emotion_scene.pkl").write_bytes(
        pickle.dumps({"Mountain Snowy": np.arange(8, dtype=np.float32).reshape(1, 8) / 28}))
    (folder / "attr_coefficient_emotion_object.pkl").write_bytes(pickle.dumps({"spider": np.eye(8)[6]}))
    table = import_official_confidence(tmp_path, tmp_path / "c.json")
    assert set(table["attributes"]) == {"mountain_snowy", "spider"}
    assert load_confidence(tmp_path / "c.json")["attributes"]["spider"][EMOTIONS.index("fear")] == 1.0

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "attr_coefficient_emotion_object.pkl").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(EmogenError, match="refusing to load builtins.print"):
        import_official_confidence(tmp_path, tmp_path / "d.json")
    result = cli("train-mapper", "--import-official-confidence", tmp_path, "--out", tmp_path / "m")
    assert result.code == 1 and "Traceback" not in result.err
