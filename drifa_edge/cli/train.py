"""`drifa-edge train` (being built)."""
