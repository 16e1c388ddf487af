"""drifa-edge bench."""
