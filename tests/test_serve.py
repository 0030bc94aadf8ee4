"""`emogen serve`'s HTTP API on the tiny models: every route, the official openai client against a live
uvicorn, the CLI's own files, jobs with server-sent events and cancellation, 429 under a full queue,
auth on and off, and bad inputs (each a clear 4xx, nothing written)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
pytest.importorskip("multipart")
httpx = pytest.importorskip("httpx")

from serve_live import LiveServer  # noqa: E402


@pytest.fixture(scope="module")
def served(mapper_config, tmp_path_factory):
    """One loaded pipeline, its job manager and a live server on a folder of its own (shared by this module)."""
    from emogen_cli.core.config import load_config
    from emogen_cli.pipeline import EmoGenPipeline
    from emogen_cli.serve.app import create_app
    from emogen_cli.serve.jobs import JobManager
    from emogen_cli.serve.service import Service

    cfg = load_config(mapper_config, {"serve.max_images": 4, "serve.max_upload_mb": 1, "serve.max_pixels": 128 * 128,
                                      "serve.max_steps": 300})
    pipe = EmoGenPipeline(cfg)
    manager = JobManager([pipe], queue_size=8)
    service = Service(cfg, manager, tmp_path_factory.mktemp("served") / "out")
    app = create_app(service)
    live = LiveServer(app)
    client = httpx.Client(base_url=live.url, timeout=300)
    yield SimpleNamespace(url=live.url, out=service.out, service=service, manager=manager, pipe=pipe, cfg=cfg, app=app,
                          client=client, mapper_config=mapper_config)
    client.close()
    live.stop()
    manager.close()


def png(size=(24, 16), color=(120, 80, 40)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def idle(manager, timeout: float = 300) -> None:
    """Wait until no job is queued or running (a test's snapshot of the folder must not race a job)."""
    import time

    deadline = time.monotonic() + timeout
    while manager.counts()["queued"] or manager.counts()["running"]:
        assert time.monotonic() < deadline, "the job manager stayed busy"
        time.sleep(0.05)


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != ".emogen.lock"}


def indexed(folder: Path) -> list[str]:
    index = folder / "index.jsonl"
    return [Path(json.loads(line)["path"]).name for line in index.read_text().splitlines()] if index.is_file() else []


def check_consistent(folder: Path) -> None:
    """index.jsonl lists every image of the folder exactly once; no claim or temporary file is left."""
    names = indexed(folder)
    assert len(names) == len(set(names))
    pngs = {p.name for p in folder.glob("*.png") if not p.name.startswith("grid-")}
    assert set(names) == pngs
    assert not list(folder.glob(".*.claim")) and not list(folder.glob(".*.tmp"))


def test_describing_routes(served):
    c = served.client
    health = c.get("/healthz").json()
    assert health["status"] == "ok" and health["workers"] == 1 and health["queue_size"] == 8
    model = c.get("/v1/models").json()["data"][0]
    assert model["id"] == "emogen" and model["base_model"] == served.pipe.base_model
    assert model["emotions"] == list(served.pipe.bundle.emotions) and model["has_probe"] is True
    emotions = c.get("/v1/emotions").json()["data"]
    assert [e["id"] for e in emotions] == list(served.pipe.bundle.emotions)
    assert all(0 <= e["valence"] <= 1 and 0 <= e["arousal"] <= 1 for e in emotions)
    schema = c.get("/openapi.json").json()
    for path in ("/v1/images/generations", "/v1/images/edits", "/v1/jobs", "/v1/jobs/{job_id}",
                 "/v1/jobs/{job_id}/events", "/v1/emotions", "/v1/models", "/healthz", "/files/{name}"):
        assert path in schema["paths"], path
    page = c.get("/")
    assert page.status_code == 200 and "emogen studio" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name in ("studio.js", "studio.css"):
        asset = c.get(f"/static/{name}")
        assert asset.status_code == 200 and "http://" not in asset.text and "https://" not in asset.text  # no CDN
    assert "https://" not in page.text and "http://" not in page.text
    assert c.get("/static/../app.py").status_code == 404


def test_served_images_equal_the_clis(served, cli, tmp_path):
    """Same request, same bytes: the served PNGs (b64_json) are the files `emogen transfer` writes."""
    from emogen_cli.serve.app import create_app
    from emogen_cli.serve.service import Service
    from starlette.testclient import TestClient

    result = cli("transfer", "-e", "awe", "a cup", "-n", "2", "--seed", "3", "--out", tmp_path / "cli", "-c",
                 served.mapper_config, "--json")
    assert result.code == 0, result.err
    cli_files = sorted((tmp_path / "cli").glob("awe-a-cup-*.png"))
    body = {"prompt": "a cup", "n": 2, "emotion": "awe", "seed": 3}
    r = served.client.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    served_bytes = [base64.b64decode(d["b64_json"]) for d in r.json()["data"]]
    assert [hashlib.sha256(b).hexdigest() for b in served_bytes] == [
        hashlib.sha256(p.read_bytes()).hexdigest() for p in cli_files]
    images = r.json()["emogen"]["images"]
    assert [i["seed"] for i in images] == [3, 4] and all((served.out / i["file"]).is_file() for i in images)
    # without `seed`, a fresh folder numbers and seeds as `emogen generate --seed 0` does, run after run
    fresh = Service(served.cfg, served.manager, tmp_path / "fresh")
    with TestClient(create_app(fresh)) as client:
        for _ in range(2):
            assert client.post("/v1/images/generations", json={"emotion": "fear"}).status_code == 200
            assert cli("generate", "-e", "fear", "-n", "1", "--out", tmp_path / "cli2", "-c",
                       served.mapper_config).code == 0
    for name in ("fear-00000.png", "fear-00001.png"):
        assert (tmp_path / "fresh" / name).read_bytes() == (tmp_path / "cli2" / name).read_bytes()
    check_consistent(tmp_path / "fresh")


def test_the_openai_client_against_a_live_server(served):
    openai = pytest.importorskip("openai")
    from PIL import Image

    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    r = client.images.generate(model="emogen", prompt="{} a street", n=2, size="16x16", response_format="b64_json",
                               extra_body={"emotion": "awe", "seed": 5, "intensity": 0.5})
    assert len(r.data) == 2
    metas = []
    for item in r.data:
        image = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert image.size == (16, 16)
        metas.append(json.loads(image.info["emogen"]))
    assert [m["seed"] for m in metas] == [5, 6] and {m["emotion"] for m in metas} == {"awe"}
    assert metas[0]["intensity"] == 0.5 and metas[0]["prompt"] == "{} a street"
    fused = client.images.generate(model="emogen", prompt="", n=1, response_format="url",
                                   extra_body={"emotion": ["amusement", "fear"], "weights": [0.7, 0.3],
                                               "mode": "embedding"})
    url = fused.data[0].url
    assert url.startswith(served.url + "/files/")
    got = httpx.get(url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    assert json.loads(Image.open(io.BytesIO(got.content)).info["emogen"])["fusion"] == {
        "mode": "embedding", "weights": [0.7, 0.3]}
    va = client.images.generate(model="emogen", prompt="{}", extra_body={"va": [0.8, 0.3]})
    assert len(va.data) == 1
    with pytest.raises(openai.UnprocessableEntityError, match="Unknown emotion 'aw'"):
        client.images.generate(model="emogen", prompt="x", extra_body={"emotion": "aw"})
    with pytest.raises(openai.UnprocessableEntityError, match="Unknown model"):
        client.images.generate(model="dall-e-3", prompt="x", extra_body={"emotion": "awe"})


def events(client, job_id: str) -> list[tuple[str, dict]]:
    out, kind = [], None
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.append((kind, json.loads(line[6:])))
    return out


def test_jobs_stream_progress_and_finish(served):
    c = served.client
    r = c.post("/v1/jobs", json={"emotion": "contentment", "n": 2, "steps": 6, "seed": 1})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] in ("queued", "running") and job["params"]["steps"] == 6
    stream = events(c, job["id"])
    kinds = [k for k, _ in stream]
    assert kinds[-1] == "done" and "progress" in kinds
    steps = [d["step"] for k, d in stream if k == "progress"]
    done = stream[-1][1]
    total = done["progress"]["total"]  # 6 steps per denoising call; the tiny config's batch is 2: one call
    assert total == 6 * (2 // served.cfg.generate.batch_size) and done["progress"]["step"] == total
    assert steps == sorted(steps) and all(d["total"] == total for k, d in stream if k == "progress" and d["total"])
    assert done["state"] == "succeeded"
    assert c.get(f"/v1/jobs/{job['id']}").json()["result"]["count"] == 2
    assert job["id"] in [j["id"] for j in c.get("/v1/jobs").json()["data"]]
    files = [i["file"] for i in done["result"]["images"]]
    assert all(c.get(f"/files/{f}").status_code == 200 for f in files)
    gallery = c.get("/v1/gallery", params={"limit": 2}).json()
    assert gallery["total"] >= 2 and len(gallery["data"]) == 2
    info = c.get(f"/v1/gallery/{files[0]}").json()
    assert info["seed"] in (1, 2) and info["infotext"].startswith("<contentment>") and "Seed: " in info["infotext"]
    assert c.get("/v1/jobs/" + "0" * 32).status_code == 404
    check_consistent(served.out)


def test_cancel_stops_at_a_step_and_leaves_the_folder_consistent(served):
    c = served.client
    before = set(indexed(served.out))
    job = c.post("/v1/jobs", json={"emotion": "anger", "n": 4, "steps": 300}).json()
    for kind, data in events_until_running(c, job["id"]):
        pass
    cancelled = c.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200
    final = events(c, job["id"])[-1][1]
    assert final["state"] == "cancelled" and final["progress"]["step"] < final["progress"]["total"]
    assert "Cancelled at the end of a denoising step" in final["error"]["message"]
    idle(served.manager)
    check_consistent(served.out)
    assert len(set(indexed(served.out)) - before) < 4
    # a queued job is dropped at once
    assert c.get("/healthz").json()["running"] == 0


def events_until_running(client, job_id: str) -> list:
    out = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        kind = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
                out.append((kind, data))
                if kind == "progress" and data["step"] >= 2:
                    return out
    return out


def test_a_full_queue_answers_429_with_retry_after(served):
    from emogen_cli.serve.app import create_app
    from emogen_cli.serve.jobs import JobManager
    from emogen_cli.serve.service import Service
    from starlette.testclient import TestClient

    idle(served.manager)  # the module's worker is idle: share its pipeline
    manager = JobManager([served.pipe], queue_size=1)
    service = Service(served.cfg, manager, served.out)
    before = listing(served.out)
    try:
        with TestClient(create_app(service)) as client:
            answers = [client.post("/v1/jobs", json={"emotion": "awe", "steps": 300, "n": 4}) for _ in range(4)]
            codes = [a.status_code for a in answers]
            assert codes[:2] == [202, 202] or codes[0] == 202
            full = [a for a in answers if a.status_code == 429]
            assert full, codes
            assert int(full[0].headers["retry-after"]) >= 1
            assert full[0].json()["error"]["type"] == "rate_limit_error"
            for a in answers:
                if a.status_code == 202:
                    client.delete(f"/v1/jobs/{a.json()['id']}")
    finally:
        manager.close()
    check_consistent(served.out)
    assert all(n.startswith("awe-") or n in before for n in listing(served.out) - before)


def test_auth_on_every_route_and_off_by_default(served):
    from emogen_cli.serve.app import create_app
    from starlette.testclient import TestClient

    name = served.client.post("/v1/images/generations", json={"emotion": "sadness"}).json()["emogen"]["images"][0]["file"]
    assert served.client.get(f"/files/{name}").status_code == 200  # no token configured: open (loopback)
    token = "s3cret-token"
    job = served.client.post("/v1/jobs", json={"emotion": "awe"}).json()["id"]
    routes = [("GET", "/"), ("GET", "/healthz"), ("GET", "/v1/models"), ("GET", "/v1/emotions"),
              ("GET", "/v1/gallery"), ("GET", f"/v1/gallery/{name}"), ("GET", "/v1/jobs"), ("GET", f"/v1/jobs/{job}"),
              ("GET", f"/v1/jobs/{job}/events"), ("GET", f"/files/{name}"), ("GET", "/static/studio.js"),
              ("GET", "/docs"), ("GET", "/openapi.json"), ("POST", "/v1/images/generations"),
              ("POST", "/v1/images/edits"), ("POST", "/v1/jobs"), ("DELETE", f"/v1/jobs/{job}")]
    with TestClient(create_app(served.service, token=token)) as client:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": token}):
                r = client.request(method, path, headers=headers, json={"emotion": "awe"} if method == "POST" else None)
                assert r.status_code == 401, (method, path, headers)
                assert r.headers["www-authenticate"] == "Bearer"
        ok = {"Authorization": f"Bearer {token}"}
        assert client.get("/healthz", headers=ok).status_code == 200
        assert client.get(f"/files/{name}", headers=ok).status_code == 200
        assert events(_Authed(client, ok), job)[-1][0] == "done"
        idle(served.manager)
        login = client.get(f"/?token={token}", follow_redirects=False)
        assert login.status_code == 303 and login.headers["location"] == "/"
        assert "httponly" in login.headers["set-cookie"].lower() and "samesite=strict" in login.headers["set-cookie"].lower()
        client.cookies.set("emogen_token", token)
        assert client.get("/").status_code == 200 and client.get(f"/files/{name}").status_code == 200
        client.cookies.clear()
        assert client.get("/", headers={"Accept": "text/html"}).status_code == 401
        assert client.get("/?token=nope", follow_redirects=False).status_code == 401


class _Authed:
    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def stream(self, method, url):
        return self.client.stream(method, url, headers=self.headers)


def test_edits_upload_a_photo_and_write_the_clis_edit(served):
    from PIL import Image

    c = served.client
    r = c.post("/v1/images/edits", files={"image": ("My Photo.png", png(), "image/png")},
               data={"emotion": "awe", "strength": "0.5", "seed": "2"})
    assert r.status_code == 200, r.text
    image = r.json()["emogen"]["images"][0]
    edited = Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"])))
    assert edited.size == (24, 16)
    assert image["kind"] == "edit" and image["strength"] == 0.5 and image["file"].startswith("my-photo-awe-")
    assert image["source"].startswith("uploads/") and image["source"].endswith("/my-photo.png")
    assert c.get(image["source_url"]).status_code == 200 and c.get(image["url"]).status_code == 200
    job = c.post("/v1/jobs", files={"image": ("p.png", png(color=(10, 200, 90)), "image/png")},
                 data={"va": "0.8,0.3", "strength": "0.4"})
    assert job.status_code == 202, job.text
    done = events(c, job.json()["id"])[-1][1]
    assert done["state"] == "succeeded" and done["result"]["images"][0]["va"]["valence"] == 0.8
    check_consistent(served.out)


def bomb_png(side: int = 20000) -> bytes:
    """A PNG declaring side x side 8-bit grey pixels, all zero: a few hundred kB that decode to side² bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    idat = b"".join(packer.compress(row * 500) for _ in range(side // 500)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


BAD_JSON = [
    ({"emotion": "awe", "n": "2"}, "n"), ({"emotion": "awe", "n": True}, "n"), ({"emotion": "awe", "n": 0}, "n"),
    ({"emotion": "awe", "n": 10000}, "n"), ({"emotion": "awe", "steps": 1.5}, "steps"),
    ({"emotion": "awe", "steps": 100000}, "steps"), ({"emotion": "awe", "seed": -1}, "seed"),
    ({"emotion": "awe", "seed": "x"}, "seed"), ({"emotion": 5}, "emotion"), ({"emotion": "aew"}, "emotion"),
    ({"emotion": "../../etc/passwd"}, "emotion"), ({"emotion": ["awe", "awe"]}, "emotion"), ({}, "emotion"),
    ({"emotion": "awe", "va": [0.5, 0.5]}, "emotion"), ({"va": [0.5]}, "va"), ({"va": [2, 0.5]}, "va"),
    ({"va": "0.5,0.5"}, "va"), ({"emotion": "awe", "intensity": 9}, "intensity"),
    ({"emotion": "awe", "mode": "blend"}, "mode"), ({"emotion": ["awe", "fear"], "weights": [1]}, "weights"),
    ({"emotion": "awe", "prompt": 123}, "prompt"), ({"emotion": "awe", "prompt": "{} {}"}, "prompt"),
    ({"emotion": "awe", "prompt": "x" * 5000}, "prompt"), ({"emotion": "awe", "emotoin": "awe"}, "emotoin"),
    ({"emotion": "awe", "size": "100000x8"}, "size"), ({"emotion": "awe", "size": "17x17"}, "size"),
    ({"emotion": "awe", "size": "../../x"}, "size"), ({"emotion": "awe", "model": "../../etc"}, "model"),
    ({"emotion": "awe", "best_of": 1000}, "best_of"), ({"emotion": "awe", "response_format": "file"}, "response_format"),
    ({"emotion": "awe", "scheduler": "nope"}, "scheduler"), ({"emotion": "awe", "guidance": -1}, "guidance"),
]


@pytest.mark.parametrize("body, field", BAD_JSON, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_JSON)])
def test_bad_generation_values_answer_422_naming_the_field(served, body, field):
    idle(served.manager)
    before = listing(served.out)
    for path in ("/v1/images/generations", "/v1/jobs"):
        r = served.client.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        error = r.json()["error"]
        assert error["param"] == field and error["message"] and "Traceback" not in r.text
    assert listing(served.out) == before


def test_malformed_bodies_answer_4xx_and_write_nothing(served):
    c = served.client
    idle(served.manager)
    before = listing(served.out)
    for raw in (b"{not json", b'{"emotion": "awe", "guidance": NaN}', b"[]", b'"awe"'):
        for path in ("/v1/images/generations", "/v1/jobs"):
            r = c.post(path, content=raw, headers={"Content-Type": "application/json"})
            assert r.status_code == 422, (path, raw, r.text)
            assert r.json()["error"]["message"] and "Traceback" not in r.text
    huge = c.post("/v1/images/generations", content=b"x" * (3 * 1024 * 1024), headers={"Content-Type": "application/json"})
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]["message"]
    assert c.get("/v1/gallery", params={"limit": 0}).status_code == 422
    assert listing(served.out) == before


BAD_UPLOADS = [
    ("huge", lambda: ("big.png", b"\x89PNG" + b"\0" * (2 * 1024 * 1024), "image/png"), {"emotion": "awe"}, 413),
    ("bomb", lambda: ("bomb.png", bomb_png(), "image/png"), {"emotion": "awe"}, 422),
    ("too-many-pixels", lambda: ("wide.png", png((400, 400)), "image/png"), {"emotion": "awe"}, 422),
    ("not-an-image", lambda: ("notes.png", b"hello, not an image", "image/png"), {"emotion": "awe"}, 422),
    ("gif", lambda: ("anim.gif", _gif(), "image/gif"), {"emotion": "awe"}, 422),
    ("tiny", lambda: ("tiny.png", png((8, 8)), "image/png"), {"emotion": "awe"}, 422),
    ("truncated", lambda: ("cut.png", png((64, 64), (1, 2, 3))[:-30], "image/png"), {"emotion": "awe"}, 422),
    ("no-emotion", lambda: ("p.png", png(), "image/png"), {}, 422),
    ("bad-emotion", lambda: ("p.png", png(), "image/png"), {"emotion": "../../etc/passwd"}, 422),
    ("fusion", lambda: ("p.png", png(), "image/png"), {"emotion": "awe,fear"}, 422),
    ("strength", lambda: ("p.png", png(), "image/png"), {"emotion": "awe", "strength": "2"}, 422),
    ("strength-type", lambda: ("p.png", png(), "image/png"), {"emotion": "awe", "strength": "lots"}, 422),
    ("n", lambda: ("p.png", png(), "image/png"), {"emotion": "awe", "n": "3"}, 422),
    ("unknown-field", lambda: ("p.png", png(), "image/png"), {"emotion": "awe", "path": "/etc/passwd"}, 422),
    ("until-and-best-of", lambda: ("p.png", png(), "image/png"),
     {"emotion": "awe", "until_confident": "0.6", "best_of": "2"}, 422),
]


def _gif() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(buf, format="GIF")
    return buf.getvalue()


@pytest.mark.parametrize("name, upload, fields, status", BAD_UPLOADS, ids=[b[0] for b in BAD_UPLOADS])
def test_bad_uploads_are_refused_and_write_nothing(served, name, upload, fields, status):
    idle(served.manager)
    before = listing(served.out)
    for path in ("/v1/images/edits", "/v1/jobs"):
        r = served.client.post(path, files={"image": upload()}, data=fields)
        assert r.status_code == status, (path, r.text)
        assert r.json()["error"]["message"] and "Traceback" not in r.text
    assert listing(served.out) == before


def test_edit_requests_without_a_photo_are_refused(served):
    c = served.client
    assert c.post("/v1/images/edits", json={"emotion": "awe"}).json()["error"]["param"] == "image"
    assert c.post("/v1/images/edits", data={"emotion": "awe"}, files={"other": ("x.png", png(), "image/png")}
                  ).status_code == 422


def test_no_request_value_becomes_a_path(served, tmp_path):
    c = served.client
    r = c.post("/v1/images/generations", json={"emotion": "awe", "prompt": "../../../../tmp/evil {}"})
    assert r.status_code == 200
    name = r.json()["emogen"]["images"][0]["file"]
    assert "/" not in name and (served.out / name).is_file() and name.startswith("awe-tmp-evil-")
    edit = c.post("/v1/images/edits", files={"image": ("../../../evil.png", png(), "image/png")},
                  data={"emotion": "fear"})
    assert edit.status_code == 200
    source = edit.json()["emogen"]["images"][0]["source"]
    assert source.startswith("uploads/") and source.endswith("/evil.png")
    assert (served.out / source).resolve().is_relative_to(served.out)
    outside = tmp_path / "secret.png"
    outside.write_bytes(png())
    (served.out / "link.png").symlink_to(outside)
    (served.out / ".hidden.png").write_bytes(png())
    for path in ("/files/../secret.png", "/files/%2e%2e/%2e%2e/etc/passwd", "/files//etc/passwd",
                 "/files/index.jsonl", "/files/.emogen.lock", "/files/link.png", "/files/.hidden.png",
                 f"/files/{outside}", "/files/uploads/../index.jsonl", "/v1/gallery/..%2Findex.jsonl",
                 "/v1/jobs/..%2F..%2Fetc"):
        assert c.get(path).status_code == 404, path
    (served.out / "link.png").unlink()
    (served.out / ".hidden.png").unlink()


@pytest.mark.slow
def test_load_40_concurrent_mixed_requests(served, caplog):
    """40 requests at once on loopback (generations, edits, jobs, reads): each answered 200/202 or 429, every
    image answered is on disk and in index.jsonl exactly once, and nothing in the log is a traceback."""
    import logging
    import time
    from concurrent.futures import ThreadPoolExecutor

    caplog.set_level(logging.WARNING)
    idle(served.manager)

    def one(i: int) -> tuple[str, int, list[str]]:
        with httpx.Client(base_url=served.url, timeout=300) as c:
            kind = ("gen-b64", "gen-url", "edit", "job", "read")[i % 5]
            if kind == "gen-b64":
                r = c.post("/v1/images/generations", json={"emotion": "awe", "n": 1, "prompt": f"{{}} load {i}"})
            elif kind == "gen-url":
                r = c.post("/v1/images/generations", json={"emotion": ["fear", "awe"], "n": 2, "response_format": "url"})
            elif kind == "edit":
                r = c.post("/v1/images/edits", files={"image": (f"load{i}.png", png(color=(i, 50, 90)), "image/png")},
                           data={"emotion": "sadness", "strength": "0.5"})
            elif kind == "job":
                r = c.post("/v1/jobs", json={"emotion": "excitement", "n": 1})
                if r.status_code == 202:
                    job = r.json()["id"]
                    while (state := c.get(f"/v1/jobs/{job}").json())["state"] in ("queued", "running"):
                        time.sleep(0.05)
                    assert state["state"] == "succeeded", state
                    return kind, 202, [im["file"] for im in state["result"]["images"]]
            else:
                r = c.get(("/v1/gallery", "/v1/emotions", "/healthz", "/v1/models")[i % 4])
            assert "Traceback" not in r.text
            files = [im["file"] for im in r.json()["emogen"]["images"]] if r.status_code == 200 and kind != "read" else []
            if r.status_code == 429:
                assert int(r.headers["retry-after"]) >= 1
            return kind, r.status_code, files

    start = time.perf_counter()
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(one, range(40)))
    elapsed = time.perf_counter() - start
    codes = [code for _, code, _ in answers]
    assert set(codes) <= {200, 202, 429}, codes
    files = [f for _, _, fs in answers for f in fs]
    assert files and len(files) == len(set(files))
    names = indexed(served.out)
    for f in files:
        assert (served.out / f).is_file() and names.count(Path(f).name) == 1
    idle(served.manager)
    check_consistent(served.out)
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    print(f"40 requests in {elapsed:.1f} s: {codes.count(200)} x 200, {codes.count(202)} x 202, {codes.count(429)} x 429")
