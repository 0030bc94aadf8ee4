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
    ({"emotion": 3}, "name or a list of names"), ({"emotion": ["awe", 3]}, "name or a list of names"),
    ({"emotion": b"awe"}, "name or a list of names"), ({"emotion": "awe", "intensity": True}, "must be a number"),
    ({"emotion": "awe", "intensity": "x"}, "must be a number"), ({"emotion": "awe", "intensity": NAN}, r"\[0, 4\]"),
    ({"emotion": "awe", "best_of": 0}, "1..1000"), ({"emotion": "awe", "best_of": NAN}, "whole number"),
    ({"emotion": "awe", "best_of": 2, "keep_all": "yes"}, "True or False"),
    ({"emotion": "awe", "best_of": 2, "probe": 3}, "path to an emotion probe"),
    ({"va": (2, 0)}, r"lie in \[0, 1\]"), ({"va": (0.5, 0.5), "sigma": "x"}, "sigma"),
    ({"va": (0.5, 0.5), "sigma": 1e-300}, "sigma"), ({"va": (0.5, 0.5), "sigma": INF}, "sigma"),
    ({"emotion": "awe", "sigma": 0.2}, "needs va"), ({"va": (0.5, 0.5), "prompt": 3}, "must be text"),
    ({"emotion": "awe", "num_images": "x"}, "whole number"), ({"emotion": "awe", "num_images": 2.5}, "whole number"),
    ({"emotion": "awe", "num_images": NAN}, "whole number"), ({"emotion": "awe", "seed": NAN}, "whole number"),
    ({"emotion": "awe", "seed": 2**70}, "seed must lie"), ({"emotion": "awe", "seed": -1}, "seed must lie"),
    ({"emotion": "awe", "seeds": ["a"]}, "whole number"), ({"emotion": "awe", "seeds": "x"}, "list of whole numbers"),
    ({"emotion": "awe", "steps": NAN}, "whole number"), ({"emotion": "awe", "steps": 10**9}, "steps must lie"),
    ({"emotion": "awe", "guidance": NAN}, "guidance"), ({"emotion": "awe", "guidance": -1}, "guidance"),
    ({"emotion": "awe", "guidance": INF}, "guidance"), ({"emotion": "awe", "size": NAN}, "whole number"),
    ({"emotion": "awe", "size": 10**6}, "size must lie"), ({"emotion": "awe", "batch_size": -1}, "batch_size"),
    ({"emotion": "awe", "batch_size": 0}, "batch_size"), ({"emotion": "awe", "negative_prompt": 3}, "must be text"),
    ({"emotion": "awe", "fusion": 3}, "fusion must be one of"),
    ({"emotion": ["awe", "fear"], "fusion": "space", "weights": ["a", 1]}, "list of numbers"),
    ({"emotion": ""}, "emotion name is empty"), ({"emotion": "awe,"}, "emotion name is empty"),
    ({"emotion": ["awe", " "]}, "emotion name is empty"),
    ({"emotion": "awe", "probe": "probe.safetensors"}, "there are none without --best-of"),
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


@pytest.mark.parametrize("kwargs", [{"emotion": "awe", "seeds": "x"}, {"emotion": "awe", "negative_prompt": 3},
                                    {"emotion": "awe", "seeds": [NAN]}, {"emotion": 7}])
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


@pytest.mark.skipif("torch.cuda.is_available()")
def test_to_a_missing_device_hints_in_api_terms(pipe):
    """The API's hint names its own argument, not the CLI's --device flag (the CLI keeps its wording)."""
    from emogen_cli.core.runtime import resolve_device

    with pytest.raises(EmogenError, match="CUDA is not available") as info:
        pipe.to("cuda")
    assert info.value.hint == 'Use device="cpu" (or "auto").' and pipe.device.type == "cpu"
    with pytest.raises(EmogenError) as info:
        resolve_device("cuda")  # what --device / runtime.device go through
    assert info.value.hint == "Use --device cpu (or auto)."
