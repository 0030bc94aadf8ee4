"""The FastAPI app of `emogen serve`: the HTTP API (OpenAI-compatible images, jobs with server-sent
events, files, gallery) and the studio page, over a `Service` (service.py) that holds the models.

Safety: with a token every route (the page, files and events included) needs `Authorization: Bearer T`
or the `emogen_token` cookie the page sets after `/?token=T` (checked in constant time); bodies above
the upload limit answer 413 before they are read; a bad value answers 422 naming the field and the
reason (OpenAI's error shape plus `detail`), never a traceback; a full queue answers 429 with
Retry-After; a draining server 503.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from emogen_cli.core.choices import FUSION_MODES, MAX_SEED, SCHEDULERS
from emogen_cli.serve.jobs import DONE, Draining, Job, QueueFull
from emogen_cli.serve.service import ApiError, Service
from emogen_cli.serve.uploads import UploadError, check_upload

log = logging.getLogger("emogen.serve")

COOKIE = "emogen_token"
STATIC = resources.files("emogen_cli").joinpath("serve/static")
KEEPALIVE_S = 15.0
MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the image
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


# ---------------------------------------------------------------------------------------------- bodies
class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class GenerationBody(_Body):
    """POST /v1/images/generations and /v1/jobs: OpenAI's fields plus emogen's."""

    prompt: str = Field("{}", max_length=2000, description="Template with {} where the emotion goes; text without "
                                                            "{} gets the emotion in front.")
    model: str | None = Field(None, max_length=200, description="'emogen' (or omitted).")
    n: int = Field(1, ge=1, description="Images (at most serve.max_images).")
    size: str | None = Field(None, max_length=20, description="'WIDTHxHEIGHT' (multiples of 8) or 'auto'.")
    response_format: Literal["b64_json", "url"] = "b64_json"
    quality: str | None = Field(None, max_length=20, description="Accepted for OpenAI clients; ignored.")
    style: str | None = Field(None, max_length=20, description="Accepted for OpenAI clients; ignored.")
    user: str | None = Field(None, max_length=200, description="Accepted for OpenAI clients; ignored.")
    emotion: str | list[str] | None = Field(None, description="An emotion, or several to fuse.")
    weights: list[float] | None = Field(None, max_length=16, description="Fusion weights (mode embedding/space).")
    mode: Literal[FUSION_MODES] | None = Field(None, description="How several emotions combine.")  # type: ignore[valid-type]
    intensity: float | None = Field(None, ge=0, le=4, description="Emotion strength α: 0 none, 1 EmoGen's.")
    va: list[float] | None = Field(None, min_length=2, max_length=2, description="[valence, arousal] in [0, 1].")
    sigma: float | None = Field(None, ge=1e-3, le=1e3, description="Kernel width of a va point.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Image i gets seed + i (default: the folder's "
                                                                  "rule, runtime.seed + file number).")
    steps: int | None = Field(None, ge=1, description="Denoising steps (at most serve.max_steps).")
    guidance: float | None = Field(None, ge=0, le=1e4, description="Classifier-free guidance scale.")
    best_of: int | None = Field(None, ge=1, description="Candidates per image; the emotion probe's favourite is kept.")
    scheduler: Literal[SCHEDULERS] | None = None  # type: ignore[valid-type]
    negative_prompt: str | None = Field(None, max_length=2000)

    @field_validator("emotion")
    @classmethod
    def _names(cls, value: Any) -> Any:
        names = [value] if isinstance(value, str) else value or []
        if len(names) > 16 or any(len(n) > 40 for n in names):
            raise ValueError("at most 16 emotion names of at most 40 characters")
        return value


class EditForm(_Body):
    """The form fields of POST /v1/images/edits (multipart, beside the `image` file)."""

    model_config = ConfigDict(extra="forbid", strict=False, allow_inf_nan=False)
    emotion: str | None = Field(None, max_length=40)
    va: list[float] | None = Field(None, min_length=2, max_length=2, description="'valence,arousal'")
    sigma: float | None = Field(None, ge=1e-3, le=1e3)
    prompt: str = Field("{}", max_length=2000)
    strength: float = Field(0.5, ge=0, le=1)
    until_confident: float | None = Field(None, gt=0, le=1)
    min_ssim: float = Field(0.5, ge=-1, le=1)
    intensity: float | None = Field(None, ge=0, le=4)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0, le=1e4)
    best_of: int | None = Field(None, ge=1)
    model: str | None = Field(None, max_length=200)
    n: int = Field(1, ge=1, le=1, description="One edit per request.")
    size: str | None = Field(None, max_length=20, description="Ignored: an edit keeps the photo's size.")
    response_format: Literal["b64_json", "url"] = "b64_json"
    user: str | None = Field(None, max_length=200)

    @field_validator("va", mode="before")
    @classmethod
    def _point(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",")]
        return value


# ---------------------------------------------------------------------------------------------- errors
def _error(status: int, message: str, param: str | None = None, hint: str | None = None,
           headers: dict[str, str] | None = None, detail: list[dict[str, Any]] | None = None) -> JSONResponse:
    kind = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
            422: "invalid_request_error", 429: "rate_limit_error"}.get(status, "server_error" if status >= 500
                                                                           else "invalid_request_error")
    body: dict[str, Any] = {"error": {"message": message, "type": kind, "param": param, "code": None, "hint": hint}}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    """The body field an error is about (a union's branch or a list index is not a field)."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return parts[0] if parts else "body"


def _validation_response(errors: list[dict[str, Any]]) -> JSONResponse:
    detail, seen = [], set()
    for e in errors:  # one reason per field: a union reports each of its branches
        field = _field_name(tuple(e.get("loc", ())))
        if field not in seen:
            seen.add(field)
            detail.append({"field": field, "reason": e.get("msg", "invalid"), "type": e.get("type")})
    if not detail:
        detail = [{"field": "body", "reason": "invalid request", "type": "value_error"}]
    first = detail[0]
    if first["type"] == "extra_forbidden":
        first["reason"] = "unknown field (see /docs or docs/api.md for the fields)"
    message = "; ".join(f"{d['field']}: {d['reason']}" for d in detail[:5])
    return _error(422, message, first["field"], None, detail=detail)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit:,} bytes.")


# ---------------------------------------------------------------------------------------------- middleware
class BodyLimit:
    """Refuse bodies above `limit` bytes: by Content-Length before reading, else while reading."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    size = int(value)
                except ValueError:
                    size = -1
                if size < 0 or size > self.limit:
                    response = _error(413, f"The request body is larger than {self.limit:,} bytes."
                                      if size > self.limit else "Bad Content-Length header.",
                                      hint="Send a smaller image (the server's serve.max_upload_mb).")
                    return await response(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        return await self.app(scope, counted, send)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class TokenAuth:
    """Every request needs the bearer token (header) or the cookie the page set; `/?token=T` sets the
    cookie and redirects to `/` (so a link can be shared once, as Jupyter does). Compared in constant time."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.digest = app, _digest(token)

    def _ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(_digest(value), self.digest)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        auth = headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        cookie = None
        for part in headers.get("cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == COOKIE:
                cookie = value
        if self._ok(bearer) or self._ok(cookie):
            return await self.app(scope, receive, send)
        if scope.get("path") == "/":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if self._ok((query.get("token") or [None])[0]):
                response: Response = RedirectResponse("/", status_code=303)
                response.set_cookie(COOKIE, query["token"][0], httponly=True, samesite="strict", path="/")
                return await response(scope, receive, send)
            if "text/html" in headers.get("accept", ""):
                return await HTMLResponse(_LOGIN, status_code=401, headers={"WWW-Authenticate": "Bearer"})(
                    scope, receive, send)
        response = _error(401, "This server needs its token: send 'Authorization: Bearer TOKEN'.",
                          hint="Or open the studio once at /?token=TOKEN.", headers={"WWW-Authenticate": "Bearer"})
        return await response(scope, receive, send)


_LOGIN = """<!doctype html><html lang="en"><meta charset="utf-8"><title>emogen studio</title>
<body style="font-family:sans-serif;background:#15161a;color:#eee;display:grid;place-items:center;height:90vh">
<form method="get" action="/"><p>This emogen server needs its token.</p>
<input name="token" type="password" autofocus placeholder="token"> <button>Open the studio</button></form>"""


# ---------------------------------------------------------------------------------------------- the app
def create_app(service: Service, token: str | None = None) -> FastAPI:
    """The FastAPI app over `service`; with `token`, every route needs it."""
    from emogen_cli import __version__

    app = FastAPI(title="emogen", version=__version__,
                  description="Emotional image generation (EmoGen, CVPR 2024): an OpenAI-compatible images API, "
                              "jobs with per-step progress, and the studio page at /.")
    app.state.service = service
    manager = service.manager
    limits = service.limits
    statics = {p.name for p in STATIC.iterdir() if p.is_file()}

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param, exc.hint, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(list(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("Internal error on %s %s", request.method, request.url.path)
        return _error(500, f"Internal error: {type(exc).__name__}", hint="This is a bug in emogen; the server log "
                      "has the traceback.")

    def submit(job: Job) -> Job:
        try:
            return manager.submit(job)
        except QueueFull as exc:
            raise ApiError(429, f"The queue is full ({manager.queue_size} jobs waiting).", None,
                           f"Retry in {exc.retry_after} s.", {"Retry-After": str(exc.retry_after)}) from None
        except Draining:
            raise ApiError(503, "The server is shutting down and takes no new jobs.", None,
                           "Send the request to another server or after the restart.", {"Retry-After": "5"}) from None

    async def finished(job: Job) -> dict[str, Any]:
        await job.wait()
        if job.state == "succeeded":
            return job.result or {"count": 0, "images": []}
        error = job.error or {}
        if job.state == "failed":
            raise ApiError(int(error.get("status", 500)), error.get("message", "The job failed."), None,
                           error.get("hint"))
        status = 503 if manager.draining else 409
        raise ApiError(status, error.get("message") or "The job was cancelled.", None, error.get("hint"))

    def images_response(request: Request, job: Job, result: dict[str, Any], response_format: str) -> dict[str, Any]:
        base = str(request.base_url).rstrip("/")
        data = []
        for image in result["images"]:
            if response_format == "url":
                item: dict[str, Any] = {"url": base + image["url"]}
            else:
                path = service.resolve_file(image["file"])
                item = {"b64_json": base64.b64encode(path.read_bytes()).decode("ascii") if path else None}
            item["revised_prompt"] = image.get("prompt")
            data.append(item)
        return {"created": int(job.created), "data": data, "emogen": {"job": job.id, "images": result["images"]}}

    # ------------------------------------------------------------------ the page
    @app.get("/", include_in_schema=False)
    async def studio() -> Response:
        return HTMLResponse(STATIC.joinpath("index.html").read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": CSP, "X-Frame-Options": "DENY",
                                     "Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        if name not in statics:
            raise ApiError(404, "No such file.")
        media = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml", "html": "text/html"}
        return Response(STATIC.joinpath(name).read_bytes(), media_type=media.get(name.rsplit(".", 1)[-1]),
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    # ------------------------------------------------------------------ describing
    @app.get("/healthz", tags=["server"])
    async def healthz() -> dict[str, Any]:
        """Liveness and load: queued and running jobs, workers, whether the server is draining."""
        return {"status": "draining" if manager.draining else "ok", **manager.counts()}

    @app.get("/v1/models", tags=["server"])
    async def models() -> dict[str, Any]:
        """The loaded mapper bundle and base model (OpenAI's list shape)."""
        return {"object": "list", "data": service.models()}

    @app.get("/v1/emotions", tags=["server"])
    async def emotions() -> dict[str, Any]:
        """The bundle's emotions with their valence-arousal coordinates (NRC VAD)."""
        return {"object": "list", "data": service.emotions()}

    # ------------------------------------------------------------------ images (synchronous)
    @app.post("/v1/images/generations", tags=["images"])
    async def generations(body: GenerationBody, request: Request) -> dict[str, Any]:
        """OpenAI-compatible generation: a job, waited for. emogen fields: emotion, weights, mode, intensity, va,
        sigma, seed, steps, guidance, best_of, scheduler, negative_prompt."""
        job = submit(service.generation(body.model_dump()))
        return images_response(request, job, await finished(job), body.response_format)

    async def read_edit(request: Request) -> tuple[EditForm, Any, str | None]:
        """The multipart edit request: its form fields checked, its image checked (nothing written)."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise ApiError(422, "An edit is a multipart/form-data request with an `image` file.", "image",
                           "For example: curl -F image=@photo.png -F emotion=awe ...")
        limit = limits.max_upload_bytes + MULTIPART_SLACK
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"The upload is larger than {limits.max_upload_bytes:,} bytes.", "image",
                               "Send a smaller image (the server's serve.max_upload_mb).")
            chunks.append(chunk)
        request._body = b"".join(chunks)  # Starlette's cached body: form() parses it
        try:
            form = await request.form(max_files=1, max_fields=32, max_part_size=64 * 1024)
        except StarletteHTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed multipart body
            raise ApiError(422, f"The multipart body does not parse ({str(exc)[:120]}).", "body") from None
        upload, fields = None, {}
        for key, value in form.multi_items():
            if hasattr(value, "read"):
                if key != "image":
                    raise ApiError(422, f"Unexpected file field '{key[:40]}'.", key[:40], "Send the photo as `image`.")
                upload = value
            else:
                fields[key] = value
        if upload is None:
            raise ApiError(422, "No `image` file in the request.", "image", "Send the photo as the `image` field.")
        try:
            checked = EditForm.model_validate(fields)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        data = await upload.read()
        try:
            image = check_upload(data, limits.max_upload_bytes, limits.max_pixels)
        except UploadError as exc:
            raise ApiError(exc.status, exc.message, "image", exc.hint) from None
        return checked, image, upload.filename

    @app.post("/v1/images/edits", tags=["images"])
    async def edits(request: Request) -> dict[str, Any]:
        """Edit an uploaded photo toward an emotion (multipart: `image` + emotion or va, strength,
        until_confident, prompt, seed, steps, guidance, intensity, best_of, min_ssim, response_format)."""
        form, image, filename = await read_edit(request)
        job = submit(service.edit(form.model_dump(), image, filename))
        return images_response(request, job, await finished(job), form.response_format)

    # ------------------------------------------------------------------ jobs
    @app.post("/v1/jobs", tags=["jobs"], status_code=202)
    async def create_job(request: Request) -> dict[str, Any]:
        """Queue a job and return its id at once: a JSON generation body, or a multipart edit (as /v1/images/edits)."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form, image, filename = await read_edit(request)
            job = submit(service.edit(form.model_dump(), image, filename))
        else:
            try:
                raw = json.loads(await request.body() or b"null")
            except (ValueError, UnicodeDecodeError):
                raise ApiError(422, "The body is not valid JSON.", "body") from None
            try:
                body = GenerationBody.model_validate(raw)
            except ValidationError as exc:
                raise RequestValidationError(exc.errors()) from None
            job = submit(service.generation(body.model_dump()))
        return job.describe()

    @app.get("/v1/jobs", tags=["jobs"])
    async def list_jobs() -> dict[str, Any]:
        """The most recent jobs, newest first."""
        jobs = list(manager.jobs.values())[-50:][::-1]
        return {"object": "list", "data": [job.describe() for job in jobs]}

    def find(job_id: str) -> Job:
        job = manager.get(job_id) if re.fullmatch(r"[0-9a-f]{32}", job_id) else None
        if job is None:
            raise ApiError(404, "No such job.", "id")
        return job

    @app.get("/v1/jobs/{job_id}", tags=["jobs"])
    async def get_job(job_id: str) -> dict[str, Any]:
        """A job's state, progress and (once done) its images or error."""
        return find(job_id).describe()

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"])
    async def cancel_job(job_id: str) -> dict[str, Any]:
        """Cancel: a queued job is dropped; a running one stops at the end of its current denoising step (the
        images finished before it stay written and indexed; nothing half-written stays)."""
        find(job_id)
        return manager.cancel(job_id).describe()

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"])
    async def job_events(job_id: str, request: Request) -> StreamingResponse:
        """Server-sent events: `state` (queued), `progress` ({step, total}) after denoising steps, `done`
        (the job as GET /v1/jobs/{id} shows it) last."""
        job = find(job_id)

        async def stream() -> Any:
            event = job.listen()
            try:
                yield "retry: 2000\n\n"
                last = -1
                while True:
                    if job.version != last:
                        last = job.version
                        if job.state in DONE:
                            yield f"event: done\ndata: {json.dumps(job.describe())}\n\n"
                            return
                        kind = "progress" if job.state == "running" else "state"
                        yield (f"event: {kind}\ndata: " + json.dumps({"id": job.id, "state": job.state,
                               "step": job.step, "total": job.total}) + "\n\n")
                    try:
                        await asyncio.wait_for(event.wait(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        if await request.is_disconnected():
                            return
                        yield ": keep-alive\n\n"
                    event.clear()
            finally:
                job.unlisten(event)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ------------------------------------------------------------------ the folder
    @app.get("/v1/gallery", tags=["gallery"])
    async def gallery(limit: int = 60, offset: int = 0) -> dict[str, Any]:
        """The output folder's images (index.jsonl), newest first, with their settings."""
        if not 1 <= limit <= 500 or offset < 0:
            raise ApiError(422, "limit must lie in 1..500 and offset be 0 or more.", "limit")
        return service.gallery(limit, offset)

    @app.get("/v1/gallery/{name:path}", tags=["gallery"])
    async def gallery_item(name: str) -> dict[str, Any]:
        """One image's settings and its AUTOMATIC1111 infotext."""
        info = service.image_info(name)
        if info is None:
            raise ApiError(404, "No such image in the output folder.", "name")
        return info

    @app.get("/files/{name:path}", tags=["gallery"])
    async def files(name: str) -> FileResponse:
        """A written image (PNG with its metadata), from the output folder only."""
        path = service.resolve_file(name)
        if path is None:
            raise ApiError(404, "No such image in the output folder.", "name")
        return FileResponse(path, media_type="image/png", headers={"X-Content-Type-Options": "nosniff",
                                                                    "Cache-Control": "private, max-age=3600"})

    app.add_middleware(BodyLimit, limit=limits.max_upload_bytes + MULTIPART_SLACK)
    if token:
        app.add_middleware(TokenAuth, token=token)
    return app


def static_dir() -> Path:
    return Path(str(STATIC))
