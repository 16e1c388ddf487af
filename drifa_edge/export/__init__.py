"""drifa-edge export."""
