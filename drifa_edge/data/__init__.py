"""drifa-edge data."""
