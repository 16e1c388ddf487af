"""A tiny DRIFA-Net trained for a few seconds on synthetic patterns, and damaged copies of it.

A random network is useless here: its MC predictions are noise and its MI
ranking changes completely between two draws, so neither "identical passes" nor
"damaged fails" would mean anything. 40 Adam steps on class-specific sinusoids
buried in noise give ~70% accuracy with real errors and real uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

SIZE = 32


def make_cases(rng: np.random.Generator, n: int, amplitude: float = 0.5):
    """Two tasks: 'derm' (3 classes, RGB) and 'blood' (4 classes, gray). Returns (images, labels)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE

    def template(k: int, channels: int) -> np.ndarray:
        return np.stack(
            [np.sin(2 * np.pi * ((k + 1) * xx + (c + 1) * yy * 0.5) + k) for c in range(channels)]
        )

    images, labels = [], {}
    for name, classes, channels in (("derm", 3, 3), ("blood", 4, 1)):
        y = rng.integers(0, classes, n)
        tpl = np.stack([template(k, channels) for k in range(classes)])
        images.append((rng.normal(size=(n, channels, SIZE, SIZE)) + amplitude * tpl[y]).astype(np.float32))
        labels[name] = y.astype(np.int64)
    return images, labels


@dataclass(frozen=True)
class Artifacts:
    root: Path
    reference: Path
    identical: Path
    perturbed: Path  # every weight matrix + 30% of its std as Gaussian noise
    hot: Path  # the reference's weights with a card temperature of 5.0
    test: tuple  # (images, images, labels, ids): the layout check_arrays takes
    val: tuple


def _train(cfg, images, labels, steps: int = 40, seed: int = 0):
    import torch

    from drifa_edge.model.drifa import build_model
    from drifa_edge.model.dropout import set_dropout_mode

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model(cfg)
    set_dropout_mode(model, "mc", seed=seed)
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.train()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    targets = [torch.from_numpy(labels[t.name]) for t in cfg.tasks]
    n = images[0].shape[0]
    for _ in range(steps):
        idx = rng.integers(0, n, 32)
        out = model([torch.from_numpy(x[idx]) for x in images])
        loss = sum(torch.nn.functional.cross_entropy(o, y[idx]) for o, y in zip(out, targets, strict=True))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():  # exact BatchNorm statistics of the training set (momentum None = plain average)
        for bn in batch_norms:
            bn.reset_running_stats()
            bn.momentum = None
        for s in range(0, n, 64):
            model([torch.from_numpy(x[s : s + 64]) for x in images])
        for bn in batch_norms:
            bn.momentum = cfg.bn_momentum
    return model.eval()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Artifacts:
    torch = pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    from drifa_edge.artifact.card import default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    cfg = ModelConfig(
        tasks=(TaskSpec("derm", ("a", "b", "c")), TaskSpec("blood", ("w", "x", "y", "z"), channels=1)),
        image_size=SIZE,
        width=0.125,
    )
    rng = np.random.default_rng(0)
    train_x, train_y = make_cases(rng, 512)
    val_x, val_y = make_cases(rng, 120)
    test_x, test_y = make_cases(rng, 120)
    model = _train(cfg, train_x, train_y)
    root = tmp_path_factory.mktemp("drift_artifacts")
    card = default_card(cfg)
    save_checkpoint(model, card, root / "reference")
    save_checkpoint(model, card, root / "identical")
    save_checkpoint(model, card.replace(temperature={"derm": 5.0, "blood": 5.0}), root / "hot")
    damaged = build_model(cfg)
    damaged.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in damaged.parameters():
            if p.ndim > 1:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * 0.3)
    save_checkpoint(damaged, card, root / "perturbed")
    return Artifacts(
        root=root,
        reference=root / "reference",
        identical=root / "identical",
        perturbed=root / "perturbed",
        hot=root / "hot",
        test=(test_x, test_x, test_y, [str(i) for i in range(120)]),
        val=(val_x, val_x, val_y, [str(i) for i in range(120)]),
    )


@pytest.fixture
def stub_data(artifacts, monkeypatch):
    """`check`'s data loading replaced by the tiny artifacts' arrays ('--data stub')."""
    from drifa_edge.drift import check as check_module

    def load_split(values, card, split, limit):
        images, _, labels, ids = artifacts.test if split == "test" else artifacts.val
        if limit is not None:
            return [x[:limit] for x in images], {t: y[:limit] for t, y in labels.items()}, ids[:limit]
        return images, labels, ids

    monkeypatch.setattr(check_module, "load_split", load_split)
