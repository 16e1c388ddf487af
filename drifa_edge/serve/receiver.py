"""The DICOM receiver: a pynetdicom C-ECHO and C-STORE SCP.

Only calling AE titles on ``dicom.allowed_calling_aes`` get an association (pynetdicom
rejects the others with "calling AE title not recognised"; audit ``association_rejected``).
The C-STORE handler only checks, writes and records the instance (``Ingestor.ingest``) and
answers; inference runs in the worker thread, never here. TLS: pynetdicom's SSL context
from ``[dicom.tls]``.

Transfer syntaxes (:func:`accepted_transfer_syntaxes`): pynetdicom's uncompressed defaults,
plus each compressed syntax that pydicom can decode here (JPEG baseline / extended / lossless,
JPEG-LS, JPEG 2000, RLE; a decoder is python-gdcm, installed with the ``serve`` and ``dicom``
extras, or Pillow / pylibjpeg / pyjpegls). A syntax without a decoder is not proposed, so the
modality falls back to one we can read instead of having its instance refused later.
"""

from __future__ import annotations

import logging
import secrets
import ssl
from typing import Any

from drifa_edge.errors import ConfigError, missing_dependency
from drifa_edge.serve.audit import AuditLog
from drifa_edge.serve.config import DicomConfig
from drifa_edge.serve.crash import crash_point
from drifa_edge.serve.ingest import Ingestor

log = logging.getLogger(__name__)


def _ssl_context(cfg: DicomConfig) -> ssl.SSLContext | None:
    if not cfg.tls.enabled:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cfg.tls.cert_file, cfg.tls.key_file)
    if cfg.tls.ca_file:
        ctx.load_verify_locations(cfg.tls.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# compressed transfer syntaxes a modality may offer, in the order we prefer them
COMPRESSED_SYNTAXES = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless, first-order prediction (Process 14, SV1)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
)


def accepted_transfer_syntaxes() -> list[str]:
    """pynetdicom's default (uncompressed) syntaxes, then every compressed syntax of
    :data:`COMPRESSED_SYNTAXES` whose pydicom decoder has a plugin available here."""
    from pydicom.pixels import get_decoder
    from pynetdicom import DEFAULT_TRANSFER_SYNTAXES

    out = list(DEFAULT_TRANSFER_SYNTAXES)
    for uid in COMPRESSED_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                out.append(uid)
        except NotImplementedError:  # pydicom has no decoder class for it
            continue
    return out


class Receiver:
    """Start with :meth:`start` (non-blocking; the port is listening when it returns), stop with :meth:`stop`."""

    def __init__(self, cfg: DicomConfig, ingestor: Ingestor, audit: AuditLog) -> None:
        try:
            import pynetdicom  # noqa: F401
        except ImportError as e:
            raise missing_dependency("pynetdicom", "serve") from e
        self.cfg, self.ingestor, self.audit = cfg, ingestor, audit
        self.server = None
        self.stored = 0
        self.refused = 0

    @property
    def port(self) -> int | None:
        return None if self.server is None else self.server.server_address[1]

    @property
    def listening(self) -> bool:
        return self.server is not None

    def start(self) -> None:
        from pynetdicom import AE, StoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.cfg.ae_title)
        syntaxes = accepted_transfer_syntaxes()
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        ae.add_supported_context(Verification)
        self.transfer_syntaxes = syntaxes
        # pynetdicom takes an empty list as "anyone"; ours means "no one": an unguessable title
        ae.require_calling_aet = list(self.cfg.allowed_calling_aes) or [secrets.token_hex(8).upper()]
        ae.maximum_pdu_size = 0  # no limit; the size check is ours
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_DIMSE_SENT, self._on_sent),
        ]
        address = (self.cfg.host, self.cfg.port)
        try:
            self.server = ae.start_server(
                address, block=False, evt_handlers=handlers, ssl_context=_ssl_context(self.cfg)
            )
        except OSError as e:
            raise ConfigError(
                f"[dicom] cannot listen on {self.cfg.host}:{self.cfg.port} ({e}); choose another port "
                "or stop the process that holds it"
            ) from e
        log.info("DICOM receiver %s listening on %s:%s", self.cfg.ae_title, self.cfg.host, self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    # -------------------------------------------------------------- handlers

    def _on_echo(self, event: Any) -> int:
        return 0x0000

    def _on_rejected(self, event: Any) -> None:
        requestor = event.assoc.requestor
        self.audit.write(
            "association_rejected", reason="calling_ae_not_allowed", calling_ae=str(requestor.ae_title).strip(),
            peer=f"{requestor.address}:{requestor.port}",
        )  # fmt: skip

    def _on_store(self, event: Any) -> int:
        try:
            encoded = event.encoded_dataset(include_meta=True)
        except Exception as e:  # never let a handler exception become an unexplained 0xC211
            log.exception("cannot read the C-STORE data set")
            self.audit.write("rejected", reason="unreadable", detail=f"{type(e).__name__}: {e}")
            self.refused += 1
            return 0xC210
        outcome = self.ingestor.ingest(encoded, calling_ae=str(event.assoc.requestor.ae_title).strip())
        if outcome.accepted:
            self.stored += 1
            crash_point("before_ack")
        else:
            self.refused += 1
        return outcome.status

    def _on_sent(self, event: Any) -> None:
        if type(event.message).__name__ == "C_STORE_RSP":
            crash_point("after_ack", after_s=0.2)
