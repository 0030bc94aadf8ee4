"""The file side of generation: concurrent runs, seeds that follow file numbers, full disks, claims, index."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from a1111 import parse_infotext
from PIL import Image


def _index(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "index.jsonl").read_text().splitlines()]


def _pngs(folder: Path, stem: str = "awe") -> list[str]:
    return sorted(p.name for p in folder.glob(f"{stem}-*.png"))


def test_two_concurrent_generate_runs_keep_all_images(mapper_config, tmp_path):
    """Two real processes into one folder: all 6 images survive, numbered apart, each indexed truly."""
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "emogen_cli", "generate", "-c", str(mapper_config), "-e", "awe", "-n", "3",
               "--batch-size", "1", "--seed", "10", "--out", str(out), "--json"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            for _ in range(2)]
    results = []
    for run in runs:
        stdout, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr[-2000:]
        results.append(json.loads(stdout))
    names = [sorted(Path(r["path"]).name for r in result["images"]) for result in results]
    assert sorted(names[0] + names[1]) == [f"awe-{i:05d}.png" for i in range(6)]  # disjoint, nothing lost
    assert _pngs(out) == [f"awe-{i:05d}.png" for i in range(6)]
    index = _index(out)
    assert sorted(Path(e["path"]).name for e in index) == _pngs(out)
    for entry in index:  # each entry describes its file: same metadata as the PNG, seed = 10 + number
        png = Image.open(entry["path"])
        meta = json.loads(png.text["emogen"])
        assert {k: entry[k] for k in meta} == meta
        assert meta["seed"] == 10 + int(Path(entry["path"]).stem.rsplit("-", 1)[1])
        assert parse_infotext(png.text["parameters"])[2]["Seed"] == str(meta["seed"])
    assert not list(out.glob(".*.claim")) and not list(out.glob(".*.tmp"))


def test_seeds_follow_file_numbers(cli, mapper_config, tmp_path):
    """-n 2 twice gives the same 4 images as -n 4 once (same batches of 2, so bit-identical)."""
    for _ in range(2):
        assert cli("generate", "-c", mapper_config, "-e", "fear", "-n", "2", "--seed", "1", "--out",
                   tmp_path / "twice").code == 0
    once = cli("generate", "-c", mapper_config, "-e", "fear", "-n", "4", "--seed", "1", "--out", tmp_path / "once",
               "--json")
    assert [r["seed"] for r in once.json["images"]] == [1, 2, 3, 4]
    expected = [f"fear-{i:05d}.png" for i in range(4)]
    assert _pngs(tmp_path / "twice", "fear") == _pngs(tmp_path / "once", "fear") == expected
    arrays = {}
    for name in _pngs(tmp_path / "once", "fear"):
        a = np.asarray(Image.open(tmp_path / "twice" / name))
        assert np.array_equal(a, np.asarray(Image.open(tmp_path / "once" / name)))
        arrays[name] = a.tobytes()
    assert len(set(arrays.values())) == 4  # nothing duplicated
    assert [e["seed"] for e in _index(tmp_path / "twice")] == [1, 2, 3, 4]


def test_a1111_infotext_of_a_generated_png_parses_back(cli, mapper_config, tmp_path):
    result = cli("generate", "-c", mapper_config, "-e", "fear", "-n", "2", "--seed", "2", "--scheduler", "ddim",
                 "--out", tmp_path, "--json")
    assert result.code == 0, result.err
    png = Image.open(tmp_path / "fear-00001.png")
    prompt, negative, params = parse_infotext(png.text["parameters"])
    assert prompt == "<fear>" and negative == "" and "Negative prompt:" not in png.text["parameters"]  # as A1111
    assert params["Steps"] == "2" and params["Sampler"] == "DDIM" and params["CFG scale"] == "7.5"
    assert params["Seed"] == "3" and params["Size"] == "16x16" and params["Emotion"] == "fear"
    assert params["Emogen mapper"] == json.loads(png.text["emogen"])["mapper_sha256"][:16]  # A1111's short form
    assert (tmp_path / "grid-fear-00000.png").is_file()
    assert params["Model"] == Path(json.loads(png.text["emogen"])["base_model"]).name

    fused = cli("fuse", "amusement", "fear", "--mode", "space", "-w", "3,1", "-n", "1",
                "-p", "a street, at night: rain", "-c", mapper_config, "--out", tmp_path, "--json")
    assert fused.code == 0, fused.err
    text = Image.open(fused.json["images"][0]["path"]).text["parameters"]
    prompt, _, params = parse_infotext(text)
    assert prompt == "<amusement+fear> a street, at night: rain"
    assert params["Emotion"] == "amusement+fear" and params["Emotion fusion"] == "space 0.75/0.25"
    assert sorted(p.name for p in tmp_path.glob("grid-*")) == ["grid-fear-00000.png"]  # no sheet of one image


def test_infotext_values_with_commas_or_colons_are_quoted():
    from emogen_cli.pipeline import _a1111_value

    assert _a1111_value("runs/sd15") == "runs/sd15" and _a1111_value(7.5) == "7.5"
    quoted = _a1111_value('C:\\models\\sd, v1.5 "final"')
    text = f"<awe>\nNegative prompt: \nSteps: 2, Model: {quoted}, Emotion: awe"
    assert parse_infotext(text)[2] == {"Steps": "2", "Model": 'C:\\models\\sd, v1.5 "final"', "Emotion": "awe"}


def test_full_disk_leaves_only_complete_pngs_and_a_true_index(cli, mapper_config, tmp_path, monkeypatch):
    """The disk fills up at the 3rd image: one clear line, no truncated PNG under a final name, index = files."""
    real_save, calls = Image.Image.save, []

    def filling(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 3:
            Path(fp).write_bytes(b"\x89PNG partial")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", filling)
    result = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "4", "--out", tmp_path)
    assert result.code == 1 and "The disk is full" in result.err and "Traceback" not in result.err
    assert _pngs(tmp_path) == ["awe-00000.png", "awe-00001.png"]
    for name in _pngs(tmp_path):
        Image.open(tmp_path / name).load()  # complete
    assert [Path(e["path"]).name for e in _index(tmp_path)] == _pngs(tmp_path)
    hidden = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".emogen.lock"]
    assert not hidden  # no temporary files, no claims left
    monkeypatch.setattr(Image.Image, "save", real_save)
    again = cli("generate", "-c", mapper_config, "-e", "awe", "-n", "2", "--out", tmp_path, "--json")
    assert [r["seed"] for r in again.json["images"]] == [2, 3]  # the sequence continues


def test_claims_skip_live_runs_and_reclaim_dead_ones(tmp_path):
    from emogen_cli.outputs.folder import claim_numbers, release_claims

    (tmp_path / "awe-00000.png").write_bytes(b"png")
    assert claim_numbers(tmp_path, ["awe", "awe", "fear"], [2, 1, 1]) == [1, 3, 0]
    assert sorted(p.name for p in tmp_path.glob(".*.claim")) == [".awe-00001.png.claim", ".awe-00002.png.claim",
                                                                   ".awe-00003.png.claim", ".fear-00000.png.claim"]
    assert claim_numbers(tmp_path, ["awe"], [1]) == [4]  # this (live) process still holds 1..3
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for p in tmp_path.glob(".awe-*.claim"):
        owner = json.loads(p.read_text())
        p.write_text(json.dumps({**owner, "pid": int(dead.stdout)}))  # as if a killed run left them
    assert claim_numbers(tmp_path, ["awe"], [2]) == [1]
    release_claims(tmp_path, ["awe-00001.png", "awe-00002.png", "fear-00000.png"])
    assert not list(tmp_path.glob(".*.claim"))


def test_index_merges_instead_of_rewriting(tmp_path):
    from emogen_cli.outputs.folder import merge_index

    merge_index(tmp_path, [{"path": "a.png", "seed": 0}, {"path": "b.png", "seed": 1}])
    (tmp_path / "index.jsonl").write_text((tmp_path / "index.jsonl").read_text() + "{damaged\n")
    merge_index(tmp_path, [{"path": "c.png", "seed": 2}, {"path": "a.png", "seed": 5}])  # a.png was overwritten
    lines = (tmp_path / "index.jsonl").read_text().splitlines()
    assert lines[1] == "{damaged"  # never dropped: it is not ours to judge
    folder = tmp_path.resolve()  # entries name their file by its resolved path, keyed by its name
    assert [json.loads(line) for line in lines if line != "{damaged"] == [
        {"path": str(folder / "b.png"), "seed": 1}, {"path": str(folder / "a.png"), "seed": 5},
        {"path": str(folder / "c.png"), "seed": 2}]


def test_index_is_keyed_by_the_resolved_folder_and_reconciled_with_the_files(tmp_path, monkeypatch):
    """Issue 19.23: --out spelled relative then absolute gives one entry per file; a PNG without an entry
    gets one from its own metadata, an entry without a file goes, and a killed write's temp file is cleaned."""
    from PIL import Image

    from emogen_cli.outputs.folder import merge_index, reconcile, save_png

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    image = Image.new("RGB", (8, 8), "red")
    first = save_png(Path("out") / "awe-00000.png", image, {"seed": 0})  # written via a relative spelling
    merge_index(Path("out"), [first])
    merge_index(out, [save_png(out / "awe-00000.png", image, {"seed": 0})])  # the same file, spelled absolute
    lines = (out / "index.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["path"] == str(out.resolve() / "awe-00000.png")

    save_png(out / "awe-00001.png", image, {"seed": 1, "emotion": "awe"})  # e.g. kill -9 before the index write
    merge_index(out, [{"path": str(out / "gone-00000.png"), "seed": 9}])  # its file was deleted by hand
    (out / ".awe-00002.png.abc123.tmp").write_bytes(b"half a png")  # a killed atomic write
    counts = reconcile(out)
    assert counts == {"dropped": 1, "added": 1, "temporary": 1}
    entries = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    assert sorted((Path(e["path"]).name, e["seed"]) for e in entries) == [("awe-00000.png", 0), ("awe-00001.png", 1)]
    assert not list(out.glob("*.tmp")) and reconcile(out) == {"dropped": 0, "added": 0, "temporary": 0}



def test_reconcile_never_takes_a_live_writers_temporary_file(tmp_path):
    """Two servers share a folder: one reconciles while the other writes a contact sheet between its claims
    (no claim alive). A temporary file tagged with a running writer stays; one whose writer is gone goes."""
    from emogen_cli.core.files import temp_beside
    from emogen_cli.outputs.folder import reconcile

    out = tmp_path / "out"
    out.mkdir()
    live = temp_beside(out / "grid-awe-00000.png")  # this process is its writer, and runs
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
    dead = out / live.name.replace(f"emogen-{os.getpid()}-", f"emogen-{dead_pid}-").replace("grid-awe-00000", "awe-1")
    dead.write_bytes(b"half a png")
    assert reconcile(out)["temporary"] == 1
    assert live.exists() and not dead.exists()

def test_overwrite_removes_the_earlier_outputs_of_its_stems_only(tmp_path):
    from PIL import Image

    from emogen_cli.outputs.folder import merge_index, remove_outputs, save_png

    image = Image.new("RGB", (8, 8))
    records = [save_png(tmp_path / name, image, {"seed": 0}) for name in ("awe-00000.png", "awe-00001.png",
                                                                          "fear-00000.png")]
    merge_index(tmp_path, records)
    save_png(tmp_path / "rejected" / "awe-00001-rank2.png", image, {})
    Image.new("RGB", (8, 8)).save(tmp_path / "grid-awe-00000.png")
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "report.json").write_text("{}")
    removed = remove_outputs(tmp_path, ["awe"])
    assert len(removed) == 5 and not (tmp_path / "evaluation").exists()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["fear-00000.png"]
    assert [Path(json.loads(line)["path"]).name for line in (tmp_path / "index.jsonl").read_text().splitlines()] \
        == ["fear-00000.png"]
