"""Numerical operators that depend on torch alone."""

from repro.ops.sparsemax import sparsemax, sparsemax_sort, sparsemax_threshold, sparsemax_threshold_sort

__all__ = ["sparsemax", "sparsemax_sort", "sparsemax_threshold", "sparsemax_threshold_sort"]
