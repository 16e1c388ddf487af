"""`drifa-edge demo` (being built)."""
