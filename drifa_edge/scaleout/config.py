"""What a user chooses when running drifa-edge on Ray: where the cluster is, how the
batch pipeline is laid out over it, and how the online deployment scales.

Frozen and validated on construction, like every stage config of the package;
no Ray import here, so a config can be built and checked without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from drifa_edge.errors import ConfigError

MIN_OBJECT_STORE_MB = 80  # Ray refuses less than 75 MiB


@dataclass(frozen=True)
class ClusterConfig:
    """Which Ray cluster to use.

    ``address`` None starts a Ray instance inside this process's machine (``ray.init``
    with ``num_cpus``, an object store of ``object_store_mb`` MiB and its session files
    under ``temp_dir``; containers have a small ``/dev/shm``, so keep the store small
    or point ``temp_dir`` at a disk). ``"auto"`` joins the cluster started on this
    machine with ``ray start``; ``"ray://host:10001"`` connects through Ray Client.
    An already connected Ray (``ray.is_initialized()``) is used as it is.
    """

    address: str | None = None
    num_cpus: int | None = None
    object_store_mb: int | None = None
    temp_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.num_cpus is not None and self.num_cpus < 1:
            raise ConfigError(f"num_cpus must be >= 1, got {self.num_cpus}")
        if self.object_store_mb is not None and self.object_store_mb < MIN_OBJECT_STORE_MB:
            raise ConfigError(
                f"object_store_mb must be >= {MIN_OBJECT_STORE_MB} (Ray's minimum), got {self.object_store_mb}"
            )
        if self.address is not None and (self.num_cpus or self.object_store_mb or self.temp_dir):
            raise ConfigError(
                f"address {self.address!r} joins an existing cluster, whose CPUs, object store and "
                "temp folder were set by 'ray start'; drop num_cpus/object_store_mb/temp_dir or the address"
            )


@dataclass(frozen=True)
class BatchConfig:
    """Layout of the Ray Data scoring pipeline.

    Decoding runs as Ray tasks of ``decode_cpus`` CPUs each over blocks of
    ``decode_block`` cases; the MC engine runs in ``actors`` actors, each holding
    the runtime open and reserving ``cpus_per_actor`` CPUs and ``gpus_per_actor``
    GPUs, fed ``batch_size`` cases per call. Fractions let decode tasks share the
    CPUs the actors reserve (a 2-core machine: 2 actors x 0.75 + decode 0.25).
    Work starts once every actor is up (so all of them get a share), at most
    ``actor_start_timeout_s`` later: a cluster without the resources asked for fails then.
    """

    actors: int = 1
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    decode_cpus: float = 0.5
    decode_block: int = 16
    batch_size: int = 8
    blocks_in_flight: int = 2  # batches queued per actor (1: spread evenly, more: hide latency)
    actor_start_timeout_s: int = 600  # every actor up before work starts; else a clear error

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ConfigError(f"actors must be >= 1, got {self.actors}")
        if not self.cpus_per_actor > 0 and not self.gpus_per_actor > 0:
            raise ConfigError(
                f"an actor needs CPUs or GPUs: cpus_per_actor={self.cpus_per_actor}, "
                f"gpus_per_actor={self.gpus_per_actor}"
            )
        if self.cpus_per_actor < 0 or self.gpus_per_actor < 0:
            raise ConfigError("cpus_per_actor and gpus_per_actor must be >= 0")
        if not self.decode_cpus > 0:
            raise ConfigError(f"decode_cpus must be > 0, got {self.decode_cpus}")
        if self.actor_start_timeout_s < 1:
            raise ConfigError(f"actor_start_timeout_s must be >= 1, got {self.actor_start_timeout_s}")
        if self.blocks_in_flight < 1:
            raise ConfigError(f"blocks_in_flight must be >= 1, got {self.blocks_in_flight}")
        if self.decode_block < 1 or self.batch_size < 1:
            raise ConfigError(
                f"decode_block and batch_size must be >= 1, got {self.decode_block} and {self.batch_size}"
            )


@dataclass(frozen=True)
class ServeConfig:
    """The online deployment: replicas (fixed or autoscaled) and dynamic batching.

    With ``max_replicas`` set, Ray Serve autoscales between ``min_replicas`` and
    ``max_replicas`` aiming at ``target_ongoing_requests`` per replica; otherwise
    it keeps ``replicas`` running. ``max_batch_size`` requests (cases) waiting at
    most ``batch_wait_s`` seconds are run as one engine call. A replica whose
    engine call has not returned after ``stuck_after_s`` seconds fails its health
    check and Serve replaces it.
    """

    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing_requests: float = 4.0
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0
    max_batch_size: int = 8
    batch_wait_s: float = 0.02
    stuck_after_s: float = 120.0
    health_check_period_s: float = 10.0
    max_upload_mb: float = 64.0
    host: str = "127.0.0.1"
    port: int = 8000
    route_prefix: str = "/"

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {self.replicas}")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ConfigError("autoscaling needs both min_replicas and max_replicas (or neither)")
        if self.max_replicas is not None and not 0 <= self.min_replicas <= self.max_replicas >= 1:
            raise ConfigError(
                f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                f"got {self.min_replicas} and {self.max_replicas}"
            )
        if self.max_batch_size < 1 or not self.batch_wait_s >= 0:
            raise ConfigError(
                f"max_batch_size must be >= 1 and batch_wait_s >= 0, got {self.max_batch_size}, {self.batch_wait_s}"
            )
        if not self.stuck_after_s > 0 or not self.health_check_period_s > 0:
            raise ConfigError("stuck_after_s and health_check_period_s must be > 0")
        if not self.max_upload_mb > 0:
            raise ConfigError(f"max_upload_mb must be > 0, got {self.max_upload_mb}")
        if self.cpus_per_replica < 0 or self.gpus_per_replica < 0:
            raise ConfigError("cpus_per_replica and gpus_per_replica must be >= 0")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}")

    @property
    def autoscaling(self) -> dict | None:
        """Ray Serve's ``autoscaling_config``, or None for a fixed replica count."""
        if self.max_replicas is None:
            return None
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
        }


def load_serve_config(path: str | Path, **overrides) -> ServeConfig:
    """A ServeConfig from the ``[ray_serve]`` table of a TOML file (unknown keys refused),
    with ``overrides`` (not None) on top; see ``ray_serve.example.toml`` beside this module."""
    import dataclasses

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from drifa_edge.errors import suggest

    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("ray_serve", {})
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a readable TOML file ({e})") from e
    known = [f.name for f in dataclasses.fields(ServeConfig)]
    for key in table:
        if key not in known:
            raise ConfigError(
                f"{path}: unknown key {key!r} in [ray_serve]; known: {known}" + suggest(key, known)
            )
    table.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return ServeConfig(**table)
    except TypeError as e:
        raise ConfigError(f"{path}: {e}") from e
