"""Configuration of ``drifa-edge serve``: frozen dataclasses, one per part, loaded from TOML.

Every setting has a safe default (bound to localhost, nobody allowed to send until the
allow-list names them, a disk floor, a size limit). ``example_config()`` returns the
documented example shipped with the package (``drifa-edge serve-ctl example-config``
prints it); ``load_config(path)`` reads a file, rejecting unknown keys with the close name.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from drifa_edge.errors import ConfigError, suggest
from drifa_edge.scaleout.config import ClusterConfig as RayClusterConfig
from drifa_edge.scaleout.config import ServeConfig as RayServeConfig

GROUP_BY = ("study", "series", "patient_date")
MULTI_IMAGE = ("middle", "first", "last", "refuse")
MULTI_SERIES = ("latest", "thinnest", "refuse")
LATE_INSTANCE = ("rerun", "ignore")
ROUTE_TAGS = ("modality", "body_part", "series_description", "photometric", "sop_class")


def _positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value is None or value <= 0:
            raise ConfigError(f"[{section}] {name} must be > 0, got {value!r}")


def _choice(section: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(
            f"[{section}] {name} must be one of {list(choices)}, got {value!r}" + suggest(value, choices)
        )


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class TlsConfig:
    """DICOM TLS through pynetdicom's SSL context; off unless ``cert_file`` and ``key_file`` are set."""

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None  # when set, callers must present a certificate signed by it

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file)

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("[dicom.tls] needs both cert_file and key_file (or neither)")


@dataclass(frozen=True)
class DicomConfig:
    """The C-ECHO / C-STORE SCP."""

    enabled: bool = True
    ae_title: str = "DRIFA_EDGE"
    host: str = "127.0.0.1"
    port: int = 11112
    allowed_calling_aes: tuple[str, ...] = ()  # empty: every association is refused
    max_instance_mb: float = 64.0
    tls: TlsConfig = field(default_factory=TlsConfig)

    def __post_init__(self) -> None:
        if not 1 <= len(self.ae_title) <= 16:
            raise ConfigError(f"[dicom] ae_title must be 1 to 16 characters, got {self.ae_title!r}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"[dicom] port must be 0..65535, got {self.port}")
        _positive("dicom", max_instance_mb=self.max_instance_mb)
        for ae in self.allowed_calling_aes:
            if not 1 <= len(ae) <= 16:
                raise ConfigError(f"[dicom] allowed_calling_aes: {ae!r} is not a valid AE title (1-16 chars)")


@dataclass(frozen=True)
class StorageConfig:
    """Where everything lives (see README "what is stored where") and the disk floor."""

    root: str = "drifa-serve"
    disk_floor_mb: float = 1024.0  # refuse instances when free space falls below this

    def __post_init__(self) -> None:
        _positive("storage", disk_floor_mb=self.disk_floor_mb)


@dataclass(frozen=True)
class RouteRule:
    """A series goes to ``task`` when every given tag matches (case-insensitive; regex for
    ``series_description``, exact for the others). Rules are tried in order; the first wins."""

    task: str
    modality: str | None = None
    body_part: str | None = None
    series_description: str | None = None  # a regular expression, searched
    photometric: str | None = None
    sop_class: str | None = None  # a UID

    def __post_init__(self) -> None:
        if not self.task:
            raise ConfigError("[[assembly.routes]] every rule needs a task")
        if all(getattr(self, t) is None for t in ROUTE_TAGS):
            raise ConfigError(
                f"[[assembly.routes]] rule for {self.task!r} matches nothing: give at least one of {list(ROUTE_TAGS)}"
            )
        if self.series_description is not None:
            try:
                re.compile(self.series_description)
            except re.error as e:
                raise ConfigError(
                    f"[[assembly.routes]] series_description {self.series_description!r}: {e}"
                ) from e

    def matches(self, tags: dict[str, str]) -> bool:
        """``tags``: modality, body_part, series_description, photometric, sop_class (strings)."""
        for name in ROUTE_TAGS:
            want = getattr(self, name)
            if want is None:
                continue
            have = tags.get(name) or ""
            if name == "series_description":
                if not re.search(want, have, re.IGNORECASE):
                    return False
            elif have.strip().upper() != want.strip().upper():
                return False
        return True


@dataclass(frozen=True)
class AssemblyConfig:
    """Grouping instances into cases and deciding when a case is ready."""

    group_by: str = "study"
    quiet_seconds: float = 5.0
    max_wait_seconds: float = 600.0
    multi_image: str = "middle"
    multi_series: str = "latest"
    late_instance: str = "rerun"
    routes: tuple[RouteRule, ...] = ()

    def __post_init__(self) -> None:
        _choice("assembly", "group_by", self.group_by, GROUP_BY)
        _choice("assembly", "multi_image", self.multi_image, MULTI_IMAGE)
        _choice("assembly", "multi_series", self.multi_series, MULTI_SERIES)
        _choice("assembly", "late_instance", self.late_instance, LATE_INSTANCE)
        _positive("assembly", quiet_seconds=self.quiet_seconds, max_wait_seconds=self.max_wait_seconds)
        if self.max_wait_seconds < self.quiet_seconds:
            raise ConfigError(
                f"[assembly] max_wait_seconds ({self.max_wait_seconds}) must be >= quiet_seconds ({self.quiet_seconds})"
            )


BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RayBackendConfig:
    """``[inference.ray]``: where inference runs when ``[inference] backend = "ray"``.

    ``address`` None starts a local Ray inside the service (``num_cpus``, an object store
    of ``object_store_mb`` MiB, session files under ``temp_dir``); ``"auto"`` or
    ``HOST:6379`` joins a running cluster. ``deploy`` true: the service deploys the model
    as the Ray Serve application ``app_name`` (replicas, batching, autoscaling from the
    ``[inference.ray.deployment]`` table, the same keys as ``drifa-edge serve-ray``'s
    ``[ray_serve]``; no Ray HTTP proxy is started) and deletes it at stop; false: it uses
    the application ``app_name`` already running there (``drifa-edge serve-ray``), which must
    run the same model, runtime, T and seed policy (checked at start). A request whose
    replica died is sent again up to ``attempts`` times; one without an answer after
    ``timeout_s`` seconds fails its batch (the worker marks it ``inference_error``)."""

    address: str | None = None
    deploy: bool = True
    app_name: str = "drifa-edge"
    num_cpus: int | None = None
    object_store_mb: int | None = None
    temp_dir: str | None = None
    attempts: int = 3
    timeout_s: float = 300.0
    deployment: RayServeConfig = field(default_factory=RayServeConfig)

    def __post_init__(self) -> None:
        _positive("inference.ray", attempts=self.attempts, timeout_s=self.timeout_s)
        if not self.app_name:
            raise ConfigError("[inference.ray] app_name must not be empty")
        try:
            self.cluster()  # validates address vs. the local-only settings
        except ConfigError as e:
            raise ConfigError(f"[inference.ray] {e}") from e

    def cluster(self) -> RayClusterConfig:
        return RayClusterConfig(
            self.address,
            self.num_cpus,
            self.object_store_mb,
            None if self.temp_dir is None else Path(self.temp_dir),
        )


@dataclass(frozen=True)
class InferenceConfig:
    """The worker: runtime and precision of the artifact, MC samples, micro-batching; where
    the model runs (``backend``: "local" in this process, "ray" on Ray Serve, see
    :class:`RayBackendConfig`)."""

    runtime: str = "auto"
    precision: str = "fp32"
    device: str | None = None
    threads: int | None = None
    samples: int = 30
    seed: int = 0
    batch_size: int = 4
    batch_wait_ms: float = 200.0
    cache_dir: str | None = None  # OpenVINO model cache; default <root>/ov-cache
    allow_channel_conversion: bool = False
    backend: str = "local"
    ray: RayBackendConfig = field(default_factory=RayBackendConfig)

    def __post_init__(self) -> None:
        _positive("inference", samples=self.samples, batch_size=self.batch_size)
        _choice("inference", "backend", self.backend, BACKENDS)
        if self.batch_wait_ms < 0:
            raise ConfigError(f"[inference] batch_wait_ms must be >= 0, got {self.batch_wait_ms}")


@dataclass(frozen=True)
class HttpConfig:
    """The local HTTP API. Bound elsewhere than loopback, it requires ``token`` (or ``token_file``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8470
    token: str | None = None
    token_file: str | None = None
    result_timeout_s: float = 120.0  # POST /v1/cases waits this long for the result, then answers 202

    def __post_init__(self) -> None:
        if self.token is not None and len(self.token) < 16:
            raise ConfigError(
                "[http] token must be at least 16 characters (use a random one: openssl rand -hex 32)"
            )
        if self.enabled and not is_loopback(self.host) and not (self.token or self.token_file):
            raise ConfigError(
                f"[http] host {self.host!r} is not loopback: set token or token_file "
                "(and put TLS in front with a reverse proxy, see the README)"
            )

    def bearer_token(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip() or None
            except OSError as e:
                raise ConfigError(f"[http] token_file {self.token_file}: {e}") from e
        return None


@dataclass(frozen=True)
class WatchConfig:
    """A watch folder: DICOM files, or one sub-folder per case with one file per task (``<task>.<ext>``)."""

    folder: str | None = None  # off unless set
    polling: bool = False  # for network shares, where inotify sees nothing
    poll_interval_s: float = 2.0
    rescan_s: float = 60.0

    def __post_init__(self) -> None:
        _positive("watch", poll_interval_s=self.poll_interval_s, rescan_s=self.rescan_s)


@dataclass(frozen=True)
class RetentionConfig:
    """Received images and results are deleted oldest first past either limit (never a case in flight)."""

    max_age_hours: float = 168.0
    max_gb: float = 20.0
    interval_s: float = 300.0

    def __post_init__(self) -> None:
        _positive(
            "retention", max_age_hours=self.max_age_hours, max_gb=self.max_gb, interval_s=self.interval_s
        )


@dataclass(frozen=True)
class DestinationConfig:
    """A PACS (or any C-STORE SCP) that receives the results."""

    name: str
    ae_title: str
    host: str
    port: int
    # how a result whose send was interrupted is looked up before it is sent again:
    # "c-find" (exactly once where the PACS answers; falls back to resending) or "none"
    verify: str = "c-find"

    def __post_init__(self) -> None:
        if not self.name or not 1 <= len(self.ae_title) <= 16 or not 0 < self.port <= 65535:
            raise ConfigError(f"[[destinations]] needs name, ae_title (1-16 chars) and port, got {self!r}")
        if self.verify not in ("c-find", "none"):
            raise ConfigError(
                f"[[destinations]] {self.name}: verify must be 'c-find' or 'none', got {self.verify!r}"
            )


@dataclass(frozen=True)
class OutboxConfig:
    """Exponential backoff of sending: first_delay_s, doubling up to max_delay_s; DEAD after give_up_after_s."""

    first_delay_s: float = 30.0
    max_delay_s: float = 3600.0
    give_up_after_s: float = 86400.0

    def __post_init__(self) -> None:
        _positive("outbox", first_delay_s=self.first_delay_s, max_delay_s=self.max_delay_s,
                  give_up_after_s=self.give_up_after_s)  # fmt: skip


@dataclass(frozen=True)
class ResultsConfig:
    secondary_capture: bool = False  # also send a summary image marked not for diagnostic use


@dataclass(frozen=True)
class AuditConfig:
    path: str | None = None  # default <root>/audit.jsonl
    pseudonym_key_file: str | None = None  # default <root>/pseudonym.key (made at first start, mode 600)


@dataclass(frozen=True)
class ServeConfig:
    dicom: DicomConfig = field(default_factory=DicomConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    assembly: AssemblyConfig = field(default_factory=AssemblyConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    destinations: tuple[DestinationConfig, ...] = ()
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    results: ResultsConfig = field(default_factory=ResultsConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    @property
    def root(self) -> Path:
        return Path(self.storage.root)

    def with_root(self, root: str | Path) -> ServeConfig:
        return dataclasses.replace(self, storage=dataclasses.replace(self.storage, root=str(root)))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServeConfig:
        return _build(cls, data, "")


def _build(kind: type, data: Any, where: str) -> Any:
    """A dataclass from a TOML table: unknown keys rejected, nested tables and arrays of tables built."""
    if not isinstance(data, dict):
        raise ConfigError(f"[{where or 'top level'}] must be a table, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(
                f"unknown setting {key!r} in [{where or 'top level'}]; known: {sorted(fields)}"
                + suggest(key, fields)
            )
        sub = _NESTED.get((kind, key))
        path = f"{where}.{key}" if where else key
        if sub is not None and isinstance(value, list):
            value = tuple(_build(sub, v, path) for v in value)
        elif sub is not None:
            value = _build(sub, value, path)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    try:
        return kind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"[{where or 'top level'}]: {e}") from e


_NESTED: dict[tuple[type, str], type] = {
    (ServeConfig, "dicom"): DicomConfig,
    (ServeConfig, "storage"): StorageConfig,
    (ServeConfig, "assembly"): AssemblyConfig,
    (ServeConfig, "inference"): InferenceConfig,
    (ServeConfig, "http"): HttpConfig,
    (ServeConfig, "watch"): WatchConfig,
    (ServeConfig, "retention"): RetentionConfig,
    (ServeConfig, "destinations"): DestinationConfig,
    (ServeConfig, "outbox"): OutboxConfig,
    (ServeConfig, "results"): ResultsConfig,
    (ServeConfig, "audit"): AuditConfig,
    (DicomConfig, "tls"): TlsConfig,
    (AssemblyConfig, "routes"): RouteRule,
    (InferenceConfig, "ray"): RayBackendConfig,
    (RayBackendConfig, "deployment"): RayServeConfig,
}


def _toml_loads(text: str, source: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML ({e})") from e


def load_config(path: str | Path | None = None) -> ServeConfig:
    """The config in ``path`` (TOML), or every default when ``path`` is None.

    Relative paths (storage root, watch folder, audit files, cache, token and TLS files) are
    taken from the config file's folder.
    Raises ConfigError naming the setting and the fix.
    """
    if path is None:
        return ServeConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config {path} not found; print a documented example with: drifa-edge serve-ctl example-config"
        )
    cfg = ServeConfig.from_dict(_toml_loads(path.read_text(encoding="utf-8"), str(path)))
    return _resolve_paths(cfg, path.parent.resolve())


# every path setting: (section, nested table or None, field)
_PATHS = (
    ("storage", None, "root"),
    ("watch", None, "folder"),
    ("audit", None, "path"),
    ("audit", None, "pseudonym_key_file"),
    ("inference", None, "cache_dir"),
    ("inference", "ray", "temp_dir"),
    ("http", None, "token_file"),
    ("dicom", "tls", "cert_file"),
    ("dicom", "tls", "key_file"),
    ("dicom", "tls", "ca_file"),
)


def _resolve_paths(cfg: ServeConfig, base: Path) -> ServeConfig:
    """Relative path settings made absolute against ``base`` (the config file's folder)."""
    for section, nested, name in _PATHS:
        outer = getattr(cfg, section)
        inner = getattr(outer, nested) if nested else outer
        value = getattr(inner, name)
        if value is None or Path(value).is_absolute():
            continue
        inner = dataclasses.replace(inner, **{name: str(base / value)})
        outer = dataclasses.replace(outer, **{nested: inner}) if nested else inner
        cfg = dataclasses.replace(cfg, **{section: outer})
    return cfg


def example_config() -> str:
    """The documented example config shipped with the package."""
    return resources.files("drifa_edge.serve").joinpath("serve.example.toml").read_text(encoding="utf-8")
