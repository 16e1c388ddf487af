"""`drifa-edge export`: ONNX with MC dropout kept, OpenVINO IR, then INT8 / TensorRT builds.

Each step ends with its checks (a table on stderr); a failed check exits 7 (ParityError)
after writing ``checks.json``. The full summary is written to ``OUT/export-summary.json``
and printed only with ``--json``. ``--int8`` calls :func:`drifa_edge.quantize.quantize_int8`
and ``--trt`` :func:`drifa_edge.export.tensorrt.export_tensorrt` on the export folder; on an
``--out`` that holds no FP32 export yet they make it first.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.cli.app import THREADS_HELP, app
from drifa_edge.cli.progress import Progress
from drifa_edge.cli.text import plain, require_folder
from drifa_edge.errors import ConfigError

# the long summary (every file with its hash, every check, the INT8 settings) goes here, not
# on the screen, where it would push the checks table away; --json prints it for scripts
SUMMARY_FILE = "export-summary.json"


def _int8_overrides(values: list[str] | None) -> dict:
    """``--int8-set KEY=VALUE`` pairs as QuantizeConfig fields (values read as JSON: 0.5, true, 30;
    anything else is a string)."""
    out: dict = {}
    for item in values or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--int8-set takes KEY=VALUE (e.g. bias_correction=fast), got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw  # a bare word: a string
        out[key.strip().replace("-", "_")] = value
    return out


def _tensorrt(
    out: Path,
    target: str,
    fp16: bool,
    int8: bool,
    calib: list[str] | None,
    subset: int,
    qdq_backend: str = "auto",
    prepare_only: bool = False,
    trt_major: int | None = None,
) -> dict:
    """TensorRT per ensemble member: prepare the graphs (CPU) and, unless --prepare-only, build."""
    from drifa_edge.artifact.card import read_card
    from drifa_edge.artifact.ensemble import resolve_members
    from drifa_edge.export import tensorrt as trt
    from drifa_edge.export import tensorrt_prepare as prepare
    from drifa_edge.quantize.tensorrt_qdq import QDQConfig

    qdq = QDQConfig(backend=qdq_backend)
    precision = "int8" if int8 else ("fp16" if fp16 else None)  # None: the target's default
    summary = {}
    for member in resolve_members(out):
        images = None
        if precision == "int8" and calib:
            from drifa_edge.quantize.calibration_set import load_calibration_set

            card = read_card(member, verify=False)
            images = load_calibration_set(calib, card, subset, seed=0).images
        name = str(member.relative_to(out))
        if prepare_only:
            summary[name] = prepare.prepare_graphs(
                member, target, precision, trt_major, images, subset, qdq=qdq
            )
        else:
            summary[name] = trt.export_tensorrt(member, target, precision, images, subset, qdq=qdq)
    return summary


def _has_export(out: Path) -> bool:
    from drifa_edge.artifact.card import CARD_FILE
    from drifa_edge.artifact.ensemble import ENSEMBLE_FILE

    return (out / CARD_FILE).is_file() or (out / ENSEMBLE_FILE).is_file()


def _clear_previous_export(out: Path) -> None:
    """--overwrite: remove what an earlier export wrote (only the names drifa-edge uses)."""
    import shutil

    from drifa_edge.artifact import layout
    from drifa_edge.artifact.card import CARD_FILE
    from drifa_edge.artifact.ensemble import ENSEMBLE_FILE, resolve_members

    for member in resolve_members(out):
        for path in member.iterdir():
            built = path.is_dir() and path.name.split("-")[0] in ("onnx", "openvino", "tensorrt")
            if built:
                shutil.rmtree(path)
            elif path.name in (CARD_FILE, layout.CHECKS_FILE):
                path.unlink()
    (out / ENSEMBLE_FILE).unlink(missing_ok=True)


def print_checks(checks: dict[str, list[dict]], console: Console) -> None:
    table = Table(title="export checks")
    for col in ("member", "runtime", "check", "value", "limit", "verdict"):
        table.add_column(col)
    for member, results in checks.items():
        for r in results:
            verdict = "[green]pass[/]" if r["passed"] else "[bold red]FAIL[/]"
            table.add_row(
                plain(member),
                plain(r["runtime"]),
                plain(r["name"]),
                f"{r['value']:.3g}",
                f"{r['limit']:.3g}",
                verdict,
            )
    console.print(table)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="checkpoint folder from 'drifa-edge train' (or an ensemble)"),
    out: Path = typer.Option(..., "--out", help="export folder"),
    onnx: bool = typer.Option(False, "--onnx", help="export ONNX (prefix + MC suffix graphs)"),
    openvino: bool = typer.Option(False, "--openvino", help="also convert to OpenVINO IR (implies --onnx)"),
    opset: int | None = typer.Option(None, "--opset", help="ONNX opset (default 17, dynamo 18)"),
    exporter: str = typer.Option("torchscript", "--exporter", help="torchscript (fast) or dynamo"),
    check: bool = typer.Option(True, "--check/--no-check", help="parity and MC checks against PyTorch"),
    samples: int = typer.Option(256, "--check-samples", help="MC samples of the consistency check (>= 200)"),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="replace the export in --out (removes its onnx*/openvino*/tensorrt-* builds)",
    ),
    int8: bool = typer.Option(False, "--int8", help="INT8 build (NNCF) from calibration data"),
    calib: list[str] = typer.Option(
        None, "--calib", help="calibration data, NAME=PATH per task or 'synthetic'"
    ),
    subset: int = typer.Option(300, "--subset", help="calibration cases"),
    int8_backend: str = typer.Option(
        "openvino", "--int8-backend", help="openvino (NNCF, needs --openvino), onnx (ONNX Runtime) or both"
    ),
    int8_scope: str = typer.Option(
        None,
        "--int8-scope",
        help="what INT8 quantizes: all (OpenVINO default), conv-matmul, attention-fp32 (ONNX default)",
    ),
    max_drop: float = typer.Option(
        None,
        "--max-drop",
        help="accuracy control (NNCF, OpenVINO): revert the most harmful layers to float until the "
        "MC-mean accuracy on the --calib data's val split drops at most this much (0.01 = one point)",
    ),
    int8_set: list[str] = typer.Option(
        None,
        "--int8-set",
        help="any other INT8 setting as KEY=VALUE (repeatable): bias_correction=fast|full|none, "
        "range_estimator=minmax|mean-minmax, quantize_prefix=true, masks_on_during_calibration=false, "
        "per_channel=false, preset=mixed, rows_per_case=30, seed=0, split=train",
    ),
    trt: bool = typer.Option(False, "--trt", help="TensorRT engines for --target (needs an NVIDIA GPU)"),
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT FP16 build"),
    target: str = typer.Option("desktop-cuda", "--target", help="target profile in export/ (TensorRT)"),
    qdq_backend: str = typer.Option(
        "auto",
        "--qdq-backend",
        help="TensorRT INT8 Q/DQ writer: auto (ModelOpt if installed), modelopt or drifa",
    ),
    prepare_only: bool = typer.Option(
        False,
        "--prepare-only",
        help="TensorRT: only write the graphs the build needs (Q/DQ, FP16; CPU, no TensorRT); "
        "build later on the target with --trt",
    ),
    trt_major: int = typer.Option(
        None, "--trt-major", help="with --prepare-only: TensorRT major of the target (10 Jetson, 11 desktop)"
    ),
    force: bool = typer.Option(
        False, "--force", help="export even if the model card flags a task at chance (not for clinical use)"
    ),
    threads: int = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    as_json: bool = typer.Option(
        False,
        "--json",
        help=f"print the summary as JSON on stdout (it is always written to OUT/{SUMMARY_FILE})",
    ),
) -> None:
    """Export a checkpoint: ONNX keeping MC dropout, OpenVINO IR, INT8, TensorRT; each build is checked."""
    from drifa_edge.artifact.card import CARD_FILE
    from drifa_edge.export import export_all
    from drifa_edge.export.checks import CheckConfig
    from drifa_edge.quantize import INT8_BACKENDS, quantize_int8
    from drifa_edge.runtimes.threads import use_threads

    use_threads(threads)

    console = Console(stderr=True)
    onnx = onnx or openvino
    if (int8_scope or max_drop is not None or int8_set) and not int8:
        raise ConfigError("--int8-scope, --max-drop and --int8-set only apply with --int8")
    if not (onnx or int8 or trt):
        raise ConfigError("nothing to do: choose --onnx, --openvino, --int8 and/or --trt")
    if int8_backend not in INT8_BACKENDS:
        raise ConfigError(f"--int8-backend must be openvino, onnx or both, got {int8_backend!r}")
    if (prepare_only or trt_major is not None or qdq_backend != "auto") and not trt:
        raise ConfigError("--prepare-only, --trt-major and --qdq-backend only apply with --trt")
    if trt_major is not None and not prepare_only:
        raise ConfigError(
            "--trt-major only applies with --prepare-only (a build uses the installed TensorRT)"
        )
    if int8 and not calib:
        raise ConfigError(
            "--int8 needs calibration data: --calib NAME=PATH (once per task) or --calib synthetic"
        )
    require_folder(out)
    if (int8 or trt) and not onnx and not _has_export(out):
        # a fresh --out: the INT8 / TensorRT builds start from the FP32 graphs, so make them first
        onnx, openvino = True, int8 and int8_backend in ("openvino", "both")
        console.print(
            f"{plain(out)} holds no FP32 export yet: exporting it first (as --onnx"
            + (" --openvino" if openvino else "")
            + " would)",
            highlight=False,
            soft_wrap=True,
        )
    if onnx and not overwrite and ((out / CARD_FILE).exists() or (out / "ensemble.json").exists()):
        raise ConfigError(f"{out} already holds an export; choose another --out or pass --overwrite")
    summary: dict = {"out": str(out)}
    if onnx and overwrite and out.is_dir():
        _clear_previous_export(out)
    # stdout carries only the JSON summary: converters', NNCF's and ONNX Runtime's progress
    # output goes to stderr, so `drifa-edge export ... > summary.json` stays valid JSON
    with contextlib.redirect_stdout(sys.stderr), Progress(f"exporting {checkpoint} to {out}", console):
        if onnx:
            result = export_all(
                checkpoint,
                out,
                openvino=openvino,
                check=check,
                opset=opset,
                exporter=exporter,
                check_config=CheckConfig(samples=samples),
                force=force,
            )
            print_checks(result.checks, console)
            summary["files"] = result.files
            summary["checks"] = result.checks
        if int8:
            summary["int8"] = quantize_int8(
                out, calib, int8_backend, subset=subset, scope=int8_scope, max_drop=max_drop,
                overrides=_int8_overrides(int8_set),
            )  # fmt: skip
        if trt:
            summary["tensorrt"] = _tensorrt(
                out, target, fp16, int8, calib, subset, qdq_backend, prepare_only, trt_major
            )
    text = json.dumps(summary, indent=2, default=str)
    path = out / SUMMARY_FILE
    atomic_write(path, text + "\n")
    if as_json:
        print(text)
    else:
        Console().print(
            f"export summary (files, checks, INT8 settings) written to {plain(path)}",
            highlight=False,
            soft_wrap=True,
        )
