"""Training (imports torch)."""
