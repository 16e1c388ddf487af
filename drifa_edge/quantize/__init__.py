"""drifa-edge quantize."""
