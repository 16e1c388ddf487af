"""An independent computation of a record's OOD score: the PyTorch model's own features
(dropout off, no graph, no engine) and scipy's Mahalanobis distance."""

from __future__ import annotations

import numpy as np


def expected_ood_scores(model, images: list[np.ndarray], densities: dict) -> dict[str, np.ndarray]:
    """{task: (B,)} the score drifa-edge should report for ``images`` (per task (B, C, S, S))."""
    import torch
    from scipy.spatial import distance

    from drifa_edge.model.dropout import set_dropout_mode

    set_dropout_mode(model.eval(), "off")
    xs = [torch.from_numpy(x) for x in images]
    with torch.no_grad():
        feats = model.forward_features(xs).numpy()  # (B, M*W3)
        prefix = [f.numpy().astype(np.float64) for f in model.forward_prefix(xs)]  # M x (B, W0, h, w)
    tasks = [t.name for t in model.cfg.tasks]

    def maha(rows, means, precision):
        return np.array([min(distance.mahalanobis(r, m, precision) ** 2 for m in means) for r in rows])

    out = {}
    for task, d in densities.items():
        s = maha(feats[:, d.columns[0] : d.columns[1]], d.means, d.precision)
        if d.prefix is not None:
            f = prefix[tasks.index(task)]
            b, c = f.shape[:2]
            flat = f.reshape(b, c, -1)
            stats = np.concatenate([flat.mean(axis=2), flat.std(axis=2)], axis=1)
            p = d.prefix
            sp = maha(stats, p.means, p.precision)
            s = (sp - p.center) / p.scale + (s - p.embedding_center) / p.embedding_scale
        out[task] = s
    return out
