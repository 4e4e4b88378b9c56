"""sae-repro: a reproducible benchmark and paper-reproduction harness for sparse autoencoders."""

__version__ = "0.1.0"
