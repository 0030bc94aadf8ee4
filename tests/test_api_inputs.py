"""EmoGenPipeline called with wrong types and out-of-range values: one EmogenError raised by emogen
itself (never a deep error from torch/diffusers/transformers, never a silently wrong result)."""

import math
import traceback
from pathlib import Path

import pytest
import torch

from emogen_cli.core.config import load_config
from emogen_cli.core.errors import EmogenError

NAN, INF = math.nan, math.inf
CALLS = [
    (dict(emotion=3), "name or a list of names"), (dict(emotion=["awe", 3]), "name or a list of names"),
    (dict(emotion=b"awe"), "name or a list of names"), (dict(emotion="awe", intensity=True), "must be a number"),
    (dict(emotion="awe", intensity="x"), "must be a number"), (dict(emotion="awe", intensity=NAN), r"\[0, 4\]"),
    (dict(emotion="awe", best_of=0), "1..1000"), (dict(emotion="awe", best_of=NAN), "whole number"),
    (dict(emotion="awe", best_of=2, keep_all="yes"), "True or False"),
    (dict(emotion="awe", best_of=2, probe=3), "path to an emotion probe"),
    (dict(va=(2, 0)), r"lie in \[0, 1\]"), (dict(va=(0.5, 0.5), sigma="x"), "sigma"),
    (dict(va=(0.5, 0.5), sigma=1e-300), "sigma"), (dict(va=(0.5, 0.5), sigma=INF), "sigma"),
    (dict(emotion="awe", sigma=0.2), "needs va"), (dict(va=(0.5, 0.5), prompt=3), "must be text"),
    (dict(emotion="awe", num_images="x"), "whole number"), (dict(emotion="awe", num_images=2.5), "whole number"),
    (dict(emotion="awe", num_images=NAN), "whole number"), (dict(emotion="awe", seed=NAN), "whole number"),
    (dict(emotion="awe", seed=2**70), "seed must lie"), (dict(emotion="awe", seed=-1), "seed must lie"),
    (dict(emotion="awe", seeds=["a"]), "whole number"), (dict(emotion="awe", seeds="x"), "list of whole numbers"),
    (dict(emotion="awe", steps=NAN), "whole number"), (dict(emotion="awe", steps=10**9), "steps must lie"),
    (dict(emotion="awe", guidance=NAN), "guidance"), (dict(emotion="awe", guidance=-1), "guidance"),
    (dict(emotion="awe", guidance=INF), "guidance"), (dict(emotion="awe", size=NAN), "whole number"),
    (dict(emotion="awe", size=10**6), "size must lie"), (dict(emotion="awe", batch_size=-1), "batch_size"),
    (dict(emotion="awe", batch_size=0), "batch_size"), (dict(emotion="awe", negative_prompt=3), "must be text"),
    (dict(emotion="awe", fusion=3), "fusion must be one of"),
    (dict(emotion=["awe", "fear"], fusion="space", weights=["a", 1]), "list of numbers"),
]


@pytest.fixture(scope="module")
def pipe(mapper_config):
    from emogen_cli import EmoGenPipeline

    return EmoGenPipeline.from_pretrained(Path(load_config(mapper_config).generate.mapper), device="cpu")


def _raised_by_emogen(exc: BaseException) -> bool:
    return "emogen_cli" in traceback.extract_tb(exc.__traceback__)[-1].filename


@pytest.mark.parametrize(("kwargs", "text"), CALLS, ids=[repr(k) for k, _ in CALLS])
def test_bad_call_is_one_emogen_error(pipe, kwargs, text):
    with pytest.raises(EmogenError, match=text) as info:
        pipe(**{"steps": 1, **kwargs})
    assert _raised_by_emogen(info.value)


@pytest.mark.parametrize("kwargs", [dict(emotion="awe", seeds="x"), dict(emotion="awe", negative_prompt=3),
                                    dict(emotion="awe", seeds=[NAN]), dict(emotion=7)])
def test_bad_prompt_embeds_call_is_one_emogen_error(pipe, kwargs):
    with pytest.raises(EmogenError) as info:
        pipe.prompt_embeds(**kwargs)
    assert _raised_by_emogen(info.value)


def test_torch_dtype_as_text_is_refused(mapper_config):
    from emogen_cli import EmoGenPipeline

    with pytest.raises(EmogenError, match="torch dtype"):
        EmoGenPipeline.from_pretrained(load_config(mapper_config).generate.mapper, torch_dtype="float16")


def test_valid_edges_still_work(pipe):
    assert len(pipe(emotion="awe", seeds=[1, 1], steps=1).images) == 2
    assert len(pipe(va=(0, 0), sigma=1e-3, steps=1).images) == 1
    assert pipe(emotion="awe", intensity=0, steps=1).metadata[0]["intensity"] == 0
    assert pipe.prompt_embeds(emotion="awe", seeds=[0, 1])["prompt_embeds"].dtype == torch.float32
