"""drifa-edge: uncertainty-aware DRIFA-Net from training to the scanner."""

__version__ = "0.1.0"
