"""Measuring and explaining: the paper's five metrics over a gallery of generated images, the
evaluation report files, edit metrics (also best-of's and edit's scorer), and `decompose`."""
