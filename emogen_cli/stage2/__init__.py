"""Stage 2: the mapping network from the emotion space to CLIP's text space, its training (with the
CLIP-space emotion probe and attribute confidences), the mapper bundle and its model card."""
