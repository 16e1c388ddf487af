"""Block layout of DRIFA-Net, shared by the torch model and torch-free code."""

# (stage index, stride, MC dropout after the block, MFA after the block)
BLOCK_LAYOUT = (
    (0, 1, True, True),
    (0, 1, True, True),
    (1, 2, True, True),
    (1, 1, True, True),
    (2, 2, True, True),
    (2, 1, True, True),
    (3, 2, False, True),
    (3, 1, False, False),
)
