"""BatchNorm statistics recomputed over the training data (training.batchnorm)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from drifa_edge.data.synthetic import make_synthetic  # noqa: E402
from drifa_edge.model.dropout import MCDropout  # noqa: E402
from drifa_edge.training.batchnorm import recompute_bn_statistics  # noqa: E402
from drifa_edge.training.config import TrainConfig  # noqa: E402
from drifa_edge.training.loop import train  # noqa: E402


class TwoInputs(nn.Module):
    """One BatchNorm per modality, the second behind an MC dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_a = nn.BatchNorm2d(2, momentum=0.01)
        self.drop = MCDropout(0.5)
        self.bn_b = nn.BatchNorm2d(3, momentum=0.01)

    def forward(self, xs):
        return [self.bn_a(xs[0]), self.bn_b(self.drop(xs[1]))]


def _batches(rng, n_batches=4, rows=8):
    return [
        [
            rng.normal(3.0, 2.0, (rows, 2, 4, 4)).astype(np.float32),
            rng.normal(-1.0, 0.5, (rows, 3, 4, 4)).astype(np.float32),
        ]
        for _ in range(n_batches)
    ]


def test_statistics_are_the_cumulative_average_over_every_modality():
    rng = np.random.default_rng(0)
    batches = _batches(rng)
    model = TwoInputs()
    fed = recompute_bn_statistics(model, batches, dropout_mode="off")
    assert fed == len(batches)
    for bn, k in ((model.bn_a, 0), (model.bn_b, 1)):
        # independent computation: mean of per-batch means / per-batch unbiased variances (numpy)
        means = np.mean([b[k].mean(axis=(0, 2, 3), dtype=np.float64) for b in batches], axis=0)
        variances = np.mean(
            [b[k].transpose(1, 0, 2, 3).reshape(b[k].shape[1], -1).var(axis=1, ddof=1) for b in batches],
            axis=0,
        )
        np.testing.assert_allclose(bn.running_mean.numpy(), means, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bn.running_var.numpy(), variances, rtol=1e-4)
        assert bn.momentum == 0.01  # restored
    assert not model.training and model.drop.mode == "off"


def test_mc_masks_widen_the_variance_and_leave_the_global_rng_alone():
    batches = _batches(np.random.default_rng(1))
    off, mc = TwoInputs(), TwoInputs()
    recompute_bn_statistics(off, batches, dropout_mode="off")
    state = torch.get_rng_state()
    recompute_bn_statistics(mc, batches, dropout_mode="mc")
    assert torch.equal(state, torch.get_rng_state())
    # inverted dropout keeps the mean and multiplies E[x^2] by 1/(1-p) = 2: var ~ 2*(var + mean^2) - mean^2
    v_off, m_off = off.bn_b.running_var.numpy(), off.bn_b.running_mean.numpy()
    expected = 2 * (v_off + m_off**2) - m_off**2
    np.testing.assert_allclose(mc.bn_b.running_var.numpy(), expected, rtol=0.25)
    again = TwoInputs()
    recompute_bn_statistics(again, batches, dropout_mode="mc")  # fixed seed: repeatable
    assert torch.equal(again.bn_b.running_var, mc.bn_b.running_var)


def test_no_usable_batch_is_refused_and_changes_nothing():
    model = TwoInputs()
    before = model.bn_a.running_var.clone()
    with pytest.raises(ValueError, match="two or more rows"):
        recompute_bn_statistics(
            model, [[np.ones((1, 2, 4, 4), np.float32), np.ones((1, 3, 4, 4), np.float32)]]
        )
    assert torch.equal(before, model.bn_a.running_var)


PAPER_MOMENTUM_RUN = TrainConfig(
    epochs=4,
    batch_size=16,
    lr=3e-3,
    image_size=32,
    width=0.125,
    bn_momentum=0.01,  # the paper's (Keras 0.99): stale running statistics after ~30 steps
    early_stopping_patience=None,
    mc_samples=4,
    threads=1,
    precision="fp32",
)


def test_a_short_run_at_the_paper_momentum_beats_the_majority_class(tmp_path):
    """~20 s (two tiny runs). The stale-statistics failure of issue 12 on the synthetic set:
    without the recomputation the same run stays at the majority rate and is flagged at chance."""
    from drifa_edge.artifact.card import read_card

    sets = make_synthetic(n_per_class=60, size=32, seed=0)
    fixed = read_card(train(sets, PAPER_MOMENTUM_RUN, tmp_path / "fixed", progress=False))
    stale = read_card(
        train(sets, PAPER_MOMENTUM_RUN.replace(recompute_bn=False), tmp_path / "stale", progress=False)
    )
    majority = 1 / 3  # three balanced classes per task
    last_fixed, last_stale = fixed.training["history"][-1]["val"], stale.training["history"][-1]["val"]
    for task in fixed.task_names:
        assert fixed.metrics["test"][task]["accuracy"] > majority + 0.1
        assert last_fixed[task]["accuracy"] > last_stale[task]["accuracy"]
        assert stale.metrics["test"][task]["accuracy"] == pytest.approx(majority, abs=0.05)
    assert fixed.training["chance"]["at_chance"] == []
    assert stale.training["chance"]["at_chance"] == list(stale.task_names)
