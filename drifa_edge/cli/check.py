"""`drifa-edge check`: the accuracy / calibration / uncertainty drift gate.

Exit 0 when every criterion passes, 8 (DriftExceededError) when one fails; the
report is written either way.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from drifa_edge.cli import adaptive_options as A
from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.progress import Progress
from drifa_edge.cli.tables import FORMAT_HELP, print_table, resolve_format
from drifa_edge.cli.text import plain, require_choice, require_folder
from drifa_edge.drift.check import CheckConfig, check_drift
from drifa_edge.drift.gate import DriftReport
from drifa_edge.drift.policy import load_policy
from drifa_edge.drift.report import format_value
from drifa_edge.errors import DriftExceededError
from drifa_edge.runtimes.threads import use_threads


def verdict_text(c) -> str:
    """``pass``, ``FAIL``, or ``pass (n.s.)`` when the candidate's shift estimate is beyond the
    margin (its value past the limit) but the test did not reject: not significant at this
    many cases, so more cases would tell."""
    if not c.passed:
        return "[bold red]FAIL[/]"
    return "[yellow]pass (n.s.)[/]" if c.not_significant else "[green]pass[/]"


def print_report(report: DriftReport, console: Console, fmt: str = "table") -> None:
    policy = report.policy
    table = Table(
        title=f"drift check ({policy.name}: {policy.decision}, alpha {policy.alpha}): "
        "two runs of the reference (null median) next to the candidate"
    )
    numeric = ("null median", "candidate", "limit", "p (Holm)")
    for col in ("task", "criterion", *numeric, "verdict"):
        table.add_column(col, overflow="fold", justify="right" if col in numeric else "left")
    for c in report.criteria:
        values = (format_value(c.noise), format_value(c.value), format_value(c.threshold))
        table.add_row(
            plain(c.task),
            plain(c.name),
            *(plain(v) for v in values),
            plain(format_value(c.p_adjusted, 3)),
            verdict_text(c),
        )
    print_table(table, fmt, console)
    for c in report.criteria:
        if c.passed and c.not_significant:
            console.print(
                f"{c.task}: {c.name} pass (n.s.): beyond the limit, but not significant "
                f"(shift {c.shift:+.4f}, bounds [{c.shift_low:+.4f}, {c.shift_high:+.4f}] vs margin "
                f"{c.margin:.4f}; Holm p {c.p_adjusted:.3g}); more cases would tell",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
    for t in report.tasks.values():
        console.print(
            f"{t.task}: {t.cases} cases; {len(t.changed)} changed class or referral "
            f"(two runs of the reference: {t.changed_by_noise:.0f})",
            highlight=False,
            markup=False,
        )
    skipped = {t.ood["skipped"] for t in report.tasks.values() if "skipped" in t.ood}
    for why in sorted(skipped):
        console.print(f"OOD criteria skipped: {why}", highlight=False, markup=False)
    for c in report.failures:
        console.print(f"{c.task}: {c.name} {c.detail}", style="red", highlight=False, markup=False)
    for warning in report.warnings:
        console.print(f"warning: {warning}", style="yellow", highlight=False, markup=False)
    adaptive = report.meta.get("adaptive")
    if adaptive:
        console.print(
            f"adaptive T: mean {adaptive['mean_samples']:.2f} draws per case (T_max {adaptive['max_samples']}, "
            f"{adaptive['row_ratio']:.2f}x fewer suffix rows), {adaptive['stopped_settled']} cases settled "
            f"early; draws: {adaptive['histogram']}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    recal = report.meta.get("recalibration")
    if recal:
        for task, r in recal.items():
            console.print(
                f"recalibrated {plain(task)}: T {r['temperature_before']:.3f} -> {r['temperature_after']:.3f}, "
                f"ECE {r['ece_before']:.4f} -> {r['ece_after']:.4f}"
            )


def _record_build(cfg: CheckConfig, report: DriftReport) -> None:
    from drifa_edge.bench.gate_record import record_gate
    from drifa_edge.runtimes.cpu import isa_class

    record, written = record_gate(
        cfg.candidate,
        cfg.cand_runtime,
        cfg.cand_precision,
        report.passed,
        samples=cfg.samples,
        policy=report.policy.name,
        reference=f"{cfg.ref_runtime}/{cfg.ref_precision}",
        device=cfg.device,
    )
    speed = "not timed" if record.p50_ms is None else f"{record.p50_ms:g} ms per case at T={record.samples}"
    Console(stderr=True).print(
        f"recorded in {len(written)} card(s): {record.key} gate {record.gate} on {isa_class()} CPUs, {speed}",
        highlight=False,
        markup=False,
    )


@app.command()
def check(
    reference: Path = typer.Argument(..., help="reference artifact (FP32 checkpoint or export folder)"),
    candidate: Path = typer.Argument(..., help="candidate artifact (e.g. the INT8 export folder)"),
    data: list[str] = typer.Option(
        ..., "--data", help="labelled data, NAME=PATH once per task, or 'synthetic'"
    ),
    policy: str | None = typer.Option(
        None,
        "--policy",
        help="policy TOML or profile name (default, strict-clinical); default: built-in default",
    ),
    samples: int = typer.Option(30, "--samples", "-T", help="MC samples per case"),
    seed: int = typer.Option(0, "--seed", help="MC seed of both runs and of the permutations"),
    out: Path | None = typer.Option(
        None, "--out", help="folder for report.json, report.md, reliability PNGs"
    ),
    ref_runtime: str = typer.Option("torch", "--ref-runtime", help="runtime of the reference (or 'auto')"),
    runtime: str = typer.Option(
        "auto", "--runtime", help="runtime of the candidate; auto = by folder content"
    ),
    precision: str = typer.Option(
        "fp32", "--precision", help="precision of the candidate: fp32, fp16, bf16, int8"
    ),
    ref_precision: str = typer.Option("fp32", "--ref-precision", help="precision of the reference"),
    device: str | None = typer.Option(None, "--device", help="candidate's device (cpu, cuda:0, GPU, NPU...)"),
    ref_device: str | None = typer.Option(None, "--ref-device", help="reference's device (default: cpu)"),
    recalibrate: bool = typer.Option(
        False,
        "--recalibrate",
        help="refit the candidate's temperature and referral threshold on validation data",
    ),
    write_card: bool = typer.Option(
        False,
        "--write-card",
        help="store in the candidate's model card the gate's verdict and the build's speed on this "
        "CPU's ISA class (read by --precision auto); with --recalibrate also the refitted values",
    ),
    limit: int | None = typer.Option(None, "--limit", help="use only the first N cases (quick runs)"),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON (same as --format json)"),
    fmt: str = typer.Option("auto", "--format", help=FORMAT_HELP),
    adaptive: bool = A.ADAPTIVE,
    min_samples: int = A.MIN_SAMPLES,
    block: int = A.BLOCK,
    error_rate: float = A.ERROR_RATE,
    stop_rule: str = A.STOP_RULE,
    se_tolerance: float = A.SE_TOLERANCE,
) -> None:
    """Compare a candidate build with a reference on labelled data; exit 8 when drift exceeds the policy."""
    from drifa_edge.artifact.layout import PRECISIONS
    from drifa_edge.runtimes.base import runtime_names

    use_threads(threads)
    console = Console()
    fmt = "json" if as_json else resolve_format(fmt, console)
    as_json = fmt == "json"
    require_folder(out)
    for option, value in (("--precision", precision), ("--ref-precision", ref_precision)):
        require_choice(option, value, PRECISIONS)
    for option, value in (("--runtime", runtime), ("--ref-runtime", ref_runtime)):
        require_choice(option, value, ("auto", *runtime_names()))
    cfg = CheckConfig(
        reference,
        candidate,
        tuple(data),
        policy=load_policy(policy),
        samples=samples,
        seed=seed,
        out=out,
        ref_runtime=ref_runtime,
        cand_runtime=runtime,
        cand_precision=precision,
        ref_precision=ref_precision,
        recalibrate=recalibrate,
        limit=limit,
        device=device,
        ref_device=ref_device,
        write_candidate_card=write_card,
        adaptive=A.adaptive_config(adaptive, min_samples, block, error_rate, stop_rule, se_tolerance),
    )
    with Progress(f"drift check of {candidate} against {reference}"):
        report = check_drift(cfg)
    if write_card:
        _record_build(cfg, report)
    if as_json:
        from drifa_edge.drift.report import report_json

        print(report_json(report))
    else:
        print_report(report, console, fmt)
        if out is not None:
            console.print(f"report written to {plain(out)}/report.md", highlight=False)
    if not report.passed:
        failed = ", ".join(f"{c.task}: {c.name}" for c in report.failures)
        raise DriftExceededError(f"the candidate drifts beyond policy '{report.policy.name}' ({failed})")
    if not as_json:
        Console().print("[bold green]PASS[/]: the candidate is within the policy")
