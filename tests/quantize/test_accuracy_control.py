"""The metrics NNCF's accuracy control optimises, checked against a hand computation,
and (slow) the accuracy-controlled build end to end."""

from __future__ import annotations

import numpy as np
import pytest

from drifa_edge.artifact.card import default_card
from drifa_edge.model.config import ModelConfig, TaskSpec
from drifa_edge.quantize.accuracy_control import make_validation_fn


class _FakeCompiled:
    """Stands in for an ov.CompiledModel: returns fixed logits per output name."""

    def __init__(self, logits: dict[str, np.ndarray]) -> None:
        self.logits = logits

    def __call__(self, feeds):
        return {name: z for name, z in self.logits.items()}

    def output(self, name):
        return name


def _card():
    tasks = (TaskSpec("a", ("x", "y"), 3), TaskSpec("b", ("x", "y", "z"), 3))
    return default_card(ModelConfig(tasks=tasks, image_size=32, width=0.125), temperature={"b": 2.0})


def test_drift_metric_is_one_minus_the_kl_of_mc_means():
    card = _card()
    za = np.array([[2.0, 0.0], [0.0, 1.0]])  # 2 MC rows
    zb = np.array([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    model = _FakeCompiled({"logits_a": za, "logits_b": zb})

    def mean_probs(z, t):
        e = np.exp(z / t)
        return (e / e.sum(1, keepdims=True)).mean(0)

    ref_a, ref_b = np.array([0.5, 0.5]), np.array([0.2, 0.3, 0.5])
    pa, pb = mean_probs(za, 1.0), mean_probs(zb, 2.0)
    kl = 0.5 * (np.sum(ref_a * np.log(ref_a / pa)) + np.sum(ref_b * np.log(ref_b / pb)))
    metric, per_item = make_validation_fn(card, "drift")(model, [({}, [ref_a, ref_b], [0, 2])])
    assert per_item == pytest.approx([1 - kl], rel=1e-12)
    assert metric == pytest.approx(1 - kl, rel=1e-12)


def test_accuracy_metric_averages_tasks_and_cases():
    card = _card()
    model = _FakeCompiled({"logits_a": np.array([[2.0, 0.0]]), "logits_b": np.array([[0.0, 0.0, 3.0]])})
    items = [({}, [None, None], [0, 2]), ({}, [None, None], [1, 2]), ({}, [None, None], [1, 0])]
    metric, per_item = make_validation_fn(card, "accuracy")(model, items)
    assert per_item == [1.0, 0.5, 0.0]
    assert metric == pytest.approx(0.5)


def test_unknown_metric_is_refused():
    from drifa_edge.errors import ConfigError

    with pytest.raises(ConfigError):
        make_validation_fn(_card(), "f1")


@pytest.mark.slow
def test_accuracy_controlled_build(tiny_export, tmp_path):
    pytest.importorskip("nncf")
    import shutil

    from drifa_edge.artifact.card import read_card
    from drifa_edge.quantize.config import QuantizeConfig
    from drifa_edge.quantize.nncf import quantize_openvino

    path = tmp_path / "export"
    shutil.copytree(tiny_export, path)
    config = QuantizeConfig(subset=6, rows_per_case=4, max_drop=0.0)
    section = quantize_openvino(path, ["synthetic"], config)
    report = section["accuracy_control"]
    assert report["metric"] == "accuracy" and report["max_drop"] == 0.0
    assert set(report["reverted"]) <= set(section["keep_float"])
    card = read_card(path, verify=True)
    assert card.export["int8"]["openvino"]["accuracy_control"]["reverted"] == report["reverted"]
