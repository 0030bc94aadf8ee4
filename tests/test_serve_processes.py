"""`emogen serve` as real processes: two servers sharing one output folder under 20 concurrent requests, SIGTERM
draining the running job with the index consistent, the startup JSON, and the refusals before any model loads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

REPO = Path(__file__).resolve().parents[1]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}


def start(config: Path, out: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-m", "emogen_cli", "serve", "-c", str(config), "--port", "0", "--out",
                             str(out), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    text = ""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"serve exited: {proc.stderr.read()[-2000:]}")
        text += line
        try:
            return proc, json.loads(text)
        except json.JSONDecodeError:
            continue
    proc.kill()
    raise AssertionError("serve did not start")


def stop(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return proc.returncode, err


def test_refusals_before_any_model_loads(cli, tmp_path):
    result = cli("serve", "--host", "0.0.0.0", "--out", tmp_path / "o", "--mapper", tmp_path / "none")
    assert result.code != 0 and "needs --token" in result.err and "Traceback" not in result.err
    assert not (tmp_path / "o").exists()
    code = ("import sys; sys.modules['fastapi'] = None\n"
            "from emogen_cli.cli import main\nmain(['serve'])\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), cwd=tmp_path)
    assert run.returncode != 0 and 'pip install "emogen-cli[serve]"' in run.stderr and "Traceback" not in run.stderr
    helped = subprocess.run([sys.executable, "-c", "import sys\nfrom emogen_cli.cli import main\ntry:\n main(['--help'])\n"
                             "except SystemExit: pass\nheavy = [m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') "
                             "if m in sys.modules]\nassert not heavy, heavy\n"], capture_output=True, text=True, env=env())
    assert helped.returncode == 0 and "serve" in helped.stdout, helped.stderr


def test_the_insecure_bind_warns():
    from emogen_cli.core.errors import EmogenError
    from emogen_cli.core.reporting import Reporter
    from emogen_cli.serve.server import check_bind

    class Notes(Reporter):
        def __init__(self):
            self.warnings = []

        def warn(self, message):
            self.warnings.append(message)

    notes = Notes()
    check_bind("127.0.0.1", None, False, notes)
    check_bind("::1", None, False, notes)
    check_bind("0.0.0.0", "tok", False, notes)
    assert notes.warnings == []
    with pytest.raises(EmogenError, match="needs --token"):
        check_bind("192.168.1.5", None, False, notes)
    check_bind("0.0.0.0", None, True, notes)
    assert len(notes.warnings) == 1 and "--insecure" in notes.warnings[0]


@pytest.mark.slow
def test_two_servers_share_a_folder_and_drain_on_sigterm(mapper_config, tmp_path):
    from test_json_shape import problems, shapes

    out = tmp_path / "shared"
    (a, info_a), (b, info_b) = start(mapper_config, out), start(mapper_config, out)
    try:
        assert problems(info_a, shapes()["emogen serve"]) == [] and info_a["auth"] is False
        assert info_a["out"] == info_b["out"] == str(out.resolve()) and info_a["port"] != info_b["port"]
        urls = [info_a["url"], info_b["url"]]

        def one(i: int) -> tuple[int, list[str]]:
            with httpx.Client(base_url=urls[i % 2], timeout=300) as c:
                if i % 4 == 3:
                    from PIL import Image
                    import io

                    buf = io.BytesIO()
                    Image.new("RGB", (24, 24), (i * 9, 30, 60)).save(buf, format="PNG")
                    r = c.post("/v1/images/edits", files={"image": ("same.png", buf.getvalue(), "image/png")},
                               data={"emotion": "awe"})
                else:
                    r = c.post("/v1/images/generations", json={"emotion": "awe", "n": 1 + i % 2})
                assert "Traceback" not in r.text
                assert r.status_code in (200, 429), (i, r.status_code, r.text)
                return r.status_code, [im["file"] for im in r.json()["emogen"]["images"]] if r.status_code == 200 else []

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(one, range(20)))
        codes = [code for code, _ in answers]
        assert set(codes) <= {200, 429}, codes
        files = [f for _, fs in answers for f in fs]
        assert len(files) == len(set(files)) and codes.count(200) >= 2  # no two requests got one file
        names = [Path(json.loads(line)["path"]).name for line in (out / "index.jsonl").read_text().splitlines()]
        assert len(names) == len(set(names))
        for f in files:
            assert (out / f).is_file() and names.count(f) == 1

        # SIGTERM while a job runs and another waits: the running one finishes, the waiting one is dropped
        with httpx.Client(base_url=urls[0], timeout=60) as c:
            running = c.post("/v1/jobs", json={"emotion": "fear", "n": 2, "steps": 150, "prompt": "{} drained"}).json()
            waiting = c.post("/v1/jobs", json={"emotion": "fear", "n": 1, "prompt": "{} dropped"}).json()
            while c.get(f"/v1/jobs/{running['id']}").json()["state"] == "queued":
                time.sleep(0.05)
        code, err = stop(a)
        assert code == 0 and "Traceback" not in err, err
        assert sorted(p.name for p in out.glob("fear-drained-*.png")) == ["fear-drained-00000.png",
                                                                        "fear-drained-00001.png"]
        assert not list(out.glob("fear-dropped-*.png")) and waiting["state"] == "queued"
        code, err = stop(b)
        assert code == 0 and "Traceback" not in err, err
        names = [Path(json.loads(line)["path"]).name for line in (out / "index.jsonl").read_text().splitlines()]
        pngs = {p.name for p in out.glob("*.png") if not p.name.startswith("grid-")}
        assert sorted(names) == sorted(pngs) and not list(out.glob(".*.claim")) and not list(out.glob(".*.tmp"))
    finally:
        for proc in (a, b):
            if proc.poll() is None:
                proc.kill()
