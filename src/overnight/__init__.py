"""overnight: the Karpathy loop as a reliable harness."""

__version__ = "0.1.0"
