"""Write a drift report: ``report.json`` (everything), ``report.md`` (the tables a
reviewer reads: each criterion's null next to the candidate, the shift against its
margin, the sample size, the cases that changed) and one reliability
diagram PNG per task (reference against candidate), drawn with Pillow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.drift.gate import DriftReport, TaskDrift
from drifa_edge.errors import MissingDependencyError

# metrics shown in the markdown table, in order
TABLE_METRICS = (
    "accuracy",
    "balanced_accuracy",
    "macro_f1",
    "nll",
    "brier",
    "ece",
    "adaptive_ece",
    "mce",
    "error_auroc_mi",
    "error_aupr_mi",
    "error_auroc_entropy",
    "error_aupr_entropy",
    "aurc",
    "mean_mutual_information",
    "referral_rate",
    "accuracy_retained",
)
# pair metric -> the statistic of drift.noise whose null median is its noise floor
PAIR_METRICS = {
    "mean_kl": "kl",
    "spearman_mi": "spearman_mi",
    "spearman_entropy": "spearman_entropy",
    "referral_agreement": "referral_agreement",
    "referral_rate_diff": "referral_rate_diff",
}
CHANGED_SHOWN = 50  # rows of the changed-cases table in report.md (report.json has all)


def _clean(x: Any) -> Any:
    """JSON-safe copy: inf/NaN floats become None (strict JSON has neither)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and hasattr(x, "dtype"):  # numpy scalar
        return _clean(x.item())
    return x


def report_json(report: DriftReport) -> str:
    return json.dumps(_clean(report.to_dict()), indent=2, sort_keys=False, allow_nan=False)


def format_value(x: Any, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        if not math.isfinite(x):
            return "inf" if x > 0 else "-inf"
        return f"{x:.{digits}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{digits}f}"
    return str(x)


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4f}"


def _criteria_table(t: TaskDrift) -> list[str]:
    lines = [
        "| criterion | null median (ref vs ref) | candidate | limit | shift [bounds] | margin | p (Holm) "
        "| detectable at 80 % | cases needed | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in t.criteria:
        verdict = ("pass (n.s.)" if c.not_significant else "pass") if c.passed else "**FAIL**"
        shift = f"{_signed(c.shift)} [{_signed(c.shift_low)}, {_signed(c.shift_high)}]"
        p = f"{format_value(c.p_value, 3)} ({format_value(c.p_adjusted, 3)})"
        lines.append(
            f"| {c.name} | {format_value(c.noise)} | {format_value(c.value)} | {format_value(c.threshold)} "
            f"| {shift} | {format_value(c.margin)} | {p} | {format_value(c.detectable_shift)} "
            f"| {c.cases_needed} | {verdict} |"
        )
    return lines


def _changed_table(t: TaskDrift) -> list[str]:
    head = (
        f"{len(t.changed)} of {t.cases} cases changed class or referral "
        f"(two runs of the reference change a median of {t.changed_by_noise:.0f})."
    )
    if not t.changed:
        return [head, ""]
    lines = [
        head,
        "",
        "| row | id | label | reference | candidate | referred (ref → cand) |",
        "|---|---|---|---|---|---|",
    ]
    for row in t.changed[:CHANGED_SHOWN]:
        referred = f"{format_value(row['reference_referred'])} → {format_value(row['candidate_referred'])}"
        lines.append(
            f"| {row['row']} | {row['id'] or '-'} | {row['label']} | {row['reference_class']} "
            f"| {row['candidate_class']} | {referred} |"
        )
    if len(t.changed) > CHANGED_SHOWN:
        lines.append(f"| ... | {len(t.changed) - CHANGED_SHOWN} more in report.json | | | | |")
    return lines + [""]


def task_markdown(t: TaskDrift) -> list[str]:
    lines = [f"## Task `{t.task}` ({t.cases} scored cases, {len(t.classes)} classes)", ""]
    lines += ["### Criteria", ""]
    lines += _criteria_table(t)
    lines += [
        "",
        "Shift: how much worse than two runs of the reference (> 0 worse; kl_ratio: log ratio).",
        "",
    ]
    lines += ["### Cases whose class or referral changed", ""]
    lines += _changed_table(t)
    lines += ["### Agreement with the reference", ""]
    lines += ["| metric | null median (ref vs ref) | candidate (ref vs cand) |", "|---|---|---|"]
    for key, stat in PAIR_METRICS.items():
        lines.append(f"| {key} | {format_value(t.noise.get(stat))} | {format_value(t.pair.get(key))} |")
    lines += ["", "### Metrics", ""]
    lines += ["| metric | reference | candidate | Δ (cand − ref) |", "|---|---|---|---|"]
    keys = list(TABLE_METRICS) + [k for k in t.reference if k.startswith("accuracy_at_")]
    for key in keys:
        lines.append(
            f"| {key} | {format_value(t.reference.get(key))} | {format_value(t.candidate.get(key))} "
            f"| {_signed(t.deltas.get(key))} |"
        )
    lines += ["", "Per-class recall (reference → candidate):", ""]
    for name, r, c in zip(
        t.classes, t.reference["per_class_recall"], t.candidate["per_class_recall"], strict=True
    ):
        lines.append(f"- {name}: {format_value(r)} → {format_value(c)}")
    lines += ["", f"![reliability diagram of {t.task}](reliability_{t.task}.png)", ""]
    return lines


def report_markdown(report: DriftReport) -> str:
    meta = report.meta
    verdict = "PASS" if report.passed else "FAIL"
    lines = [f"# Drift check: {verdict}", ""]
    for key in ("reference", "candidate"):
        if key in meta:
            rt = meta.get(f"{key}_runtime", {})
            lines.append(
                f"- {key}: `{meta[key]}` ({rt.get('name')}, {rt.get('precision')}, {rt.get('device')}, "
                f"{rt.get('members')} member(s))"
            )
    lines.append(
        f"- MC samples T = {meta.get('samples')}, seed {meta.get('seed')}; candidate and reference share "
        f"dropout masks: {format_value(meta.get('shared_masks'))}"
    )
    pol = report.policy
    lines.append(
        f"- noise model: {pol.permutations} random swaps of MC draws between the two runs (what two runs "
        "of the reference show, measured in this check)"
    )
    rule = {
        "material": f"fail where the difference test rejects (Holm over {len(report.criteria)} criteria "
        "x tasks) and the shift exceeds the margin",
        "difference": f"fail where the difference test rejects (Holm over {len(report.criteria)} tests)",
        "equivalence": "pass only where the upper bound of the shift is within the margin "
        "(intersection-union, no correction needed)",
    }[pol.decision]
    lines.append(f"- policy `{pol.name}`: {pol.decision}, alpha {pol.alpha}: {rule}")
    cases = ", ".join(f"{t.task} {t.cases}" for t in report.tasks.values())
    lines.append(f"- cases: {cases}")
    for warning in report.warnings:
        lines.append(f"- **warning**: {warning}")
    if meta.get("thresholds_fitted"):
        fitted = ", ".join(
            f"{k} = {format_value(v['threshold'])} on {v['on']}" for k, v in meta["thresholds_fitted"].items()
        )
        lines.append(f"- referral thresholds missing from a card, fitted here: {fitted}")
    if report.failures:
        lines.append("- failed: " + ", ".join(f"`{c.task}: {c.name}`" for c in report.failures))
    lines.append("")
    if meta.get("recalibration"):
        lines += ["## Recalibration of the candidate (fitted on validation data)", ""]
        lines += [
            "| task | T before | T after | threshold before | threshold after | ECE before | ECE after |"
        ]
        lines += ["|---|---|---|---|---|---|---|"]
        for task, r in meta["recalibration"].items():
            lines.append(
                f"| {task} | {format_value(r['temperature_before'])} | {format_value(r['temperature_after'])} | "
                f"{format_value(r['threshold_before'])} | {format_value(r['threshold_after'])} | "
                f"{format_value(r['ece_before'])} | {format_value(r['ece_after'])} |"
            )
        lines.append("")
    for t in report.tasks.values():
        lines += task_markdown(t)
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- reliability diagram

REF_COLOUR = (52, 101, 164)
CAND_COLOUR = (230, 126, 34)


WORD_GAP = 5  # px between words: Pillow's default font draws a space 2 px wide ("ECE0.195")
STRIP_HEIGHT = 56  # px of the histogram strip under the diagram


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: scalable
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def draw_words(d, at: tuple[float, float], text: str, font, fill="black") -> list[tuple[float, float]]:
    """Draw ``text`` word by word with a visible gap; returns each word's (x start, x end)."""
    x, y = at
    spans = []
    for word in text.split():
        d.text((x, y), word, fill=fill, font=font)
        end = x + d.textlength(word, font=font)
        spans.append((x, end))
        x = end + WORD_GAP
    return spans


def strip_bars(
    counts: dict[str, list[int]], edges: list[float], box: tuple[float, float, float, float]
) -> list[tuple[str, int, tuple[float, float, float, float]]]:
    """Rectangles of the histogram strip: for each side ("reference", "candidate") and bin, a bar
    whose height is its case count over the largest count; ``box`` = (left, top, right, bottom)."""
    left, top, right, bottom = box
    peak = max((c for side in counts.values() for c in side), default=0) or 1
    bars = []
    for side, offset in (("reference", 0.0), ("candidate", 0.5)):
        for i, count in enumerate(counts.get(side, [])):
            lo, hi = edges[i], edges[i + 1]
            x0 = left + (lo + (hi - lo) * (0.05 + 0.9 * offset)) * (right - left)
            x1 = x0 + (hi - lo) * 0.45 * (right - left)
            y0 = bottom - (bottom - top) * count / peak
            bars.append((side, i, (x0, y0, x1, bottom)))
    return bars


def draw_reliability(t: TaskDrift, size: int = 520):
    """Accuracy per equal-width confidence bin, reference (blue) beside candidate
    (orange), with the diagonal of perfect calibration, and under it a histogram strip of
    the cases each bin holds (an almost empty bin's accuracy says little). Returns a PIL image
    of ``size`` x ``size + STRIP_HEIGHT + 24`` pixels."""
    try:
        from PIL import Image, ImageDraw
    except ImportError as e:  # pillow is a core dependency; this only guards a broken install
        raise MissingDependencyError(
            "Pillow is needed to draw the reliability diagram: pip install pillow"
        ) from e
    img = Image.new("RGB", (size, size + STRIP_HEIGHT + 24), "white")
    d = ImageDraw.Draw(img)
    font = _font(12)
    left, top, right, bottom = 60, 50, size - 20, size - 60
    w, h = right - left, bottom - top

    def xy(conf: float, acc: float) -> tuple[float, float]:
        return left + conf * w, bottom - acc * h

    for k in range(6):  # grid and tick labels every 0.2
        v = k / 5
        d.line([xy(v, 0), xy(v, 1)], fill=(225, 225, 225))
        d.line([xy(0, v), xy(1, v)], fill=(225, 225, 225))
        d.text((xy(v, 0)[0] - 8, bottom + 6), f"{v:.1f}", fill="black", font=font)
        d.text((left - 30, xy(0, v)[1] - 6), f"{v:.1f}", fill="black", font=font)
    edges = t.reliability["reference"]["edges"]
    for side, colour, offset in (("reference", REF_COLOUR, 0.0), ("candidate", CAND_COLOUR, 0.5)):
        r = t.reliability[side]
        for i, (count, acc) in enumerate(zip(r["count"], r["accuracy"], strict=True)):
            if count == 0:
                continue
            lo, hi = edges[i], edges[i + 1]
            x0 = lo + (hi - lo) * (0.05 + 0.45 * offset * 2)
            x1 = x0 + (hi - lo) * 0.45
            d.rectangle([xy(x0, acc), xy(x1, 0)], fill=colour, outline=(40, 40, 40))
    d.line([xy(0, 0), xy(1, 1)], fill=(120, 120, 120), width=2)
    d.rectangle([left, top, right, bottom], outline="black")
    draw_words(d, (left + w // 2 - 40, bottom + 24), "confidence", font)
    d.text((6, top - 20), "accuracy", fill="black", font=font)
    # histogram strip: cases per bin, same bins and colours, scaled to the fullest bin
    strip = (left, bottom + 44, right, bottom + 44 + STRIP_HEIGHT)
    counts = {side: [int(c) for c in t.reliability[side]["count"]] for side in ("reference", "candidate")}
    colours = {"reference": REF_COLOUR, "candidate": CAND_COLOUR}
    for side, i, box in strip_bars(counts, edges, strip):
        if counts[side][i]:
            d.rectangle(box, fill=colours[side])
    d.line([strip[0], strip[3], strip[2], strip[3]], fill="black")
    peak = max(max(c) for c in counts.values()) if any(any(c) for c in counts.values()) else 0
    draw_words(d, (6, strip[1]), f"cases per bin (max {peak})", font)
    ece_ref, ece_cand = t.reference["ece"], t.candidate["ece"]
    draw_words(d, (left, 12), f"Reliability: {t.task} ({t.reference['cases']} cases)", font)
    for k, (label, colour) in enumerate(
        ((f"reference ECE {ece_ref:.3f}", REF_COLOUR), (f"candidate ECE {ece_cand:.3f}", CAND_COLOUR))
    ):
        y = top + 8 + 16 * k
        d.rectangle([left + 8, y, left + 20, y + 10], fill=colour)
        draw_words(d, (left + 26, y - 1), label, font)
    d.line([left + 8, top + 46, left + 20, top + 46], fill=(120, 120, 120), width=2)
    draw_words(d, (left + 26, top + 40), "perfect calibration", font)
    return img


def write_report(report: DriftReport, out: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and reliability_<task>.png into ``out``; return the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md"}
    atomic_write(paths["json"], report_json(report) + "\n")
    atomic_write(paths["markdown"], report_markdown(report))
    for name, t in report.tasks.items():
        path = out / f"reliability_{name}.png"
        draw_reliability(t).save(path)
        paths[f"reliability_{name}"] = path
    return paths
