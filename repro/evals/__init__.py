"""Evaluations that need a known answer: scoring SAEs against planted ground truth."""
