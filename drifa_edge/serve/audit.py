"""The audit log: one JSON line per step (received, rejected, duplicate, case_ready, inferred,
sent, failed, dead, deleted, http_unauthorized, ...), fsynced, with UIDs, build hash,
timings and reason. No patient names: PatientID becomes a keyed pseudonym
(HMAC-SHA256 with a per-site secret key, first 16 hex digits), so the same patient maps
to the same pseudonym at one site and cannot be reversed without the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Any

# Keys that must never reach the log, whatever a caller passes.
_FORBIDDEN = {"PatientName", "patient_name", "PatientID", "patient_id", "PatientBirthDate"}


def load_or_create_key(path: Path) -> bytes:
    """The pseudonym key in ``path``; 32 random bytes written there (mode 600) at first use."""
    if path.is_file():
        return bytes.fromhex(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
        f.flush()
        os.fsync(f.fileno())
    return key


def pseudonym(key: bytes, patient_id: str | None) -> str | None:
    """Keyed pseudonym of a PatientID: HMAC-SHA256(key, id), 16 hex digits; None for no id."""
    if not patient_id:
        return None
    return hmac.new(key, str(patient_id).encode(), hashlib.sha256).hexdigest()[:16]


class AuditLog:
    """Append-only JSON Lines; each line is flushed and fsynced before ``write`` returns."""

    def __init__(self, path: Path, build_sha256: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.build = build_sha256
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8")

    def write(self, event: str, **fields: Any) -> dict[str, Any]:
        bad = _FORBIDDEN & fields.keys()
        if bad:
            raise ValueError(f"audit: refusing to log patient identifiers {sorted(bad)}")
        line = {"ts": time.time(), "event": event, **{k: v for k, v in fields.items() if v is not None}}
        if self.build:
            line["build_sha256"] = self.build
        text = json.dumps(line, sort_keys=True, default=str)
        with self._lock:
            self._file.write(text + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        return line

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every complete line of an audit log (a torn last line after a crash is skipped)."""
    out = []
    if not Path(path).is_file():
        return out
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
