"""`drifa-edge check` (being built)."""
