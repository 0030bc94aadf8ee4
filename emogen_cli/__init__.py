"""emogen: emotional image content generation with Stable Diffusion (EmoGen, CVPR 2024)."""

__version__ = "0.1.0"
