"""Edit, intensity, valence-arousal, best-of and the edit metrics: what tiny random models can check."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from a1111 import parse_infotext
from PIL import Image

skdata = pytest.importorskip("skimage.data")

from emogen_cli.core.emotions import EMOTIONS  # noqa: E402
from emogen_cli.evaluation.edit_metrics import emotion_shift, kl_divergence, ssim  # noqa: E402
from emogen_cli.outputs.edit import (  # noqa: E402
    Skip,
    collect_inputs,
    denoising_steps,
    load_source,
    model_size,
    strength_schedule,
    until_confident,
)


def photo(name: str = "astronaut", box: tuple[int, int, int, int] | None = None) -> Image.Image:
    image = Image.fromarray(getattr(skdata, name)())
    return image.crop(box) if box else image


# -- SSIM, KL, S_emo ------------------------------------------------------------------------------------------
def test_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    a = np.asarray(photo("astronaut", (100, 50, 164, 98)))
    rng = np.random.default_rng(0)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=-1)
    assert ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)
    gray = np.asarray(photo("camera", (0, 0, 40, 33)))
    assert ssim(gray, 255 - gray) == pytest.approx(structural_similarity(
        gray, 255 - gray, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255), abs=1e-9)


def test_s_emo_on_hand_computed_distributions():
    p_src = np.array([0.5, 0.25] + [0.25 / 6] * 6)
    p_edit = np.array([0.25, 0.5] + [0.25 / 6] * 6)
    # target "awe" (index 1): KL(t||p) = -log p[1]; before log 4, after log 2 -> S_emo = (log4 - log2)/log4 = 0.5
    assert kl_divergence(np.eye(8)[1], p_src) == pytest.approx(math.log(4))
    assert emotion_shift(p_src, p_edit, 1) == pytest.approx(0.5)
    assert emotion_shift(p_edit, p_src, 1) == 0.0  # moving away is clipped at 0
    assert emotion_shift(p_src, np.eye(8)[1], 1) == pytest.approx(1.0)  # certain after the edit
    assert emotion_shift(np.eye(8)[1], p_edit, 1) is None  # already certain before: undefined
    assert kl_divergence([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3))


# -- the --until-confident loop with stubbed edits, probe and SSIM -----------------------------------------------
def _loop(probabilities: dict[float, float], similarities: dict[float, float], threshold=0.6, min_ssim=0.5,
          start=0.3, step=0.2):
    return until_confident(lambda s: s, lambda image: probabilities[image], lambda image: similarities[image],
                           start, step, threshold, min_ssim)


def test_strength_schedule_ends_at_one():
    assert strength_schedule(0.3, 0.2) == [0.3, 0.5, 0.7, 0.9, 1.0]
    assert strength_schedule(0.5, 0.25) == [0.5, 0.75, 1.0]
    assert strength_schedule(1.0, 0.1) == [1.0]


def test_until_confident_stops_when_the_probe_is_confident():
    r = _loop({0.3: 0.1, 0.5: 0.7, 0.7: 0.9}, {0.3: 0.9, 0.5: 0.8, 0.7: 0.7})
    assert (r.stop, r.kept.strength, len(r.attempts), r.kept.probability) == ("confident", 0.5, 2, 0.7)


def test_until_confident_keeps_the_last_edit_above_min_ssim():
    r = _loop({0.3: 0.1, 0.5: 0.2, 0.7: 0.9}, {0.3: 0.9, 0.5: 0.6, 0.7: 0.4})
    assert (r.stop, r.kept.strength, len(r.attempts)) == ("min_ssim", 0.5, 3)
    assert r.attempts[-1].probability is None  # never scored: structure was already lost
    # the previous edit is kept even when the one below min_ssim met the target: never an edit below it
    met = _loop({0.3: 0.1, 0.5: 0.9}, {0.3: 0.9, 0.5: 0.021})
    assert (met.stop, met.kept.strength, met.kept.ssim) == ("min_ssim", 0.3, 0.9)


def test_until_confident_keeps_nothing_when_the_first_edit_is_below_min_ssim():
    # was: the first edit (SSIM 0.021 < 0.5) kept, scored afterwards, reported stop=min_ssim beside p >= target
    first = _loop({0.3: 0.9}, {0.3: 0.021})
    assert (first.stop, first.kept, len(first.attempts)) == ("min_ssim", None, 1)


def test_edit_skips_an_image_whose_first_edit_is_below_min_ssim(generator, inputs, tmp_path):
    from emogen_cli.outputs.edit import edit_images
    from emogen_cli.pipeline import Request

    out = tmp_path / "out"
    result = edit_images(generator, [inputs / "astronaut.png"], out, Request(("awe",)), "awe", strength=0.5,
                         until=0.01, min_ssim=0.999)
    assert result["count"] == 0 and result["edited"] == []
    (skip,) = result["skipped"]
    assert "no edit kept" in skip["reason"] and "below --min-ssim 0.999" in skip["reason"]
    assert not list(out.glob("*.png"))  # nothing written for it, no before/after sheet either


def test_until_confident_gives_up_at_strength_one():
    probabilities = {s: 0.1 for s in (0.3, 0.5, 0.7, 0.9, 1.0)}
    r = _loop(probabilities, {s: 0.9 for s in probabilities})
    assert (r.stop, r.kept.strength, len(r.attempts)) == ("max_strength", 1.0, 5)


# -- sizes and inputs ---------------------------------------------------------------------------------------
def test_model_size_and_denoising_steps():
    assert model_size((37, 29)) == (40, 32)
    assert model_size((3, 100)) == (8, 96)
    assert model_size((512, 768)) == (512, 768)
    assert denoising_steps(50, 0.0) == 0 and denoising_steps(50, 0.01) == 0 and denoising_steps(50, 0.5) == 25


@pytest.fixture
def inputs(tmp_path) -> Path:
    """A folder of good, convertible and bad inputs built from real photographs."""
    d = tmp_path / "in"
    d.mkdir()
    photo("astronaut", (0, 0, 37, 29)).save(d / "astronaut.png")
    photo("coffee", (0, 0, 48, 40)).convert("CMYK").save(d / "coffee-cmyk.jpg")
    rgba = photo("chelsea", (0, 0, 30, 30)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((30, 30)))
    rgba.save(d / "chelsea-alpha.png")
    gray16 = (np.asarray(photo("camera", (0, 0, 24, 24)), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(d / "camera-16bit.png")
    photo("astronaut", (0, 0, 80, 80)).save(d / "huge.png")
    photo("coffee", (0, 0, 10, 12)).save(d / "tiny.png")
    (d / "notes.txt").write_text("not an image")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    (d / ".hidden").write_text("ignored")
    return d


def test_bad_inputs_are_skipped_one_line_each(inputs):
    files, skipped = collect_inputs([inputs, inputs / "missing.png"])
    assert [s["path"] for s in skipped] == [str(inputs / "notes.txt"), str(inputs / "missing.png")]
    loaded, refused = {}, {}
    for path in files:
        try:
            loaded[path.name] = load_source(path, max_pixels=64 * 64)
        except Skip as exc:
            refused[path.name] = str(exc)
    assert set(refused) == {"broken.png", "huge.png", "tiny.png"}
    assert "10x12 pixels is too small" in refused["tiny.png"]
    assert "6,400 pixels is above the limit of 4,096" in refused["huge.png"]
    assert all(s.rgb.mode == "RGB" for s in loaded.values())
    assert loaded["astronaut.png"].notes == [] and loaded["astronaut.png"].rgb.size == (37, 29)
    assert "CMYK" in loaded["coffee-cmyk.jpg"].notes[0]
    assert loaded["chelsea-alpha.png"].alpha is not None
    assert "16-bit" in loaded["camera-16bit.png"].notes[0]
    gray = np.asarray(loaded["camera-16bit.png"].rgb)[..., 0]
    assert np.array_equal(gray, np.asarray(photo("camera", (0, 0, 24, 24))))  # x257 then /257: exact


# -- valence-arousal ------------------------------------------------------------------------------------------
def test_va_coordinates_and_kernel():
    from emogen_cli.conditioning.va import coordinates, dominant, va_request, va_weights

    coords = coordinates()
    assert set(coords) == set(EMOTIONS)
    assert coords["sadness"] == (0.052, 0.288) and coords["amusement"] == (0.929, 0.837)
    w = va_weights(*coords["sadness"])
    assert sum(w.values()) == pytest.approx(1.0) and dominant(w) == "sadness"
    d2 = {e: (0.5 - v) ** 2 + (0.5 - a) ** 2 for e, (v, a) in coords.items()}
    w = va_weights(0.5, 0.5, sigma=0.3)
    expected = {e: math.exp(-d / (2 * 0.09)) for e, d in d2.items()}
    assert all(w[e] == pytest.approx(expected[e] / sum(expected.values())) for e in EMOTIONS)
    assert sum(va_weights(0.0, 0.0, sigma=0.001).values()) == pytest.approx(1.0)  # no underflow to all-zero
    request = va_request(0.9, 0.9)
    assert request.mode == "space" and request.emotions == EMOTIONS and sum(request.weights) == pytest.approx(1)


# -- best-of ranking -------------------------------------------------------------------------------------------
def test_best_of_ranking_and_scores():
    from emogen_cli.conditioning.seeds import image_seeds
    from emogen_cli.conditioning.selection import rank, target_score

    assert image_seeds(10, 0, 3) == [10, 10 + 2**32, 10 + 2 * 2**32] and image_seeds(10, 2) == [12]
    sel = rank(["a", "b", "c", "d"], [0, 1, 2, 3], [0.2, 0.9, 0.5, 0.9])
    assert [c.image for c in sel.candidates] == ["b", "d", "c", "a"]  # ties keep seed order
    assert [c.rank for c in sel.candidates] == [1, 2, 3, 4] and sel.kept.seed == 1
    probs = np.full((2, 8), 0.1)
    probs[0, 1], probs[1, 6] = 0.3, 0.3
    assert target_score(probs, ("awe",), None).tolist() == pytest.approx([0.3, 0.1])
    assert target_score(probs, ("awe", "fear"), (0.5, 0.5)).tolist() == pytest.approx([0.2, 0.2])


# -- on the trained tiny chain ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def generator(mapper_config):
    from emogen_cli.core.config import load_config
    from emogen_cli.pipeline import EmoGenPipeline

    return EmoGenPipeline(load_config(mapper_config))


def test_intensity_endpoints_are_exact(generator):
    import torch

    from dataclasses import replace

    from emogen_cli.conditioning.intensity import neutral_prompt
    from emogen_cli.conditioning.request import Request

    def intensity_conditioning(pipe, request, seeds, alpha):
        return pipe.conditioning(replace(request, intensity=alpha), seeds)

    request, seeds = Request(("awe",), "{} a street"), [3, 4]
    full = generator.conditioning(request, seeds)
    assert torch.equal(intensity_conditioning(generator, request, seeds, 1.0), full)
    neutral = intensity_conditioning(generator, request, seeds, 0.0)
    ids = generator.prompts.tokenize(["a street"] * 2)
    assert torch.equal(neutral, generator.prompts.encode(ids)[0].to(generator.dtype))
    half = intensity_conditioning(generator, request, seeds, 0.5)
    assert torch.allclose(half, (full + neutral) / 2, atol=1e-6)
    double = intensity_conditioning(generator, request, seeds, 2.0)
    assert torch.allclose(double, 2 * full - neutral, atol=1e-5)
    # plain generate: the prompt is the token alone, so alpha = 0 is the empty prompt's conditioning
    assert neutral_prompt("{}") == ""
    empty = generator.prompts.encode(generator.prompts.tokenize([""]))[0].to(generator.dtype)
    assert torch.equal(intensity_conditioning(generator, Request(("awe",)), [0], 0.0), empty)


def test_edit_keeps_size_metadata_and_strength_zero_is_exact(generator, inputs, tmp_path):
    from emogen_cli.evaluation.edit_metrics import file_sha256
    from emogen_cli.outputs.edit import edit_images
    from emogen_cli.pipeline import Request

    out = tmp_path / "out"
    result = edit_images(generator, [inputs], out, Request(("awe",)), "awe", strength=0.6, max_pixels=64 * 64)
    assert result["count"] == 4
    assert {Path(s["path"]).name for s in result["skipped"]} == {"notes.txt", "broken.png", "huge.png", "tiny.png"}
    written = sorted(p.name for p in out.glob("*.png") if not p.name.startswith("grid-"))
    assert len(written) == 4 and len(list(out.glob("grid-edit-*.png"))) == 4
    for entry in result["edited"]:
        src, edit = Image.open(entry["source"]), Image.open(entry["output"])
        assert edit.size == src.size
        meta = json.loads(edit.text["emogen"])
        assert meta["kind"] == "edit" and meta["target"] == "awe" and meta["strength"] == 0.6
        assert meta["source_sha256"] == file_sha256(entry["source"]) and meta["seed"] == 0
        assert meta["model_size"] == [max(8, round(s / 8) * 8) for s in src.size]
        prompt, _, params = parse_infotext(edit.text["parameters"])  # as AUTOMATIC1111's PNG Info reads it
        assert params["Denoising strength"] == "0.6" and params["Size"] == f"{src.width}x{src.height}"
        assert params["Emotion"] == "awe" and params["Seed"] == "0" and "<awe>" in prompt
    alpha_out = Image.open(next(e["output"] for e in result["edited"] if "alpha" in e["source"]))
    assert alpha_out.mode == "RGBA"
    assert np.array_equal(np.asarray(alpha_out.getchannel("A")), np.asarray(Image.open(inputs / "chelsea-alpha.png").getchannel("A")))
    # strength 0 (and any strength below one denoising step) returns the source exactly
    zero = edit_images(generator, [inputs / "astronaut.png"], tmp_path / "zero", Request(("awe",)), "awe", strength=0.0)
    out0 = np.asarray(Image.open(zero["edited"][0]["output"]).convert("RGB"))
    assert np.array_equal(out0, np.asarray(Image.open(inputs / "astronaut.png").convert("RGB")))
    assert zero["edited"][0]["ssim"] == pytest.approx(1.0)


def test_edit_until_confident_with_the_bundle_probe(generator, inputs, tmp_path):
    from emogen_cli.outputs.edit import edit_images
    from emogen_cli.pipeline import Request

    result = edit_images(generator, [inputs / "astronaut.png"], tmp_path, Request(("awe",)), "awe", strength=0.5,
                         until=1.0, min_ssim=-1.0, strength_step=0.25)  # -1: no SSIM floor (random models)
    e = result["edited"][0]
    meta = json.loads(Image.open(e["output"]).text["emogen"])
    assert e["stop"] in ("max_strength", "min_ssim") and 0 <= e["p_target_before"] <= 1
    attempts = meta["until_confident"]["attempts"]
    assert [a["strength"] for a in attempts] == [0.5, 0.75, 1.0][:len(attempts)]
    assert meta["probe"]["after"] is not None and meta["strength"] == e["strength"]


# (generate --intensity strips and --best-of: tests/test_generate_options.py)


# -- the commands --------------------------------------------------------------------------------------------
def test_cli_edit_reports_skips_and_evaluate_recognises_the_folder(cli, mapper_config, inputs, tmp_path):
    out = tmp_path / "edits"
    r = cli("edit", inputs, "--emotion", "awe", "--strength", "0.6", "--max-pixels", "4096", "--out", out,
            "--config", mapper_config, "--json")
    assert r.code == 0, r.err
    assert r.json["count"] == 4 and len(r.json["skipped"]) == 4
    assert "Skipped" in r.err and "notes.txt" in r.err
    r = cli("evaluate", out, "--metrics", "emo-a", "--config", mapper_config, "--json")
    assert r.code == 0, r.err
    edit = r.json["edit"]
    assert edit["edits"] == 4 and -1 <= edit["mean"]["ssim"] <= 1 and 0 <= edit["mean"]["p_target_after"] <= 1
    assert -1 <= edit["mean"]["clip_similarity"] <= 1
    bad = cli("edit", inputs / "notes.txt", "--emotion", "awe", "--config", mapper_config)
    assert bad.code == 1 and "Nothing to edit" in bad.err and "Traceback" not in bad.err
    both = cli("edit", inputs, "--emotion", "awe", "--va", "0.5,0.5", "--config", mapper_config)
    assert both.code == 1 and "one of them" in both.err
    strong = cli("edit", inputs, "--emotion", "awe", "--intensity", "9", "--config", mapper_config)
    assert strong.code == 1 and "--intensity" in strong.err  # out of range, refused as generate's is


def test_cli_grid_va(cli, mapper_config, tmp_path):
    r = cli("grid", "va", "--out", tmp_path / "va", "--config", mapper_config, "--json")
    assert r.code == 0, r.err
    assert r.json["count"] == 25
    sheet = Image.open(r.json["sheet"])
    cell = Image.open(r.json["images"][0]["path"]).size[0]
    assert sheet.size == (5 * cell + 4 * 4, 5 * cell + 4 * 4)
    meta = json.loads(Image.open(r.json["images"][0]["path"]).text["emogen"])
    assert meta["va"]["valence"] == 0.1 and meta["va"]["arousal"] == 0.9  # top-left: unpleasant, aroused
    assert meta["fusion"]["mode"] == "space" and sum(meta["fusion"]["weights"]) == pytest.approx(1)
    assert Image.open(r.json["images"][0]["path"]).text["parameters"].count("Emogen valence-arousal") == 1


def test_cli_edit_va_best_of_keep_all(cli, mapper_config, inputs, tmp_path):
    out = tmp_path / "va"
    r = cli("edit", inputs / "astronaut.png", "--va", "0.9,0.8", "--best-of", "2", "--keep-all", "--strength", "0.6",
            "--out", out, "--config", mapper_config, "--json")
    assert r.code == 0, r.err
    e = r.json["images"][0]
    meta = json.loads(Image.open(e["path"]).text["emogen"])
    assert meta["va"]["valence"] == 0.9 and meta["target"] == max(meta["va"]["weights"], key=meta["va"]["weights"].get)
    assert meta["best_of"]["k"] == 2 and meta["best_of"]["rank"] == 1 and r.json["rejected"] == 1
    assert len(list((out / "rejected").glob("*.png"))) == 1


@pytest.mark.parametrize("script, keys", [("intensity.py", {"plain_s", "intensity_s"})])  # edit.py: tests/test_bench.py
def test_edit_benchmarks_quick_mode(script, keys):
    import subprocess
    import sys

    bench = Path(__file__).resolve().parent.parent / "bench" / script
    run = subprocess.run([sys.executable, str(bench), "--quick", "--json"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout)
    assert keys <= set(result) and result["ratio"] > 0


@pytest.mark.parametrize("command", ["edit", "grid"])
def test_new_commands_have_help_and_json(cli, command):
    result = cli(command, "--help")
    assert result.code == 0 and "--json" in result.out


def test_edit_metrics_without_a_probe_are_reported_unavailable(tmp_path):
    from types import SimpleNamespace

    from emogen_cli.core.reporting import Reporter
    from emogen_cli.evaluation.edit_metrics import evaluate_edit_folder

    warnings = []

    class Capture(Reporter):
        def warn(self, message: str) -> None:
            warnings.append(message)

    evaluation = SimpleNamespace(config=SimpleNamespace(evaluate=SimpleNamespace(probe=None)), mapper_path=tmp_path)
    result = evaluate_edit_folder(evaluation, [], Capture())
    assert result["edits"] == 0 and "no CLIP emotion probe" in result["unavailable"] and warnings


def test_python_api_from_pretrained(mapper_config, tmp_path):
    """The README's Python example: the features are functions over EmoGenPipeline.from_pretrained."""
    import torch

    from emogen_cli import EmoGenPipeline
    from emogen_cli.core.config import load_config
    from emogen_cli.outputs.edit import edit_images
    from dataclasses import replace

    from emogen_cli.conditioning.va import va_request

    pipe = EmoGenPipeline.from_pretrained(load_config(mapper_config).generate.mapper, config=load_config(mapper_config))
    photo("coffee", (0, 0, 45, 30)).save(tmp_path / "coffee.jpg")
    result = edit_images(pipe, [tmp_path / "coffee.jpg"], tmp_path / "edits", pipe.request("awe"), "awe", strength=0.6)
    assert result["count"] == 1 and Image.open(result["edited"][0]["output"]).size == (45, 30)
    request = pipe.request("fear", "{} street")
    assert torch.equal(pipe.conditioning(replace(request, intensity=1.0), [0]), pipe.conditioning(request, [0]))
    assert len(pipe.sample(va_request(0.8, 0.3), [0])) == 1
