"""Experiments that combine training, evaluation and reporting (each writes results and figures)."""
