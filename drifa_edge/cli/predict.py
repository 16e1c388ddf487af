"""`drifa-edge predict` (being built)."""
