"""Publishing stage: model cards rendered from run records (card) and one-commit pushes of runs, datasets and
Spaces (push)."""
