"""`drifa-edge predict`: MC-dropout predictions with uncertainty for one case or a manifest."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from drifa_edge.cli import adaptive_options as A
from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.cases import DICOM_HELP, ROUTES_HELP
from drifa_edge.cli.progress import Progress
from drifa_edge.cli.tables import print_table, resolve_format
from drifa_edge.cli.text import plain, require_file

_SHOWN = 20  # rows of the summary table; the file has everything


@app.command()
def predict(
    artifact: Path = typer.Argument(..., help="checkpoint folder, export folder or ensemble folder"),
    inputs: list[str] = typer.Option(
        [], "--input", "-i", help="TASK=PATH for one case, once per task (e.g. --input derm=a.jpg)"
    ),
    manifest: Path = typer.Option(
        None, "--manifest", "-m", help="CSV with case_id and one path column per task (relative to the CSV)"
    ),
    dicom: Path = typer.Option(None, "--dicom", help=DICOM_HELP + " (instead of --manifest)"),
    routes: Path = typer.Option(None, "--routes", help=ROUTES_HELP),
    out: Path = typer.Option(None, "--out", "-o", help="output file (default: JSON Lines on stdout)"),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl | csv (csv keeps a .jsonl journal beside it)"),
    samples: int = typer.Option(30, "--samples", "-T", help="MC samples per ensemble member"),
    seed: int = typer.Option(0, help="seed of the MC masks (torch; exported graphs are not seedable)"),
    runtime: str = typer.Option("auto", help="auto | torch | onnxruntime | openvino | tensorrt"),
    precision: str = typer.Option(
        "fp32",
        help="fp32 | bf16 | fp16 | int8 (the artifact must have it) | auto (the fastest build that passed "
        "the drift gate on this kind of CPU, as recorded in the model card by 'check --write-card')",
    ),
    device: str = typer.Option(None, help="runtime device, e.g. cpu, cuda:0, GPU, NPU"),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    streams: int = typer.Option(
        None,
        help="parallel requests a suffix call is split over (OpenVINO CPU; default one per thread, at most 4); "
        "each holds its own compiled suffix: 1 is the leanest in memory",
    ),
    cache_dir: str = typer.Option(
        "auto",
        "--cache-dir",
        help="OpenVINO model cache folder, so later starts skip compiling: auto (per user, "
        "~/.cache/drifa-edge/ov or $DRIFA_EDGE_CACHE_DIR) | DIR | none",
    ),
    max_rows: int = typer.Option(
        32, help="most suffix rows per runtime call (activation memory), cut at whole cases: T=30 -> 30"
    ),
    memory_mb: float = typer.Option(None, help="memory budget of one runtime call; lowers --max-rows"),
    batch_size: int = typer.Option(8, help="cases per engine call"),
    resume: bool = typer.Option(False, "--resume", help="continue --out: skip cases already written"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing --out"),
    convert_channels: bool = typer.Option(
        False, "--convert-channels", help="accept gray files for RGB tasks and vice versa (converted)"
    ),
    case_id: str = typer.Option(None, help="case id of the --input case (default: the first file's name)"),
    input_quality: str = typer.Option(
        "refer",
        "--input-quality",
        help="a case whose image fails the input-quality check (too small, extreme aspect ratio, "
        "near-constant, saturated): refer (predict, refer = true, reason input_quality) | refuse (error line)",
    ),
    adaptive: bool = A.ADAPTIVE,
    min_samples: int = A.MIN_SAMPLES,
    block: int = A.BLOCK,
    error_rate: float = A.ERROR_RATE,
    stop_rule: str = A.STOP_RULE,
    se_tolerance: float = A.SE_TOLERANCE,
) -> None:
    """Predict every case with MC dropout: probabilities, uncertainty and a referral flag per task.

    Exit code 0 when every case succeeded, 9 when some failed (their lines say why).
    """
    from drifa_edge.artifact.card import read_card
    from drifa_edge.artifact.ensemble import resolve_members
    from drifa_edge.cli.cases import dicom_cases, exit_for_unresolved
    from drifa_edge.errors import ConfigError
    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.inference.manifest import parse_inputs, read_manifest
    from drifa_edge.inference.predict import predict_cases
    from drifa_edge.runtimes.base import RuntimeOptions
    from drifa_edge.runtimes.choice import AUTO, choose_for_artifact
    from drifa_edge.runtimes.model_cache import resolve_cache_dir

    if sum((bool(inputs), manifest is not None, dicom is not None)) != 1:
        raise ConfigError(
            "give one of --input TASK=PATH (one case), --manifest cases.csv or --dicom FOLDER --routes "
            "serve.toml"
        )
    require_file(out)
    # options first: a typo such as --precision int4 is a bad option (exit 2) before any file is read
    cache = resolve_cache_dir(cache_dir)
    options = RuntimeOptions(
        precision="fp32" if precision == AUTO else precision,  # auto: chosen below, from the card
        device=device,
        threads=threads,
        streams=streams,
        extra={"cache_dir": str(cache)} if cache else {},
    )
    engine_cfg = EngineConfig(
        samples=samples,
        seed=seed,
        max_rows=max_rows,
        memory_mb=memory_mb,
        adaptive=A.adaptive_config(adaptive, min_samples, block, error_rate, stop_rule, se_tolerance),
    )
    tasks = read_card(resolve_members(artifact)[0], verify=False).task_names
    err = Console(stderr=True)
    if precision == AUTO:
        choice = choose_for_artifact(artifact, runtime)
        runtime, options = choice.runtime, dataclasses.replace(options, precision=choice.precision)
        err.print(f"--precision auto: {plain(choice.reason)}", highlight=False)
    index = None
    if dicom is not None:
        cases, index = dicom_cases(dicom, routes, tasks, err)
    elif manifest is not None:
        cases = read_manifest(manifest, tasks)
    else:
        cases = [parse_inputs(inputs, tasks, case_id)]
    done = [0]
    with Progress(f"predicting {len(cases)} case(s)", err) as shown:

        def progress(record: dict) -> None:
            done[0] += 1
            shown.update(f"predicting: {done[0]} of {len(cases)} cases written")

        summary = predict_cases(
            artifact,
            cases,
            out,
            runtime=runtime,
            options=options,
            engine_cfg=engine_cfg,
            resume=resume,
            fmt=fmt,
            batch_size=batch_size,
            allow_channel_conversion=convert_channels,
            force=force,
            on_record=progress,
            quality_action=input_quality,
        )
    # with JSON on stdout the table goes to stderr, so stdout stays parseable
    print_summary(summary, err if out is None else Console())
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)
    exit_for_unresolved(index)


def print_summary(summary, console: Console) -> None:
    table = Table(
        title=plain(
            f"{summary.runtime} {summary.precision} on {summary.device}, T={summary.samples}, "
            f"{summary.ensemble_size} member(s), model {summary.model_sha256[:12]}"
        )
    )
    for col in ("case", "task", "predicted", "confidence", "MI", "refer"):
        table.add_column(col, justify="right" if col in ("confidence", "MI") else "left")
    for record in summary.preview[:_SHOWN]:
        if record["status"] != "ok":
            table.add_row(plain(record["case_id"]), "", "[red]error[/]", "", "", "", end_section=True)
            continue
        items = list(record["tasks"].items())
        for j, (task, r) in enumerate(items):
            refer = {True: "[yellow]yes[/]", False: "no", None: "-"}[r["refer"]]
            reason = (r.get("referral") or {}).get("reason")
            if r["refer"] and reason == "input_quality":
                refer = "[yellow]yes (input_quality)[/]"
            table.add_row(
                plain(record["case_id"]) if j == 0 else "",
                plain(task),
                plain(r["predicted"]),
                f"{r['confidence']:.3f}",
                f"{r['mutual_information']:.4f}",
                refer,
                end_section=j == len(items) - 1,
            )
    # off a terminal (a log, a pipe) plain lines: no number split over lines
    print_table(table, resolve_format("auto", console), console)
    shown = min(len(summary.preview), _SHOWN)
    written = summary.ok + summary.failed
    if written > shown:
        console.print(f"... {written - shown} more case(s) in {plain(summary.out_path)}", highlight=False)
    console.print(
        f"{summary.ok} ok, {summary.failed} failed"
        + (f", {summary.quality_referred} referred for input quality" if summary.quality_referred else "")
        + (f", {summary.skipped} already done (resumed)" if summary.skipped else "")
        + (f"; written to {plain(summary.csv_path or summary.out_path)}" if summary.out_path else ""),
        highlight=False,
    )
    for case_id, message in summary.errors[:_SHOWN]:
        # one line per failed case in a log (a path is never split), wrapped on a terminal
        console.print(
            f"[red]{plain(case_id)}[/]: {plain(message)}", highlight=False, soft_wrap=not console.is_terminal
        )
