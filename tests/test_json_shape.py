"""Every command's `--json` result has the shape docs/json.md describes: the test reads the shapes from the
```json blocks there (the document is what is checked) and runs each command once on the tiny models."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path


DOC = Path(__file__).resolve().parents[1] / "docs" / "json.md"
TYPES = {"str": str, "int": int, "number": (int, float), "bool": bool, "null": type(None), "list": list,
         "dict": dict, "any": object}


def shapes() -> dict[str, object]:
    """{command: shape} from every ```json block of docs/json.md."""
    found: dict[str, object] = {}
    for block in re.findall(r"```json\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S):
        for name, shape in json.loads(block).items():
            assert name not in found, f"{name} is described twice in docs/json.md"
            found[name] = shape
    return found


def problems(value: object, shape: object, where: str = "$") -> list[str]:
    """Where `value` departs from `shape` (the notation of docs/json.md): a type name or names joined by |;
    [S] a list of S; {"key": S, "key?": S, "*": S} an object with those keys (? optional; "*" any other keys
    of shape S; without "*", no other keys)."""
    if isinstance(shape, str):
        kinds = tuple(TYPES[k] for k in shape.split("|"))
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds and object not in kinds)
        return [] if ok else [f"{where}: {value!r:.60} is not {shape}"]
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where}: not a list"]
        return [p for i, item in enumerate(value) for p in problems(item, shape[0], f"{where}[{i}]")]
    assert isinstance(shape, dict)
    if not isinstance(value, dict):
        return [f"{where}: not an object"]
    out, keys = [], {k.rstrip("?"): k for k in shape if k != "*"}
    for key, spec in keys.items():
        if key in value:
            out += problems(value[key], shape[spec], f"{where}.{key}")
        elif not spec.endswith("?"):
            out.append(f"{where}: missing '{key}'")
    for key in set(value) - set(keys):
        out += problems(value[key], shape["*"], f"{where}.{key}") if "*" in shape else [f"{where}: undocumented '{key}'"]
    return out


def test_the_notation_catches_departures():
    shape = {"out": "str", "count": "int", "images": [{"path": "str", "*": "any"}], "strips?": ["str"]}
    good = {"out": "o", "count": 1, "images": [{"path": "a.png", "seed": 3}]}
    assert problems(good, shape) == []
    assert problems({**good, "count": True}, shape) == ["$.count: True is not int"]
    assert problems({**good, "extra": 1}, shape) == ["$: undocumented 'extra'"]
    assert problems({"out": "o", "count": 1, "images": [{"seed": 3}]}, shape) == ["$.images[0]: missing 'path'"]
    assert problems({**good, "strips": [1]}, shape) == ["$.strips[0]: 1 is not str"]


def test_every_command_is_described():
    from emogen_cli.cli import app
    from emogen_cli.cli.dev import app as dev_app

    names = {f"emogen {c.name}" for c in app.registered_commands} | {
        f"emogen dev {c.name}" for c in dev_app.registered_commands}
    described = set(shapes())
    assert names - described == set(), "commands whose --json result docs/json.md does not describe"
    # besides the commands: the error object and a command's other result ("emogen train-mapper --import-...")
    others = described - names - {"error"}
    assert all(name.split(" --")[0] in names for name in others), others


IMAGE_WRITERS = ["emogen generate", "emogen transfer", "emogen fuse", "emogen edit", "emogen grid"]


def test_image_writers_share_one_shape():
    docs = shapes()
    for name in IMAGE_WRITERS:
        shape = docs[name]
        assert (shape["out"], shape["count"]) == ("str", "int"), name
        assert isinstance(shape["images"], list) and shape["images"][0]["path"] == "str", name


def check(result, name: str) -> dict:
    assert result.code == 0, result.err
    payload = result.json
    assert problems(payload, shapes()[name]) == [], f"{name}: {problems(payload, shapes()[name])}"
    if os.environ.get("EMOGEN_JSON_DUMP"):  # while writing docs/json.md: see what a command prints
        Path(os.environ["EMOGEN_JSON_DUMP"], name.replace(" ", "_") + ".json").write_text(result.out)
    return payload


def test_training_chain_json(cli, tiny_config, tmp_path):
    check(cli("prepare", "-c", tiny_config, "--json"), "emogen prepare")
    check(cli("train-encoder", "-c", tiny_config, "--max-steps", "1", "--json"), "emogen train-encoder")
    check(cli("train-mapper", "-c", tiny_config, "--max-steps", "1", "--json"), "emogen train-mapper")


def test_generation_json(cli, mapper_config, tmp_path):
    gen = check(cli("generate", "-e", "awe", "-n", "1", "--out", tmp_path / "g", "-c", mapper_config, "--json"),
                "emogen generate")
    assert gen["count"] == len(gen["images"]) == 1 and Path(gen["images"][0]["path"]).is_file()
    check(cli("transfer", "-e", "fear", "a cup", "-n", "1", "--out", tmp_path / "t", "-c", mapper_config, "--json"),
          "emogen transfer")
    check(cli("fuse", "awe", "fear", "-n", "1", "--out", tmp_path / "f", "-c", mapper_config, "--json"),
          "emogen fuse")
    check(cli("grid", "va", "--valence", "0.2", "--arousal", "0.3,0.7", "--out", tmp_path / "grid", "-c",
              mapper_config, "--json"), "emogen grid")
    check(cli("decompose", "awe", "--top", "2", "--samples", "2", "--images", tmp_path / "g", "-c", mapper_config,
              "--json"), "emogen decompose")
    check(cli("export", "awe", "--out", tmp_path / "emb", "-c", mapper_config, "--json"), "emogen export")
    check(cli("evaluate", tmp_path / "g", "--metrics", "emo-a", "-c", mapper_config, "--json"), "emogen evaluate")


def test_edit_json_is_the_image_shape_with_the_edit_fields(cli, mapper_config, tmp_path):
    from PIL import Image

    Image.new("RGB", (24, 16), (120, 80, 40)).save(tmp_path / "photo.png")
    edit = check(cli("edit", tmp_path / "photo.png", "-e", "awe", "--strength", "0.5", "--out", tmp_path / "e", "-c",
                     mapper_config, "--json"), "emogen edit")
    image = edit["images"][0]
    assert Path(image["path"]).is_file() and image["source"] == str(tmp_path / "photo.png")
    assert image["kind"] == "edit" and image["strength"] == 0.5 and "edited" not in edit


def test_dev_and_error_json(cli, tmp_path):
    check(cli("dev", "tiny-config", tmp_path / "t.yaml", "--json"), "emogen dev tiny-config")
    check(cli("dev", "synthetic-emoset", tmp_path / "emoset", "--json"), "emogen dev synthetic-emoset")
    check(cli("dev", "tiny-bundle", tmp_path / "tiny", "--json"), "emogen dev tiny-bundle")
    error = cli("generate", "--steps", "0", "--json")
    assert error.code != 0 and problems(error.json, shapes()["error"]) == []
