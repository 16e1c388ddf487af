"""INT8 levers for DRIFA-Net on OpenVINO: speed and MC-uncertainty drift per variant, one run.

Two models, both exported with the shared exporter:

- speed: the paper configuration (two RGB 128x128 modalities, widths 64..512,
  random weights; the drift model's tasks and classes) - ms per case for T = 30,
  prefix run once, suffix on 30 rows, timed interleaved across every variant so
  load from other processes hits them alike;
- drift: the real-data checkpoint (``runs/real-small``: skin_isic9 + blood_pbc8),
  or any ``--checkpoint`` - MC predictive distribution of each variant against
  FP32 on the test split, T = 30, judged by the drift gate's noise-relative policy
  (``drifa_edge.drift.gate.evaluate_drift``): the noise floor is FP32 against FP32
  with other masks, measured in the same run.

Variants: FP32, BF16 (inference precision hint), and INT8 builds with NNCF
(``drifa_edge.quantize``) that differ in one lever each: ignored-scope policy
(NNCF defaults, Conv/MatMul only, attention arithmetic kept FP32, sensitivity-chosen),
masks on/off during calibration, per-channel weights, bias correction, range
estimator, preset. Quantized graphs are cached in ``--cache`` between runs.

    python benchmarks/int8_levers.py                      # writes benchmarks/results/int8_levers.json
    python benchmarks/int8_levers.py --quick --out /tmp/levers.json   # tiny speed model, few cases
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from drifa_edge.artifact import layout  # noqa: E402
from drifa_edge.artifact.card import ReferralRule, default_card  # noqa: E402
from drifa_edge.drift.gate import evaluate_drift  # noqa: E402
from drifa_edge.drift.policy import DriftPolicy  # noqa: E402
from drifa_edge.inference.engine import EngineConfig, run_mc_logits, softmax  # noqa: E402
from drifa_edge.metrics.uncertainty import fit_referral_threshold, summarize  # noqa: E402
from drifa_edge.quantize import ir  # noqa: E402
from drifa_edge.quantize.calibration_set import load_calibration_set  # noqa: E402
from drifa_edge.quantize.config import QuantizeConfig  # noqa: E402
from drifa_edge.quantize.nncf import build_int8_models  # noqa: E402

log = logging.getLogger("int8_levers")
SHARED_DATA = ROOT.parent / "shared" / "data"
DEFAULT_CHECKPOINT = ROOT / "runs" / "real-small"
T = 30

# name -> (what changes, QuantizeConfig overrides or None for a float build, inference precision hint)
BASE = {"scope": "attention-fp32"}
VARIANTS: dict[str, tuple[str, dict | None, str]] = {
    "fp32": ("FP32 IR, f32 inference precision", None, "f32"),
    "bf16": ("FP32 IR, bf16 inference precision hint", None, "bf16"),
    "nncf-defaults": ("everything NNCF quantizes, masks on", {"scope": "all"}, "f32"),
    "nncf-defaults-masks-off": (
        "NNCF defaults, masks off in calibration",
        {"scope": "all", "masks_on_during_calibration": False},
        "f32",
    ),
    "conv-matmul": ("only Conv/MatMul inputs quantized", {"scope": "conv-matmul"}, "f32"),
    "attention-fp32": ("convs on feature maps INT8; attention arithmetic, pooling, dense FP32", BASE, "f32"),
    "attention-fp32-masks-off": (
        "attention-fp32, masks off in calibration",
        {**BASE, "masks_on_during_calibration": False},
        "f32",
    ),
    "attention-fp32-per-tensor": (
        "attention-fp32, per-tensor weights",
        {**BASE, "per_channel": False},
        "f32",
    ),
    "attention-fp32-no-bias-correction": (
        "attention-fp32, bias correction off",
        {**BASE, "bias_correction": "none"},
        "f32",
    ),
    "attention-fp32-minmax": (
        "attention-fp32, min/max ranges (no averaging)",
        {**BASE, "range_estimator": "minmax"},
        "f32",
    ),
    "attention-fp32-mixed": ("attention-fp32, asymmetric activations", {**BASE, "preset": "mixed"}, "f32"),
    "attention-fp32+bf16": ("attention-fp32, float parts in bf16", BASE, "bf16"),
    "attention-fp32-prefix-fp32": (
        "attention-fp32, prefix (run once per case) kept FP32",
        {**BASE, "quantize_prefix": False},
        "f32",
    ),
    "conv-matmul-prefix-fp32": (
        "conv-matmul, prefix kept FP32",
        {"scope": "conv-matmul", "quantize_prefix": False},
        "f32",
    ),
    "nncf-defaults-minmax": (
        "NNCF defaults, min/max ranges",
        {"scope": "all", "range_estimator": "minmax"},
        "f32",
    ),
    "nncf-defaults-minmax-prefix-fp32-no-bias-correction": (
        "NNCF's quantizable set, min/max ranges, prefix FP32, bias correction off",
        {
            "scope": "all",
            "range_estimator": "minmax",
            "quantize_prefix": False,
            "bias_correction": "none",
        },
        "f32",
    ),
    "conv-matmul-minmax-prefix-fp32": (
        "conv-matmul, min/max ranges, prefix FP32",
        {"scope": "conv-matmul", "range_estimator": "minmax", "quantize_prefix": False},
        "f32",
    ),
    "attention-fp32-minmax-prefix-fp32": (
        "attention-fp32, min/max ranges, prefix FP32",
        {**BASE, "range_estimator": "minmax", "quantize_prefix": False},
        "f32",
    ),
    "attention-fp32-minmax-prefix-fp32-no-bias-correction": (
        "attention-fp32, min/max ranges, prefix FP32, bias correction off",
        {**BASE, "range_estimator": "minmax", "quantize_prefix": False, "bias_correction": "none"},
        "f32",
    ),
    "conv-matmul-minmax-prefix-fp32-no-bias-correction": (
        "conv-matmul, min/max ranges, prefix FP32, bias correction off",
        {
            "scope": "conv-matmul",
            "range_estimator": "minmax",
            "quantize_prefix": False,
            "bias_correction": "none",
        },
        "f32",
    ),
    "attention-fp32-minmax-prefix-fp32+bf16": (
        "attention-fp32, min/max ranges, prefix FP32, float parts in bf16",
        {**BASE, "range_estimator": "minmax", "quantize_prefix": False},
        "bf16",
    ),
    "conv-matmul-minmax-prefix-fp32+bf16": (
        "conv-matmul, min/max ranges, prefix FP32, float parts in bf16",
        {"scope": "conv-matmul", "range_estimator": "minmax", "quantize_prefix": False},
        "bf16",
    ),
    "drifa-default": ("QuantizeConfig() as shipped (the chosen combination)", "default", "f32"),
    "sensitivity": ("attention-fp32 + convs NNCF ranked most harmful to the MC distribution", "sens", "f32"),
}


# --------------------------------------------------------------------------- a runtime over in-memory IR


class IRRuntime:
    """The Runtime protocol over two compiled ov.Models (prefix, suffix); for benchmarks.

    ``static_cases`` compiles for fixed shapes (prefix that many rows, suffix that many x T),
    which the OpenVINO runtime does not do (dynamic batch): a lever measured here."""

    name = "openvino"
    seedable = False
    device = "CPU"

    def __init__(
        self, core, card, prefix, suffix, precision, hint, threads, perf="LATENCY", static_cases=None
    ):
        config = {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": perf}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if static_cases:
            prefix, suffix = prefix.clone(), suffix.clone()
            prefix.reshape({p.get_any_name(): [static_cases, *_dims(p)] for p in prefix.inputs})
            suffix.reshape({p.get_any_name(): [static_cases * T, *_dims(p)] for p in suffix.inputs})
        self.card, self.precision = card, precision
        self._prefix = core.compile_model(prefix, "CPU", config)
        self._suffix = core.compile_model(suffix, "CPU", config)
        self._rp, self._rs = self._prefix.create_infer_request(), self._suffix.create_infer_request()
        tasks = card.task_names
        self._img = [layout.image_name(t) for t in tasks]
        self._feat = [layout.feature_name(t) for t in tasks]
        self._logit = [layout.logits_name(t) for t in tasks]

    def run_prefix(self, images):
        r = self._rp.infer(dict(zip(self._img, images, strict=True)))
        return [np.array(r[self._prefix.output(n)]) for n in self._feat]

    def run_suffix(self, features, uniforms=None):
        r = self._rs.infer(dict(zip(self._feat, features, strict=True)))
        return [np.array(r[self._suffix.output(n)]) for n in self._logit]

    def run_suffix_embedding(self, features):
        """Logits per task and the pooled embedding (N, M*W3), where the suffix has that output."""
        r = self._rs.infer(dict(zip(self._feat, features, strict=True)))
        return [np.array(r[self._suffix.output(n)]) for n in self._logit], np.array(
            r[self._suffix.output(layout.EMBEDDING_NAME)]
        )

    def reseed(self, seed):
        pass

    def close(self):
        self._prefix = self._suffix = None


def _dims(port) -> list[int]:
    return [d.get_length() for d in port.get_partial_shape()[1:]]


# --------------------------------------------------------------------------- models


def export_model(checkpoint: Path, out: Path) -> Path:
    from drifa_edge.export import export_all

    if not (out / "model_card.json").is_file():
        export_all(checkpoint, out, check=False)
    return out


def speed_checkpoint(card, folder: Path, quick: bool) -> Path:
    """Paper-configuration weights (random) with the drift model's tasks."""
    import dataclasses

    import torch

    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.model.drifa import build_model

    if (folder / "model.safetensors").is_file():
        return folder
    cfg = dataclasses.replace(card.model, image_size=32 if quick else 128, width=0.125 if quick else 1.0)
    cfg = dataclasses.replace(cfg, widths=(64, 128, 256, 512), dropout=0.25)
    torch.manual_seed(0)
    scard = default_card(cfg)
    save_checkpoint(build_model(cfg).eval(), scard, folder)
    return folder


def load_fp32(core, root: Path) -> dict:
    return {
        g: core.read_model(str(root / layout.openvino_files(g, "fp32")[0]))
        for g in ("prefix", "suffix", "suffix_det", "suffix_masks")
    }


def cached_int8(
    core, root: Path, card, calib, config: QuantizeConfig, cache: Path, graphs=("prefix", "suffix")
):
    """build_int8_models for ``graphs`` with an on-disk cache keyed by FP32 files, data and config."""
    import openvino as ov

    fp32_hash = {rel: card.files.get(rel) for rel in sorted(card.files) if rel.startswith("openvino/")}
    key = hashlib.sha256(
        json.dumps([fp32_hash, calib.digest, config.to_dict(), list(graphs)], sort_keys=True).encode()
    ).hexdigest()[:20]
    folder = cache / key
    if all((folder / f"{g}.xml").is_file() for g in graphs):
        meta = json.loads((folder / "meta.json").read_text())
        return {g: core.read_model(str(folder / f"{g}.xml")) for g in graphs}, meta["seconds"]
    models, seconds = build_int8_models(core, load_fp32(core, root), card, calib, config, graphs)
    folder.mkdir(parents=True, exist_ok=True)
    for g, m in models.items():
        ov.save_model(m, str(folder / f"{g}.xml"), compress_to_fp16=False)
    (folder / "meta.json").write_text(json.dumps({"seconds": seconds, "config": config.to_dict()}))
    return models, seconds


def ir_size_mb(models: dict, tmp: Path) -> float:
    import openvino as ov

    total = 0
    for g, m in models.items():
        ov.save_model(m, str(tmp / f"{g}.xml"), compress_to_fp16=False)
        total += (tmp / f"{g}.xml").stat().st_size + (tmp / f"{g}.bin").stat().st_size
    return round(total / 2**20, 2)


# --------------------------------------------------------------------------- measurements


def time_variants(runtimes: dict, images: list[np.ndarray], rounds: int, warmup: int = 2) -> dict[str, dict]:
    """ms per case (T = 30, prefix once), interleaved: every round times every variant once."""
    from mc_inference import interleaved

    cfg = EngineConfig(samples=T, seed=None, max_rows=32, prefix_once=True)
    calls = {name: (lambda rt=rt: run_mc_logits([rt], images, cfg)) for name, rt in runtimes.items()}
    times = interleaved(calls, rounds, warmup)
    return {
        n: {
            "ms_per_case": round(1000 * statistics.median(v), 1),
            "ms_p10": round(1000 * np.percentile(v, 10), 1),
        }
        for n, v in times.items()
    }


def probabilities(rt, images, card, seed: int = 0) -> dict[str, np.ndarray]:
    logits = run_mc_logits([rt], images, EngineConfig(samples=T, seed=seed))
    return {t: softmax(z, card.temperature_of(t)) for t, z in logits.items()}


def with_thresholds(card, ref: dict[str, np.ndarray], rate: float = 0.1):
    """The card's referral thresholds; tasks without one get the FP32 run's 90th MI percentile."""
    rules = dict(card.referral)
    for t in card.task_names:
        if t not in rules or not np.isfinite(rules[t].threshold):
            mi = summarize(ref[t])["mutual_information"]
            rules[t] = ReferralRule(threshold=fit_referral_threshold(mi, rate), target_rate=rate)
    return card.replace(referral=rules)


def paired_means(core, card, models: dict, images, threads) -> dict[str, np.ndarray]:
    """MC mean probabilities with the suffix's random ops seeded (fixed seed 7): two builds
    run this way see the same masks, so their difference is the quantization alone."""
    suffix = ir.seed_random_ops(models["suffix"].clone(), 7)
    rt = IRRuntime(core, card, models["prefix"], suffix, "paired", "f32", threads)
    return {t: p.mean(axis=1) for t, p in probabilities(rt, images, card).items()}


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    p, q = np.clip(p, 1e-12, 1.0), np.clip(q, 1e-12, 1.0)
    return np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def combine_runs(runs: list[dict]) -> dict:
    """Median of every number over the repeated runs; the gate as 'passed k/R'."""
    out = {
        "gate": f"{sum(r['gate'] == 'pass' for r in runs)}/{len(runs)}",
        "failures": [r["failures"] for r in runs],
    }
    for task in (k for k in runs[0] if k not in ("gate", "failures")):
        row = {}
        for key, value in runs[0][task].items():
            if isinstance(value, (int, float)) and value is not None:
                vals = [r[task][key] for r in runs if r[task][key] is not None]
                row[key] = round(float(np.median(vals)), 5) if vals else None
            else:
                row[key] = [r[task][key] for r in runs]
        out[task] = row
    return out


def drift_summary(report, ref, cand, labels) -> dict:
    """The numbers of the issue's table per task: KL ratio, MI change, agreement, referrals, metrics."""
    out = {
        "gate": "pass" if report.passed else "fail",
        "failures": [f"{c.task}: {c.name}" for c in report.failures],
    }
    for task, d in report.tasks.items():
        kl = next(c for c in d.criteria if c.name == "kl_ratio")
        mi_ref = d.reference["mean_mutual_information"]
        out[task] = {
            "kl_ratio": round(kl.value, 2),
            "mean_kl": d.pair["mean_kl"],
            "noise_kl": d.noise["kl"],  # the permutation null's median
            "mi_change_pct": round(100 * (d.candidate["mean_mutual_information"] - mi_ref) / mi_ref, 1),
            "agreement": round(d.pair["agreement"], 3),
            "noise_agreement": round(d.noise["agreement"], 3),
            "referral_rate_fp32": round(d.pair["referral_rate_ref"], 3),
            "referral_rate": round(d.pair["referral_rate_cand"], 3),
            "referral_agreement": round(d.pair["referral_agreement"], 3),
            "spearman_mi": d.pair["spearman_mi"],
            "noise_spearman_mi": d.noise["spearman_mi"],
            **{
                f"{m}_{side}": round(x[m], 4)
                for m in ("accuracy", "macro_f1", "ece")
                for side, x in (("fp32", d.reference), ("int8", d.candidate))
            },
            "failed": [c.name for c in d.criteria if not c.passed],
        }
    return out


# --------------------------------------------------------------------------- main


def config_of(name: str, base: QuantizeConfig, keep: tuple[str, ...]) -> QuantizeConfig | None:
    overrides = VARIANTS[name][1]
    if overrides is None:
        return None
    if overrides == "default":  # drifa-edge's defaults, whatever they are now
        return QuantizeConfig(subset=base.subset)
    if overrides == "sens":
        return (
            base.replace(scope="sensitivity", keep_float=keep)
            if keep
            else base.replace(scope="attention-fp32")
        )
    return base.replace(**overrides)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    p.add_argument(
        "--data", nargs="+", default=None, help="--data values of the drift model (default: the real sets)"
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--cases", type=int, default=200, help="test cases for drift")
    p.add_argument("--subset", type=int, default=64, help="calibration cases (drift model)")
    p.add_argument("--speed-subset", type=int, default=16, help="calibration cases (speed model)")
    p.add_argument("--sensitivity-json", type=Path, default=None, help="reuse a saved sensitivity report")
    p.add_argument("--rounds", type=int, default=15, help="timing rounds (interleaved)")
    p.add_argument("--repeats", type=int, default=3, help="independent MC runs per variant for drift")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny speed model, few cases (smoke test)")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-drift", action="store_true")
    p.add_argument(
        "--sensitivity-fraction", type=float, default=0.5, help="drift budget, fraction of noise KL"
    )
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "drifa-int8-levers")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "int8_levers.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import openvino as ov

    from drifa_edge.artifact.card import read_card
    from drifa_edge.drift.check import load_split

    started = time.time()
    card = read_card(args.checkpoint)
    data = args.data or [f"{t}={SHARED_DATA / t}" for t in card.task_names]
    args.cache.mkdir(parents=True, exist_ok=True)
    drift_dir = export_model(
        args.checkpoint, args.cache / f"drift-{card.files.get('model.safetensors', '')[:12]}"
    )
    dcard = read_card(drift_dir)
    core = ov.Core()
    # every lever is one change from NNCF's own defaults (ranges, bias correction, prefix quantized)
    base = QuantizeConfig(
        subset=args.subset, bias_correction="fast", range_estimator="mean-minmax", quantize_prefix=True
    )
    result: dict = {
        "command": "python benchmarks/int8_levers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpu": platform.processor(), "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "T": T,
        "variants": {n: VARIANTS[n][0] for n in args.variants},
        "calibration_subset": args.subset,
    }
    calib = load_calibration_set(data, dcard, args.subset, base.seed, "train")
    result["calibration"] = calib.provenance(base.seed, "train", base.preset)

    keep: tuple[str, ...] = ()
    if "sensitivity" in args.variants:
        from drifa_edge.quantize.accuracy_control import restore_keep_float

        if args.sensitivity_json:
            report = json.loads(args.sensitivity_json.read_text())
            report["reused_from"] = str(args.sensitivity_json)
        else:
            val = load_calibration_set(data, dcard, 32, base.seed, "val")
            report = restore_keep_float(
                drift_dir,
                calib,
                val,
                base.replace(scope="attention-fp32"),
                "drift",
                noise_fraction=args.sensitivity_fraction,
                ranking_subset=16,
            )
        keep = tuple(report["reverted"])
        result["sensitivity"] = report
        log.info("sensitivity: %d ops kept float", len(keep))

    if not args.skip_drift:
        images, labels, _ = load_split(data, dcard, "test", args.cases)
        fp32 = load_fp32(core, drift_dir)
        ref_rt = IRRuntime(core, dcard, fp32["prefix"], fp32["suffix"], "fp32", "f32", args.threads)
        # R independent (reference, reference again) pairs, shared by every variant
        refs = [
            (probabilities(ref_rt, images, dcard), probabilities(ref_rt, images, dcard))
            for _ in range(args.repeats)
        ]
        dcard_t = with_thresholds(dcard, refs[0][0])
        paired_ref = paired_means(core, dcard, fp32, images, args.threads)
        drift = {}
        for name in args.variants:
            config = config_of(name, base, keep)
            hint = VARIANTS[name][2]
            if config is None:
                models = {"prefix": fp32["prefix"], "suffix": fp32["suffix"]}
            else:
                models, _ = cached_int8(core, drift_dir, dcard, calib, config, args.cache)
            rt = IRRuntime(core, dcard, models["prefix"], models["suffix"], name, hint, args.threads)
            runs = []
            for ref, _again in refs:  # the gate builds its own null now
                cand = probabilities(rt, images, dcard)
                report = evaluate_drift(ref, cand, labels, dcard_t, dcard_t, DriftPolicy())
                runs.append(drift_summary(report, ref, cand, labels))
            drift[name] = combine_runs(runs)
            if hint == "f32":  # same masks as the FP32 reference: the quantization's own KL
                cand = paired_means(core, dcard, models, images, args.threads)
                for task in dcard.task_names:
                    kl = float(np.mean(_kl_rows(paired_ref[task], cand[task])))
                    noise = drift[name][task]["noise_kl"]
                    drift[name][task]["paired_kl"] = kl
                    drift[name][task]["paired_kl_pct_of_noise"] = round(100 * kl / noise, 1)
            log.info("drift %s: %s", name, json.dumps(drift[name])[:300])
        result["drift"] = drift
        result["drift_model"] = {
            "checkpoint": str(args.checkpoint),
            "cases": int(images[0].shape[0]),
            "repeats": args.repeats,
        }

    if not args.skip_speed:
        scheck = speed_checkpoint(
            dcard, args.cache / ("speed-quick" if args.quick else "speed-paper") / "ckpt", args.quick
        )
        sdir = export_model(scheck, scheck.parent / "export")
        scard = read_card(sdir)
        scalib = load_calibration_set(data, scard, args.speed_subset, base.seed, "train")
        result["speed_calibration_subset"] = args.speed_subset
        fp32 = load_fp32(core, sdir)
        runtimes, sizes, qseconds = {}, {}, {}
        tmp = Path(tempfile.mkdtemp())
        for name in args.variants:
            config = config_of(name, base, keep)
            if config is None:
                models = {"prefix": fp32["prefix"], "suffix": fp32["suffix"]}
            else:
                models, qseconds[name] = cached_int8(
                    core, sdir, scard, scalib, config.replace(subset=args.speed_subset), args.cache
                )
            sizes[name] = ir_size_mb(models, tmp)
            hint = VARIANTS[name][2]
            runtimes[name] = IRRuntime(
                core, scard, models["prefix"], models["suffix"], name, hint, args.threads
            )
            runtimes[name + "@static"] = IRRuntime(
                core, scard, models["prefix"], models["suffix"], name, hint, args.threads, static_cases=1
            )
        one = [x[:1] for x in scalib.images]
        timed = time_variants(runtimes, one, args.rounds)
        fp = timed.get("fp32", {}).get("ms_per_case")
        fp_static = timed.get("fp32@static", {}).get("ms_per_case")
        speed = {}
        for name in args.variants:
            row = dict(timed[name])
            row["ms_per_case_static"] = timed[name + "@static"]["ms_per_case"]
            row["size_mb"] = sizes[name]
            if fp:
                row["speedup_vs_fp32"] = round(fp / row["ms_per_case"], 2)
                row["speedup_static_vs_fp32_static"] = round(fp_static / row["ms_per_case_static"], 2)
            if name in qseconds:
                row["quantize_s"] = qseconds[name]
            speed[name] = row
        result["speed"] = speed
        result["speed_model"] = {"config": scard.model.to_dict(), "threads": args.threads}
    result["machine"]["loadavg_end"] = os.getloadavg()
    result["seconds"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float))
    print(table(result))
    return result


def table(result: dict) -> str:
    """Markdown: speed (dynamic / static shapes) and drift per task (medians over repeats)."""
    tasks = [t for t in next(iter(result.get("drift", {}).values()), {}) if t not in ("gate", "failures")]
    head = ["variant", "ms/case", "x FP32", "ms static", "x FP32 static", "MB"]
    head += [f"{t}: KL ratio / paired KL % noise / MI % / agree / referral" for t in tasks] + ["gate passed"]
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    keys = (
        "ms_per_case",
        "speedup_vs_fp32",
        "ms_per_case_static",
        "speedup_static_vs_fp32_static",
        "size_mb",
    )
    for name in result["variants"]:
        s = result.get("speed", {}).get(name, {})
        d = result.get("drift", {}).get(name, {})
        cells = [name, *(str(s.get(k, "")) for k in keys)]
        for t in tasks:
            v = d.get(t)
            cells.append(
                ""
                if v is None
                else f"{v['kl_ratio']} / {v.get('paired_kl_pct_of_noise', '-')} / {v['mi_change_pct']} / "
                f"{v['agreement']} / {v['referral_rate']} vs {v['referral_rate_fp32']}"
            )
        cells.append(str(d.get("gate", "")))
        lines.append(" | ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
