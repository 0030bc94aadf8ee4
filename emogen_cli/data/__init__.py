"""Preparing the data: reading EmoSet, the filtered and balanced stage-2 manifest, the latent cache,
and the torch datasets and resumable sampler the trainers read."""
