"""Pin a few tiny-model images: the sha256 of their pixels, per case, in tests/data/pinned_images.json.

tests/test_pinned_images.py recomputes them and compares, so a refactor of the inference code that
changes an image (a seed rule, the order of a batch, a conditioning step) fails a test.

Run by hand (never by the tests) after a change that is MEANT to change the images, e.g. a new tiny
model layout, and commit the JSON:

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 python tests/data/pin_images.py

It goes only through the command line (`emogen_cli.cli.main`), whose flags stay stable, so it runs
against any version of the library. Hashes hold on one machine (BLAS kernels differ between CPUs);
the test builds the tiny chain with the same overrides as tests/conftest.py's `mapper_config`.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PINNED = HERE / "pinned_images.json"
# tests/conftest.py's mapper_config fixture builds its chain with these overrides (keep them equal).
OVERRIDES = {"encoder.max_steps": 2, "mapper.max_steps": 2, "generate.steps": 2, "generate.batch_size": 2}

CASES: dict[str, list[str]] = {
    "single": ["generate", "-e", "awe", "-n", "2", "--seed", "3"],
    "fusion_tokens": ["fuse", "amusement", "fear", "-n", "1", "--seed", "1"],
    "fusion_embedding": ["fuse", "amusement", "fear", "--mode", "embedding", "--weights", "0.7,0.3", "-n", "1"],
    "intensity": ["generate", "-e", "fear", "--intensity", "0.5", "-n", "1", "--seed", "2"],
    "va": ["generate", "--va", "0.8,0.3", "-n", "1"],
    "best_of": ["generate", "-e", "sadness", "--best-of", "2", "-n", "1", "--seed", "4"],
    "edit": ["edit", "{source}", "--emotion", "awe", "--strength", "0.6", "--seed", "5"],
}


def pixel_hash(path: Path) -> str:
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    return hashlib.sha256(f"{rgb.shape}".encode() + rgb.tobytes()).hexdigest()


def source_image(path: Path) -> Path:
    """A deterministic 32x32 photo stand-in for the edit case."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:32, 0:32]
    rgb = np.stack([x * 8, y * 8, (x + y) * 4], -1).astype(np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def compute(config: str | Path, work: str | Path) -> dict[str, dict[str, str]]:
    """{case: {file name: pixel sha256}} for every case, written under `work`."""
    from emogen_cli.cli import main

    work = Path(work)
    source = source_image(work / "source.png")
    hashes: dict[str, dict[str, str]] = {}
    for name, args in CASES.items():
        out = work / name
        argv = [a.replace("{source}", str(source)) for a in args] + ["-c", str(config), "--out", str(out), "--json"]
        try:
            main(argv)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"emogen {' '.join(argv)} exited with {exc.code}") from None
        hashes[name] = {p.name: pixel_hash(p) for p in sorted(out.glob("*.png")) if not p.name.startswith("grid-")}
    return hashes


def main() -> None:
    from emogen_cli.testing.chain import build_tiny_chain

    with tempfile.TemporaryDirectory() as tmp:
        config = build_tiny_chain(Path(tmp) / "gen", overrides=OVERRIDES)
        hashes = compute(config, Path(tmp))
    PINNED.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    sys.stdout.write(f"wrote {PINNED} ({sum(map(len, hashes.values()))} images)\n")


if __name__ == "__main__":
    main()
