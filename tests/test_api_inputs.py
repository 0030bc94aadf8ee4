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
    ({"emotion": "awe", "num_images_per_prompt": "x"}, "whole number"),
    ({"emotion": "awe", "num_images_per_prompt": 2.5}, "whole number"),
    ({"emotion": "awe", "num_images_per_prompt": NAN}, "whole number"), ({"emotion": "awe", "seed": NAN}, "whole number"),
    ({"emotion": "awe", "seed": 2**70}, "seed must lie"), ({"emotion": "awe", "seed": -1}, "seed must lie"),
    ({"emotion": "awe", "seeds": ["a"]}, "whole number"), ({"emotion": "awe", "seeds": "x"}, "list of whole numbers"),
    ({"emotion": "awe", "num_inference_steps": NAN}, "whole number"),
    ({"emotion": "awe", "num_inference_steps": 10**9}, "num_inference_steps must lie"),
    ({"emotion": "awe", "guidance_scale": NAN}, "guidance"), ({"emotion": "awe", "guidance_scale": -1}, "guidance"),
    ({"emotion": "awe", "guidance_scale": INF}, "guidance"), ({"emotion": "awe", "height": NAN}, "whole number"),
    ({"emotion": "awe", "width": 10**6}, "width must lie"),
    # emogen's names before 0.2 are refused with one line naming diffusers' (CHANGELOG)
    ({"emotion": "awe", "steps": 2}, "'steps' is now 'num_inference_steps'"),
    ({"emotion": "awe", "guidance": 2}, "'guidance' is now 'guidance_scale'"),
    ({"emotion": "awe", "size": 16}, "'size' is now 'height and width'"),
    ({"emotion": "awe", "num_images": 2}, "'num_images' is now 'num_images_per_prompt'"),
    ({"emotion": "awe", "bogus": 1}, "Unknown argument"),
    ({"emotion": "awe", "seeds": []}, "non-empty list"),
    ({"emotion": "awe", "output_type": "jpeg"}, "output_type must be one of"),
    ({"emotion": "awe", "seed": 1, "generator": torch.Generator()}, "not both"),
    ({"emotion": "awe", "generator": 3}, "torch.Generator"),
    ({"emotion": "awe", "num_images_per_prompt": 2, "generator": [torch.Generator()]}, "1 generators for 2"),
    ({"emotion": "awe", "scheduler": "warp"}, "Unknown scheduler"),
    ({"emotion": "awe", "callback_on_step_end": 3}, "must be a function"), ({"emotion": "awe", "batch_size": -1}, "batch_size"),
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
        pipe(**{"num_inference_steps": 1, **kwargs})
    assert _raised_by_emogen(info.value)


@pytest.mark.parametrize("kwargs", [{"emotion": "awe", "seeds": "x"}, {"emotion": "awe", "negative_prompt": 3},
                                    {"emotion": "awe", "seeds": [NAN]}, {"emotion": 7}])
def test_bad_prompt_embeds_call_is_one_emogen_error(pipe, kwargs):
    with pytest.raises(EmogenError) as info:
        pipe.encode_prompt(**kwargs)
    assert _raised_by_emogen(info.value)


def test_torch_dtype_as_text_is_refused(mapper_config):
    from emogen_cli import EmoGenPipeline

    with pytest.raises(EmogenError, match="torch dtype"):
        EmoGenPipeline.from_pretrained(load_config(mapper_config).generate.mapper, torch_dtype="float16")


@pytest.mark.parametrize(("kwargs", "text"), [({"device": 3}, "device must be text"),
                                             ({"base_model": 5}, "base_model must be"),
                                             ({"config": 5}, "config must be an emogen Config"),
                                             ({"scheduler": 5}, "Unknown scheduler")])
def test_bad_from_pretrained_argument_is_one_emogen_error(mapper_config, kwargs, text):
    from emogen_cli import EmoGenPipeline

    with pytest.raises(EmogenError, match=text) as info:
        EmoGenPipeline.from_pretrained(load_config(mapper_config).generate.mapper, **kwargs)
    assert _raised_by_emogen(info.value)


def test_seeds_empty_does_not_talk_of_num_images(pipe):
    with pytest.raises(EmogenError) as info:
        pipe("awe", seeds=[])
    assert "num_images" not in str(info.value)


def test_a_calls_scheduler_does_not_leak_into_later_calls(pipe):
    before = type(pipe.pipe.scheduler).__name__
    ddim = pipe("awe", num_inference_steps=2, scheduler="ddim")
    assert ddim.metadata[0]["scheduler"] == "ddim"
    assert type(pipe.pipe.scheduler).__name__ == before
    later = pipe("awe", num_inference_steps=2)
    assert later.metadata[0]["scheduler"] == pipe.scheduler_name != "ddim"
    assert later.images[0].tobytes() == pipe("awe", num_inference_steps=2).images[0].tobytes()


def test_config_given_as_a_path_is_loaded(mapper_config):
    from emogen_cli import EmoGenPipeline

    pipe = EmoGenPipeline.from_pretrained(load_config(mapper_config).generate.mapper, config=mapper_config)
    assert pipe.config.generate.steps == load_config(mapper_config).generate.steps


def test_valid_edges_still_work(pipe):
    assert len(pipe(emotion="awe", seeds=[1, 1], num_inference_steps=1).images) == 2
    assert len(pipe(va=(0, 0), sigma=1e-3, num_inference_steps=1).images) == 1
    assert pipe(emotion="awe", intensity=0, num_inference_steps=1).metadata[0]["intensity"] == 0
    assert pipe.encode_prompt(emotion="awe", seeds=[0, 1])[0].dtype == torch.float32


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
