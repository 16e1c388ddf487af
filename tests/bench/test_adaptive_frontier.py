"""benchmarks/adaptive_frontier.py: its simulated stops are the engine's stops, and its
fixed-T rows are judged on the draws they name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from drifa_edge.drift.gate import evaluate_drift
from drifa_edge.inference.adaptive import AdaptiveConfig, run_adaptive
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.metrics.sequential import Referral
from drifa_edge.metrics.uncertainty import softmax

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "adaptive_frontier.py"
TASKS = (("derm", ("nevus", "melanoma", "keratosis"), 3), ("xray", ("normal", "pneumonia"), 1))


def _script():
    spec = importlib.util.spec_from_file_location("adaptive_frontier_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "adaptive",
    [
        AdaptiveConfig(min_samples=2, block=1, error_rate=0.2),
        AdaptiveConfig(min_samples=3, block=2, rule="either", se_tolerance=0.01, error_rate=0.05),
    ],
)
def test_simulated_stops_are_the_engines_stops(adaptive, tiny_checkpoint_factory, tmp_path):
    """run_adaptive(complete=True) draws every case to T_max and records where its rule
    stopped each case; replaying those draws through the script's simulation must stop every
    case at the same look (a case whose stop differs would make the study judge another rule)."""
    pytest.importorskip("torch")
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    bench = _script()
    rt = open_runtime("torch", tiny_checkpoint_factory(tmp_path / "ckpt", TASKS), RuntimeOptions(threads=1))
    rng = np.random.default_rng(0)
    size = rt.card.model.image_size
    images = [
        rng.standard_normal((8, t.channels, size, size)).astype(np.float32) for t in rt.card.model.tasks
    ]
    referral = {t: Referral("mutual_information", 0.02) for t in rt.card.task_names}
    t_max = 12
    run = run_adaptive([rt], images, EngineConfig(samples=t_max), adaptive, referral, complete=True)
    rt.close()
    probs = {t: softmax(z, run.temperatures[t][0]) for t, z in run.full_logits().items()}
    used, stop = bench.simulate_used(
        probs, adaptive.looks(t_max), bench.library_rule(adaptive, referral, t_max)
    )
    assert used.tolist() == run.used.tolist()
    assert stop == run.stop
    assert len(set(used.tolist())) > 1  # the rule stopped cases at different looks: the test sees the order


def test_fixed_k_rows_judge_the_first_k_draws(tiny_checkpoint_factory, tmp_path):
    """A fixed T = k row is the gate with every case's used = k: its observed candidate
    statistics are those of the first k draws (checked against the plain gate on the truncated
    draws, which shares the observed side and only differs in the null)."""
    from drifa_edge.artifact.card import ReferralRule, read_card
    from drifa_edge.drift.policy import DriftPolicy

    bench = _script()
    card = read_card(tiny_checkpoint_factory(tmp_path / "ckpt", TASKS), verify=False)
    card = card.replace(referral={t: ReferralRule("mutual_information", 0.1, 0.05) for t in card.task_names})
    rng = np.random.default_rng(1)
    cases, t_max, k = 40, 12, 5

    def run() -> dict[str, np.ndarray]:
        out = {}
        for spec in card.model.tasks:
            centre = rng.normal(0, 2, (cases, 1, spec.num_classes))
            out[spec.name] = softmax(centre + rng.normal(0, 1, (cases, t_max, spec.num_classes)))
        return out

    ref, cand = run(), run()
    labels = {s.name: rng.integers(0, s.num_classes, cases) for s in card.model.tasks}
    policy = DriftPolicy(permutations=99)
    used = np.full(cases, k, dtype=np.int64)
    simulated = bench.judge(ref, cand, labels, card, policy, used)
    truncated = evaluate_drift(
        {t: p[:, :k] for t, p in ref.items()},
        {t: p[:, :k] for t, p in cand.items()},
        labels,
        card,
        card,
        policy,
    )
    for name, task in simulated.tasks.items():
        # the reference side of the truncated run saw k draws too, so only the candidate's own
        # numbers are comparable: its accuracy and the statistics of its MC means
        assert task.candidate["accuracy"] == pytest.approx(truncated.tasks[name].candidate["accuracy"])
        assert task.candidate["ece"] == pytest.approx(truncated.tasks[name].candidate["ece"])
    summary = bench.report_summary(simulated)
    assert summary["verdict"] in ("pass", "fail") and set(summary["tasks"]) == set(card.task_names)
