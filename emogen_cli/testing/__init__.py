"""Stand-ins for tests, benchmarks and `emogen dev`: tiny random-weight models in the real layouts,
a synthetic EmoSet, and the one builder of the tiny chain's config."""
