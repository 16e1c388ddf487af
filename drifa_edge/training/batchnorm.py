"""BatchNorm running statistics recomputed over the training data (a cumulative average).

Why: in eval mode BatchNorm normalizes with its running mean/variance, which
training updates as an exponential moving average. At the paper's momentum
(Keras 0.99, PyTorch 0.01) that average remembers the first few hundred steps,
when the weights were very different; after a short run evaluation sees stale
statistics and the model sits at chance (issue 12). Recomputing the statistics
for the current weights makes evaluation independent of the momentum.

Method: that of ``torch.optim.swa_utils.update_bn`` (reset every BatchNorm's
running statistics, set ``momentum=None`` so PyTorch keeps a cumulative average
over batches, run the data through the model in train mode, restore the
momenta). ``update_bn`` itself feeds only ``batch[0]`` to the model, which would
drop every modality but the first, so this module feeds the list of all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from drifa_edge.model.dropout import set_dropout_mode

BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
MASK_SEED = 0x5EED_B17  # fixed: the same weights always get the same statistics


def batchnorms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, BN_TYPES)]


def recompute_bn_statistics(
    model: nn.Module,
    batches: Iterable[Sequence[np.ndarray]],
    *,
    dropout_mode: str = "mc",
    channels_last: bool = False,
) -> int:
    """Replace every BatchNorm's running mean/variance by the average over ``batches``.

    ``batches`` yields one list of arrays per batch, one array per modality, each
    (B, C, S, S) float32 with B >= 2 (BatchNorm in train mode needs two rows); every
    modality is fed, in the model's task order. Each batch counts equally (the
    cumulative average of PyTorch's ``momentum=None``, as ``update_bn``): the mean
    is exact for equal batch sizes, the variance is the mean of the per-batch
    unbiased variances.

    Dropout masks: ``"mc"`` by default, i.e. fresh masks from a fixed seed, the
    state the model is used in: DRIFA-Net keeps MC dropout on at inference
    (predict, export, the final evaluation), so the BatchNorm layers behind a
    dropout must be normalized with the statistics of masked activations (same
    mean, larger variance than unmasked ones). The fixed seed makes the result a
    function of the weights and data only, and leaves the global torch RNG alone
    (a resumed run follows the uninterrupted one). ``"off"`` is accepted for a
    model used without dropout.

    Runs in float32 without autocast. The model is left in eval mode with dropout
    ``"off"``; momenta are restored. Returns the number of batches fed; raises
    ``ValueError`` when no batch has two rows (the statistics would be undefined).
    """
    if dropout_mode not in ("mc", "off"):
        raise ValueError(f"dropout_mode must be 'mc' or 'off', got {dropout_mode!r}")
    layers = batchnorms(model)
    if not layers:
        return 0
    momenta = {bn: bn.momentum for bn in layers}
    saved = {
        bn: (bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()) for bn in layers
    }
    for bn in layers:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average over the batches
    model.train()
    set_dropout_mode(model, dropout_mode, seed=MASK_SEED)
    fed = 0
    try:
        with torch.no_grad():
            for xs in batches:
                if xs[0].shape[0] < 2:
                    continue
                inputs = [torch.from_numpy(np.ascontiguousarray(x)) for x in xs]
                if channels_last:
                    inputs = [x.contiguous(memory_format=torch.channels_last) for x in inputs]
                model(inputs)
                fed += 1
    finally:
        for bn in layers:
            bn.momentum = momenta[bn]
        model.eval()
        set_dropout_mode(model, "off")
    if fed == 0:
        for bn, (mean, var, count) in saved.items():  # leave the model as it was
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.num_batches_tracked.copy_(count)
        raise ValueError("no batch of two or more rows to recompute BatchNorm statistics from")
    return fed
