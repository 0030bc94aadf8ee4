"""Every closed set of option values, in one light module (no torch) shared by config, core and help.

Config validation (`config.CHOICES`), the CLI's help texts and shell completion, and the core's
lookups all read these tuples, so a new scheduler or metric is added in one place.
"""

from __future__ import annotations

import re

# generate.scheduler -> the diffusers class that implements it
SCHEDULER_CLASSES: dict[str, str] = {
    "unipc": "UniPCMultistepScheduler", "ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler",
    "dpm": "DPMSolverMultistepScheduler", "pndm": "PNDMScheduler",
}
SCHEDULERS: tuple[str, ...] = tuple(SCHEDULER_CLASSES)
FUSION_MODES: tuple[str, ...] = ("tokens", "embedding", "space")
MIXED_PRECISION: tuple[str, ...] = ("auto", "no", "fp16", "bf16")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")
SPLITS: tuple[str, ...] = ("train", "val", "test")
METRICS: tuple[str, ...] = ("fid", "lpips", "emo-a", "sem-c", "sem-d")
FID_FEATURES: tuple[str, ...] = ("auto", "inception", "clip")
EMOTION_CLASSIFIERS: tuple[str, ...] = ("clip", "encoder")
# runtime.device: these names, or "cuda:N" (check_device_name)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")

BALANCE: tuple[str, ...] = ("per_kind", "union", "none")  # official: per_kind
PREPROCESSING: tuple[str, ...] = ("official", "imagenet")  # stage-1 inputs; official: Resize 256, crop 224, 0.5/0.5
ATTRIBUTE_VOCABULARIES: tuple[str, ...] = ("emotional", "all")  # official: emotional
SEMANTIC_TOKENS: tuple[str, ...] = ("placeholder", "eos")  # official: placeholder
ATTRIBUTE_DUPLICATES: tuple[str, ...] = ("official", "merge")  # L_attr: a name listed twice is two classes (official)
ATTRIBUTE_TEXTS: tuple[str, ...] = ("official", "spaces")  # CLIP reads `mountain_snowy` (official) or `mountain snowy`
EXPORT_FORMATS: tuple[str, ...] = ("diffusers", "a1111")  # `emogen export --format`
MODEL_FAMILIES: tuple[str, ...] = ("auto", "sd15", "sdxl")  # model.family (auto: model_index.json's _class_name)

# Config keys whose values (or list items) must be one of a closed set.
BY_KEY: dict[str, tuple[str, ...]] = {
    "encoder.optimizer": OPTIMIZERS,
    "generate.scheduler": SCHEDULERS,
    "runtime.mixed_precision": MIXED_PRECISION,
    "data.splits": SPLITS,
    "evaluate.metrics": METRICS,
    "evaluate.fid_features": FID_FEATURES,
    "evaluate.emotion_classifier": EMOTION_CLASSIFIERS,
    "data.balance": BALANCE,
    "encoder.preprocessing": PREPROCESSING,
    "encoder.space_splits": SPLITS,
    "mapper.attribute_vocabulary": ATTRIBUTE_VOCABULARIES,
    "mapper.semantic_token": SEMANTIC_TOKENS,
    "mapper.attribute_duplicates": ATTRIBUTE_DUPLICATES,
    "mapper.attribute_text": ATTRIBUTE_TEXTS,
    "model.family": MODEL_FAMILIES,
}

# Limits users can read in --help and the README ("Exit codes and errors").
MAX_SEED = 2**32 - 1  # seeds are 0 .. 2**32-1 (numpy's range; torch accepts more)
MAX_IMAGES = 10_000  # -n: images per emotion and prompt in one run
MAX_STEPS = 10_000  # denoising steps: more than any scheduler uses; far more only exhausts memory
MAX_BEST_OF = 1000  # --best-of K candidates per image
MIN_STRENGTH_STEP = 0.01  # edit --strength-step: at most 101 edits per image in the --until-confident loop


def check_device_name(name: str) -> bool:
    """auto, cpu, mps, cuda or cuda:N (whether CUDA is present is checked when the device is resolved)."""
    return name in DEVICES or re.fullmatch(r"(cuda|cpu|mps):\d+", name) is not None
