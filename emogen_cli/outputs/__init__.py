"""Above the pipeline: what emogen writes. `folder` (image folders: names, numbering, PNG metadata,
index.jsonl, contact sheets: the one module that writes PNGs), `generate` (generate, transfer, fuse and
grid --va through the pipeline's one generation loop), `edit` (img2img toward an emotion) and `export`
(textual-inversion embeddings for other SD tools)."""
