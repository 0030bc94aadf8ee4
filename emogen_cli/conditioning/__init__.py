"""What an image is asked to be, below the pipeline: the request and its checks (`request`), the seed
rule (`seeds`), emotion strength (`intensity`), valence-arousal mixing (`va`) and best-of ranking
(`selection`), as plain functions over values, tensors and scores (no model is loaded here)."""
