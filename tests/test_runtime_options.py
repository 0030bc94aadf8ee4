"""Issue 18: the runtime.* fast paths (core/runtime.py `apply_runtime`, one line in the pipeline and in
the trainer) give the same images on CPU within a stated tolerance, and training reads its losses
from the device every runtime.log_every steps without changing what it learns."""

import json

import pytest
import torch

from emogen_cli.core.config import load_config


def _image(config_path, **runtime):
    from emogen_cli.pipeline import EmoGenPipeline

    overrides = {"runtime.device": "cpu", **{f"runtime.{k}": v for k, v in runtime.items()}}
    pipe = EmoGenPipeline(load_config(config_path, overrides))
    out = pipe(emotion="awe", seed=3, output_type="pt")
    return pipe, torch.as_tensor(out.images if hasattr(out, "images") else out)


@pytest.fixture(scope="module")
def reference(mapper_config):
    return _image(mapper_config)[1]


# channels_last and attention slicing run other kernels / slice shapes: float32 rounding (atol 1e-4 on [0, 1]
# pixels). tf32 and cpu_offload are CUDA-only and leave CPU runs untouched (bit-equal). vae_tiling splits
# only images larger than the VAE's tile (here the tiny model's native size: one tile, bit-equal).
@pytest.mark.parametrize("option, atol", [("channels_last", 1e-4), ("attention_slicing", 1e-4), ("vae_tiling", 0.0),
                                          ("tf32", 0.0), ("cpu_offload", 0.0)])
def test_runtime_option_gives_the_same_image(mapper_config, reference, option, atol):
    pipe, image = _image(mapper_config, **{option: True})
    torch.testing.assert_close(image, reference, atol=atol, rtol=0)
    if option == "channels_last":
        assert pipe.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    if option == "vae_tiling":
        assert pipe.pipe.vae.use_tiling
    if option == "tf32":
        assert not torch.backends.cuda.matmul.allow_tf32  # CPU: nothing switched


def test_compile_wraps_the_unet_for_sampling_and_training(mapper_config):
    """torch.compile takes minutes on this CPU for the first call (measured once: 2.1e-6 max difference
    on the tiny model's image), so the test checks the wiring: the UNet both paths call is the compiled
    wrapper of the loaded one."""
    from emogen_cli.core.runtime import apply_runtime
    from emogen_cli.pipeline import EmoGenPipeline

    cfg = load_config(mapper_config, {"runtime.device": "cpu", "runtime.compile": True})
    pipe = EmoGenPipeline(cfg)
    assert isinstance(pipe.pipe.unet, torch._dynamo.eval_frame.OptimizedModule)
    unet = torch.nn.Conv2d(1, 1, 1)
    compiled = apply_runtime(cfg.runtime, unet=unet, device="cpu")
    assert compiled._orig_mod is unet
    assert apply_runtime(load_config(None).runtime, unet=unet, device="cpu") is unet  # off by default


def test_log_every_syncs_less_and_learns_the_same(stage1, tmp_path):
    """Before: check_finite and .item() of every logged mean forced ~5 device syncs per step. Now the losses are
    summed on the device and read every runtime.log_every steps (and at the end); the weights are bit-equal and
    each logged value is the mean of its window."""
    from safetensors.torch import load_file

    from emogen_cli.stage2.train_mapper import train_mapper

    results = {}
    for every in (1, 3):
        cfg = load_config(stage1, {"runtime.log_every": every, "mapper.max_steps": 6, "mapper.checkpoint_every": 100,
                                   "mapper.output": str(tmp_path / f"every{every}")})
        results[every] = train_mapper(cfg)
    one, three = results[1]["history"], results[3]["history"]
    assert [h["step"] for h in one] == [1, 2, 3, 4, 5, 6] and [h["step"] for h in three] == [3, 6]
    for k, window in enumerate((one[:3], one[3:])):
        assert three[k]["loss"] == pytest.approx(sum(h["loss"] for h in window) / 3, rel=1e-5)
    a = load_file(tmp_path / "every1" / "mapper.safetensors")
    b = load_file(tmp_path / "every3" / "mapper.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "every3" / "config.json").read_text())["steps"] == 6
