"""Shared plumbing every stage uses: config and choices, errors, atomic files, the Reporter, runtime
(device, precision, seeds), emotions, images, pretrained-model loading, CLIP features, checkpoints,
input checks. Nothing here prints or imports Typer."""
