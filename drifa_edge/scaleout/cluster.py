"""Connecting to Ray: import it with a clear message, start or join a cluster."""

from __future__ import annotations

import logging
import os
from typing import Any

from drifa_edge.errors import ConfigError, missing_dependency
from drifa_edge.scaleout.config import ClusterConfig

log = logging.getLogger(__name__)


def import_ray() -> Any:
    """The ``ray`` module, or MissingDependencyError naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra (pyarrow, pandas)
    except ImportError as e:
        raise missing_dependency("ray[data,serve]", "ray") from e
    return ray


def connect(cfg: ClusterConfig | None = None) -> bool:
    """Make sure this process is connected to Ray; True when this call started the
    connection (the caller then shuts it down with ``ray.shutdown()``)."""
    ray = import_ray()
    cfg = cfg or ClusterConfig()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if cfg.address is not None:
        kwargs["address"] = cfg.address
    else:
        # Workers started here inherit this process's environment (PYTHONPATH too), so they
        # import the same drifa_edge; on a cluster every node needs drifa-edge[ray] installed.
        if cfg.num_cpus is not None:
            kwargs["num_cpus"] = cfg.num_cpus
        if cfg.object_store_mb is not None:
            kwargs["object_store_memory"] = cfg.object_store_mb * 2**20
        if cfg.temp_dir is not None:
            os.makedirs(cfg.temp_dir, exist_ok=True)
            kwargs["_temp_dir"] = str(cfg.temp_dir)
        kwargs["include_dashboard"] = False
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise ConfigError(
            f"could not reach a Ray cluster at {cfg.address!r} ({e}); start one with 'ray start --head' "
            "or leave the address out to run a local Ray"
        ) from e
    log.info("connected to Ray: %s", ray.cluster_resources())
    return True


def worker_identity() -> dict[str, Any]:
    """Which process handled a case: pid, host, Ray node and actor ids (None outside an actor)."""
    import socket

    import ray

    ctx = ray.get_runtime_context()
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "node_id": ctx.get_node_id(),
        "actor_id": ctx.get_actor_id(),
    }
