"""Same seeds, same images: a few tiny-model images pinned before the inference refactor (issue 15)
must come out pixel-identical after it. Regenerate the pins only for a change meant to alter images:
`python tests/data/pin_images.py` (see its docstring)."""

import importlib.util
import json
from pathlib import Path

from emogen_cli.core.config import load_config

DATA = Path(__file__).parent / "data"


def _script():
    spec = importlib.util.spec_from_file_location("pin_images", DATA / "pin_images.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pinned_images_are_unchanged(mapper_config, tmp_path):
    pin = _script()
    cfg = load_config(mapper_config)
    # the fixture's chain is the script's chain (same overrides)
    assert (cfg.encoder.max_steps, cfg.mapper.max_steps, cfg.generate.steps, cfg.generate.batch_size) == tuple(
        pin.OVERRIDES[k] for k in ("encoder.max_steps", "mapper.max_steps", "generate.steps", "generate.batch_size"))
    assert pin.compute(mapper_config, tmp_path) == json.loads(pin.PINNED.read_text())
