"""Online inference on Ray Serve: the predictor behind the HTTP case API of ``drifa-edge serve``.

Each replica opens the artifact once (``Predictor.open``) and answers:

* ``POST /v1/cases`` multipart, one file field per task name and an optional
  ``case_id`` field (1-64 of ``A-Z a-z 0-9 . _ -``): 200 with the result record
  (``drifa-edge predict``'s record; ``inputs`` are the uploaded file names and
  ``worker`` says which replica process ran it); 422 with ``{case_id, state:
  "FAILED", reason, result}`` when the case failed (an unreadable file, a wrong
  channel count: the same messages as predict); 400 for an unknown or missing
  task field or a bad case_id; 413 for a file over ``max_upload_mb``.
* ``GET /health/live`` and ``GET /health/ready``.

Requests waiting together (up to ``max_batch_size``, at most ``batch_wait_s``)
run as one engine call (``@serve.batch``); decoding runs in a worker thread per
request and the engine in the replica's one inference thread, so the event loop
keeps accepting requests. ``check_health`` fails when an engine call has been
running longer than ``stuck_after_s``: Serve then replaces the replica.

A replica that dies under requests: Serve's proxy answers the requests it held
with an HTTP 5xx error (never a silent drop); clients retry, inference being
idempotent (same case, same seed, same record with the torch runtime).
:func:`predict_files` does that for Python callers through a deployment handle;
``drifa-edge serve``'s ``backend = "ray"`` (:mod:`drifa_edge.scaleout.backend`) sends
cases it prepared itself to ``predict_prepared`` through :func:`call_with_retry`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from drifa_edge.inference.engine import EngineConfig
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.scaleout.config import ClusterConfig, ServeConfig

log = logging.getLogger(__name__)

CASE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # the same rule as drifa-edge serve's HTTP API
APP_NAME = "drifa-edge"
DEPLOYMENT_NAME = "DrifaCases"


class CaseReplica:
    """The work of one replica, without Ray: prepare uploads, run batches, answer HTTP.

    The Serve deployment class built by :func:`deployment_class` adds the batching
    decorator and the health check around it.
    """

    def __init__(
        self, artifact: str, runtime: str, options: RuntimeOptions, engine_cfg: EngineConfig, cfg: ServeConfig
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from drifa_edge.scaleout.adapter import Predictor, model_card
        from drifa_edge.scaleout.cluster import worker_identity

        self.cfg = cfg
        self.card = model_card(artifact)
        self.tasks = tuple(self.card.task_names)
        self.predictor = Predictor.open(artifact, runtime=runtime, options=options, engine_cfg=engine_cfg)
        self.identity = worker_identity()
        self._engine = ThreadPoolExecutor(1, thread_name_prefix="drifa-engine")  # one engine call at a time
        self._busy_since: float | None = None
        self.batches = 0

    # ---------------------------------------------------------------- inference

    def prepare(self, case_id: str, files: Mapping[str, tuple[str, bytes]]):
        """Decode + preprocess uploaded files (task -> (file name, bytes)) as predict would."""
        from drifa_edge.inference.manifest import Case
        from drifa_edge.scaleout.adapter import prepare_case

        with tempfile.TemporaryDirectory(prefix="drifa-case-") as tmp:
            paths = {}
            for task, (name, data) in files.items():
                path = Path(tmp) / f"{task}{Path(name).suffix.lower()}"  # readers go by the suffix
                path.write_bytes(data)
                paths[task] = path
            prepared = prepare_case(Case(case_id, paths), self.card)
        if prepared.error is not None:  # name the uploaded file, not the replica's temp copy
            for task, path in paths.items():
                prepared.error = prepared.error.replace(str(path), files[task][0] or task)
        return prepared

    def run_batch(self, items: list) -> list[dict[str, Any]]:
        """Records for prepared cases, in order; a case id seen twice goes in another call."""
        self._busy_since = time.monotonic()
        try:
            groups: list[list[int]] = []
            for i, item in enumerate(items):
                for group in groups:
                    if all(items[j].case.case_id != item.case.case_id for j in group):
                        group.append(i)
                        break
                else:
                    groups.append([i])
            out: list[dict[str, Any]] = [{} for _ in items]
            for group in groups:
                for i, record in zip(
                    group, self.predictor.predict_prepared([items[j] for j in group]), strict=True
                ):
                    record["worker"] = {**self.identity, "batch_cases": len(group)}
                    out[i] = record
            self.batches += 1
            return out
        finally:
            self._busy_since = None

    def stuck_for(self) -> float:
        """Seconds the running engine call has taken so far (0 when idle)."""
        busy = self._busy_since
        return 0.0 if busy is None else time.monotonic() - busy

    # ---------------------------------------------------------------- HTTP

    async def read_upload(self, request) -> tuple[Any, dict[str, Any]]:
        """(case_id, files) from a multipart request, or (HTTP status, error body)."""
        form = await request.form(max_files=len(self.tasks) + 1)
        case_id = str(form.get("case_id") or "")
        if not case_id:
            import uuid

            case_id = f"http-{uuid.uuid4().hex[:16]}"
        if not CASE_ID.match(case_id):
            return 400, {"error": f"case_id {case_id!r}: use 1-64 of A-Z a-z 0-9 . _ -"}
        fields = {k: v for k, v in form.multi_items() if k != "case_id"}
        unknown = sorted(set(fields) - set(self.tasks))
        missing = [t for t in self.tasks if t not in fields]
        if unknown or missing:
            detail = f"unknown field(s) {unknown}; " if unknown else ""
            return 400, {
                "error": f"{detail}send one file field per task {list(self.tasks)}; missing {missing}"
            }
        limit = int(self.cfg.max_upload_mb * 2**20)
        files = {}
        for task in self.tasks:
            upload = fields[task]
            if not hasattr(upload, "read"):
                return 400, {"error": f"field {task!r} is not a file upload"}
            data = await upload.read()
            if len(data) > limit:
                return 413, {
                    "error": f"{task}: {len(data)} bytes, over the limit of {self.cfg.max_upload_mb} MB"
                }
            files[task] = (upload.filename or task, data)
        return case_id, files

    @staticmethod
    def answer(record: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if record["status"] == "ok":
            return 200, record
        return 422, {
            "case_id": record["case_id"],
            "state": "FAILED",
            "reason": record["error"],
            "result": record,
        }


def deployment_class():
    """The Ray Serve deployment class (built on first use, so importing this module needs no Ray)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    class DrifaCases(CaseReplica):
        def __init__(self, artifact, runtime, options, engine_cfg, cfg: ServeConfig) -> None:
            super().__init__(artifact, runtime, options, engine_cfg, cfg)
            self._predict_batch.set_max_batch_size(cfg.max_batch_size)
            self._predict_batch.set_batch_wait_timeout_s(cfg.batch_wait_s)

        def check_health(self) -> None:
            took = self.stuck_for()
            if took > self.cfg.stuck_after_s:
                raise RuntimeError(
                    f"the engine call has been running for {took:.0f} s (stuck_after_s={self.cfg.stuck_after_s}); "
                    "the runtime looks stuck, so this replica reports unhealthy and Serve replaces it"
                )

        @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.02)
        async def _predict_batch(self, items: list) -> list[dict[str, Any]]:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._engine, self.run_batch, items)

        async def predict_prepared(self, prepared) -> dict[str, Any]:
            """The record of one case prepared by the caller (``prepare_case``; ``drifa-edge
            serve`` with ``backend = "ray"`` decodes beside its store and sends the arrays)."""
            return await self._predict_batch(prepared)

        def info(self) -> dict[str, Any]:
            """What this replica runs: the predictor's run settings and device."""
            return {
                **self.predictor.settings,
                "device": self.predictor.device,
                "ensemble_size": self.predictor.ensemble_size,
                "seed": self.predictor.engine_cfg.seed,
                "worker": self.identity,
            }

        async def predict_files(self, case_id: str, files: dict[str, tuple[str, bytes]]) -> dict[str, Any]:
            """The record for one case's uploaded files (task -> (file name, bytes))."""
            prepared = await asyncio.to_thread(self.prepare, case_id, files)
            record = await self._predict_batch(prepared)
            record["inputs"] = {task: name for task, (name, _) in files.items()}
            return record

        async def __call__(self, request: Request) -> JSONResponse:
            path = request.url.path.rstrip("/")
            if request.method == "GET" and path.endswith("/health/live"):
                return JSONResponse({"live": True})
            if request.method == "GET" and path.endswith("/health/ready"):
                ok = self.stuck_for() <= self.cfg.stuck_after_s
                return JSONResponse({"ready": ok, "worker": self.identity}, status_code=200 if ok else 503)
            if request.method == "POST" and path.endswith("/v1/cases"):
                parsed = await self.read_upload(request)
                if isinstance(parsed[0], int):
                    return JSONResponse(parsed[1], status_code=parsed[0])
                status, body = self.answer(await self.predict_files(*parsed))
                return JSONResponse(body, status_code=status)
            return JSONResponse({"error": f"no route {request.method} {request.url.path}"}, status_code=404)

    return DrifaCases


def build_app(
    artifact: str | Path,
    runtime: str = "auto",
    options: RuntimeOptions | None = None,
    engine_cfg: EngineConfig | None = None,
    cfg: ServeConfig | None = None,
):
    """The bound Serve application (``serve.run`` it, or :func:`deploy`)."""
    import dataclasses

    from ray import serve

    from drifa_edge.scaleout.adapter import choose_runtime

    cfg = cfg or ServeConfig()
    options = options or RuntimeOptions()
    if options.threads is None:  # one runtime thread per reserved CPU (at least one), not all the node's
        options = dataclasses.replace(options, threads=max(1, int(cfg.cpus_per_replica)))
    name = choose_runtime(artifact, runtime, options.precision)  # fail here, not in every replica
    settings: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": cfg.cpus_per_replica, "num_gpus": cfg.gpus_per_replica},
        "max_ongoing_requests": max(2 * cfg.max_batch_size, 4),
        "health_check_period_s": cfg.health_check_period_s,
        "health_check_timeout_s": max(30.0, cfg.health_check_period_s),
    }
    if cfg.autoscaling is not None:
        settings["autoscaling_config"] = cfg.autoscaling
    else:
        settings["num_replicas"] = cfg.replicas
    deployment = serve.deployment(**settings)(deployment_class())
    return deployment.bind(str(Path(artifact).resolve()), name, options, engine_cfg or EngineConfig(), cfg)


def deploy(
    artifact: str | Path,
    runtime: str = "auto",
    options: RuntimeOptions | None = None,
    engine_cfg: EngineConfig | None = None,
    cfg: ServeConfig | None = None,
    cluster: ClusterConfig | None = None,
    http: bool = True,
    app_name: str = APP_NAME,
):
    """Connect to Ray, start Serve's HTTP proxy on ``cfg.host:cfg.port`` (none with ``http``
    False: handle calls only) and run the app as ``app_name``; returns the deployment handle
    (``predict_files`` / ``predict_prepared`` calls go through it)."""
    from drifa_edge.scaleout.cluster import connect, import_ray

    import_ray()
    try:
        from ray import serve
    except ImportError as e:
        from drifa_edge.errors import missing_dependency

        raise missing_dependency("ray[serve]", "ray") from e
    cfg = cfg or ServeConfig()
    connect(cluster)
    if http:
        serve.start(http_options={"host": cfg.host, "port": cfg.port})
    else:
        serve.start(proxy_location="Disabled")
    return serve.run(
        build_app(artifact, runtime, options, engine_cfg, cfg),
        name=app_name,
        route_prefix=cfg.route_prefix if http else None,
    )


def predict_files(
    handle, case_id: str, files: dict[str, tuple[str, bytes]], attempts: int = 3
) -> dict[str, Any]:
    """One case's record through a deployment handle, retried when the replica died
    (``ActorDiedError``/``RayActorError``: inference is idempotent). Raises the last
    error after ``attempts`` tries: a caller never gets silence."""
    return call_with_retry(lambda: handle.predict_files.remote(case_id, files), case_id, attempts)


def call_with_retry(call, case_id: str, attempts: int = 3, first=None, timeout_s: float | None = None) -> Any:
    """``call().result()`` (a deployment handle call), tried again up to ``attempts`` times in
    all while the replica that held it died; ``first``: a response already sent, awaited as the
    first attempt. The last error is raised, never swallowed; no answer within ``timeout_s``
    seconds (None: wait) raises DrifaError naming the case."""
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    from drifa_edge.errors import DrifaError

    for attempt in range(1, attempts + 1):
        try:
            response = first if attempt == 1 and first is not None else call()
            try:
                return response.result(timeout_s=timeout_s)
            except TimeoutError as e:
                raise DrifaError(
                    f"case {case_id}: no answer from Ray Serve within {timeout_s} s; check the "
                    "application's replicas (ray status, serve status) or raise the timeout"
                ) from e
        except (ActorDiedError, ActorUnavailableError, RayActorError) as e:
            if attempt == attempts:
                raise
            log.warning(
                "case %s: replica lost (%s); retry %d of %d", case_id, type(e).__name__, attempt, attempts - 1
            )
            time.sleep(0.5 * attempt)
    raise AssertionError("unreachable")
