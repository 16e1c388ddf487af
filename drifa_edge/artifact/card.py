"""Model card: everything a runtime needs beside the weights.

A card travels with every artifact (``model_card.json`` beside the files, and
embedded in ONNX ``metadata_props`` / OpenVINO ``rt_info``): tasks and class
names, architecture, preprocessing per task, temperature and referral threshold
per task, data provenance, metrics, package versions, and the sha256 of every
file it vouches for. A runtime never guesses normalization.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drifa_edge import __version__
from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.data.preprocess_spec import PreprocessSpec
from drifa_edge.errors import ArtifactError, ConfigError
from drifa_edge.model.config import ModelConfig

CARD_FILE = "model_card.json"
# The card's schema version, written into every card and checked on load. A card of an
# older supported version is read as it is (add a converter here when the schema changes);
# a newer one is refused with a message to upgrade drifa-edge.
CARD_FORMAT = "drifa-edge-card/1"
SUPPORTED_CARD_FORMATS = ("drifa-edge-card/1",)
# scores a referral rule may use; "least_confidence" is 1 - max mean probability
REFERRAL_METRICS = ("mutual_information", "predictive_entropy", "expected_entropy", "least_confidence")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that shaped an artifact (absent ones omitted)."""
    from importlib import metadata

    out = {"drifa-edge": __version__, "python": platform.python_version()}
    for name in ("numpy", "torch", "onnx", "onnxruntime", "openvino", "nncf", "tensorrt"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@dataclass(frozen=True)
class ReferralRule:
    """Refer a case to a human when ``metric`` exceeds ``threshold``.

    The threshold is fitted on validation data for ``target_rate`` referrals."""

    metric: str = "mutual_information"
    threshold: float = float("inf")
    target_rate: float = 0.1

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "threshold": self.threshold, "target_rate": self.target_rate}


@dataclass(frozen=True)
class ModelCard:
    model: ModelConfig
    preprocess: dict[str, PreprocessSpec]
    temperature: dict[str, float] = field(default_factory=dict)
    referral: dict[str, ReferralRule] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=package_versions)
    format: str = CARD_FORMAT

    def __post_init__(self) -> None:
        names = list(self.model.task_names)
        if sorted(self.preprocess) != sorted(names):
            raise ConfigError(f"card preprocess tasks {sorted(self.preprocess)} != model tasks {names}")
        for t in self.model.tasks:
            spec = self.preprocess[t.name]
            if spec.channels != t.channels or spec.size != self.model.image_size:
                raise ConfigError(
                    f"task {t.name!r}: preprocess {spec.size}px/{spec.channels}ch does not match "
                    f"the model's {self.model.image_size}px/{t.channels}ch"
                )
        for name, temp in self.temperature.items():
            if name not in names or not temp > 0:
                raise ConfigError(f"temperature for {name!r} must be > 0 and name a task, got {temp}")

    @property
    def task_names(self) -> tuple[str, ...]:
        return self.model.task_names

    def temperature_of(self, task: str) -> float:
        return float(self.temperature.get(task, 1.0))

    def replace(self, **changes: Any) -> ModelCard:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "model": self.model.to_dict(),
            "preprocess": {k: v.to_dict() for k, v in self.preprocess.items()},
            "temperature": dict(self.temperature),
            "referral": {k: v.to_dict() for k, v in self.referral.items()},
            "files": dict(self.files),
            "data": self.data,
            "training": self.training,
            "metrics": self.metrics,
            "export": self.export,
            "versions": self.versions,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCard:
        check_card_format(d.get("format"))
        return cls(
            model=ModelConfig.from_dict(d["model"]),
            preprocess={k: PreprocessSpec.from_dict(v) for k, v in d["preprocess"].items()},
            temperature={k: float(v) for k, v in d.get("temperature", {}).items()},
            referral={k: ReferralRule(**v) for k, v in d.get("referral", {}).items()},
            files=dict(d.get("files", {})),
            data=d.get("data", {}),
            training=d.get("training", {}),
            metrics=d.get("metrics", {}),
            export=d.get("export", {}),
            versions=d.get("versions", {}),
        )

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        return cls.from_dict(json.loads(text))


def check_card_format(found: Any) -> None:
    """Refuse a card whose schema this drifa-edge cannot read (:class:`ConfigError`)."""
    if found in SUPPORTED_CARD_FORMATS:
        return
    newer = isinstance(found, str) and found.startswith("drifa-edge-card/")
    raise ConfigError(
        f"unsupported model card format {found!r}; this drifa-edge reads {list(SUPPORTED_CARD_FORMATS)}"
        + (
            "; the artifact was written by a newer drifa-edge: upgrade it (pip install -U drifa-edge)"
            if newer
            else "; the file is not a drifa-edge model card"
        )
    )


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)
    raise TypeError(f"cannot serialise {type(o).__name__}")


def default_card(model: ModelConfig, **kwargs: Any) -> ModelCard:
    pre = {t.name: PreprocessSpec.default(model.image_size, t.channels) for t in model.tasks}
    return ModelCard(model=model, preprocess=pre, **kwargs)


def write_card(card: ModelCard, folder: str | Path, hash_files: list[str] | None = None) -> ModelCard:
    """Write ``model_card.json`` into ``folder``, first hashing ``hash_files`` (relative paths)."""
    folder = Path(folder)
    if hash_files:
        files = dict(card.files)
        for rel in hash_files:
            files[rel] = sha256_file(folder / rel)
        card = card.replace(files=files)
    atomic_write(folder / CARD_FILE, card.to_json())
    return card


def read_card(folder: str | Path, verify: bool = True) -> ModelCard:
    """Read the card of an artifact folder and (by default) check every file's sha256."""
    folder = Path(folder)
    path = folder / CARD_FILE
    if not path.is_file():
        raise ArtifactError(
            f"{folder}: no {CARD_FILE}; pass a checkpoint folder from 'drifa-edge train' "
            "or an export folder from 'drifa-edge export'"
        )
    try:
        card = ModelCard.from_json(path.read_text())
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ArtifactError(f"{path}: not a valid model card ({e})") from e
    if verify:
        verify_files(card, folder)
    return card


def verify_files(card: ModelCard, folder: str | Path, only: list[str] | None = None) -> None:
    """Refuse a missing or tampered file: its sha256 must match the card."""
    folder = Path(folder)
    for rel, expected in card.files.items():
        if only is not None and rel not in only:
            continue
        p = folder / rel
        if not p.is_file():
            raise ArtifactError(f"{p}: listed in {CARD_FILE} but missing; re-run the export or training")
        actual = sha256_file(p)
        if actual != expected:
            raise ArtifactError(
                f"{p}: sha256 {actual[:12]}... does not match the model card ({expected[:12]}...); "
                "the file was modified or corrupted. Re-create the artifact; never edit it in place"
            )


def apply_calibration(
    card: ModelCard,
    fitted: dict[str, dict[str, float]],
    target_rate: float,
    referral_metric: str = "mutual_information",
    provenance: dict[str, Any] | None = None,
) -> ModelCard:
    """A copy of ``card`` with the fitted temperatures and referral rules written in."""
    temperature = dict(card.temperature)
    referral = dict(card.referral)
    for task, f in fitted.items():
        temperature[task] = float(f["temperature"])
        referral[task] = ReferralRule(
            metric=referral_metric, threshold=float(f["threshold"]), target_rate=target_rate
        )
    metrics = dict(card.metrics)
    if provenance:
        metrics["calibration"] = provenance
    return card.replace(temperature=temperature, referral=referral, metrics=metrics)
