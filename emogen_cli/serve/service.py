"""What the HTTP routes do, without HTTP: check a request's values, turn it into a job, describe images.

Generation and edit jobs call the CLI's own writers (outputs/generate.generate, outputs/edit.edit_images)
with the loaded pipeline, so a served image has the CLI's file name, seed, PNG metadata and index.jsonl
entry. Seeds: without `seed` a generation follows the folder's rule (runtime.seed + file number, as
`emogen generate --seed S` into the same folder); with `seed` image i gets exactly seed + i (as
`EmoGenPipeline(..., seed=S)`, and as the CLI's `--seed S` into an empty folder). Edits follow
`emogen edit --seed S` (S + file number).

No request value becomes a path: files are named by the writers (file stems from `slug()`, which keeps
[a-z0-9-]); an upload is stored as `uploads/<sha256[:16]>/<slug of its name>.png`; `resolve_file`
answers only names of the output folder's images.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emogen_cli.core.config import Config
from emogen_cli.core.errors import EmogenError
from emogen_cli.serve.jobs import Job, JobManager, JobReporter
from emogen_cli.serve.uploads import Upload

MODEL_ID = "emogen"
SIZE = re.compile(r"(\d{1,5})x(\d{1,5})")
# what /files serves: images at the top of the folder, best-of candidates, uploads (before/after)
FILE_NAME = re.compile(r"(?:rejected/|uploads/[0-9a-f]{16}/)?[A-Za-z0-9][A-Za-z0-9._+=-]{0,200}\.png")


class ApiError(Exception):
    """A request the server refuses: HTTP `status`, one-line `message`, the body `param` at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.hint, self.headers = status, message, param, hint, headers or {}


def _field(param: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(...) with an EmogenError turned into a 422 naming `param`."""
    try:
        return fn(*args, **kwargs)
    except EmogenError as exc:
        raise ApiError(422, exc.message, param, exc.hint) from None


def _guess_param(message: str, default: str) -> str:
    """The body field an EmogenError from the request checks is about."""
    lowered = message.lower()
    for word, param in (("weight", "weights"), ("fusion mode", "mode"), ("sigma", "sigma"),
                        ("valence", "va"), ("prompt", "prompt"), ("intensity", "intensity")):
        if word in lowered:
            return param
    return default


@dataclass
class Limits:
    max_images: int
    max_steps: int
    max_best_of: int
    max_size: int
    max_upload_bytes: int
    max_pixels: int

    @classmethod
    def from_config(cls, config: Config) -> "Limits":
        s = config.serve
        return cls(s.max_images, s.max_steps, s.max_best_of, s.max_size, int(s.max_upload_mb * 1024 * 1024),
                   s.max_pixels)


class Service:
    """The server's state (config, output folder, job manager, limits) and the work behind each route."""

    def __init__(self, config: Config, manager: JobManager, out: str | Path) -> None:
        from emogen_cli.outputs.folder import reconcile

        self.config, self.manager = config, manager
        self.out = Path(out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        reconcile(self.out)
        self.limits = Limits.from_config(config)
        self.pipe = manager.pipes[0]  # for checking requests only (its pure methods); workers own the models
        self.started = time.time()

    # ------------------------------------------------------------------ describing the model
    def models(self) -> list[dict[str, Any]]:
        pipe = self.pipe
        return [{"id": MODEL_ID, "object": "model", "created": int(self.started), "owned_by": "emogen",
                 "mapper": pipe.mapper_source, "mapper_sha256": pipe.mapper_hash, "base_model": pipe.base_model,
                 "clip_model": pipe.bundle.config.get("clip_model"), "emotions": list(pipe.bundle.emotions),
                 "resolution": self.config.model.resolution, "scheduler": self.config.generate.scheduler,
                 "steps": self.config.generate.steps, "guidance": self.config.generate.guidance,
                 "has_probe": self.has_probe(), "devices": [str(p.device) for p in self.manager.pipes],
                 "limits": vars(self.limits)}]

    def emotions(self) -> list[dict[str, Any]]:
        from emogen_cli.conditioning.va import coordinates

        coords = coordinates()
        positive = {"amusement", "awe", "contentment", "excitement"}
        return [{"id": e, "object": "emotion", "polarity": "positive" if e in positive else "negative",
                 "valence": coords[e][0] if e in coords else None, "arousal": coords[e][1] if e in coords else None}
                for e in self.pipe.bundle.emotions]

    def has_probe(self) -> bool:
        return (self.pipe.mapper_path / "emotion_probe.safetensors").is_file()

    # ------------------------------------------------------------------ checking values
    def _model(self, model: str | None) -> None:
        if model not in (None, MODEL_ID):
            raise ApiError(422, f"Unknown model '{model}'.", "model", f"This server serves '{MODEL_ID}' "
                           "(GET /v1/models describes it).")

    def _size(self, size: str | None) -> tuple[int, int]:
        default = self.config.model.resolution
        if size in (None, "", "auto"):
            return default, default
        m = SIZE.fullmatch(size)
        if not m:
            raise ApiError(422, f"size must be 'WIDTHxHEIGHT' in pixels, got '{size[:40]}'.", "size",
                           f"For example: '{default}x{default}'.")
        w, h = int(m[1]), int(m[2])
        if w % 8 or h % 8 or not (8 <= w <= self.limits.max_size and 8 <= h <= self.limits.max_size):
            raise ApiError(422, f"size sides must be multiples of 8 in 8..{self.limits.max_size}, got {w}x{h}.",
                           "size", f"For example: '{default}x{default}'.")
        return w, h

    def _at_most(self, value: int | None, limit: int, param: str) -> None:
        if value is not None and value > limit:
            raise ApiError(422, f"{param} must be at most {limit} on this server, got {value}.", param,
                           f"Ask for {limit} or fewer (the server's serve.max_* settings).")

    def _best_of(self, best_of: int | None) -> int:
        k = 1 if best_of is None else best_of
        self._at_most(k, self.limits.max_best_of, "best_of")
        if k > 1 and not self.has_probe():
            raise ApiError(422, "best_of needs the bundle's emotion probe (emotion_probe.safetensors), which this "
                           "bundle lacks.", "best_of", "Send best_of=1.")
        return k

    def _emotions(self, emotion: Any) -> Any:
        if isinstance(emotion, list) and len(emotion) == 1:
            return emotion[0]
        return emotion

    # ------------------------------------------------------------------ generation
    def generation(self, body: dict[str, Any]) -> Job:
        """A generation job from the (type-checked) body of /v1/images/generations or /v1/jobs."""
        from emogen_cli.conditioning.intensity import check_intensity
        from emogen_cli.conditioning.request import template
        from emogen_cli.conditioning.va import check_point

        self._model(body.get("model"))
        n = body.get("n") or 1
        self._at_most(n, self.limits.max_images, "n")
        width, height = self._size(body.get("size"))
        emotion, va = self._emotions(body.get("emotion")), body.get("va")
        if (emotion is None) == (va is None):
            raise ApiError(422, "Give the target as `emotion` (one name or a list) or `va` ([valence, arousal]), "
                           "one of them.", "emotion", 'For example: "emotion": "awe".')
        prompt = _field("prompt", template, body.get("prompt") or "{}", "prompt")
        intensity = body.get("intensity")
        if intensity is not None:
            intensity = _field("intensity", check_intensity, intensity)
        if va is not None:
            va = _field("va", check_point, va)
        try:
            request = self.pipe.request(emotion, prompt, n, body.get("mode") or "tokens", body.get("weights"),
                                        intensity=intensity, va=va, sigma=body.get("sigma"))
        except EmogenError as exc:
            raise ApiError(422, exc.message, _guess_param(exc.message, "emotion"), exc.hint) from None
        steps = body.get("steps")
        self._at_most(steps, self.limits.max_steps, "steps")
        k = self._best_of(body.get("best_of"))
        seed = body.get("seed")
        settings_args = (steps, body.get("guidance"), height, width, body.get("negative_prompt"), body.get("scheduler"))
        settings = _field("steps", self.pipe.settings, *settings_args)
        params = {"kind": "generate", "emotion": list(request.emotions) if len(request.emotions) > 1 and va is None
                  else (request.emotions[0] if va is None else None),
                  "va": list(va) if va is not None else None, "sigma": body.get("sigma"),
                  "mode": request.mode if len(request.emotions) > 1 and va is None else None,
                  "weights": body.get("weights"), "prompt": request.prompt, "n": n, "size": f"{width}x{height}",
                  "seed": seed, "steps": settings.steps, "guidance": settings.guidance, "scheduler": settings.scheduler,
                  "negative_prompt": settings.negative_prompt, "intensity": intensity, "best_of": k}

        def work(job: Job, pipe: Any) -> dict[str, Any]:
            from emogen_cli.outputs.generate import generate

            result = generate(self.config, [request], out=self.out, pipe=pipe, settings=pipe.settings(*settings_args),
                              first_seed=seed, best_of=k, reporter=JobReporter(job), stop=job.cancel_requested.is_set)
            return {"count": result["count"], "images": [self.public(r) for r in result["images"]]}

        return Job("generate", params, work)

    # ------------------------------------------------------------------ edits
    def edit(self, body: dict[str, Any], upload: Upload, filename: str | None) -> Job:
        """An edit job from the (type-checked) form fields of /v1/images/edits and the checked upload."""
        from emogen_cli.conditioning.intensity import check_intensity
        from emogen_cli.conditioning.request import Request, template
        from emogen_cli.conditioning.va import DEFAULT_SIGMA, check_point, dominant, va_request
        from emogen_cli.core.emotions import validate_emotion
        from emogen_cli.outputs.folder import slug

        self._model(body.get("model"))
        emotion, va = self._emotions(body.get("emotion")), body.get("va")
        if (emotion is None) == (va is None):
            raise ApiError(422, "Give the edit's target as `emotion` (one name) or `va` (valence,arousal), one of "
                           "them.", "emotion", "For example: emotion=awe.")
        prompt = _field("prompt", template, body.get("prompt") or "{}", "prompt")
        intensity = _field("intensity", check_intensity, 1.0 if body.get("intensity") is None else body["intensity"])
        steps = body.get("steps")
        self._at_most(steps, self.limits.max_steps, "steps")
        k = self._best_of(body.get("best_of"))
        until = body.get("until_confident")
        if until is not None:
            if not 0 < until <= 1:
                raise ApiError(422, f"until_confident takes a probability in (0, 1], got {until}.", "until_confident")
            if k > 1:
                raise ApiError(422, "until_confident and best_of cannot be combined.", "until_confident",
                               "Use one of them.")
            if not self.has_probe():
                raise ApiError(422, "until_confident needs the bundle's emotion probe, which this bundle lacks.",
                               "until_confident")
        extra = None
        if va is None:
            if not isinstance(emotion, str):
                raise ApiError(422, "An edit moves a photo toward one emotion (or a va point).", "emotion",
                               "For example: emotion=awe.")
            target = _field("emotion", validate_emotion, emotion, self.pipe.bundle.emotions)
            request, label = Request((target,), prompt), target
        else:
            v, a = _field("va", check_point, va)
            sigma = DEFAULT_SIGMA if body.get("sigma") is None else body["sigma"]
            request = _field("sigma", va_request, v, a, sigma, prompt, 1,
                             tuple(e for e in self.pipe.bundle.emotions))
            weights = dict(zip(request.emotions, request.weights))
            target, label = dominant(weights), f"va-{v:.2f}-{a:.2f}"
            extra = {"va": {"valence": v, "arousal": a, "sigma": sigma, "weights": weights}}
        seed = self.config.runtime.seed if body.get("seed") is None else body["seed"]
        strength = 0.5 if body.get("strength") is None else body["strength"]
        min_ssim = 0.5 if body.get("min_ssim") is None else body["min_ssim"]
        guidance = body.get("guidance")
        name = slug(Path(filename or "").stem) or "upload"
        folder = self.out / "uploads" / upload.sha256[:16]
        params = {"kind": "edit", "emotion": target if va is None else None, "va": list(va) if va is not None else None,
                  "prompt": request.prompt, "strength": strength, "until_confident": until, "min_ssim": min_ssim,
                  "seed": seed, "steps": steps or self.config.generate.steps,
                  "guidance": self.config.generate.guidance if guidance is None else guidance,
                  "intensity": intensity, "best_of": k, "source": f"uploads/{upload.sha256[:16]}/{name}.png",
                  "source_size": list(upload.size)}

        def work(job: Job, pipe: Any) -> dict[str, Any]:
            from emogen_cli.core.files import atomic_save_image
            from emogen_cli.outputs.edit import edit_images

            source = folder / f"{name}.png"
            if not source.is_file():
                folder.mkdir(parents=True, exist_ok=True)
                image = upload.image()
                if image.mode not in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
                    image = image.convert("RGB")
                atomic_save_image(source, image, format="PNG")
            result = edit_images(pipe, [source], self.out, request, target, label=label, strength=strength, seed=seed,
                                 steps=steps, guidance=guidance, intensity=intensity, until=until, min_ssim=min_ssim,
                                 best_of=k, max_pixels=self.limits.max_pixels, extra_meta=extra,
                                 reporter=JobReporter(job), stop=job.cancel_requested.is_set)
            if not result["count"]:
                reasons = "; ".join(s["reason"] for s in result["skipped"]) or "no edit qualified"
                raise EmogenError(f"Nothing was edited: {reasons}.", "Lower strength or min_ssim, or send another "
                                  "photo.")
            images = []
            for record, edited in zip(result["images"], result["edited"]):
                image = self.public(record)
                image.update({"source_url": f"/files/{params['source']}", "p_target_before": edited["p_target_before"],
                              "p_target_after": edited["p_target_after"], "stop": edited["stop"]})
                images.append(image)
            return {"count": result["count"], "images": images}

        return Job("edit", params, work)

    # ------------------------------------------------------------------ images and files
    def public(self, record: dict[str, Any]) -> dict[str, Any]:
        """An index record as the API shows it: the file's name in the folder and its URL instead of the
        server's path."""
        path = Path(record["path"]).resolve()
        try:
            name = path.relative_to(self.out).as_posix()
        except ValueError:
            name = path.name
        meta = {k: v for k, v in record.items() if k != "path"}
        source = meta.get("source")
        if isinstance(source, str):  # an upload: shown by its place in the folder
            try:
                meta["source"] = Path(source).resolve().relative_to(self.out).as_posix()
            except ValueError:
                meta["source"] = Path(source).name
        out = {"file": name, "url": f"/files/{name}", **meta}
        if meta.get("kind") == "edit" and isinstance(meta.get("source"), str):
            out["source_url"] = f"/files/{meta['source']}"
        return out

    def resolve_file(self, name: str) -> Path | None:
        """The output folder's image called `name`, or None (any other name, a link leaving the folder,
        a hidden file, a missing file)."""
        if not FILE_NAME.fullmatch(name) or ".." in name:
            return None
        path = (self.out / name).resolve()
        try:
            path.relative_to(self.out)
        except ValueError:
            return None
        return path if path.is_file() else None

    def gallery(self, limit: int = 60, offset: int = 0) -> dict[str, Any]:
        """The folder's indexed images, newest first."""
        from emogen_cli.outputs.folder import INDEX

        entries: list[tuple[float, dict[str, Any]]] = []
        index = self.out / INDEX
        lines = index.read_text(encoding="utf-8", errors="replace").splitlines() if index.is_file() else []
        for line in lines:
            try:
                record = json.loads(line)
                name = Path(record["path"]).name
            except (ValueError, KeyError, TypeError):
                continue
            path = self.out / name
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            entries.append((mtime, {**record, "path": str(path)}))
        entries.sort(key=lambda e: (e[0], e[1]["path"]), reverse=True)
        page = [self.public(record) for _, record in entries[offset:offset + limit]]
        return {"object": "list", "total": len(entries), "offset": offset, "data": page}

    def image_info(self, name: str) -> dict[str, Any] | None:
        """One image's index record and its AUTOMATIC1111 infotext (the PNG's `parameters` chunk)."""
        from PIL import Image

        path = self.resolve_file(name)
        if path is None:
            return None
        try:
            with Image.open(path) as image:
                infotext = image.info.get("parameters", "")
                meta = json.loads(image.info.get("emogen", "{}"))
        except (OSError, ValueError):
            return None
        return {**self.public({**(meta if isinstance(meta, dict) else {}), "path": str(path)}), "infotext": infotext}

