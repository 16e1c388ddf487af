"""`drifa-edge serve` (the service) and `drifa-edge serve-ctl` (look at and act on its store)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from drifa_edge.cli.app import THREADS_HELP, app

ctl = typer.Typer(help="Inspect and act on a running or stopped service's store.", no_args_is_help=True)
app.add_typer(ctl, name="serve-ctl")


@app.command()
def serve(
    artifact: Path = typer.Argument(..., help="checkpoint, export or ensemble folder"),
    config: Path = typer.Option(None, "--config", "-c", help="serve.toml (default: every setting's default)"),
    root: Path = typer.Option(None, "--root", help="override [storage] root"),
    threads: int = typer.Option(
        None, "--threads", min=1, help=THREADS_HELP + "; overrides [inference] threads"
    ),
) -> None:
    """Run the scanner-side service: DICOM receiver, watch folder, HTTP API, inference, outbox.

    Stops cleanly on SIGTERM / Ctrl-C. Print a documented config with `drifa-edge serve-ctl example-config`.
    """
    from drifa_edge.runtimes.threads import use_threads
    from drifa_edge.serve.config import load_config
    from drifa_edge.serve.service import Service

    use_threads(threads)
    cfg = load_config(config)
    if root is not None:
        cfg = cfg.with_root(root.resolve())
    # one event line at once: opening the model and its warm-up can take a while on a busy machine
    typer.echo(json.dumps({"event": "starting", "artifact": str(artifact), "root": str(cfg.root)}), err=True)
    service = Service(artifact, cfg).start()
    typer.echo(
        json.dumps(
            {
                "event": "ready",
                "dicom_port": service.dicom_port,
                "http_port": service.http_port,
                "root": str(cfg.root),
                "build_sha256": service.predictor.model_sha256,
            }  # fmt: skip
        ),
        err=True,
    )
    service.run_forever()


def _store(config: Path | None, root: Path | None):
    from drifa_edge.errors import ConfigError
    from drifa_edge.serve.config import load_config
    from drifa_edge.serve.store import Store

    cfg = load_config(config)
    if root is not None:
        cfg = cfg.with_root(root.resolve())
    path = cfg.root / "store.sqlite"
    if not path.is_file():
        raise ConfigError(f"no store at {path}; pass --config of the service or --root of its storage folder")
    return cfg, Store(path)


_CONFIG = typer.Option(None, "--config", "-c", help="the service's serve.toml")
_ROOT = typer.Option(None, "--root", help="the service's storage root (instead of --config)")


@ctl.command("example-config")
def example_config_cmd() -> None:
    """Print the documented example configuration (every setting and its default)."""
    from drifa_edge.serve.config import example_config

    typer.echo(example_config(), nl=False)


@ctl.command("list")
def list_cases(
    config: Path = _CONFIG,
    root: Path = _ROOT,
    state: list[str] = typer.Option([], "--state", help="only these states (repeatable)"),
    limit: int = typer.Option(200, help="at most this many, oldest first"),
) -> None:
    """List cases (one JSON object per line): id, state, reason, result version, source."""
    _, store = _store(config, root)
    for c in store.cases(tuple(s.upper() for s in state) or None, limit):
        typer.echo(json.dumps({"case_id": c.case_id, "state": c.state, "reason": c.reason,
                               "result_version": c.version, "source": c.source, "updated": c.updated}))  # fmt: skip


@ctl.command("outbox")
def list_outbox(config: Path = _CONFIG, root: Path = _ROOT) -> None:
    """List outbox items (one JSON object per line)."""
    from drifa_edge.serve.results_wiring import outbox_items

    cfg, store = _store(config, root)
    for item in outbox_items(cfg, store):
        typer.echo(json.dumps(item, default=str))


@ctl.command("retry")
def retry(
    case_id: list[str] = typer.Argument(None, help="case ids (default: every DEAD one)"),
    config: Path = _CONFIG,
    root: Path = _ROOT,
) -> None:
    """Send DEAD outbox items again (their case goes back to DONE)."""
    from drifa_edge.serve.results_wiring import retry_dead

    cfg, store = _store(config, root)
    n = retry_dead(cfg, store, case_id or None)
    typer.echo(json.dumps({"retried": n}))
