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
    never reported as a connection failure, and offline the line names the `hf download` to run."""
    from emogen_cli.core.errors import load_failure

    where = f"{name_or_path}/{subfolder}" if subfolder else name_or_path
    if cls.__name__.endswith(("Tokenizer", "TokenizerFast")) and Path(name_or_path).is_dir():
        _check_tokenizer_folder(Path(where), cls.__name__)
    try:
        if subfolder:
            kwargs["subfolder"] = subfolder
        return cls.from_pretrained(name_or_path, **kwargs)
    except Exception as exc:
        if not isinstance(exc, (OSError, ValueError, KeyError, RuntimeError, EOFError)) \
                and type(exc).__name__ != "SafetensorError":
            raise
        name = cls.__name__
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


def _check_tokenizer_folder(folder: Path, name: str) -> None:
    """transformers silently builds a 2-token tokenizer from a missing or empty folder: refuse it here."""
    if not folder.is_dir():
        raise EmogenError(f"Cannot load {name} from '{folder}': the folder does not exist.",
                          "Pass a model folder that holds its tokenizer (vocab.json and merges.txt, or tokenizer.json).")
    files = {p.name for p in folder.iterdir() if p.is_file() and p.stat().st_size > 0}
    if "tokenizer.json" not in files and not {"vocab.json", "merges.txt"} <= files:
        raise EmogenError(f"Cannot load {name} from '{folder}': it holds no tokenizer files "
                          "(vocab.json and merges.txt, or tokenizer.json).",
                          "Restore the tokenizer folder of the model (e.g. `hf download MODEL --include 'tokenizer/*'`).")


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
