"""DRIFA-Net in PyTorch (imports torch: install 'drifa-edge[torch]')."""
