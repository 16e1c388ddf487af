"""drifa-edge drift."""
