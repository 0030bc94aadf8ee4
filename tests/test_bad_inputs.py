"""Bad-input battery: every case fails before any model loads, with the right exit code, exactly one
error line (plus an optional hint line), no traceback, and without touching files that must survive.

Cases run in-process through the real entry point (`cli` fixture), so the whole battery takes seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GEN = ["generate", "-e", "awe"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# (id, arguments, exit code, text the error line must hold). {tmp} is the test's folder, {file} a regular
# file in it, {keep} an output folder holding a file that must survive.
CASES = [
    # Rich markup in user text is shown, never interpreted (and never crashes the error display)
    ("markup-emotion", ["generate", "-e", "[red]joy"], 1, "'[red]joy'"),
    ("markup-closing-tag", ["generate", "-e", "[/x]"], 1, "'[/x]'"),
    ("markup-in-path", [*GEN, "--out", "{file}/[v2]out"], 1, "afile/[v2]out': '"),
    # NaN / inf / negative numbers, named by their option
    ("guidance-nan", [*GEN, "--guidance", "nan"], 1, "--guidance must be a finite number"),
    ("guidance-inf", [*GEN, "--guidance", "inf"], 1, "--guidance must be a finite number"),
    ("guidance-negative", [*GEN, "--guidance", "-1"], 1, "--guidance must not be negative"),
    ("fuse-weights-nan", ["fuse", "awe", "fear", "--mode", "embedding", "--weights", "nan,1"], 1,
     "--weights must be finite numbers"),
    ("fuse-weights-text", ["fuse", "awe", "fear", "--mode", "embedding", "--weights", "a,b"], 1,
     "--weights must be numbers"),
    ("lr-zero", ["train-mapper", "--lr", "0"], 1, "--lr must be positive"),
    ("encoder-lr-negative", ["train-encoder", "--lr", "-0.1"], 1, "--lr must be positive"),
    ("lr-nan", ["train-mapper", "--lr", "nan"], 1, "--lr must be a finite number"),
    ("lambda-attr-negative", ["train-mapper", "--lambda-attr", "-1"], 1, "--lambda-attr must not be negative"),
    ("lambda-emo-inf", ["train-mapper", "--lambda-emo", "inf"], 1, "--lambda-emo must be a finite number"),
    ("threshold-negative", ["train-mapper", "--threshold", "-0.1"], 1, "--threshold must not be negative"),
    ("threshold-above-one", ["train-mapper", "--threshold", "2"], 1, "--threshold must be at most 1"),
    ("steps-zero", [*GEN, "--steps", "0"], 1, "--steps must be positive"),
    ("max-steps-zero", ["train-mapper", "--max-steps", "0"], 1, "--max-steps must be positive"),
    ("encoder-max-steps-zero", ["train-encoder", "--max-steps", "0"], 1, "--max-steps must be positive"),
    ("epochs-zero", ["train-encoder", "--epochs", "0"], 1, "--epochs must be positive"),
    ("batch-zero", [*GEN, "--batch-size", "0"], 1, "--batch-size must be positive"),
    ("pairs-zero", ["evaluate", "{tmp}", "--pairs", "0"], 1, "--pairs must be positive"),
    # seeds: 0 .. 2**32-1
    ("seed-negative", [*GEN, "--seed", "-1"], 1, "--seed must not be negative"),
    ("seed-too-large", [*GEN, "--seed", str(2**32)], 1, "--seed must be at most 4_294_967_295"),
    ("seed-train", ["train-mapper", "--seed", "-5"], 1, "--seed must not be negative"),
    # resolution: a multiple of 8, one flag name (--size is a hidden alias)
    ("resolution-500", [*GEN, "--resolution", "500"], 1, "--resolution must be a multiple of 8"),
    ("size-alias-500", [*GEN, "--size", "500"], 1, "--size must be a multiple of 8"),
    ("resolution-train", ["train-mapper", "--resolution", "100"], 1, "--resolution must be a multiple of 8"),
    # devices, for inference and training alike
    ("device-gpu", [*GEN, "--device", "gpu"], 1, "--device must be auto, cpu, mps, cuda or cuda:N"),
    ("device-gpu-train", ["train-encoder", "--device", "gpu"], 1, "--device must be auto"),
    pytest.param([*GEN, "--device", "cuda"], 1, "CUDA is not available", id="device-cuda",
                 marks=pytest.mark.skipif("_cuda()")),
    pytest.param(["train-encoder", "--device", "cuda"], 1, "CUDA is not available", id="device-cuda-train-encoder",
                 marks=pytest.mark.skipif("_cuda()")),
    pytest.param(["train-mapper", "--device", "cuda:0"], 1, "CUDA is not available", id="device-cuda-train-mapper",
                 marks=pytest.mark.skipif("_cuda()")),
    # closed sets
    ("scheduler", [*GEN, "--scheduler", "magic"], 1, "--scheduler must be one of unipc"),
    ("precision", [*GEN, "--mixed-precision", "fp8"], 1, "--mixed-precision must be one of"),
    ("metrics", ["evaluate", "{tmp}", "--metrics", "fid,bogus"], 1, "--metrics must be one of"),
    ("splits", ["prepare", "--splits", "train,bogus", "--out", "{tmp}/prep"], 1, "--splits must be one of"),
    ("splits-empty", ["prepare", "--splits", "", "--out", "{tmp}/prep"], 1, "--splits must name at least one of"),
    ("metrics-empty", ["evaluate", "{imgs}", "--metrics", ",,"], 1, "--metrics must name at least one of fid"),
    ("export-format", ["export", "awe", "--format", "bogus", "--mapper", "{tmp}/nope"], 1,
     "--format must be one of diffusers, a1111; got 'bogus'"),
    ("fusion-mode", ["fuse", "awe", "fear", "--mode", "blend"], 1, "Unknown fusion mode 'blend'"),
    # prompt templates
    ("template-named-field", ["transfer", "-e", "awe", "--template", "{red} cup"], 1, "placeholder '{red}'"),
    ("template-two-fields", ["transfer", "-e", "awe", "{} and {}"], 1, "has 2 {} placeholders"),
    ("template-index", ["transfer", "-e", "awe", "--template", "{0} bag"], 1, "placeholder '{0}'"),
    ("template-unbalanced", ["transfer", "-e", "awe", "a { cup"], 1, "is not a valid template"),
    ("fuse-prompt", ["fuse", "awe", "fear", "--prompt", "{x} street"], 1, "--prompt '{x} street'"),
    ("prompt-file-missing", ["transfer", "-e", "awe", "--prompt-file", "{tmp}/nope.txt"], 1, "does not exist"),
    ("no-prompt", ["transfer", "-e", "awe"], 1, "No prompt given"),
    # output folders that cannot be written, for every command
    ("out-under-file-generate", [*GEN, "--out", "{file}/x"], 1, "is a file, not a folder"),
    ("out-under-file-transfer", ["transfer", "-e", "awe", "a cup", "--out", "{file}/x"], 1, "is a file, not a folder"),
    ("out-under-file-fuse", ["fuse", "awe", "fear", "--out", "{file}/x"], 1, "is a file, not a folder"),
    ("out-is-file-prepare", ["prepare", "--out", "{file}"], 1, "it is a file, not a folder"),
    ("out-under-file-train-encoder", ["train-encoder", "--out", "{file}/enc"], 1, "is a file, not a folder"),
    ("out-under-file-train-mapper", ["train-mapper", "--out", "{file}/map"], 1, "is a file, not a folder"),
    ("out-under-file-evaluate", ["evaluate", "{tmp}", "--out", "{file}/eval"], 1, "is a file, not a folder"),
    ("images-is-file-decompose", ["decompose", "--images", "{file}"], 1, "is a file, not a folder"),
    ("out-under-file-dev", ["dev", "tiny-bundle", "{file}/tiny"], 1, "is a file, not a folder"),
    # dev helpers never write random weights or synthetic images into a folder that holds something
    ("dev-emoset-into-non-empty", ["dev", "synthetic-emoset", "{keep}"], 1, "keep' is not empty"),
    ("dev-bundle-into-non-empty", ["dev", "tiny-bundle", "{keep}"], 1, "keep' is not empty"),
    # usage errors: exit code 2
    ("huge-n", [*GEN, "-n", "100000000"], 2, "less than or equal to 10000"),
    ("zero-n", [*GEN, "-n", "0"], 2, "--num-images"),
    ("unknown-option", [*GEN, "--bogus"], 2, "No such option: --bogus"),
    ("not-an-int", [*GEN, "--steps", "abc"], 2, "Invalid value for '--steps'"),
    ("missing-argument", ["fuse"], 2, "Missing argument"),
    ("unknown-command", ["generat"], 2, "No such command"),
    # other bad state
    ("fuse-one-emotion", ["fuse", "awe"], 1, "two or more different emotions"),
    ("unknown-emotion", ["generate", "-e", "sadnes"], 1, "Unknown emotion 'sadnes'"),
    # --intensity, --best-of, --va (generate, transfer, fuse)
    ("intensity-nan", [*GEN, "--intensity", "nan"], 1, "--intensity must be finite numbers"),
    ("intensity-too-strong", [*GEN, "--intensity", "0,5"], 1, "--intensity must lie in [0, 4]"),
    ("intensity-negative-transfer", ["transfer", "-e", "awe", "a cup", "--intensity", "-0.5"], 1,
     "--intensity must lie in [0, 4]"),
    ("intensity-text-fuse", ["fuse", "awe", "fear", "--intensity", "x"], 1, "--intensity must be numbers"),
    ("intensity-twice", [*GEN, "--intensity", "1,1"], 1, "lists a strength twice"),
    ("best-of-zero", [*GEN, "--best-of", "0"], 1, "--best-of must be positive"),
    ("best-of-huge", [*GEN, "--best-of", "5000"], 1, "--best-of must be at most 1_000"),
    ("keep-all-without-best-of", [*GEN, "--keep-all"], 1, "--keep-all keeps the rejected"),
    ("va-nan", ["generate", "--va", "nan,0.5"], 1, "Valence and arousal lie in [0, 1]"),
    ("va-outside", ["generate", "--va", "0.5,1.5"], 1, "Valence and arousal lie in [0, 1]"),
    ("va-one-number", ["generate", "--va", "0.5"], 1, "--va must be two numbers"),
    ("va-and-emotion", ["generate", "-e", "awe", "--va", "0.5,0.5"], 1, "either --emotion or --va"),
    ("size-and-resolution", [*GEN, "--size", "64", "--resolution", "64"], 1, "set the same value (model.resolution)"),
    ("sigma-without-va", [*GEN, "--sigma", "0.3"], 1, "--sigma sets the kernel width of --va"),
    ("emotion-named-twice", ["generate", "-e", "awe,awe"], 1, "Emotion 'awe' is named twice"),
    # an empty name is refused, never read as "none given" (generate took it for all eight)
    ("emotion-empty", ["generate", "-e", "", "-n", "1", "--out", "{tmp}/g"], 1, "An emotion name is empty in ''"),
    ("emotion-blank", ["generate", "-e", " ", "-n", "1", "--out", "{tmp}/g"], 1, "An emotion name is empty in ' '"),
    ("emotion-comma", ["generate", "-e", ",", "-n", "1", "--out", "{tmp}/g"], 1, "An emotion name is empty in ','"),
    ("emotion-empty-in-list", ["transfer", "-e", "awe,,fear", "a cup"], 1, "An emotion name is empty in 'awe,,fear'"),
    ("fuse-empty-emotion", ["fuse", "awe", "", "fear"], 1, "An emotion name is empty in ''"),
    ("decompose-empty-emotion", ["decompose", ""], 1, "An emotion name is empty in ''"),
    ("edit-empty-emotion", ["edit", "{imgs}", "-e", "", "--out", "{tmp}/ed"], 1, "An emotion name is empty"),
    ("steps-huge", [*GEN, "--steps", "1000000000"], 1, "must be at most 10_000"),
    ("edit-min-ssim-without-loop", ["edit", "{tmp}/photo.png", "-e", "awe", "--min-ssim", "0.3"], 1,
     "--min-ssim only tune the --until-confident loop"),
    ("va-sigma-zero", ["generate", "--va", "0.5,0.5", "--sigma", "0"], 1, "--sigma must be a number in [0.001"),
    # a bundle of the wrong kind (an encoder folder passed as --mapper, and the reverse)
    ("wrong-kind-decompose", ["decompose", "awe", "--mapper", "{enc}"], 1, "is an emogen-encoder folder, not an"),
    ("wrong-kind-export", ["export", "awe", "--mapper", "{enc}", "--out", "{tmp}/emb"], 1,
     "is an emogen-encoder folder, not an emogen-mapper folder"),
    ("wrong-kind-evaluate", ["evaluate", "{imgs}", "--mapper", "{enc}"], 1, "is an emogen-encoder folder"),
    ("wrong-kind-train-mapper", ["train-mapper", "--encoder", "{map}", "--prepared", "{prep}", "--out", "{tmp}/m"], 1,
     "is an emogen-mapper folder, not an emogen-encoder folder"),
    ("wrong-kind-generate", [*GEN, "--mapper", "{enc}"], 1, "is an emogen-encoder folder"),
    ("bundle-config-not-utf8", ["evaluate", "{imgs}", "--mapper", "{latin}"], 1, "is not UTF-8 text"),
    # empty folders, missing files, files that are not what they claim
    ("prepare-root-is-file", ["prepare", "--data", "{file}", "--out", "{tmp}/p"], 1, "afile' is a file, not a folder"),
    ("prepare-root-empty", ["prepare", "--data", "{empty}", "--out", "{tmp}/p"], 1, "does not look like EmoSet"),
    ("prepare-root-markup", ["prepare", "--data", "{tmp}/[bold]x", "--out", "{tmp}/p"], 1, "/[bold]x' does not"),
    ("train-mapper-not-prepared", ["train-mapper", "--prepared", "{empty}", "--out", "{tmp}/m"], 1,
     "is not a prepared dataset"),
    ("edit-not-an-image", ["edit", "{junk}/fake.png", "-e", "awe", "--out", "{tmp}/ed"], 1,
     "fake.png: not an image"),
    ("edit-empty-folder", ["edit", "{empty}", "-e", "awe", "--out", "{tmp}/ed"], 1, "the inputs hold no image files"),
    ("decompose-images-empty", ["decompose", "--images", "{empty}"], 1, "No readable images in"),
    ("decompose-images-junk", ["decompose", "awe", "--images", "{junk}"], 1, "No readable images in"),
    ("decompose-attributes-binary", ["decompose", "awe", "--attributes", "{bin}"], 1,
     "is neither text nor an official EmoGen pickle"),
    ("decompose-attributes-folder", ["decompose", "awe", "--attributes", "{empty}"], 1, "Cannot read the attribute"),
    ("decompose-attributes-empty", ["decompose", "awe", "--attributes", "{junk}/empty.txt"], 1, "lists no names"),
    ("evaluate-empty", ["evaluate", "{empty}"], 1, "No readable images in"),
    ("evaluate-missing", ["evaluate", "{tmp}/nope"], 1, "is not a folder of images"),
    ("evaluate-reference-typo", ["evaluate", "{imgs}", "--reference", "{tmp}/nope"], 1,
     "The FID reference '"),
    ("prompt-file-binary", ["transfer", "-e", "awe", "--prompt-file", "{bin}"], 1, "Cannot read the prompt file"),
    ("config-not-utf8", [*GEN, "--config", "{latin}/config.json"], 1, "is not UTF-8 text"),
    ("config-is-folder", [*GEN, "--config", "{empty}"], 1, "empty' is a folder, not a file"),
    ("config-bad-yaml", [*GEN, "--config", "{junk}/bad.yaml"], 1,
     "is not valid YAML (line 1, column 5): mapping values are not allowed here"),
    ("config-not-a-mapping", [*GEN, "--config", "{junk}/list.yaml"], 1, "must contain a mapping of sections"),
    ("export-format-before-load", ["export", "awe", "--format", "zip", "--mapper", "{enc}"], 1, "--format must be"),
    ("edit-strength-step-nan", ["edit", "{imgs}", "-e", "awe", "--until-confident", "0.5", "--strength-step", "nan",
                                "--out", "{tmp}/ed"], 1, "--strength-step must lie in [0.01, 1]"),
    ("edit-strength-step-zero", ["edit", "{imgs}", "-e", "awe", "--until-confident", "0.5", "--strength-step", "0",
                                 "--out", "{tmp}/ed"], 1, "--strength-step must lie in [0.01, 1]"),
    ("edit-strength-step-tiny", ["edit", "{imgs}", "-e", "awe", "--until-confident", "0.5", "--strength-step", "1e-6",
                                 "--out", "{tmp}/ed"], 1, "--strength-step must lie in [0.01, 1]"),
    ("edit-best-of-huge", ["edit", "{imgs}", "-e", "awe", "--best-of", "1000000", "--out", "{tmp}/ed"], 1,
     "--best-of must be at most 1_000"),
    ("edit-keep-all-without-best-of", ["edit", "{imgs}", "-e", "awe", "--keep-all", "--out", "{tmp}/ed"], 1,
     "--keep-all keeps the rejected"),
    ("edit-sigma-without-va", ["edit", "{imgs}", "-e", "awe", "--sigma", "0.3", "--out", "{tmp}/ed"], 1,
     "it needs --va"),
    ("edit-sigma-tiny", ["edit", "{imgs}", "--va", "0.5,0.5", "--sigma", "1e-300", "--out", "{tmp}/ed"], 1,
     "--sigma must be a number in [0.001, 1000]"),
    ("edit-min-ssim-nan", ["edit", "{imgs}", "-e", "awe", "--until-confident", "0.5", "--min-ssim", "nan",
                           "--out", "{tmp}/ed"], 1, "--min-ssim must lie in [-1, 1]"),
    ("generate-va-sigma-tiny", ["generate", "--va", "0.5,0.5", "--sigma", "1e-300", "--out", "{tmp}/g"], 1,
     "--sigma must be a number in [0.001, 1000]"),
    ("export-samples-huge", ["export", "awe", "--samples", "1000000000", "--out", "{tmp}/x"], 1,
     "--samples must lie in 1..75"),
    ("decompose-samples-huge", ["decompose", "awe", "--samples", "1000000000"], 1, "--samples must lie in 1..100000"),
    ("intensity-same-file-name", [*GEN, "--intensity", "0.1,0.10000000001", "--out", "{tmp}/g"], 1,
     "too close to tell apart in file names (0.1)"),
    ("grid-va-sigma-nan", ["grid", "va", "--sigma", "nan", "--out", "{tmp}/g"], 1,
     "--sigma must be a number in [0.001, 1000]"),
    # paths no file system takes (a paste of 5000 characters), wherever they are given
    ("edit-image-path-5000", ["edit", "{tmp}/" + "x" * 5000 + ".png", "-e", "awe"], 1,
     "IMAGES '"),
    ("generate-out-5000", [*GEN, "--out", "{tmp}/" + "x" * 5000], 1, "is too long to be a path (5"),
    ("generate-out-long-name", [*GEN, "--out", "{tmp}/" + "x" * 300 + "/g"], 1,
     "one of its names is 300 bytes long (at most 255)"),
    ("model-long-name", [*GEN, "--model", "{tmp}/" + "y" * 300], 1, "--model is not a usable path"),
    ("mapper-5000", [*GEN, "--mapper", "{tmp}/" + "m" * 5000], 1, "--mapper is too long to be a path"),
    ("evaluate-folder-5000", ["evaluate", "{tmp}/" + "e" * 5000], 1, "FOLDER '"),
    ("prompt-file-5000", ["transfer", "-e", "awe", "--prompt-file", "{tmp}/" + "p" * 5000], 1, "--prompt-file '"),
    ("config-out-long", [*GEN, "--config", "{junk}/longout.yaml"], 1,
     "Config key 'generate.output' is not a usable path"),
    # config files nested or sized beyond any config, refused before they are parsed
    ("config-nested-deep", [*GEN, "--config", "{junk}/deep.yaml"], 1, "nests more than 32 levels deep"),
    ("config-nested-very-deep", [*GEN, "--config", "{junk}/deeper.yaml"], 1, "nest"),
    ("config-too-large", [*GEN, "--config", "{junk}/large.yaml"], 1, "a config file is at most 1 MiB"),
]


@pytest.fixture
def place(tmp_path: Path):
    """Fill {tmp}/{file}/{keep} into a case's arguments; keep/ holds a file and a config that must survive."""
    (tmp_path / "afile").write_text("not a folder")
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "awe-00000.png").write_bytes(b"precious")
    from PIL import Image

    files = {"enc/config.json": '{"format": "emogen-encoder"}', "map/config.json": '{"format": "emogen-mapper"}',
             "junk/fake.png": "not a PNG", "junk/empty.txt": "", "junk/bad.yaml": "a: b: c\n",
             "junk/list.yaml": "- a\n- b\n", "prep/prepared.json": json.dumps({"root": str(tmp_path)}),
             "junk/deep.yaml": "a:\n" + "".join(" " * i + "k:\n" for i in range(1, 500)),
             "junk/deeper.yaml": "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
             "junk/large.yaml": "generate: {negative_prompt: '" + "x" * (2 << 20) + "'}\n",
             "junk/longout.yaml": "generate: {output: " + "o" * 300 + "}\n",
             "prep/manifest.jsonl": json.dumps({"id": "a", "image": "image/awe/a.jpg", "emotion": "awe",
                                                "attribute": "lake", "kind": "scene", "split": "train"})}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "empty").mkdir()
    (tmp_path / "bin").write_bytes(bytes(range(255, 127, -1)) * 2)
    (tmp_path / "latin").mkdir()
    (tmp_path / "latin" / "config.json").write_bytes("generate: {negative_prompt: caf\xe9}\n".encode("latin-1"))
    (tmp_path / "imgs").mkdir()
    Image.new("RGB", (16, 16), "red").save(tmp_path / "imgs" / "awe-00000.png")

    def fill(args: list[str]) -> list[str]:
        names = {"{tmp}": tmp_path, "{file}": tmp_path / "afile", "{keep}": keep}
        names.update({f"{{{n}}}": tmp_path / n for n in ("enc", "map", "junk", "empty", "bin", "latin", "imgs", "prep")})
        for name, value in names.items():
            args = [a.replace(name, str(value)) for a in args]
        return args

    return fill


def assert_one_error(result, code: int, text: str) -> list[str]:
    """The exit code, and stderr holding exactly one error line (holding `text`) plus at most a hint line."""
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert result.code == code, result.err
    assert 1 <= len(lines) <= 2, result.err
    assert lines[0].startswith("Error: "), result.err
    assert text in lines[0], result.err
    assert "Traceback" not in result.err + result.out
    return lines


@pytest.mark.parametrize("args, code, text",
                         [pytest.param(*c[1:], id=c[0]) if type(c) is tuple else c for c in CASES])
def test_bad_input_is_one_line_before_models_load(cli, place, tmp_path, monkeypatch, args, code, text):
    monkeypatch.chdir(tmp_path)  # default output folders (runs/...) land here, never in the repository
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = cli(*place(args))
    assert_one_error(result, code, text)
    assert (tmp_path / "keep" / "awe-00000.png").read_bytes() == b"precious"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "a failed command left files"


@pytest.mark.parametrize("args, code", [
    ([*GEN, "--steps", "0"], 1),
    ([*GEN, "--guidance", "nan"], 1),
    ([*GEN, "--bogus"], 2),
    (["generate", "-e", "[/x]"], 1),
    (["export", "awe", "--format", "zip"], 1),
    (["decompose", "awe", "--attributes", "{tmp}/nope.txt"], 1),
    (["edit", "{tmp}/nope.png", "-e", "awe"], 1),
    (["prepare", "--data", "{tmp}/nope", "--out", "{tmp}/p"], 1),
    (["evaluate", "{tmp}/nope"], 1),
    (["train-encoder", "--epochs", "0"], 1),
    (["train-mapper", "--prepared", "{tmp}", "--out", "{tmp}/m"], 1),
])
def test_json_failure_shape(cli, tmp_path, monkeypatch, args, code):
    monkeypatch.chdir(tmp_path)
    result = cli(*[a.replace("{tmp}", str(tmp_path)) for a in args], "--json")
    assert result.code == code
    payload = json.loads(result.out)  # strict JSON: bare NaN would not parse with parse_constant below
    json.loads(result.out, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert set(payload) == {"error", "hint", "exit_code"}
    assert payload["exit_code"] == code and payload["error"] and "Traceback" not in result.err


def test_config_file_values_are_checked_like_options(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate: {guidance: .nan}\n")
    assert_one_error(cli(*GEN, "--config", bad), 1, "Config key 'generate.guidance' must be a finite number")
    bad.write_text("runtime: {device: gpu}\n")
    assert_one_error(cli(*GEN, "--config", bad), 1, "Config key 'runtime.device' must be auto")
    bad.write_text("mapper: {lambda_attr: -0.5}\n")
    assert_one_error(cli("train-mapper", "--config", bad), 1, "'mapper.lambda_attr' must not be negative")
    assert bad.read_text() == "mapper: {lambda_attr: -0.5}\n"


def test_existing_output_survives_a_rejected_run(cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "awe-00000.png").write_bytes(b"precious")
    (out / "index.jsonl").write_text('{"path": "awe-00000.png"}\n')
    assert_one_error(cli(*GEN, "--out", out, "--overwrite", "--steps", "0"), 1, "--steps must be positive")
    assert (out / "awe-00000.png").read_bytes() == b"precious"
    assert (out / "index.jsonl").read_text() == '{"path": "awe-00000.png"}\n'


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env})


BROKEN_COMMAND = """
    from emogen_cli.cli import app, main

    @app.command("broken")
    def broken(json_: bool = False):
        try:
            {}["missing"]
        except KeyError as exc:
            raise RuntimeError("state went wrong") from None

    main(["broken", *__import__("sys").argv[1:]])
"""


def test_internal_error_is_one_line_with_its_own_exit_code():
    result = _python(BROKEN_COMMAND, EMOGEN_DEBUG="0")
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 4, result.stderr
    assert lines[0] == "Error: Internal error: RuntimeError: state went wrong" and len(lines) == 2
    assert "EMOGEN_DEBUG=1" in lines[1] and "Traceback" not in result.stderr


def test_debug_prints_the_traceback_with_its_causes():
    result = _python(BROKEN_COMMAND, EMOGEN_DEBUG="1")
    assert result.returncode == 4
    assert "Traceback" in result.stderr
    assert "KeyError: 'missing'" in result.stderr  # the context `from None` hid is shown again
    assert "RuntimeError: state went wrong" in result.stderr


SIGTERM_COMMAND = """
    import os, signal, time
    from emogen_cli.cli import app, main
    from emogen_cli.core.errors import Interrupted

    @app.command("slow")
    def slow(keep: bool = False):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        except KeyboardInterrupt:
            if keep:  # what generate and training do: keep the finished work, then say so
                raise Interrupted("Interrupted after 3 images; they are in out/.") from None
            raise

    main(["slow", *__import__("sys").argv[1:]])
"""


@pytest.mark.parametrize("keep", [False, True])
def test_sigterm_takes_the_ctrl_c_path(keep):
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(SIGTERM_COMMAND), *(["--keep"] if keep else [])],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == (["Interrupted after 3 images; they are in out/."] if keep else ["Interrupted."])


def test_json_output_never_holds_bare_nan(capsys):
    from emogen_cli.cli._utils import emit

    emit({"fid": float("nan"), "values": [1.0, float("inf")], "nested": {"x": float("-inf")}}, True, print)
    text = capsys.readouterr().out
    assert json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}")) == {
        "fid": None, "values": [1.0, None], "nested": {"x": None}}


def test_torch_advice_to_disable_weights_only_never_reaches_the_user():
    import pickle

    from emogen_cli.cli import _one_line
    from emogen_cli.core.errors import load_failure

    advice = ("Weights only load failed. This file can still be loaded, to do so you have two options, do those "
              "steps only if you trust the source of the checkpoint.\n(1) In PyTorch 2.6, we changed the default "
              "value of the `weights_only` argument in `torch.load` from `False` to `True`. Re-running `torch.load` "
              "with `weights_only` set to `False` will likely succeed")
    reason = load_failure(pickle.UnpicklingError(advice))
    assert "would run code" in reason and "weights_only" not in reason
    line = _one_line(f"Cannot read 'x.pt' as a plain tensor file: {advice}")
    assert line.startswith("Cannot read 'x.pt' as a plain tensor file: refused") and "weights_only" not in line
    assert "\n" not in line


def test_missing_local_model_folder_is_not_a_connection_failure(tmp_path, monkeypatch):
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.core.pretrained import load

    class Model:
        @classmethod
        def from_pretrained(cls, name, **kwargs):
            raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    with pytest.raises(EmogenError) as info:
        load(Model, str(tmp_path / "missing" / "model"))
    assert "local folder" in info.value.message and "does not exist" in info.value.message
    assert "connect" not in str(info.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmogenError) as info:
        load(Model, "someone/some-model", "unet")
    assert "'someone/some-model'" in info.value.message and "HF_HUB_OFFLINE=1" in info.value.message
    assert "`hf download someone/some-model`" in info.value.hint


def test_config_file_that_is_not_utf8_is_one_line(cli, tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("generate: {negative_prompt: 'caf\xe9'}\n".encode("latin-1"))
    lines = assert_one_error(cli(*GEN, "--config", bad), 1, "is not UTF-8 text")
    assert str(bad) in lines[0] and "UTF-8" in lines[1]


def _fake_latents(folder: Path, model: str, resolution: int) -> None:
    folder.mkdir(parents=True)
    (folder / "index.json").write_text(json.dumps({"model": model, "revision": None, "resolution": resolution,
                                                   "shards": {}}))


def test_prepare_overwrite_keeps_the_old_manifest_until_the_new_one_is_complete(cli, emoset, tmp_path):
    root, _ = emoset
    out = tmp_path / "prep"
    assert cli("prepare", "--data", root, "--out", out, "--seed", "1").code == 0
    manifest, summary = (out / "manifest.jsonl").read_text(), (out / "prepared.json").read_text()
    _fake_latents(out / "latents", "some/model", 512)
    empty = tmp_path / "empty"
    (empty / "image").mkdir(parents=True)
    (empty / "annotation").mkdir()
    failed = cli("prepare", "--data", empty, "--out", out, "--seed", "2", "--overwrite")
    assert failed.code == 1 and "Traceback" not in failed.err
    # the failed re-prepare lost nothing: manifest, summary and latent cache are those of the first run
    assert (out / "manifest.jsonl").read_text() == manifest and (out / "prepared.json").read_text() == summary
    assert (out / "latents" / "index.json").is_file()
    # a successful overwrite from the same root keeps the latent cache (latents depend on the image, not the seed)
    assert cli("prepare", "--data", root, "--out", out, "--seed", "2", "--overwrite").code == 0
    assert (out / "manifest.jsonl").read_text() != manifest and (out / "latents" / "index.json").is_file()
    assert json.loads((out / "prepared.json").read_text())["seed"] == 2


def test_prepare_overwrite_from_another_root_drops_the_stale_latent_cache(cli, tmp_path):
    from emogen_cli.testing.synthetic import make_synthetic_emoset

    a, b = tmp_path / "A", tmp_path / "B"
    make_synthetic_emoset(a, counts={"awe": 2, "fear": 2}, broken=False)
    make_synthetic_emoset(b, counts={"awe": 2, "fear": 2}, broken=False)
    out = tmp_path / "prep"
    assert cli("prepare", "--data", a, "--out", out).code == 0
    _fake_latents(out / "latents", "some/model", 512)
    assert cli("prepare", "--data", b, "--out", out, "--overwrite").code == 0
    assert not (out / "latents").exists()  # ids are relative to the root: another root's latents are stale


def test_ctrl_c_during_evaluate_keeps_the_finished_metrics(cli, tmp_path, monkeypatch):
    from PIL import Image

    from emogen_cli.evaluation.evaluate import Evaluation

    images = tmp_path / "imgs"
    images.mkdir()
    for k in range(2):
        Image.new("RGB", (16, 16), (40 * k, 0, 0)).save(images / f"awe-{k:05d}.png")

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Evaluation, "sem_d", lambda self: {"value": 0.5, "per_emotion": {"awe": 0.5}})
    monkeypatch.setattr(Evaluation, "emo_a", interrupt)
    result = cli("evaluate", images, "--metrics", "sem-d,emo-a", "--out", tmp_path / "ev")
    assert result.code == 130 and "Traceback" not in result.err
    assert "Interrupted during emo-a; the finished metrics (sem-d) are in" in result.err
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["metrics"]["sem-d"]["value"] == 0.5 and report["interrupted"] is True
    assert report["metrics"]["emo-a"] == {"value": None, "failed": "interrupted before it finished"}
    monkeypatch.setattr(Evaluation, "sem_d", interrupt)  # nothing finished: nothing is written
    result = cli("evaluate", images, "--metrics", "sem-d,emo-a", "--out", tmp_path / "ev2")
    assert result.code == 130 and "no metric was finished" in result.err and not (tmp_path / "ev2").exists()


def test_edit_inputs_skip_its_own_contact_sheets_and_index(tmp_path):
    from emogen_cli.outputs.edit import collect_inputs

    for name in ("a.png", "grid-edit-a-awe-00000.png", "index.jsonl", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    files, skipped = collect_inputs([tmp_path])
    assert [p.name for p in files] == ["a.png"]
    assert [s["path"] for s in skipped] == [str(tmp_path / "notes.txt")]


@pytest.mark.parametrize("option, content, text", [
    ("--emotion-probe", b"not a PyTorch file", "(it is not a PyTorch file)"),
    ("--emotion-probe", None, "is missing"),
    ("--import-official-attributes", bytes(range(255, 127, -1)), "Cannot read the emotional attribute list"),
])
def test_train_mapper_checks_given_files_before_models_load(cli, mapper_config, tmp_path, option, content, text):
    given = tmp_path / "given.pth"
    if content is not None:
        given.write_bytes(content)
    result = cli("train-mapper", "--config", mapper_config, "--out", tmp_path / "m", option, given)
    assert_one_error(result, 1, text)
    assert not (tmp_path / "m").exists()  # nothing was written: the check ran before the output folder was made


@pytest.mark.parametrize("shape, text", [("classes", "has 3 outputs, expected 8 (one per emotion)"),
                                         ("width", "-d features, but the CLIP model gives")])
@pytest.mark.parametrize("command", ["generate", "edit"])
def test_probe_of_the_wrong_shape_is_refused_when_it_loads(cli, mapper_config, tmp_path, shape, text, command):
    """A 3-class or wrong-width --probe is refused with one line before any candidate is made (best-of ranked
    with it silently, or failed with "Internal error" after generating)."""
    import torch
    from PIL import Image
    from safetensors.torch import load_file, save_file

    from emogen_cli.core.config import load_config

    bundle = Path(load_config(mapper_config).generate.mapper)
    weight = load_file(bundle / "emotion_probe.safetensors")["fc.weight"]
    rows, width = (3, weight.shape[1]) if shape == "classes" else (8, weight.shape[1] + 1)
    probe = tmp_path / "probe.safetensors"
    save_file({"fc.weight": torch.zeros(rows, width), "fc.bias": torch.zeros(rows)}, str(probe))
    out = tmp_path / "out"
    if command == "generate":
        args = ["generate", "-e", "awe", "-n", "1", "--best-of", "2"]
    else:
        Image.new("RGB", (16, 16), "red").save(tmp_path / "photo.png")
        args = ["edit", tmp_path / "photo.png", "-e", "awe", "--until-confident", "0.5"]
    result = cli(*args, "--probe", probe, "--out", out, "--config", mapper_config)
    assert_one_error(result, 1, text)
    assert not list(out.rglob("*.png")) if out.exists() else True


@pytest.mark.parametrize("args", [["generate", "-e", "awe", "-n", "1"], ["transfer", "-e", "awe", "a cup"],
                                  ["edit", "{imgs}", "-e", "awe"]])
def test_probe_without_a_use_is_refused(cli, place, tmp_path, monkeypatch, args):
    """--probe only ranks --best-of candidates (and scores edit's --until-confident loop): never silently ignored."""
    monkeypatch.chdir(tmp_path)
    result = cli(*place(args), "--probe", tmp_path / "probe.safetensors", "--out", tmp_path / "o")
    assert_one_error(result, 1, "--probe ")
    assert not (tmp_path / "o").exists()


def _tiny_emoset(root: Path, entries: int = 2) -> list[list[str]]:
    from PIL import Image

    rows = []
    for i in range(entries):
        image, ann = f"image/awe/awe_{i}.jpg", f"annotation/awe/awe_{i}.json"
        (root / image).parent.mkdir(parents=True, exist_ok=True)
        (root / ann).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (20, 90, 200)).save(root / image)
        (root / ann).write_text(json.dumps({"emotion": "awe", "scene": "valley"}))
        rows.append(["awe", image, ann])
    return rows


def _write_splits(root: Path, train) -> None:
    (root / "train.json").write_text(train if isinstance(train, str) else json.dumps(train))
    (root / "val.json").write_text("[]")
    (root / "test.json").write_text("[]")


def test_deeply_nested_annotation_is_skipped_and_split_list_is_one_line(cli, tmp_path):
    root = tmp_path / "EmoSet"
    rows = _tiny_emoset(root, 3)
    deep = "[" * 200_000 + "]" * 200_000
    (root / rows[1][2]).write_text('{"emotion": "awe", "scene": ' + deep + "}")
    _write_splits(root, rows)
    result = cli("prepare", "--data", root, "--out", tmp_path / "p", "--json")
    assert result.code == 0, result.err
    assert result.json["kept"] == 2 and result.json["skipped"] == {"malformed_annotation": 1}
    _write_splits(root, "[" + deep + "]")
    assert_one_error(cli("prepare", "--data", root, "--out", tmp_path / "q"), 1, "nested too deeply")


def test_symlinks_out_of_the_dataset_are_skipped_and_counted(cli, tmp_path):
    from PIL import Image

    root = tmp_path / "EmoSet"
    rows = _tiny_emoset(root, 2)
    outside = tmp_path / "private"
    (outside / "image").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(outside / "image" / "secret.jpg")
    (outside / "secret.json").write_text(json.dumps({"emotion": "fear", "scene": "valley"}))
    (root / "image" / "fear").mkdir(parents=True)
    (root / "annotation" / "fear").mkdir(parents=True)
    os.symlink(outside / "image" / "secret.jpg", root / "image" / "fear" / "f1.jpg")  # file link out
    os.symlink(outside / "secret.json", root / "annotation" / "fear" / "f2.json")  # annotation link out
    Image.new("RGB", (8, 8)).save(root / "image" / "fear" / "f2.jpg")
    (root / "annotation" / "fear" / "f1.json").write_text(json.dumps({"emotion": "fear", "scene": "valley"}))
    os.symlink(outside / "image", root / "image" / "linked")  # folder link out
    (root / "annotation" / "fear" / "f3.json").write_text(json.dumps({"emotion": "fear", "scene": "valley"}))
    os.symlink(root / "image" / "awe" / "awe_0.jpg", root / "image" / "fear" / "inside.jpg")  # stays inside: fine
    (root / "annotation" / "fear" / "inside.json").write_text(json.dumps({"emotion": "fear", "scene": "valley"}))
    rows += [["fear", "image/fear/f1.jpg", "annotation/fear/f1.json"],
             ["fear", "image/fear/f2.jpg", "annotation/fear/f2.json"],
             ["fear", "image/linked/secret.jpg", "annotation/fear/f3.json"],
             ["fear", "image/fear/inside.jpg", "annotation/fear/inside.json"]]
    _write_splits(root, rows)
    result = cli("prepare", "--data", root, "--out", tmp_path / "p", "--json")
    assert result.code == 0, result.err
    assert result.json["kept"] == 3 and result.json["skipped"] == {"unsafe_path": 3}
    assert sorted(result.json["skipped_examples"]["unsafe_path"]) == [
        "annotation/fear/f2.json", "image/fear/f1.jpg", "image/linked/secret.jpg"]


def _crafted_bundle(src: Path, dst: Path, emotions: list, placeholder: str | None = None,
                    attribute: str | None = None) -> Path:
    """A copy of the mapper bundle `src` whose names are replaced, consistently in config.json and the emotion
    space (as a hostile Hub upload would be), with the recorded file sizes updated to match."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    space = dst / "emotion_space.safetensors"
    with safe_open(str(space), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(space), metadata={"emotions": json.dumps(emotions)})
    if attribute is not None:
        attributes = json.loads((dst / "attributes.json").read_text())
        attributes["names"][0] = attribute
        (dst / "attributes.json").write_text(json.dumps(attributes))
    config = json.loads((dst / "config.json").read_text())
    config["emotions"] = emotions
    if placeholder is not None:
        config["placeholder"] = placeholder
    config["files"] = {name: (dst / name).stat().st_size for name in config.get("files") or {}}
    (dst / "config.json").write_text(json.dumps(config))
    return dst


@pytest.mark.parametrize("case", ["dotdot", "absolute", "dotdot-attribute", "placeholder", "all"])
def test_crafted_bundle_names_never_become_paths(cli, mapper_config, tmp_path, case):
    from emogen_cli.core.config import load_config
    from emogen_cli.core.emotions import EMOTIONS

    victim = tmp_path / "victim"
    emotions = list(EMOTIONS)
    kwargs = {}
    if case == "dotdot":
        emotions[1] = "../../../victim/x"
    elif case == "absolute":
        emotions[1] = str(victim / "abs")
    elif case == "dotdot-attribute":
        kwargs["attribute"] = "../../etc/passwd"
    elif case == "placeholder":
        kwargs["placeholder"] = "../<emotion>"
    else:
        emotions[1] = "all"
    bundle = _crafted_bundle(Path(load_config(mapper_config).generate.mapper), tmp_path / "b", emotions, **kwargs)
    out = tmp_path / "deep" / "er" / "out"
    for fmt in ("a1111", "diffusers"):
        result = cli("export", "all", "--format", fmt, "--mapper", bundle, "--out", out)
        assert_one_error(result, 1, "gives an unsafe or invalid")
    assert not victim.exists() and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_export_writes_only_inside_out_even_past_the_bundle_check(cli, mapper_config, tmp_path, monkeypatch):
    """Defence in depth: should a bad name get past both name checks, the export writer still refuses any file
    outside --out; --name is checked like a bundle name."""
    import re

    from emogen_cli.core.config import load_config
    from emogen_cli.core.emotions import EMOTIONS
    from emogen_cli.outputs import export as export_module
    from emogen_cli.stage2 import mapper as mapper_module

    emotions = list(EMOTIONS)
    emotions[1] = "../escaped"
    with monkeypatch.context() as patched:
        patched.setattr(mapper_module, "check_name", lambda name, *args, **kwargs: name)
        patched.setattr(export_module, "EXPORT_NAME", re.compile(r".+"))
        bundle = _crafted_bundle(Path(load_config(mapper_config).generate.mapper), tmp_path / "b", emotions)
        out = tmp_path / "out"
        for fmt in ("a1111", "diffusers"):
            result = cli("export", "all", "--format", fmt, "--name", "{emotion}", "--mapper", bundle, "--out", out)
            assert_one_error(result, 1, "lies outside the output folder")
        assert not out.exists() and not (tmp_path / "escaped.pt").exists() and not (tmp_path / "escaped").exists()
    named = cli("export", "amusement", "--name", "../x-{emotion}", "--mapper", bundle, "--out", out)
    assert_one_error(named, 1, "--name gives the embedding name '../x-emotion', which is not a plain word")
    same = cli("export", "all", "--name", "mine", "--mapper", load_config(mapper_config).generate.mapper, "--out", out)
    assert_one_error(same, 1, "would give all 8 emotions the same name")
    assert not out.exists()


# -- model folders and bundles that are damaged, pickled or not the ones trained on (issue 19, points 8, 22, 24, 25) --

def _chain(mapper_config: Path) -> dict:
    import yaml

    return yaml.safe_load(mapper_config.read_text())


@pytest.fixture
def model_copy(mapper_config, tmp_path) -> Path:
    """A copy of the chain's base model (the tiny SD folder, without the extra models beside it)."""
    import shutil

    source = Path(_chain(mapper_config)["model"]["pretrained"])
    copy = tmp_path / "model"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("clip", "resnet", "classifier"))
    return copy


EVERY_LOAD = [  # every command that loads the base model, with what it needs besides --model
    ["generate", "-e", "awe", "-n", "1"],
    ["transfer", "-e", "awe", "a cup"],
    ["fuse", "awe", "fear"],
    ["edit", "{img}", "-e", "awe"],
    ["grid", "--va"],
]


@pytest.mark.parametrize("damage, text", [
    ("empty", "it holds no tokenizer files (vocab.json and merges.txt, or tokenizer.json); found nothing"),
    ("garbage", "tokenizer.json is not valid JSON"),
    ("no-config", "sets no usable model_max_length"),
    ("missing", "/tokenizer': the folder does not exist"),
])
def test_a_broken_tokenizer_folder_is_one_line_on_every_load_path(cli, mapper_config, model_copy, tmp_path, damage,
                                                                   text):
    import shutil

    from PIL import Image

    from emogen_cli.core.errors import EmogenError
    from emogen_cli.pipeline import EmoGenPipeline

    folder = model_copy / "tokenizer"
    if damage == "missing":
        shutil.rmtree(folder)
    else:
        for file in folder.iterdir():
            if damage == "empty" or (damage == "garbage" and file.name == "tokenizer.json") or \
                    (damage == "no-config" and file.name == "tokenizer_config.json"):
                file.write_text("garbage" if damage == "garbage" else "") if damage == "garbage" else file.unlink()
    Image.new("RGB", (16, 16), "red").save(tmp_path / "photo.png")
    for args in EVERY_LOAD if damage == "empty" else EVERY_LOAD[:1]:
        args = [a.replace("{img}", str(tmp_path / "photo.png")) for a in args]
        result = cli(*args, "-c", mapper_config, "--model", model_copy, "--out", tmp_path / "out")
        assert_one_error(result, 1, text)
        assert str(model_copy) in result.err.splitlines()[0]
    with pytest.raises(EmogenError) as info:  # the API: the same line, never an OverflowError
        EmoGenPipeline.from_pretrained(_chain(mapper_config)["generate"]["mapper"], base_model=str(model_copy))
    assert text in info.value.message


def _pickle_with_an_object(path: Path) -> None:
    """A torch .bin holding a Python object besides its tensors: torch's safe loader refuses it."""
    import argparse

    import torch
    from safetensors.torch import load_file

    state = load_file(str(path.parent / "model.safetensors"))
    (path.parent / "model.safetensors").unlink()
    torch.save({**state, "extra": argparse.Namespace(run="code")}, path)


def test_a_pickled_bin_is_named_with_the_way_out_in_the_cli_and_the_api(cli, mapper_config, model_copy, tmp_path):
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.pipeline import EmoGenPipeline

    weights = model_copy / "text_encoder" / "pytorch_model.bin"
    _pickle_with_an_object(weights)
    result = cli(*GEN, "-n", "1", "-c", mapper_config, "--model", model_copy, "--out", tmp_path / "out")
    # (a re-saved text encoder is another file: the base-model warning comes first, rightly)
    result.err = "\n".join(line for line in result.err.splitlines() if not line.startswith("Warning: "))
    lines = assert_one_error(result, 1, f"'{weights}' holds pickled Python objects besides tensors")
    assert "Internal error" not in result.err and "safetensors" in lines[1]
    with pytest.raises(EmogenError) as info:  # the API too: no raw UnpicklingError
        EmoGenPipeline.from_pretrained(_chain(mapper_config)["generate"]["mapper"], base_model=str(model_copy))
    assert str(weights) in info.value.message and "safetensors" in info.value.hint


@pytest.mark.parametrize("backbone, text", [
    ({"hidden_sizes": [-5, 32]}, "backbone_config.hidden_sizes = [-5, 32]; expected a list of up to 16 integers"),
    ({"depths": [1_000_000, 1]}, "backbone_config.depths = [1000000, 1]"),
    ({"embedding_size": 10**12}, "backbone_config.embedding_size = 1000000000000; expected an integer in"),
    ({"embedding_size": "8"}, "backbone_config.embedding_size = '8'"),
    ({"layer_type": "x"}, "describes no buildable ResNet in backbone_config (Class validation error"),
    ({"hidden_sizes": "ab"}, "backbone_config.hidden_sizes = 'ab'"),
    ({"hidden_sizes": [4096] * 4, "depths": [64] * 4, "layer_type": "basic"}, "parameters (at most 500,000,000)"),
])
def test_a_bad_backbone_config_in_an_encoder_bundle_is_one_line(mapper_config, tmp_path, backbone, text):
    import shutil

    from emogen_cli.core.errors import EmogenError
    from emogen_cli.stage1.encoder import load_encoder

    encoder = tmp_path / "encoder"
    shutil.copytree(_chain(mapper_config)["mapper"]["encoder"], encoder)
    config = json.loads((encoder / "config.json").read_text())
    config["backbone_config"].update(backbone)
    (encoder / "config.json").write_text(json.dumps(config))
    with pytest.raises(EmogenError) as info:
        load_encoder(encoder)
    assert text in info.value.message and "\n" not in str(info.value)


def test_another_base_model_of_the_same_width_is_named_and_refused_with_strict(cli, mapper_config, model_copy,
                                                                              tmp_path):
    from emogen_cli.core.pretrained import model_fingerprint
    from emogen_cli.testing.tiny import build_tiny_bundle

    chain = _chain(mapper_config)
    recorded = json.loads((Path(chain["generate"]["mapper"]) / "config.json").read_text())["base_model_fingerprint"]
    assert set(recorded) == {"text_encoder", "unet"} and recorded == model_fingerprint(chain["model"]["pretrained"])
    run = [*GEN, "-n", "1", "-c", mapper_config]
    same = cli(*run, "--model", model_copy, "--out", tmp_path / "same")  # a copy elsewhere is the same model
    assert same.code == 0 and "Warning" not in same.err, same.err
    other = build_tiny_bundle(tmp_path / "other", seed=1)  # same widths, other weights
    warned = cli(*run, "--model", other, "--out", tmp_path / "other-out")
    assert warned.code == 0, warned.err
    assert f"'{other}' is not the base model the mapper was trained on" in warned.err
    assert "its text encoder and UNet differ" in warned.err and "--strict" in warned.err
    refused = cli(*run, "--model", other, "--strict", "--out", tmp_path / "strict-out")
    assert_one_error(refused, 1, "is not the base model the mapper was trained on")
    assert not (tmp_path / "strict-out").exists()


def test_a_bundle_used_with_another_model_family_is_one_line_naming_both(cli, mapper_config, sdxl_config, tmp_path):
    """An SDXL bundle on an SD 1.5 model (and the reverse) stops before sampling, naming both families."""
    from emogen_cli.core.config import load_config

    sd15_model = load_config(mapper_config).model.pretrained
    xl = load_config(sdxl_config)
    for config, model in ((sdxl_config, sd15_model), (mapper_config, xl.model.pretrained)):
        result = cli("generate", "-e", "awe", "-n", "1", "-c", config, "--model", model, "--out", tmp_path / "o")
        assert result.code != 0
        line = result.err.strip().splitlines()[0]
        assert "sd15" in line and "sdxl" in line and "Traceback" not in result.err
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True
    forced = cli("generate", "-e", "awe", "-n", "1", "-c", sdxl_config, "--family", "sd15", "--out", tmp_path / "f")
    assert forced.code != 0 and "sd15" in forced.err and "sdxl" in forced.err
