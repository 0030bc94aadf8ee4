"""Official-behaviour defaults (issue 9): each is checked against a hand computation or a small
official-format file built here."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from emogen_cli.core.config import Config, load_config
from emogen_cli.core.emotions import EMOTIONS
from emogen_cli.core.errors import EmogenError

LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 94371234\n")
LFS_LINE = "is a Git LFS pointer, not the weights: run `git lfs pull` in the EmoGen clone"


# --- defaults -------------------------------------------------------------------------------------------------------

def test_every_new_key_defaults_to_the_official_behaviour():
    cfg = Config()
    assert cfg.data.balance == "per_kind"
    assert cfg.encoder.preprocessing == "official" and cfg.encoder.space_splits == ["train", "val", "test"]
    assert cfg.mapper.attribute_vocabulary == "emotional" and cfg.mapper.semantic_token == "placeholder"
    assert cfg.mapper.emotion_probe is None and cfg.mapper.emotional_attributes is None
    assert cfg.mapper.attribute_duplicates == "official" and cfg.mapper.attribute_text == "official"
    with pytest.raises(EmogenError, match="'mapper.attribute_text' must be one of official, spaces"):
        load_config(None, {"mapper.attribute_text": "underscores"})
    with pytest.raises(EmogenError, match="'mapper.attribute_duplicates' must be one of official, merge"):
        load_config(None, {"mapper.attribute_duplicates": "drop"})
    # Booleans of earlier versions still load: true is the official per-kind balancing, false none.
    assert load_config(None, {"data.balance": True}).data.balance == "per_kind"
    assert load_config(None, {"data.balance": "false"}).data.balance == "none"
    with pytest.raises(EmogenError, match="'mapper.semantic_token' must be one of placeholder, eos"):
        load_config(None, {"mapper.semantic_token": "cls"})


def test_trained_bundles_record_the_official_defaults(mapper_config):
    from emogen_cli.stage1.encoder import load_encoder
    from emogen_cli.stage2.mapper import load_mapper

    cfg = load_config(mapper_config)
    encoder = load_encoder(cfg.mapper.encoder, with_model=False)
    assert encoder.config["preprocessing"] == "official"
    assert encoder.config["image_mean"] == encoder.config["image_std"] == [0.5, 0.5, 0.5]
    assert encoder.config["space_splits"] == ["train", "val", "test"]
    assert json.loads((Path(cfg.data.prepared) / "prepared.json").read_text())["balance"] == "per_kind"
    bundle = load_mapper(cfg.generate.mapper)
    assert bundle.config["semantic_token"] == bundle.semantic_token == "placeholder"
    assert bundle.config["attribute_vocabulary"] == "emotional"
    assert bundle.config["emotion_probe"] == {"source": "trained by emogen", "used_by_loss": False,
                                              "file": "emotion_probe.safetensors"}
    assert bundle.config["attribute_duplicates"] == "official" and bundle.config["attribute_text"] == "official"
    # EmoSet-shaped data: the official lists shipped with emogen, all 278 entries (4 names twice), as written.
    vocabulary = bundle.attributes["vocabulary"]
    assert vocabulary["kind"] == "emotional" and vocabulary["source"].startswith("official EmoGen")
    assert "official_emotional_attributes.json" in vocabulary["source"]
    assert len(vocabulary["classes"]) == 278 and len(vocabulary["names"]) == 274
    assert vocabulary["duplicates"] == "official" and vocabulary["text"] == "official"
    assert "mountain_snowy" in vocabulary["names"] and "mountain_snowy" in vocabulary["by_emotion"]["awe"]
    assert bundle.vocabulary == vocabulary["names"] and set(vocabulary["names"]) <= set(bundle.attributes["confidence"])


# --- balancing ------------------------------------------------------------------------------------------------------

def _scan():
    from emogen_cli.data.emoset import Sample, ScanResult

    samples = []
    def add(emotion, n, scene=None, objects=()):
        for _ in range(n):
            samples.append(Sample(id=f"{emotion}_{len(samples):05d}", emotion=emotion, split="train",
                                  image=f"image/{emotion}/{len(samples)}.jpg", scene=scene, objects=list(objects)))
    add("amusement", 3, scene="Amusement Park")
    add("fear", 1, scene="cemetery")
    add("amusement", 1, objects=["balloon"])
    add("fear", 2, objects=["spider", "tree"])
    add("sadness", 1)  # neither scene nor object: dropped
    return ScanResult(samples=samples)


@pytest.mark.parametrize("mode, expected", [
    ("per_kind", {("scene", "amusement"): 3, ("scene", "fear"): 3, ("object", "amusement"): 2, ("object", "fear"): 2}),
    ("union", {("scene", "amusement"): 3, ("scene", "fear"): 2, ("object", "amusement"): 1, ("object", "fear"): 2}),
    ("none", {("scene", "amusement"): 3, ("scene", "fear"): 1, ("object", "amusement"): 1, ("object", "fear"): 2}),
])
def test_balancing_counts_of_a_hand_made_example(mode, expected):
    from collections import Counter

    from emogen_cli.data.emoset import filter_and_balance

    rows = filter_and_balance(_scan(), seed=0, balance=mode)
    counts = Counter((r.kind, r.emotion) for r in rows)
    if mode == "union":  # 4 amusement, 3 fear originals: fear gets one duplicate, from either kind
        assert sum(n for (_, e), n in counts.items() if e == "fear") == 4
        assert counts[("scene", "amusement")] == 3 and counts[("object", "amusement")] == 1
        assert counts[("scene", "fear")] + counts[("object", "fear")] == 4
    else:
        assert dict(counts) == expected
    assert all(r.copy == 0 for r in rows if (r.kind, r.emotion) == ("scene", "amusement"))
    assert filter_and_balance(_scan(), 0, True) == filter_and_balance(_scan(), 0, "per_kind")  # legacy boolean


def test_an_image_whose_scene_is_its_first_object_is_listed_under_both_kinds():
    """The official scene and object lists both hold such an image (dataset_balance.py's object pass keeps an image
    with a scene when the scene is the object folder's name): per_kind gives it a row of each kind."""
    from emogen_cli.data.emoset import Prepared, Sample, ScanResult, filter_and_balance

    samples = [Sample("t1", "awe", "train", "image/awe/t1.jpg", scene="Tower", objects=["tower", "sky"]),
               Sample("t2", "awe", "train", "image/awe/t2.jpg", scene="beach", objects=["tower"]),  # another first
               Sample("t3", "awe", "train", "image/awe/t3.jpg", scene="sky", objects=["person", "sky"]),  # not first
               Sample("f1", "fear", "train", "image/fear/f1.jpg", objects=["spider"])]
    rows = filter_and_balance(ScanResult(samples=list(samples)), seed=0, balance="per_kind")
    originals = [(r.id, r.kind, r.attribute) for r in rows if r.copy == 0]
    assert sorted(originals) == [("f1", "object", "spider"), ("t1", "object", "tower"), ("t1", "scene", "tower"),
                                 ("t2", "scene", "beach"), ("t3", "scene", "sky")]
    # Each kind is balanced on its own: awe has 1 object image, fear 1; scenes are awe only.
    assert sum(r.kind == "object" for r in rows) == 2 and sum(r.kind == "scene" for r in rows) == 3
    prepared = Prepared(root=Path("."), rows=rows, info={}, path=Path("."))
    assert [r.id for r in prepared.unique_rows] == ["t1", "t2", "t3", "f1"]  # one row per image
    for mode in ("union", "none"):  # emogen's earlier rule: one row per image
        rows = filter_and_balance(ScanResult(samples=list(samples)), seed=0, balance=mode)
        assert sorted((r.id, r.kind) for r in rows if r.copy == 0) == [("f1", "object"), ("t1", "scene"),
                                                                      ("t2", "scene"), ("t3", "scene")]


# --- stage-1 preprocessing ------------------------------------------------------------------------------------------

def _pattern(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([(x * 7) % 256, (y * 5) % 256, (x * y) % 256], -1).astype(np.uint8))


def test_stage1_preprocessing_equals_the_official_transform():
    """torchvision Resize(256) -> CenterCrop(224) -> ToTensor -> Normalize(0.5, 0.5), by hand: a 300x225
    image resizes (bilinear, PIL's antialiasing) to int(256 * 300 / 225) = 341 x 256, and the crop starts at
    top round(32 / 2) = 16, left round(117 / 2) = round(58.5) = 58 (Python's half-to-even, as torchvision)."""
    from transformers import ResNetConfig

    from emogen_cli.stage1.encoder import encoder_config, encoder_pixels

    image = _pattern(300, 225)
    resized = np.asarray(image.resize((341, 256), Image.BILINEAR), dtype=np.float32)
    expected = ((resized[16:240, 58:282] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)
    config = encoder_config(ResNetConfig(), "resnet", 8, 0.5, 224)  # official by default
    got = encoder_pixels(image, config)
    assert got.shape == (3, 224, 224)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    # A portrait image: the width is the shorter side.
    tall = _pattern(200, 410)
    resized = np.asarray(tall.resize((256, int(256 * 410 / 200)), Image.BILINEAR), dtype=np.float32)
    top = int(round((resized.shape[0] - 224) / 2))
    np.testing.assert_allclose(encoder_pixels(tall, config),
                               ((resized[top:top + 224, 16:240] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1), atol=1e-6)
    # Bundles written before the key existed keep their ImageNet pipeline.
    legacy = {k: v for k, v in encoder_config(ResNetConfig(), "r", 8, 0.5, 224, preprocessing="imagenet").items()
              if k != "preprocessing"}
    assert legacy["image_mean"] == [0.485, 0.456, 0.406]
    from emogen_cli.core.images import resize_center_crop, to_array
    np.testing.assert_array_equal(encoder_pixels(image, legacy),
                                  to_array(resize_center_crop(image, 224), legacy["image_mean"], legacy["image_std"]))


def test_train_mapper_emotion_vectors_use_the_encoders_preprocessing(mapper_config):
    from safetensors.torch import load_file

    from emogen_cli.data.emoset import load_prepared
    from emogen_cli.stage1.encoder import load_encoder

    cfg = load_config(mapper_config)
    encoder = load_encoder(cfg.mapper.encoder)
    prepared = load_prepared(cfg.data.prepared)
    row = prepared.unique_rows[0]
    vectors = load_file(str(Path(cfg.generate.mapper) / "emotion_vectors.safetensors"))
    # 32x32 images, crop 32: Resize(round(32 * 256 / 224) = 37) -> CenterCrop(32) at round(2.5) = 2.
    image = Image.open(prepared.root / row.image).convert("RGB")
    assert image.size == (32, 32)
    resized = np.asarray(image.resize((37, 37), Image.BILINEAR), dtype=np.float32)
    pixels = torch.from_numpy(((resized[2:34, 2:34] / 255.0 - 0.5) / 0.5).transpose(2, 0, 1).copy())
    with torch.no_grad():
        expected = encoder.model.eval().encode(pixels[None])[0]
    assert torch.allclose(vectors[row.id], expected, atol=1e-5)


# --- semantic vector and attribute loss ----------------------------------------------------------------------------

def _prompts(tiny_bundle, semantic_token="placeholder"):
    from transformers import CLIPModel, CLIPTextModel, CLIPTokenizer

    from emogen_cli.stage2.conditioning import EmotionPromptEncoder

    tokenizer = CLIPTokenizer.from_pretrained(str(tiny_bundle / "tokenizer"))
    text_encoder = CLIPTextModel.from_pretrained(str(tiny_bundle / "text_encoder")).requires_grad_(False).eval()
    proj = CLIPModel.from_pretrained(str(tiny_bundle / "clip")).text_projection.weight.detach()
    return EmotionPromptEncoder(tokenizer, text_encoder, ["<emotion>"], semantic_token), proj


def test_semantic_vector_is_the_final_hidden_state_at_the_placeholder(tiny_bundle):
    from transformers import CLIPTextModel

    prompts, _ = _prompts(tiny_bundle)
    ids = prompts.tokenize(["<emotion>", "a <emotion> cup"])
    values = torch.randn(2, 1, 32)
    hidden, pooled = prompts.encode(ids, values)
    position = torch.tensor([1, 2])  # after the start token (and "a")
    assert (ids[torch.arange(2), position] == prompts.placeholder_ids[0]).all()
    assert torch.equal(pooled, hidden[torch.arange(2), position])
    # The official code: a table with the vector written in, SD 1.5's eos_token_id=2 -> pooler at argmax(ids).
    ref = CLIPTextModel.from_pretrained(str(tiny_bundle / "text_encoder"), eos_token_id=2)
    ref.resize_token_embeddings(len(prompts.tokenizer))
    for b in range(2):
        with torch.no_grad():
            ref.get_input_embeddings().weight[prompts.placeholder_ids[0]] = values[b, 0]
            official = ref(ids[b:b + 1]).pooler_output
        assert torch.allclose(pooled[b:b + 1], official, atol=1e-5)
    # "eos" pools at the end-of-text token; a prompt without a placeholder pools there either way.
    eos_prompts, _ = _prompts(tiny_bundle, "eos")
    eos = (ids == prompts.tokenizer.eos_token_id).int().argmax(-1)
    hidden_e, pooled_e = eos_prompts.encode(ids, values)
    assert torch.equal(pooled_e, hidden_e[torch.arange(2), eos])
    plain = prompts.tokenize(["a cup"])
    h, p = prompts.encode(plain)
    assert torch.equal(p, h[0, (plain[0] == prompts.tokenizer.eos_token_id).int().argmax()][None])


def test_attribute_loss_is_zero_outside_the_vocabulary_and_hand_computed_inside(tiny_bundle):
    import torch.nn.functional as F

    from emogen_cli.core.runtime import step_generator
    from emogen_cli.stage2.mapper import MappingNetwork
    from emogen_cli.stage2.train_mapper import MapperSamples, _loss_terms

    prompts, proj = _prompts(tiny_bundle)
    from diffusers import DDPMScheduler, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(tiny_bundle / "unet")).requires_grad_(False).eval()
    scheduler = DDPMScheduler.from_pretrained(str(tiny_bundle / "scheduler"))
    vocabulary = ["spider", "cemetery", "balloon"]
    with torch.no_grad():
        _, pooled = prompts.encode(prompts.tokenize([v.replace("_", " ") for v in vocabulary]))
        features = F.normalize(pooled @ proj.T, dim=-1)
    torch.manual_seed(0)
    mapper = MappingNetwork(16, 32, 32, 2)
    batch = {"vector": torch.randn(2, 16), "latent_params": torch.zeros(2, 8, 8, 8),
             "attribute": torch.tensor([-1, 1]), "emotion": torch.tensor([6, 6]), "confidence": torch.tensor([0.5, 0.5])}
    ids = prompts.tokenize(["<emotion>"])
    with torch.no_grad():
        terms = _loss_terms(batch, step_generator(0, 0), mapper, prompts, ids, unet, None, scheduler, 0.18215, proj,
                            features, None, torch.float32, torch.device("cpu"))
        hidden, _ = prompts.encode(ids.expand(2, -1), mapper(batch["vector"]).unsqueeze(1))
    assert terms["attr"][0].item() == 0.0
    semantic = hidden[1, 1] @ proj.T  # the placeholder's final hidden state, projected
    cosines = [float(torch.dot(semantic, f) / semantic.norm()) for f in features]
    expected = -cosines[1] + math.log(sum(math.exp(c) for c in cosines))
    assert terms["attr"][1].item() == pytest.approx(expected, abs=1e-5)

    # The dataset marks attributes outside the vocabulary with -1.
    from emogen_cli.data.emoset import Row

    rows = [Row("a", "a.jpg", "fear", "tree", "object", "train"), Row("b", "b.jpg", "fear", "spider", "object", "train")]
    data = MapperSamples(rows, Path("."), {"a": torch.zeros(16), "b": torch.zeros(16)}, {"a": 0, "b": 0}, 16,
                         vocabulary, {"spider": [0.1] * 8})
    assert [data[0]["attribute"], data[1]["attribute"]] == [-1, 0]


def test_emotional_vocabulary_rule_on_a_hand_made_table():
    from emogen_cli.stage2.confidence import emotional_from_confidence

    uniform = [1 / 8] * 8
    table = {
        "spider": [0, 0, 0, 0, 0, 0.1, 0.8, 0.1],        # fear, clearly
        "balloon": [0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1],  # amusement: 0.3 >= 2 x 0.125
        "sky": uniform,                                  # emotion-agnostic
        "tree": [0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.2],  # top 0.2 < 0.25: agnostic
        "cemetery": [0, 0, 0, 0, 0, 0, 2, 6],            # unnormalised rows: relative to the row mean (1)
    }
    result = emotional_from_confidence(table)
    assert result["by_emotion"]["fear"] == ["spider"] and result["by_emotion"]["amusement"] == ["balloon"]
    assert result["by_emotion"]["sadness"] == ["cemetery"]
    assert sorted(result["names"]) == ["balloon", "cemetery", "spider"]


# --- the default vocabulary, its duplicates and its text (issue 19) -------------------------------------------------

def test_the_official_lists_ship_with_emogen_in_read_attr_order():
    import fnmatch
    import tomllib
    from importlib import resources

    from emogen_cli.stage2.confidence import OFFICIAL_RESOURCE, official_emotional_attributes, vocabulary_classes

    raw = json.loads(resources.files("emogen_cli").joinpath(OFFICIAL_RESOURCE).read_text())
    assert list(raw) == ["object", "scene"] and list(raw["object"]) == list(raw["scene"]) == list(EMOTIONS)
    concatenated = [n for kind in ("object", "scene") for e in raw[kind] for n in raw[kind][e]]  # as read_attr
    vocabulary = official_emotional_attributes()
    assert vocabulary["entries"] == concatenated and len(concatenated) == 278
    assert vocabulary["names"] == list(dict.fromkeys(concatenated)) and len(vocabulary["names"]) == 274
    assert sorted({n for n in concatenated if concatenated.count(n) == 2}) == ["castle", "dinosaur", "lighthouse",
                                                                               "tower"]
    assert vocabulary_classes(vocabulary, "official") == concatenated
    assert vocabulary_classes(vocabulary, "merge") == vocabulary["names"]
    assert "mountain_snowy" in concatenated and all(" " not in n for n in concatenated)
    # It is package data: the wheel carries it.
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["emogen_cli"]
    assert any(fnmatch.fnmatch(OFFICIAL_RESOURCE, g) for g in globs)


def _heard():
    from emogen_cli.core.reporting import Reporter

    class Heard(Reporter):
        def __init__(self):
            self.infos, self.warnings = [], []

        def info(self, message):
            self.infos.append(message)

        def warn(self, message):
            self.warnings.append(message)

    return Heard()


def _prepared_with(attributes):
    from emogen_cli.data.emoset import Prepared, Row

    rows = [Row(f"i{k}", f"image/fear/{k}.jpg", "fear", a, "scene", "train") for k, a in enumerate(attributes)]
    return Prepared(root=Path("."), rows=rows, info={}, path=Path("."))


def test_the_emotional_vocabulary_is_official_for_emoset_and_derived_otherwise_with_a_word(tmp_path):
    from emogen_cli.stage2.train_mapper import _vocabulary

    table = {"zorb": [0, 0, 0, 0, 0, 0, 1, 0], "quux": [1 / 8] * 8, "spider": [0, 0, 0, 0, 0, 0, 1, 0]}
    emoset_like = _prepared_with(["mountain_snowy", "spider", "sky", "tree"])
    other = _prepared_with(["zorb"] * 19 + ["spider"])  # 5% of the images have an official attribute
    heard = _heard()
    vocabulary = _vocabulary(Config(), emoset_like, table, heard)
    assert vocabulary["source"].startswith("official EmoGen") and len(vocabulary["classes"]) == 278
    assert heard.warnings == heard.infos == []
    vocabulary = _vocabulary(Config(), other, table, heard)
    assert vocabulary["names"] == vocabulary["classes"] == ["spider", "zorb"]
    assert vocabulary["source"].startswith("derived from the confidence table")
    assert len(heard.warnings) == 1 and "does not look like EmoSet" in heard.warnings[0]
    assert "derived" in heard.warnings[0] and "5%" in heard.warnings[0]
    # Chosen explicitly: "derived" says so (info), "official" even for other data.
    heard = _heard()
    derived = _vocabulary(load_config(None, {"mapper.emotional_attributes": "derived"}), emoset_like, table, heard)
    assert derived["names"] == ["spider", "zorb"] and len(heard.infos) == 1 and "derived" in heard.infos[0]
    forced = _vocabulary(load_config(None, {"mapper.emotional_attributes": "official"}), other, table, heard)
    assert len(forced["classes"]) == 278 and heard.warnings == []
    merged = _vocabulary(load_config(None, {"mapper.attribute_duplicates": "merge"}), emoset_like, table, heard)
    assert merged["classes"] == merged["names"] and len(merged["classes"]) == 274 and merged["duplicates"] == "merge"
    # A given list keeps a name listed twice as two classes (official), one with merge.
    (tmp_path / "list.json").write_text(json.dumps(["spider", "Tower", "spider"]))
    given = _vocabulary(load_config(None, {"mapper.emotional_attributes": str(tmp_path / "list.json")}), other, table)
    assert given["classes"] == ["spider", "tower", "spider"] and given["names"] == ["spider", "tower"]
    # So does a bundle's attributes.json (its classes as trained) and the official lists as JSON.
    (tmp_path / "attributes.json").write_text(json.dumps({"names": ["x"], "vocabulary": {
        "names": ["tower", "spider"], "classes": ["tower", "spider", "tower"]}}))
    assert _vocabulary(load_config(None, {"mapper.emotional_attributes": str(tmp_path / "attributes.json")}), other,
                       table)["classes"] == ["tower", "spider", "tower"]
    (tmp_path / "lists.json").write_text(json.dumps({"object": {"fear": ["spider"]}, "scene": {"awe": ["Tower"],
                                                                                                "fear": ["tower"]}}))
    lists = _vocabulary(load_config(None, {"mapper.emotional_attributes": str(tmp_path / "lists.json")}), other, table)
    assert lists["classes"] == ["spider", "tower", "tower"] and lists["by_emotion"]["fear"] == ["spider", "tower"]


def _attribute_loss(tiny_bundle, classes, texts, target):
    """L_attr of one sample whose attribute is classes[target], from _loss_terms, and the cosines by hand."""
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from emogen_cli.core.runtime import step_generator
    from emogen_cli.stage2.mapper import MappingNetwork
    from emogen_cli.stage2.train_mapper import _loss_terms

    prompts, proj = _prompts(tiny_bundle)
    unet = UNet2DConditionModel.from_pretrained(str(tiny_bundle / "unet")).requires_grad_(False).eval()
    scheduler = DDPMScheduler.from_pretrained(str(tiny_bundle / "scheduler"))
    with torch.no_grad():
        _, pooled = prompts.encode(prompts.tokenize(texts))
        features = F.normalize(pooled @ proj.T, dim=-1)
    torch.manual_seed(0)
    mapper = MappingNetwork(16, 32, 32, 2)
    batch = {"vector": torch.randn(1, 16), "latent_params": torch.zeros(1, 8, 8, 8),
             "attribute": torch.tensor([target]), "emotion": torch.tensor([6]), "confidence": torch.tensor([0.5])}
    ids = prompts.tokenize(["<emotion>"])
    with torch.no_grad():
        terms = _loss_terms(batch, step_generator(0, 0), mapper, prompts, ids, unet, None, scheduler, 0.18215, proj,
                            features, None, torch.float32, torch.device("cpu"))
        hidden, _ = prompts.encode(ids, mapper(batch["vector"]).unsqueeze(1))
    semantic = hidden[0, 1] @ proj.T
    return terms["attr"][0].item(), [float(torch.dot(semantic, f) / semantic.norm()) for f in features]


def test_attribute_loss_over_a_list_with_a_name_twice_is_the_official_cross_entropy(tiny_bundle):
    """The official L_attr: cross-entropy over every entry of the concatenated lists (a name listed twice is two
    columns with equal scores), target `total_attr.index(name)`: the name's first entry."""
    from emogen_cli.data.emoset import Row
    from emogen_cli.stage2.confidence import attribute_texts
    from emogen_cli.stage2.train_mapper import MapperSamples

    classes = ["spider", "tower", "cemetery", "tower"]
    rows = [Row("a", "a.jpg", "fear", "tower", "scene", "train")]
    data = MapperSamples(rows, Path("."), {"a": torch.zeros(16)}, {"a": 0}, 16, classes, {})
    assert data[0]["attribute"] == 1  # the first entry, as the official total_attr.index
    got, cosines = _attribute_loss(tiny_bundle, classes, attribute_texts(classes), 1)
    assert cosines[1] == pytest.approx(cosines[3], abs=1e-6)
    assert got == pytest.approx(-cosines[1] + math.log(sum(math.exp(c) for c in cosines)), abs=1e-5)
    merged, merged_cosines = _attribute_loss(tiny_bundle, classes[:3], attribute_texts(classes[:3]), 1)
    assert merged == pytest.approx(-merged_cosines[1] + math.log(sum(math.exp(c) for c in merged_cosines)), abs=1e-5)
    assert got > merged + 1e-3  # the duplicate column adds to the partition function


def test_clip_reads_the_attribute_names_as_written_by_default():
    from emogen_cli.stage2.confidence import attribute_texts

    assert attribute_texts(["mountain_snowy", "spider"]) == ["mountain_snowy", "spider"]
    assert attribute_texts(["mountain_snowy", "spider"], "official") == ["mountain_snowy", "spider"]
    assert attribute_texts(["mountain_snowy", "spider"], "spaces") == ["mountain snowy", "spider"]


def test_training_keeps_an_imported_confidence_table_and_feeds_clip_the_official_text(stage1, tmp_path, cli,
                                                                                      monkeypatch):
    import emogen_cli.stage2.train_mapper as trainer
    from emogen_cli.stage2.mapper import load_mapper

    src = tmp_path / "EmoGen" / "dataset_balance"
    src.mkdir(parents=True)
    (src / "attr_coefficient_emotion_scene.pkl").write_bytes(pickle.dumps({
        "cemetery": np.array([[0, 0, 0, 0, 0, 0, 0.3, 0.7]]), "mountain_snowy": np.array([[0, 1.0, 0, 0, 0, 0, 0, 0]])}))
    out = tmp_path / "m"
    imported = cli("train-mapper", "-c", stage1, "--out", out, "--import-official-confidence", tmp_path / "EmoGen")
    assert imported.code == 0, imported.err
    table = (out / "confidence.json").read_bytes()
    texts = []
    real = trainer.text_semantics
    monkeypatch.setattr(trainer, "text_semantics", lambda p, t, proj: texts.append(list(t)) or real(p, t, proj))
    result = cli("train-mapper", "-c", stage1, "--out", out, "--max-steps", "1")  # a second time, no --confidence
    assert result.code == 0, result.err
    assert (out / "confidence.json").read_bytes() == table  # kept, byte for byte
    assert "kept, never replaced" in " ".join(result.err.split())
    bundle = load_mapper(out)
    assert bundle.attributes["confidence_method"] == "official EmoGen attr_coefficient tables"
    assert bundle.attributes["confidence"]["cemetery"] == [0, 0, 0, 0, 0, 0, 0.3, 0.7]
    # The official text: the 278 entries as written, underscores kept.
    assert len(texts) == 1 and len(texts[0]) == 278
    assert "mountain_snowy" in texts[0] and "mountain snowy" not in texts[0]
    assert bundle.attribute_text == "official"

    # A damaged imported table is one line, and is left as it is.
    damaged = tmp_path / "d"
    damaged.mkdir()
    (damaged / "confidence.json").write_text(json.dumps({"method": "official EmoGen attr_coefficient tables",
                                                         "attributes": {"cemetery": [1, 2]}}))
    before = (damaged / "confidence.json").read_bytes()
    result = cli("train-mapper", "-c", stage1, "--out", damaged, "--max-steps", "1")
    assert result.code == 1 and "is not usable" in result.err and "Traceback" not in result.err
    assert (damaged / "confidence.json").read_bytes() == before


def test_spaces_and_merged_duplicates_are_options_recorded_in_the_bundle(stage1, tmp_path, monkeypatch):
    import emogen_cli.stage2.train_mapper as trainer
    from emogen_cli.stage2.mapper import load_mapper

    texts = []
    real = trainer.text_semantics
    monkeypatch.setattr(trainer, "text_semantics", lambda p, t, proj: texts.append(list(t)) or real(p, t, proj))
    out = tmp_path / "m"
    trainer.train_mapper(load_config(stage1, {"mapper.max_steps": 1, "mapper.output": str(out),
                                              "mapper.attribute_text": "spaces",
                                              "mapper.attribute_duplicates": "merge"}))
    assert len(texts[0]) == 274 and "mountain snowy" in texts[0] and "mountain_snowy" not in texts[0]
    bundle = load_mapper(out)
    assert bundle.config["attribute_text"] == "spaces" and bundle.config["attribute_duplicates"] == "merge"
    vocabulary = bundle.attributes["vocabulary"]
    assert vocabulary["text"] == "spaces" and vocabulary["duplicates"] == "merge"
    assert vocabulary["classes"] == vocabulary["names"] and len(vocabulary["names"]) == 274
    # decompose ranks with the text the mapper was trained with
    import emogen_cli.stage2.conditioning as conditioning
    from emogen_cli.evaluation.decompose import decompose

    assert bundle.attribute_text == "spaces"
    heard = []
    real_semantics = conditioning.text_semantics
    monkeypatch.setattr(conditioning, "text_semantics",
                        lambda p, t, *a: heard.append(list(t)) or real_semantics(p, t, *a))
    decompose(load_config(stage1), ["awe"], top=3, samples=2, mapper=out)
    assert "mountain snowy" in heard[0] and "mountain_snowy" not in heard[0]


def _official_lists(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "object_attr.pkl").write_bytes(pickle.dumps({"attr_fear": ["Spider", "skull"], "attr_amusement": ["balloon"]}))
    (folder / "scene_attr.pkl").write_bytes(pickle.dumps({"attr_sadness": ["cemetery"], "attr_awe": ["Mountain Snowy"]}))
    (folder / "all_attribute_object_scene.pkl").write_bytes(pickle.dumps(["Spider", "tree", "cemetery", "sky"]))


def test_official_attribute_pickles_are_read_restricted(tmp_path):
    from emogen_cli.evaluation.decompose import read_attributes
    from emogen_cli.stage2.confidence import read_official_attributes

    _official_lists(tmp_path / "dataset_balance")
    vocab = read_official_attributes(tmp_path)
    assert vocab["names"] == ["spider", "skull", "balloon", "cemetery", "mountain_snowy"]
    assert vocab["by_emotion"]["fear"] == ["spider", "skull"] and vocab["by_emotion"]["awe"] == ["mountain_snowy"]
    assert read_attributes(tmp_path / "dataset_balance" / "all_attribute_object_scene.pkl") == [
        "spider", "tree", "cemetery", "sky"]
    assert read_attributes(tmp_path / "dataset_balance" / "object_attr.pkl") == ["spider", "skull", "balloon"]

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps([Evil()]))
    with pytest.raises(EmogenError, match="refusing to load builtins.print"):
        read_attributes(tmp_path / "evil.pkl")


# --- official artefacts ---------------------------------------------------------------------------------------------

def test_lfs_pointers_give_one_line(tmp_path, cli):
    from emogen_cli.evaluation.decompose import read_attributes
    from emogen_cli.stage1.encoder import import_official
    from emogen_cli.stage2.confidence import load_probe, read_official_pickle

    src = tmp_path / "EmoGen"
    (src / "emo_space").mkdir(parents=True)
    (src / "weights" / "image_encoder").mkdir(parents=True)
    for emotion in EMOTIONS:
        torch.save(torch.ones(16), src / "emo_space" / f"{emotion}_mean_v2.pt")
        torch.save(torch.ones(16), src / "emo_space" / f"{emotion}_std_v2.pt")
    pointer = src / "weights" / "image_encoder" / "2023-08-22-best.pth"
    pointer.write_text(LFS_POINTER)
    with pytest.raises(EmogenError) as info:
        import_official(src, tmp_path / "encoder")
    assert str(info.value.message) == f"'{pointer}' {LFS_LINE}."
    assert "\n" not in info.value.message and not info.value.hint
    result = cli("train-encoder", "--import-official", src, "--out", tmp_path / "enc2")
    assert result.code == 1 and LFS_LINE in result.err
    assert "weights_only" not in result.err and "Traceback" not in result.err
    for reader, name in ((read_official_pickle, "scene_attr.pkl"), (load_probe, "classifier.pth"),
                         (read_attributes, "all_attribute_object_scene.pkl")):
        (tmp_path / name).write_text(LFS_POINTER)
        with pytest.raises(EmogenError, match="Git LFS pointer"):
            reader(tmp_path / name)


def test_space_only_import_is_recorded_official_and_train_mapper_says_what_is_missing(tmp_path, tiny_config):
    from emogen_cli.data.prepare import prepare
    from emogen_cli.stage1.encoder import import_official, load_encoder
    from emogen_cli.stage2.train_mapper import train_mapper

    src = tmp_path / "EmoGen" / "emo_space"
    src.mkdir(parents=True)
    for emotion in EMOTIONS:
        torch.save(torch.zeros(16), src / f"{emotion}_mean_v2.pt")
        torch.save(torch.ones(16), src / f"{emotion}_std_v2.pt")
    import_official(src.parent, tmp_path / "space")
    space_only = load_encoder(tmp_path / "space", with_model=False)  # usable where a space is all that is needed
    assert space_only.config["preprocessing"] == "official" and space_only.config["image_mean"] == [0.5] * 3
    assert space_only.space.sample("awe", torch.Generator().manual_seed(0)).shape == (16,)
    cfg = load_config(tiny_config, {"mapper.encoder": str(tmp_path / "space")})
    prepare(cfg)
    with pytest.raises(EmogenError, match="no classifier weights") as info:
        train_mapper(cfg)
    assert "git lfs pull" in info.value.hint and "--import-official" in info.value.hint


# --- emotion probe, official lists, decompose -----------------------------------------------------------------------

def test_emotion_probe_never_silently_off_and_official_lists_train(stage1, tmp_path, cli):
    from emogen_cli.evaluation.decompose import decompose
    from emogen_cli.stage2.mapper import load_mapper
    from emogen_cli.stage2.train_mapper import train_mapper

    confidence = tmp_path / "confidence.json"
    confidence.write_text(json.dumps({"emotions": list(EMOTIONS), "attributes": {
        "cemetery": [0, 0, 0, 0, 0, 0, 0.2, 0.8], "spider": [0, 0, 0, 0, 0, 0.1, 0.9, 0]}}))
    base = {"mapper.confidence": str(confidence), "mapper.max_steps": 2}
    with pytest.raises(EmogenError, match="lambda_emo is 0.1 but there is no emotion probe"):
        train_mapper(load_config(stage1, {**base, "mapper.lambda_emo": 0.1, "mapper.output": str(tmp_path / "a")}))

    probe = tmp_path / "Clip_emotion_classifier.pth"  # the official format: {fc.weight, fc.bias}
    torch.save({"fc.weight": torch.randn(8, 32), "fc.bias": torch.zeros(8)}, probe)
    _official_lists(tmp_path / "EmoGen" / "dataset_balance")
    out = tmp_path / "b"
    result = cli("train-mapper", "-c", stage1, "--out", out, "--confidence", confidence, "--max-steps", "2",
                 "--lambda-emo", "0.1", "--emotion-probe", probe, "--import-official-attributes", tmp_path / "EmoGen",
                 "--json")
    assert result.code == 0, result.err
    assert result.json["final"]["l_emo"] > 0
    bundle = load_mapper(out)
    assert bundle.config["emotion_probe"] == {"source": str(probe), "used_by_loss": True,
                                              "file": "emotion_probe.safetensors"}
    assert (out / "emotion_probe.safetensors").is_file()
    vocabulary = bundle.attributes["vocabulary"]
    assert vocabulary["names"] == ["spider", "skull", "balloon", "cemetery", "mountain_snowy"]
    assert vocabulary["source"].startswith("official")
    ranked = decompose(load_config(stage1), ["fear"], top=10, samples=2, mapper=out)
    assert {a["name"] for a in ranked["emotions"][0]["attributes"]} == set(vocabulary["names"])


# --- evaluation -----------------------------------------------------------------------------------------------------

def test_sem_c_crops_the_centre(tmp_path):
    from emogen_cli.core.images import IMAGENET_MEAN, IMAGENET_STD
    from emogen_cli.evaluation.evaluate import semc_pixels

    array = np.zeros((256, 320, 3), dtype=np.uint8)
    array[...] = (255, 0, 0)  # red border
    array[16:240, 48:272] = (0, 0, 255)  # the blue centre 224 x 224
    Image.fromarray(array).save(tmp_path / "x.png")
    got = semc_pixels(tmp_path / "x.png")
    blue = (np.array([0.0, 0.0, 1.0], dtype=np.float32) - np.array(IMAGENET_MEAN, dtype=np.float32)) / np.array(
        IMAGENET_STD, dtype=np.float32)
    assert got.shape == (3, 224, 224)
    np.testing.assert_allclose(got, np.broadcast_to(blue[:, None, None], got.shape), atol=1e-6)


def test_reference_emoset_root_uses_all_its_images(emoset):
    import random

    from emogen_cli.evaluation.evaluate import _reference_images
    from emogen_cli.evaluation.gallery import scan_gallery

    root, _ = emoset
    cfg = load_config(None, {"evaluate.reference": str(root), "evaluate.max_reference": 3})
    images = _reference_images(cfg, random.Random(0))
    readable, _ = scan_gallery(root / "image")
    assert len(images) == len(readable) > 3
    assert set(EMOTIONS) <= {im.emotion for im in images}  # by folder (the synthetic set also has a stray one)


def test_emotional_list_from_json_or_a_bundles_attributes(tmp_path):
    from emogen_cli.stage2.confidence import read_emotional_attributes

    (tmp_path / "list.json").write_text(json.dumps(["Mountain Snowy", "spider"]))
    assert read_emotional_attributes(tmp_path / "list.json")["names"] == ["mountain_snowy", "spider"]
    (tmp_path / "attributes.json").write_text(json.dumps({"names": ["sky", "spider"], "vocabulary": {
        "kind": "emotional", "names": ["spider"], "by_emotion": {"fear": ["spider"]}}}))
    read = read_emotional_attributes(tmp_path / "attributes.json")
    assert read["names"] == ["spider"] and read["by_emotion"] == {"fear": ["spider"]}
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(EmogenError, match="holds no list of attribute names"):
        read_emotional_attributes(tmp_path / "bad.json")


def test_cached_confidence_is_recomputed_for_another_probe_dataset_or_seed(mapper_config, tmp_path):
    """A confidence table left in --out by an earlier (stopped) run is reused only if it was computed from
    the same probe, manifest, CLIP model and seed."""
    from transformers import CLIPModel

    from emogen_cli.core.reporting import Reporter
    from emogen_cli.data.emoset import load_prepared
    from emogen_cli.stage2.train_mapper import _confidence

    config = load_config(mapper_config)
    prepared = load_prepared(config.data.prepared)
    clip = CLIPModel.from_pretrained(config.model.clip).eval()
    table, _, _ = _confidence(config, prepared, tmp_path, clip, torch.device("cpu"), Reporter())
    stored = json.loads((tmp_path / "confidence.json").read_text())
    assert stored["made_from"]["seed"] == config.runtime.seed and stored["made_from"]["probe"] == "trained"
    again, _, _ = _confidence(config, prepared, tmp_path, clip, torch.device("cpu"), Reporter())
    assert again["attributes"] == table["attributes"]  # same inputs: the cache is used
    other = load_config(mapper_config, {"runtime.seed": config.runtime.seed + 1})
    _confidence(other, prepared, tmp_path, clip, torch.device("cpu"), Reporter())
    assert json.loads((tmp_path / "confidence.json").read_text())["made_from"]["seed"] == config.runtime.seed + 1


def test_docs_and_help_say_what_the_official_code_does(cli):
    """Single-emotion official inference adds its token (only the fusion script overwrites end-of-text rows);
    fuse's token mode is not the official mechanism; Sem-C's default object model is not torchvision's."""
    help_text = " ".join(cli("fuse", "--help").out.replace("│", " ").split())
    assert "as the official script" not in help_text and "not the official script's mechanism" in help_text
    rows = (Path(__file__).parents[1] / "docs" / "faithfulness.md").read_text().splitlines()
    where = next(r for r in rows if r.startswith("| Where the mapped embedding goes"))
    official, ours, restore = where.split(" | ")[1:4]
    assert "adds `<{emotion}>` to the tokenizer" in official and "only `inference_combine_emotion.py`" in official
    assert restore.startswith("Default = official")
    semc = next(r for r in rows if r.startswith("| Sem-C"))
    assert "torchvision's `models.resnet50(pretrained=True)`" in semc
    assert "transformers' `microsoft/resnet-50`" in semc and "may differ" in semc
