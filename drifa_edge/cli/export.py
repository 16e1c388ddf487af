"""`drifa-edge export` (being built)."""
