"""Using a trained mapper beyond `EmoGenPipeline` itself: writing image folders, export as a
textual-inversion embedding, edit, intensity, valence-arousal grids and best-of generation."""
