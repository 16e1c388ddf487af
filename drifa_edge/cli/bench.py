"""`drifa-edge bench` (being built)."""
