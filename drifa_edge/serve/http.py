"""The local HTTP API (FastAPI + uvicorn, in a thread of the service process).

Bound to loopback by default. When a token is configured (required when bound elsewhere)
every endpoint except ``/health/*`` needs ``Authorization: Bearer <token>``, compared in
constant time (``hmac.compare_digest``); a refusal answers 401 and writes an audit line
``http_unauthorized`` (reason ``missing_token`` or ``wrong_token``). TLS: put a reverse
proxy in front (README).

* ``POST /v1/cases`` multipart: one file field per task name, optional ``case_id`` field.
  200 with the result record when it is ready within ``result_timeout_s``, plus ``sr``:
  the SR's SOP Instance UID when every input is a DICOM image of one study (written
  asynchronously: ``written`` says whether it is on disk yet), else ``expected: false`` and
  the reason (not DICOM: an SR joins the study of its images); 202 with
  ``{case_id, state}`` otherwise (poll ``GET /v1/cases/{case_id}``); 422 when the case
  failed (record or reason in the body); 400 for an unknown or missing task field; 409 for
  a case_id still in flight; 507 below the disk floor; 413 over the size limit.
* ``GET /v1/cases/{case_id}``: state, reason, result versions and the latest record.
* ``GET /status``, ``/health/live``, ``/health/ready``, ``/metrics`` (Prometheus text).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drifa_edge.errors import ConfigError, missing_dependency

try:  # this module is imported only when the HTTP API is enabled
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse
except ImportError:  # pragma: no cover - reported by build_app
    FastAPI = None  # type: ignore[assignment,misc]

from drifa_edge.artifact.atomic import atomic_write
from drifa_edge.serve.ingest import Refused
from drifa_edge.serve.store import Instance

if TYPE_CHECKING:
    from drifa_edge.serve.service import Service

CASE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
OPEN_PATHS = ("/health/live", "/health/ready")


def build_app(service: Service) -> Any:
    """The FastAPI application of one service."""
    if FastAPI is None:
        raise missing_dependency("fastapi", "serve")

    app = FastAPI(title="drifa-edge serve", docs_url=None, redoc_url=None, openapi_url=None)
    token = service.cfg.http.bearer_token()

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        if token is None or request.url.path in OPEN_PATHS:
            return await call_next(request)
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if not header:
            reason = "missing_token"
        elif scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            reason = "wrong_token"
        else:
            return await call_next(request)
        peer = request.client.host if request.client else None
        service.audit.write(
            "http_unauthorized", reason=reason, path=request.url.path, method=request.method, peer=peer
        )
        service.metrics.http_unauthorized.inc()
        return JSONResponse({"error": "unauthorized", "reason": reason}, status_code=401,
                            headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    @app.get("/health/live")
    async def live():
        return {"live": True}

    @app.get("/health/ready")
    async def ready():
        checks = service.readiness()
        return JSONResponse(
            {"ready": all(checks.values()), "checks": checks},
            status_code=200 if all(checks.values()) else 503,
        )

    @app.get("/status")
    async def status():
        return service.status()

    @app.get("/metrics")
    async def metrics():
        body, content_type = service.metrics.render(service)
        return PlainTextResponse(body, media_type=content_type)

    @app.get("/v1/cases/{case_id}")
    async def get_case(case_id: str):
        case = service.store.get_case(case_id)
        if case is None:
            return JSONResponse({"error": f"no case {case_id!r}"}, status_code=404)
        return case_view(service, case_id)

    @app.post("/v1/cases")
    async def post_case(request: Request):
        form = await request.form()
        tasks = service.tasks
        case_id = str(form.get("case_id") or f"http-{uuid.uuid4().hex[:16]}")
        if not CASE_ID.match(case_id):
            return JSONResponse(
                {"error": f"case_id {case_id!r}: use 1-64 of A-Z a-z 0-9 . _ -"}, status_code=400
            )
        files = {k: v for k, v in form.multi_items() if k != "case_id"}
        unknown = sorted(set(files) - set(tasks))
        missing = [t for t in tasks if t not in files]
        if unknown or missing:
            detail = f"unknown field(s) {unknown}; " if unknown else ""
            return JSONResponse(
                {"error": f"{detail}send one file field per task {list(tasks)}; missing {missing}"},
                status_code=400,
            )
        try:
            service.ingestor.check_disk()
        except Refused as r:
            service.audit.write("rejected", reason=r.reason, detail=r.detail, source="http", case_id=case_id)
            return JSONResponse({"error": r.detail, "reason": r.reason}, status_code=507)
        blobs = {}
        for task in tasks:
            data = await files[task].read()
            try:
                service.ingestor.check_size(len(data))
            except Refused as r:
                service.audit.write(
                    "rejected", reason=r.reason, detail=r.detail, source="http", case_id=case_id, task=task
                )
                return JSONResponse({"error": r.detail, "reason": r.reason}, status_code=413)
            blobs[task] = (Path(files[task].filename or task).suffix.lower(), data)
        try:
            submit_files(service, case_id, blobs, "http")
        except ValueError as e:
            return JSONResponse({"error": str(e)}, status_code=409)
        deadline = time.monotonic() + service.cfg.http.result_timeout_s
        while time.monotonic() < deadline:
            case = service.store.get_case(case_id)
            if case.state not in ("READY", "INFERRING", "RECEIVING"):
                break
            await asyncio.sleep(0.05)
        view = case_view(service, case_id)
        if view["state"] in ("READY", "INFERRING", "RECEIVING"):
            return JSONResponse({"case_id": case_id, "state": view["state"]}, status_code=202)
        if view["result"] is not None and view["result"]["status"] == "ok":
            return JSONResponse({**view["result"], "sr": view["sr"]}, status_code=200)
        return JSONResponse({"case_id": case_id, "state": view["state"], "reason": view["reason"],
                             "result": view["result"]}, status_code=422)  # fmt: skip

    return app


def dicom_header(data: bytes) -> Any | None:
    """The header of an uploaded file when it is a DICOM image with Study, Series, SOP
    Instance and SOP Class UIDs (Part 10 preamble, or a data set pydicom reads as such);
    None otherwise (a PNG, JPEG, TIFF, NPY...)."""
    import io

    try:
        import pydicom
    except ImportError:  # the edge install without the dicom extra: no SR anyway
        return None
    if data[128:132] != b"DICM":
        return None
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    except Exception:  # not readable as DICOM: predict's reader names the problem
        return None
    keys = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
    return ds if all(ds.get(k) for k in keys) else None


def submit_files(service: Service, case_id: str, blobs: dict[str, tuple[str, bytes]], source: str) -> None:
    """Store one file per task atomically and create the case READY (HTTP upload, watch sub-folder).

    ``blobs``: task -> (suffix such as ".png", bytes). A DICOM file (Part 10) is stored as
    ``.dcm`` with its Study/Series/SOP UIDs recorded, so that a case whose inputs are all DICOM
    of one study gets an SR like a C-STORE case. Raises ValueError for a case_id in flight."""
    folder = service.cfg.root / "uploads" / case_id / f"g{time.time_ns()}"
    inputs, instances = {}, []
    for task, (suffix, data) in blobs.items():
        header = dicom_header(data)
        path = folder / f"{task}{'.dcm' if header is not None else suffix or '.bin'}"
        atomic_write(path, data)
        digest = hashlib.sha256(data).hexdigest()
        inputs[task] = str(path)
        uids = {}
        if header is not None:  # the key stays ours (the same file may be posted in two cases)
            uids = {"study_uid": str(header.StudyInstanceUID), "series_uid": str(header.SeriesInstanceUID),
                    "sop_class": str(header.SOPClassUID)}  # fmt: skip
        instances.append(
            Instance(
                f"{source}:{case_id}:{task}:{digest[:16]}",
                case_id,
                digest,
                str(path),
                len(data),
                task=task,
                **uids,
            )  # fmt: skip
        )
    service.store.create_ready_case(case_id, source, inputs, instances)
    service.audit.write(
        "received",
        case_id=case_id,
        source=source,
        tasks=sorted(blobs),
        bytes=sum(len(d) for _, d in blobs.values()),
        dicom_tasks=sorted(i.task for i in instances if i.study_uid),
    )
    service.audit.write("case_ready", case_id=case_id, source=source)
    service.worker.poke()


NO_SR_NOT_DICOM = (
    "no DICOM SR: not every input is a DICOM image (an SR joins the study of its source images); "
    "the JSON record is the result. Send DICOM files (one study) to get an SR too"
)
NO_SR_STUDIES = "no DICOM SR: the DICOM inputs come from more than one study; one SR belongs to one study"


def sr_view(service: Service, case_id: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where the case's SR is (deterministic UIDs, so known before it is written) or why it has none."""
    from drifa_edge.serve.results import result_uids

    if record is None or record.get("status") != "ok":
        return None
    dicom = record.get("dicom")
    if not dicom:
        case = service.store.get_case(case_id)
        paths = set((case.inputs or {}).values()) if case else set()
        chosen = [i for i in service.store.instances_of(case_id) if i.path in paths]
        studies = {i.study_uid for i in chosen}
        several = chosen and None not in studies and len(studies) > 1
        return {"expected": False, "reason": NO_SR_STUDIES if several else NO_SR_NOT_DICOM}
    version = int(record.get("result_version") or 1)
    path = service.cfg.root / "results" / case_id / f"sr-v{version}.dcm"
    return {
        "expected": True,
        "sop_instance_uid": result_uids(dicom["study_instance_uid"], case_id, version).sr_instance,
        "study_instance_uid": dicom["study_instance_uid"],
        "written": path.is_file(),
    }


def case_view(service: Service, case_id: str) -> dict[str, Any]:
    case = service.store.get_case(case_id)
    record = service.store.result(case_id)
    return {
        "case_id": case_id,
        "state": case.state,
        "reason": case.reason,
        "result_version": case.version or None,
        "result": record,
        "sr": sr_view(service, case_id, record),
    }


class HttpServer:
    """uvicorn in a daemon thread; :meth:`start` returns when it is listening."""

    def __init__(self, service: Service) -> None:
        try:
            import uvicorn
        except ImportError as e:
            raise missing_dependency("uvicorn", "serve") from e
        cfg = service.cfg.http
        config = uvicorn.Config(
            build_app(service),
            host=cfg.host,
            port=cfg.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.host, self.port_wanted = cfg.host, cfg.port
        self._thread = threading.Thread(target=self.server.run, name="drifa-http", daemon=True)

    def start(self, timeout: float = 30.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"[http] the API did not start on {self.host}:{self.port_wanted} (port in use?); "
                    "choose another port or stop the process that holds it"
                )
            time.sleep(0.02)

    @property
    def port(self) -> int | None:
        try:
            return self.server.servers[0].sockets[0].getsockname()[1]
        except (AttributeError, IndexError):
            return None

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=10)
