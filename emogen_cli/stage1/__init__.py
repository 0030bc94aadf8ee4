"""Stage 1: the ResNet-50 emotion classifier, its training, and the emotion space it defines."""
