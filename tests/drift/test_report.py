"""report.json / report.md / reliability PNGs from a drift report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from drifa_edge.artifact.card import default_card
from drifa_edge.drift.gate import DriftReport, evaluate_drift
from drifa_edge.drift.report import STRIP_HEIGHT, draw_reliability, report_markdown, write_report
from drifa_edge.model.config import ModelConfig, TaskSpec

CFG = ModelConfig(tasks=(TaskSpec("derm", ("a", "b", "c")), TaskSpec("blood", ("w", "x"))), image_size=32)


def _samples(seed, n=200, t=8, temperature=1.0, classes=3):
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).normal(size=(n, 1, classes)) * 2
    z = (base + rng.normal(size=(n, t, classes)) * 0.5) / temperature
    e = np.exp(z - z.max(axis=2, keepdims=True))
    return e / e.sum(axis=2, keepdims=True)


@pytest.fixture(scope="module")
def report() -> DriftReport:
    rng = np.random.default_rng(1)
    labels = {"derm": rng.integers(0, 3, 200), "blood": rng.integers(0, 2, 200)}
    ref = {"derm": _samples(0), "blood": _samples(0, classes=2)}
    cand = {"derm": _samples(0, temperature=4.0), "blood": _samples(1, classes=2)}
    meta = {
        "reference": "runs/fp32",
        "candidate": "exports/int8",
        "reference_runtime": {"name": "torch", "precision": "fp32", "device": "cpu", "members": 1},
        "candidate_runtime": {"name": "openvino", "precision": "int8", "device": "CPU", "members": 1},
        "samples": 8,
        "seed": 0,
        "shared_masks": False,
        "recalibration": {
            "derm": {
                "temperature_before": 1.0,
                "temperature_after": 1.4,
                "threshold_before": None,
                "threshold_after": 0.1,
                "ece_before": 0.08,
                "ece_after": 0.03,
                "validation_cases": 100,
            }
        },
    }
    card = default_card(CFG)  # no referral thresholds: infinite, refers nobody
    return evaluate_drift(ref, cand, labels, card, card, meta=meta, ids=[f"case-{i}" for i in range(200)])


def test_write_report_files(report, tmp_path):
    paths = write_report(report, tmp_path / "out")
    data = json.loads(paths["json"].read_text())  # strict JSON: the infinite thresholds became null
    assert data["verdict"] == "fail"
    assert data["tasks"]["derm"]["reference"]["referral_threshold"] is None
    md = paths["markdown"].read_text()
    assert md.startswith("# Drift check: FAIL")
    assert "null median (ref vs ref)" in md and "**FAIL**" in md and "ECE after" in md
    assert "cases changed class or referral" in md and "case-" in md  # the changed cases, by id
    assert "reliability_derm.png" in md
    from PIL import Image

    for task in ("derm", "blood"):
        with Image.open(tmp_path / "out" / f"reliability_{task}.png") as img:
            assert img.size == (520, 520 + STRIP_HEIGHT + 24)


def test_reliability_diagram_draws_both_bars(report):
    from drifa_edge.drift.report import CAND_COLOUR, REF_COLOUR

    img = draw_reliability(report.tasks["derm"])
    colours = {c for _, c in img.getcolors(maxcolors=1 << 16)}
    assert REF_COLOUR in colours and CAND_COLOUR in colours


def test_markdown_shows_noise_next_to_candidate(report):
    md = report_markdown(report)
    derm = report.tasks["derm"]
    kl = next(c for c in derm.criteria if c.name == "kl_ratio")
    assert f"| kl_ratio | 1.0000 | {kl.value:.4f} | 2.0000 |" in md
    assert f"{len(derm.changed)} of 200 cases changed class or referral" in md
    assert "- cases: derm 200, blood 200" in md


def test_legend_words_have_a_visible_gap():
    """Pillow's default font draws a space 2 px wide: "ECE 0.195" read as "ECE0.195"."""
    from PIL import Image, ImageDraw

    from drifa_edge.drift.report import WORD_GAP, _font, draw_words

    img = Image.new("RGB", (300, 30), "white")
    d = ImageDraw.Draw(img)
    spans = draw_words(d, (2, 2), "reference ECE 0.195", _font(12))
    assert len(spans) == 3
    for (_, end), (start, _) in zip(spans[:-1], spans[1:], strict=True):
        assert start - end == WORD_GAP >= 4
    # the gap is blank: no ink in the columns between "ECE" and "0.195"
    gap = img.crop((int(spans[1][1]) + 1, 0, int(spans[2][0]), 30))
    assert gap.getcolors() == [(gap.width * gap.height, (255, 255, 255))]


def test_histogram_strip_bars_follow_the_counts():
    from drifa_edge.drift.report import strip_bars

    counts = {"reference": [0, 10, 40, 5], "candidate": [2, 8, 40, 20]}
    edges = [0.0, 0.25, 0.5, 0.75, 1.0]
    bars = strip_bars(counts, edges, (0, 100, 400, 150))  # 50 px tall
    heights = {(side, i): box[3] - box[1] for side, i, box in bars}
    for side, values in counts.items():
        for i, count in enumerate(values):
            assert heights[(side, i)] == pytest.approx(50 * count / 40)
    ref2, cand2 = (next(b for s, i, b in bars if (s, i) == (side, 2)) for side in ("reference", "candidate"))
    assert 200 <= ref2[0] < ref2[2] <= cand2[0] < cand2[2] <= 300  # side by side inside bin 2


def test_reliability_png_has_the_strip(report):
    from drifa_edge.drift.report import REF_COLOUR

    img = draw_reliability(report.tasks["derm"])
    strip = img.crop((0, 520 - 60 + 44, img.width, img.height))
    colours = {c for _, c in strip.getcolors(maxcolors=1 << 16)}
    assert REF_COLOUR in colours
