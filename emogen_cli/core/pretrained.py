"""Loading pretrained components (hub id or local folder) with one clear error when that fails."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from emogen_cli.core.errors import EmogenError


def quiet_libraries() -> None:
    """Silence library warnings that are noise for CLI users (e.g. torchvision fallbacks)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    diffusers.logging.set_verbosity_error()
    # diffusers also logs "An error occurred while trying to fetch ..." at error level before raising; the
    # exception becomes emogen's own one-line message (models.load), so the log line would only repeat it
    diffusers.logging.set_verbosity(diffusers.logging.CRITICAL)
    transformers.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()


def _looks_like_path(name: str) -> bool:
    """A name that can only be a local path: a hub id is `name` or `owner/name`, never `./x`, `/x`, `a/b/c`."""
    return (name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
            or re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) is None)


def load(cls: Any, name_or_path: str, subfolder: str | None = None, **kwargs: Any) -> Any:
    """`cls.from_pretrained` with errors turned into one actionable line: a missing local folder is
    never reported as a connection failure, and offline the line names the `hf download` to run. A local
    folder's tokenizers are checked first (transformers builds a broken tokenizer from an empty folder, which
    fails later as an OverflowError), and a pickled weights file is named with the way out (safetensors)."""
    import pickle

    from emogen_cli.core.errors import load_failure
    from emogen_cli.core.validate import check_path

    check_path(name_or_path, f"The {cls.__name__} folder")
    where = f"{name_or_path}/{subfolder}" if subfolder else name_or_path
    if Path(name_or_path).is_dir():
        check_tokenizers(Path(name_or_path), cls.__name__, subfolder)
    try:
        if subfolder:
            kwargs["subfolder"] = subfolder
        loaded = cls.from_pretrained(name_or_path, **kwargs)
    except Exception as exc:
        name = cls.__name__
        if isinstance(exc, pickle.UnpicklingError) and Path(where).is_dir():
            raise _pickled(Path(where), name, load_failure(exc)) from None
        # the tokenizers library raises a bare Exception ("Error while initializing BPE") for a damaged vocabulary
        if not isinstance(exc, (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError)) \
                and type(exc).__name__ != "SafetensorError" and type(exc) is not Exception:
            raise
        if Path(name_or_path).exists():
            raise EmogenError(f"Cannot load {name} from '{where}': {load_failure(exc)}",
                              f"Check that '{where}' holds {'an' if name[0] in 'AEIOU' else 'a'} {name} saved with "
                              "save_pretrained.") from None
        if _looks_like_path(name_or_path):
            raise EmogenError(f"Cannot load {name}: the local folder '{name_or_path}' does not exist.",
                              "Check the path, or pass a Hugging Face hub id.") from None
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no"):
            raise EmogenError(f"Cannot load {name}: '{name_or_path}' is neither a local folder nor in the local "
                              "Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it.",
                              f"Run `hf download {name_or_path}` where there is network, or pass a local folder.") from None
        raise EmogenError(f"Cannot load {name} from '{where}': {load_failure(exc)}",
                          f"Check the hub id (and your network / HF token), or run `hf download {name_or_path}` and "
                          "pass the local folder.") from None
    _check_max_length(loaded, where)
    return loaded


MAX_TOKENS = 1 << 16  # a text encoder's context: 77 for CLIP, 512 for T5; transformers' "unset" is 1e30


def _check_max_length(loaded: Any, where: str) -> None:
    """A tokenizer (or a pipeline's tokenizers) whose model_max_length is unset: a folder without its
    tokenizer_config.json loads, then every prompt fails with OverflowError ("int too big to convert")."""
    components = getattr(loaded, "components", None)
    parts = components.items() if isinstance(components, dict) else [("", loaded)]
    for part, tokenizer in parts:
        length = getattr(tokenizer, "model_max_length", None) if hasattr(tokenizer, "convert_tokens_to_ids") else None
        if length is not None and not (isinstance(length, int) and 0 < length <= MAX_TOKENS):
            folder = f"{where}/{part}" if part else where
            shown = f"{length:.3g}" if isinstance(length, (int, float)) else repr(length)
            raise EmogenError(f"The tokenizer in '{folder}' sets no usable model_max_length (got {shown}): its "
                              "tokenizer_config.json is missing or incomplete.",
                              "Restore the folder from the model's repository (CLIP's is 77).")


PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _pickled(folder: Path, name: str, reason: str) -> EmogenError:
    """The refusal of a folder whose weights are a pickle holding more than tensors, naming the file."""
    files = sorted(p for p in [*folder.glob("*"), *folder.glob("*/*")]
                   if p.suffix in PICKLED and p.is_file() and not any(p.parent.glob("*.safetensors")))
    what = f"'{files[0]}'" if files else "its weights file"
    if len(files) > 1:
        what += f" (and {len(files) - 1} more pickled file{'s' * (len(files) > 2)})"
    why = (reason.removeprefix("refused: it ") if reason.startswith("refused: it holds")
           else f"cannot be read as plain tensors ({reason})")
    return EmogenError(f"Cannot load {name} from '{folder}': {what} {why}.",
                       "Convert it to safetensors where you trust its source (load it there and "
                       "save_pretrained(..., safe_serialization=True)), or download the model's .safetensors files.")


TOKENIZER_FILES = "vocab.json and merges.txt, or tokenizer.json"


def check_tokenizers(folder: Path, name: str, subfolder: str | None = None) -> None:
    """The tokenizer folders a load of `name` from the local `folder` reads, each checked
    (`check_tokenizer_folder`): the folder itself for a tokenizer class, else every tokenizer a pipeline's
    model_index.json lists (tokenizer/, tokenizer_2/, ...)."""
    if name.endswith(("Tokenizer", "TokenizerFast")):
        check_tokenizer_folder(folder / subfolder if subfolder else folder, name)
        return
    index = folder / "model_index.json"
    if subfolder or not index.is_file():
        return
    from emogen_cli.core.files import read_json

    hint = "Restore model_index.json from the model's repository."
    components = read_json(index, "Model index", hint)
    if not isinstance(components, dict):
        raise EmogenError(f"Model index '{index}' is not a JSON object.", hint)
    for part, spec in components.items():
        if (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[1], str)
                and spec[1].endswith(("Tokenizer", "TokenizerFast"))):
            check_tokenizer_folder(folder / part, spec[1])


def check_tokenizer_folder(folder: Path, name: str) -> None:
    """transformers silently builds a 2-token tokenizer from a missing or empty folder, and the tokenizers library
    fails on damaged files with a bare Exception: refuse both here, naming the folder and what is wrong."""
    hint = f"Restore the folder from the model's repository (e.g. `hf download MODEL --include '{folder.name}/*'`)."
    if not folder.is_dir():
        raise EmogenError(f"Cannot load {name} from '{folder}': the folder does not exist.", hint)
    files = {p.name: p for p in folder.iterdir() if p.is_file() and p.stat().st_size > 0}
    if "tokenizer.json" in files:
        _json_file(files["tokenizer.json"], name, lambda d: isinstance(d, dict) and isinstance(d.get("model"), dict),
                   "a tokenizer description (it has no \"model\" object)", hint)
        return
    if {"vocab.json", "merges.txt"} <= files.keys():
        _json_file(files["vocab.json"], name, lambda d: isinstance(d, dict) and bool(d) and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in d.items()),
            "a vocabulary (an object of token: id)", hint)
        try:
            files["merges.txt"].read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise EmogenError(f"Cannot load {name} from '{folder}': merges.txt is not UTF-8 text.", hint) from None
        return
    if any(n.endswith(".model") for n in files):  # a SentencePiece tokenizer (T5's spiece.model)
        return
    present = ", ".join(sorted(files)[:5]) or "nothing"
    raise EmogenError(f"Cannot load {name} from '{folder}': it holds no tokenizer files ({TOKENIZER_FILES}); "
                      f"found {present}.", hint)


def _json_file(path: Path, name: str, valid: Any, what: str, hint: str) -> None:
    import json

    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EmogenError(f"Cannot load {name} from '{path.parent}': {path.name} is not UTF-8 text "
                          f"(byte {exc.start}).", hint) from None
    except json.JSONDecodeError as exc:
        raise EmogenError(f"Cannot load {name} from '{path.parent}': {path.name} is not valid JSON "
                          f"({exc.msg} at line {exc.lineno}).", hint) from None
    except RecursionError:
        raise EmogenError(f"Cannot load {name} from '{path.parent}': {path.name} is nested too deeply.", hint) from None
    if not valid(data):
        raise EmogenError(f"Cannot load {name} from '{path.parent}': {path.name} is not {what}.", hint)


# --- which base model: a cheap fingerprint the mapper bundle records ----------------------------------------------

FINGERPRINTED = ("text_encoder", "unet")  # what the mapper's token passes through; the VAE only decodes
_WEIGHTS = re.compile(r"(model|pytorch_model|diffusion_pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)")
_SAMPLES, _SAMPLE_BYTES = 16, 1 << 16


def model_folder(name_or_path: str, revision: str | None = None) -> Path | None:
    """The local folder of a diffusers model: the path itself, or the hub id's snapshot in the local cache
    (never downloaded here); None when neither exists."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if _looks_like_path(name_or_path):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name_or_path, revision=revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache (the hub's errors come in many types): nothing to compare
        return None


def model_fingerprint(name_or_path: str, revision: str | None = None) -> dict[str, str] | None:
    """{component: fingerprint} of the text encoder and UNet a plain `from_pretrained` of the model loads; None
    when the model is not on this machine.

    A fingerprint is sha256 over the component's config.json (less the keys its library adds, which differ between
    copies of one model) and, per weights file, its size and 16 blocks of 64 KiB spread evenly over it (the first
    holds the safetensors header, which lists every tensor's name, shape and offset). It reads at most 1 MiB per
    file whatever the model's size (SD 1.5's UNet is 3.4 GB: hashing it whole takes seconds), so it costs
    milliseconds at every load, yet any fine-tune changes the sampled bytes, while copies of one model (another
    folder, the hub cache) agree. A re-saved copy in another format (.bin, half precision) counts as another model."""
    import hashlib
    import json

    folder = model_folder(name_or_path, revision)
    if folder is None:
        return None
    prints: dict[str, str] = {}
    for part in FINGERPRINTED:
        files = sorted(p for p in (folder / part).glob("*") if _WEIGHTS.fullmatch(p.name) and p.is_file())
        if any(p.suffix == ".safetensors" for p in files):  # what from_pretrained prefers
            files = [p for p in files if p.suffix == ".safetensors"]
        if not files:
            continue
        digest = hashlib.sha256()
        try:
            config = json.loads((folder / part / "config.json").read_text(encoding="utf-8"))
            if isinstance(config, dict):
                config = {k: v for k, v in config.items() if not k.startswith("_") and not k.endswith("_version")}
            digest.update(json.dumps(config, sort_keys=True, default=str).encode())
        except (OSError, ValueError):
            digest.update(b"no config")
        try:
            for file in files:
                size = file.stat().st_size
                digest.update(f"{size}\0".encode())
                with open(file, "rb") as f:
                    for k in range(_SAMPLES):
                        f.seek(max(size - _SAMPLE_BYTES, 0) * k // (_SAMPLES - 1))
                        digest.update(f.read(_SAMPLE_BYTES))
        except OSError:
            return None
        prints[part] = digest.hexdigest()
    return prints or None


def load_sd_components(pretrained: str, revision: str | None = None, *, vae: bool = True,
                       unet: bool = True) -> dict[str, Any]:
    """Tokenizer, text encoder, (UNet), (VAE) and the training noise scheduler of an SD model."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    quiet_libraries()
    parts: dict[str, Any] = {
        "tokenizer": load(CLIPTokenizer, pretrained, "tokenizer", revision=revision),
        "text_encoder": load(CLIPTextModel, pretrained, "text_encoder", revision=revision),
        "noise_scheduler": load(DDPMScheduler, pretrained, "scheduler", revision=revision),
    }
    if unet:
        parts["unet"] = load(UNet2DConditionModel, pretrained, "unet", revision=revision)
    if vae:
        parts["vae"] = load(AutoencoderKL, pretrained, "vae", revision=revision)
    return parts


def load_vae(pretrained: str, revision: str | None = None):
    from diffusers import AutoencoderKL

    quiet_libraries()
    return load(AutoencoderKL, pretrained, "vae", revision=revision)


def freeze(*modules: Any) -> None:
    for module in modules:
        module.requires_grad_(False)
        module.eval()
