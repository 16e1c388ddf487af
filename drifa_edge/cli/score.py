"""`drifa-edge score`: `predict` over a manifest, spread over a Ray cluster (Ray Data)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from drifa_edge.cli.app import app
from drifa_edge.cli.cases import DICOM_HELP, ROUTES_HELP
from drifa_edge.cli.progress import Progress


@app.command()
def score(
    artifact: Path = typer.Argument(..., help="checkpoint folder, export folder or ensemble folder"),
    manifest: Path = typer.Option(
        None, "--manifest", "-m", help="CSV with case_id and one path column per task"
    ),
    dicom: Path = typer.Option(None, "--dicom", help=DICOM_HELP + " (instead of --manifest)"),
    routes: Path = typer.Option(None, "--routes", help=ROUTES_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="output JSON Lines file (e.g. preds.jsonl)"),
    address: str = typer.Option(
        None,
        "--ray",
        help="Ray cluster: auto (the one 'ray start' made here), HOST:6379 or ray://HOST:10001; "
        "default: start a local Ray on this machine",
    ),  # fmt: skip
    actors: int = typer.Option(1, help="inference actors (each opens the runtime once)"),
    cpus_per_actor: float = typer.Option(1.0, help="CPUs reserved per actor (fractions allowed)"),
    gpus_per_actor: float = typer.Option(0.0, help="GPUs reserved per actor (fractions allowed)"),
    decode_cpus: float = typer.Option(0.5, help="CPUs reserved per decode task"),
    decode_block: int = typer.Option(16, help="cases per decode task"),
    batch_size: int = typer.Option(8, help="cases per engine call"),
    blocks_in_flight: int = typer.Option(
        2, help="batches queued per actor (1 spreads them evenly; Ray prefers the actor beside the data)"
    ),
    parquet: Path = typer.Option(
        None, "--parquet", help="also write a Parquet file (flat columns, one row a case)"
    ),
    samples: int = typer.Option(30, "--samples", "-T", help="MC samples per ensemble member"),
    seed: int = typer.Option(0, help="seed of the MC masks (torch; exported graphs are not seedable)"),
    runtime: str = typer.Option("auto", help="auto | torch | onnxruntime | openvino | tensorrt"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16 | int8 (the artifact must have it)"),
    device: str = typer.Option(None, help="runtime device inside each actor, e.g. cpu, cuda:0, GPU"),
    threads: int = typer.Option(None, help="runtime threads per actor (default: its whole CPUs)"),
    max_rows: int = typer.Option(32, help="suffix rows per runtime call (bounds memory)"),
    resume: bool = typer.Option(False, "--resume", help="continue --out: skip cases already written"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing --out"),
    convert_channels: bool = typer.Option(
        False, "--convert-channels", help="accept gray for RGB and vice versa"
    ),
    num_cpus: int = typer.Option(None, help="local Ray only: CPUs it may use (default: all)"),
    object_store_mb: int = typer.Option(None, help="local Ray only: object store size in MiB"),
    temp_dir: Path = typer.Option(None, help="local Ray only: session folder (default /tmp/ray)"),
) -> None:
    """Predict every case of a manifest (or a DICOM archive folder) on Ray: decoding in parallel
    tasks, the MC engine in an actor pool. Same records as `predict`, plus the worker that ran each case.

    Exit code 0 when every case succeeded, 9 when some failed (their lines say why).
    """
    from drifa_edge.cli.cases import dicom_cases, exit_for_unresolved
    from drifa_edge.errors import ConfigError
    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.inference.manifest import read_manifest
    from drifa_edge.runtimes.base import RuntimeOptions
    from drifa_edge.scaleout.adapter import model_card
    from drifa_edge.scaleout.batch import score_cases
    from drifa_edge.scaleout.config import BatchConfig, ClusterConfig
    from drifa_edge.scaleout.uris import manifest_uris

    if (manifest is None) == (dicom is None):
        raise ConfigError(
            "give either --manifest cases.csv or --dicom FOLDER --routes serve.toml, not both or none"
        )
    cluster = ClusterConfig(address, num_cpus, object_store_mb, temp_dir)
    batch = BatchConfig(
        actors, cpus_per_actor, gpus_per_actor, decode_cpus, decode_block, batch_size, blocks_in_flight
    )
    tasks = model_card(artifact).task_names
    err = Console(stderr=True)
    index = None
    if dicom is not None:
        cases, index = dicom_cases(dicom, routes, tasks, err)
        uris = {}
    else:
        cases = read_manifest(manifest, tasks)
        uris = manifest_uris(manifest, tasks)  # s3://, gs://, file://... cells, read through pyarrow.fs
    with Progress(f"scoring {len(cases)} case(s) on Ray with {actors} actor(s)", err):
        summary = score_cases(
            artifact,
            cases,
            out,
            runtime=runtime,
            options=RuntimeOptions(precision=precision, device=device, threads=threads),
            engine_cfg=EngineConfig(samples=samples, seed=seed, max_rows=max_rows),
            batch=batch,
            cluster=cluster,
            resume=resume,
            force=force,
            parquet_path=parquet,
            allow_channel_conversion=convert_channels,
            uris=uris,
        )
    console = Console()
    console.print(
        f"{summary.ok} ok, {summary.failed} failed"
        + (f", {summary.skipped} already done (resumed)" if summary.skipped else "")
        + (f", {summary.duplicates} duplicate(s) dropped" if summary.duplicates else "")
        + f"; written to {summary.out_path}"
        + (f" and {summary.parquet_path}" if summary.parquet_path else ""),
        highlight=False,
        markup=False,
    )
    for worker, n in sorted(summary.workers.items()):
        console.print(f"worker {worker}: {n} case(s)", highlight=False, markup=False)
    for case_id, message in summary.errors[:20]:
        err.print(f"{case_id}: {message}", highlight=False, markup=False)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)
    exit_for_unresolved(index)


@app.command("serve-ray")
def serve_ray(
    artifact: Path = typer.Argument(..., help="checkpoint folder, export folder or ensemble folder"),
    config: Path = typer.Option(None, "--config", "-c", help="TOML file with a [ray_serve] table"),
    address: str = typer.Option(None, "--ray", help="Ray cluster address (default: start a local Ray)"),
    replicas: int = typer.Option(None, help="replicas (overrides the config)"),
    host: str = typer.Option(None, help="HTTP host (overrides the config; default 127.0.0.1)"),
    port: int = typer.Option(None, help="HTTP port (overrides the config; default 8000)"),
    samples: int = typer.Option(30, "--samples", "-T", help="MC samples per ensemble member"),
    seed: int = typer.Option(0, help="seed of the MC masks (torch; exported graphs are not seedable)"),
    runtime: str = typer.Option("auto", help="auto | torch | onnxruntime | openvino | tensorrt"),
    precision: str = typer.Option("fp32", help="fp32 | bf16 | fp16 | int8 (the artifact must have it)"),
    device: str = typer.Option(None, help="runtime device inside each replica"),
    threads: int = typer.Option(None, help="runtime threads per replica (default: its whole CPUs)"),
) -> None:
    """Serve the HTTP case API (POST /v1/cases) from Ray Serve replicas until Ctrl-C or SIGTERM."""
    import signal
    import time

    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.runtimes.base import RuntimeOptions
    from drifa_edge.scaleout.config import ClusterConfig, ServeConfig, load_serve_config
    from drifa_edge.scaleout.serve import deploy

    overrides = {"replicas": replicas, "host": host, "port": port}
    cfg = (
        load_serve_config(config, **overrides)
        if config
        else ServeConfig(**{k: v for k, v in overrides.items() if v is not None})
    )
    deploy(
        artifact,
        runtime=runtime,
        options=RuntimeOptions(precision=precision, device=device, threads=threads),
        engine_cfg=EngineConfig(samples=samples, seed=seed),
        cfg=cfg,
        cluster=ClusterConfig(address),
    )
    Console().print(
        f"serving POST http://{cfg.host}:{cfg.port}/v1/cases; Ctrl-C or SIGTERM stops",
        highlight=False,
        markup=False,
    )

    def stop(signum, frame) -> None:
        raise KeyboardInterrupt  # one clean shutdown path for Ctrl-C and a service manager's SIGTERM

    signal.signal(signal.SIGTERM, stop)  # replaces Ray's driver handler, which exits without serve.shutdown
    signal.signal(signal.SIGINT, stop)  # also when started in the background, where SIGINT is ignored
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
        Console(stderr=True).print("stopped", highlight=False, markup=False)
