"""Batch scoring on Ray Data: the local ``predict`` spread over a cluster.

The pipeline::

    manifest cases (driver) -> decode + preprocess (Ray tasks, ``prepare_case``)
        -> MC engine (actor pool, each actor opens the runtime once, ``Predictor``)
        -> records streamed back to the driver -> one JSON Lines file (+ Parquet)

Same cases, preprocessing, uncertainty, referral and record as ``drifa-edge
predict`` (the code is the same: :mod:`drifa_edge.scaleout.adapter`); each record
adds ``worker`` (pid, host, Ray node and actor ids of the process that ran it).
A bad file becomes an error record and the run goes on; exit code 9 when any
case failed.

Durability: records are appended to the output as each block arrives, one fsync
per block (one per record capped the driver at ~140 records/s on this machine's
disk, see benchmarks/ray_throughput.py), so a killed driver loses nothing written and ``resume`` skips those cases (error
records are tried again, as in local predict). Ray restarts an actor that dies
and re-runs its block; a case seen twice is written once (de-duplicated by case
id). At the end the file is rewritten atomically in manifest order, so it reads
like local predict's output. Parquet, on request, is the CSV view's columns
(flat, one row per case) plus the worker, written from the final JSON Lines.

Seeds: with the torch runtime each case's masks are seeded from (seed, case_id),
so a case gets the same masks whatever actor or batch it lands in, and the same
numbers as local predict: bit for bit when the batches are the same (cases per
engine call, threads), else up to float32 rounding of a differently shaped
batched call (~1e-7 relative; local predict itself differs that much between
``--batch-size 1`` and 4). In-graph runtimes (ONNX Runtime, OpenVINO) draw fresh
masks per call: same predictions, distributions within the MC noise.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drifa_edge.errors import ConfigError, DrifaError
from drifa_edge.inference.engine import EngineConfig
from drifa_edge.inference.manifest import Case
from drifa_edge.runtimes.base import RuntimeOptions
from drifa_edge.scaleout.config import BatchConfig, ClusterConfig

log = logging.getLogger(__name__)


@dataclass
class ScoreSummary:
    """What a Ray scoring run did; the records themselves are in ``out_path``."""

    out_path: Path
    parquet_path: Path | None
    runtime: str
    precision: str
    samples: int
    seed: int | None
    model_sha256: str
    ok: int = 0
    failed: int = 0
    skipped: int = 0  # already finished in the output (resume)
    duplicates: int = 0  # records Ray delivered twice (a re-run block), written once
    workers: dict[str, int] = field(default_factory=dict)  # "host:pid" -> cases
    errors: list[tuple[str, str]] = field(default_factory=list)
    preview: list[dict[str, Any]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        from drifa_edge.scaleout.adapter import PARTIAL_FAILURE_EXIT

        return PARTIAL_FAILURE_EXIT if self.failed else 0


# ------------------------------------------------------------------ the Ray stages


def _encode_case(case: Case, uris: dict[str, str] | None = None) -> dict[str, str]:
    inputs = {t: None if p is None else str(p) for t, p in case.inputs.items()}
    inputs.update(uris or {})  # URI cells replace what the path reader made of them
    return {"case_id": case.case_id, "inputs": json.dumps(inputs)}


def decode_batch(batch: dict[str, np.ndarray], card, allow_conversion: bool) -> dict[str, np.ndarray]:
    """Ray task: read and preprocess a block of cases (``prepare_case``, errors captured).

    URI cells are fetched to temporary files first (:mod:`drifa_edge.scaleout.uris`); the
    ``fixes`` column tells the actor how to name the URIs in the finished record."""
    prepared, fixes = [], []
    for case_id, inputs in zip(batch["case_id"], batch["inputs"], strict=True):
        item, fix = _prepare(str(case_id), json.loads(inputs), card, allow_conversion)
        # pickled between our own workers only (Ray pickles every object anyway); never user files
        prepared.append(pickle.dumps(item))
        fixes.append(json.dumps(fix))
    return {
        "case_id": batch["case_id"],
        "prepared": np.array(prepared, dtype=object),
        "fixes": np.array(fixes, dtype=object),
    }


def _prepare(case_id: str, cells: dict[str, str | None], card, allow_conversion: bool):
    import tempfile

    from drifa_edge.errors import BadInputError
    from drifa_edge.scaleout.adapter import prepare_case
    from drifa_edge.scaleout.uris import fetch, is_uri

    uris = {t: c for t, c in cells.items() if c is not None and is_uri(c)}
    paths = {t: None if c is None or t in uris else Path(c) for t, c in cells.items()}
    if not uris:
        return prepare_case(Case(case_id, paths), card, allow_conversion), {}
    fix: dict[str, Any] = {"inputs": uris, "replace": [], "error": None}
    with tempfile.TemporaryDirectory(prefix="drifa-fetch-") as tmp:
        for task, uri in uris.items():
            try:
                paths[task] = fetch(uri, Path(tmp), task)
                fix["replace"].append([str(paths[task]), uri])
            except BadInputError as e:  # the case becomes an error record naming the URI
                fix["error"] = f"{task}: {e}"
                paths[task] = None
        return prepare_case(Case(case_id, paths), card, allow_conversion), fix


def _apply_fix(record: dict[str, Any], fix: dict[str, Any]) -> None:
    """Name the URIs, not the decode task's temporary copies, in a finished record."""
    if not fix:
        return
    record["inputs"].update(fix["inputs"])
    if fix["error"] is not None:
        record["error"] = fix["error"]
    elif record.get("error"):
        record["error"] = _name_uris(record["error"], fix["replace"])
    if record.get("read"):  # how each file was read names the file too
        record["read"] = _name_uris(record["read"], fix["replace"])


def _name_uris(value: Any, replace: list[tuple[str, str]]) -> Any:
    """``value`` (text, or JSON-like lists and dicts of it) with each temporary path replaced by its URI."""
    if isinstance(value, str):
        for tmp, uri in replace:
            value = value.replace(tmp, uri)
        return value
    if isinstance(value, dict):
        return {k: _name_uris(v, replace) for k, v in value.items()}
    if isinstance(value, list):
        return [_name_uris(v, replace) for v in value]
    return value


class ScoringActor:
    """Ray actor: the artifact opened once, MC predictions for each batch of prepared cases."""

    def __init__(self, artifact: str, runtime: str, options: RuntimeOptions, engine_cfg: EngineConfig):
        from drifa_edge.scaleout.adapter import Predictor
        from drifa_edge.scaleout.cluster import worker_identity

        self.predictor = Predictor.open(artifact, runtime=runtime, options=options, engine_cfg=engine_cfg)
        self.identity = worker_identity()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [pickle.loads(blob) for blob in batch["prepared"]]
        records = self.predictor.predict_prepared(items)
        lines = []
        for record, fix in zip(records, batch["fixes"], strict=True):
            _apply_fix(record, json.loads(fix))
            record["worker"] = self.identity
            lines.append(json.dumps(record, allow_nan=False))
        return {"case_id": batch["case_id"], "record": np.array(lines, dtype=object)}

    def __del__(self) -> None:
        predictor = getattr(self, "predictor", None)
        if predictor is not None:
            predictor.close()


# ------------------------------------------------------------------ the output


class BlockAppender:
    """Appends a block of records to a JSON Lines file with one write and one fsync.

    A kill mid-write leaves at most a partial last line, which ``read_jsonl`` drops
    on resume (those cases run again): the same contract as ``JsonlWriter``.
    """

    def __init__(self, path: Path) -> None:
        from drifa_edge.inference.writers import JsonlWriter

        JsonlWriter(path).close()  # creates the file and makes its directory entry durable
        self._file = open(path, "ab")  # noqa: SIM115 - closed in close()

    def write_block(self, records: Sequence[dict[str, Any]]) -> None:
        from drifa_edge.inference.writers import dumps

        if not records:
            return
        self._file.write("".join(dumps(r) + "\n" for r in records).encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> BlockAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ the run


def score_cases(
    artifact: str | Path,
    cases: Sequence[Case],
    out_path: str | Path,
    runtime: str = "auto",
    options: RuntimeOptions | None = None,
    engine_cfg: EngineConfig | None = None,
    batch: BatchConfig | None = None,
    cluster: ClusterConfig | None = None,
    resume: bool = False,
    force: bool = False,
    parquet_path: str | Path | None = None,
    allow_channel_conversion: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    uris: dict[str, dict[str, str]] | None = None,
) -> ScoreSummary:
    """Predict every case on Ray and write JSON Lines to ``out_path`` (see the module doc).

    ``uris``: case_id -> {task: URI} for inputs read through ``pyarrow.fs`` (see
    :func:`drifa_edge.scaleout.uris.manifest_uris`); they replace those cases' paths.

    Raises ConfigError for an existing output without ``resume``/``force``, a
    duplicated case id or an output of another model; MissingDependencyError without
    Ray; the errors of ``choose_runtime`` for an artifact no runtime here can open.
    """
    from drifa_edge.inference import predict as local
    from drifa_edge.inference.writers import read_jsonl, rewrite_jsonl
    from drifa_edge.scaleout.adapter import choose_runtime
    from drifa_edge.scaleout.cluster import connect, import_ray

    options = options or RuntimeOptions()
    cfg = engine_cfg or EngineConfig()
    batch = batch or BatchConfig()
    out_path = Path(out_path)
    if out_path.suffix.lower() != ".jsonl":
        raise ConfigError(f"--out {out_path}: the Ray output is JSON Lines; name it e.g. preds.jsonl")
    _check_unique(cases)
    name = choose_runtime(artifact, runtime, options.precision)  # fail here, not in every actor
    cards = _cards(artifact)
    sha = _sha256(cards)
    done = local._done_cases(
        out_path, resume, force, _resume_settings(out_path, resume, force, artifact, name, options, cfg, sha)
    )
    todo = [c for c in cases if c.case_id not in done]
    summary = ScoreSummary(
        out_path, None if parquet_path is None else Path(parquet_path), name, options.precision,
        cfg.samples, cfg.seed, sha, skipped=len(cases) - len(todo),
    )  # fmt: skip
    if options.threads is None:  # one runtime thread per reserved CPU (at least one), not all the node's
        options = _with_threads(options, max(1, int(batch.cpus_per_actor)))

    if todo:
        ray = import_ray()
        started = connect(cluster)
        try:
            items = [_encode_case(c, (uris or {}).get(c.case_id)) for c in todo]
            ds = _pipeline(
                ray, artifact, name, options, cfg, batch, cards[0], items, allow_channel_conversion
            )
            try:
                seen = _collect(ds, out_path, summary, on_record)
            except ray.exceptions.GetTimeoutError as e:
                raise ConfigError(
                    f"the {batch.actors} actor(s) did not all start within {batch.actor_start_timeout_s} s "
                    f"({e}); the cluster lacks the resources asked for ({batch.cpus_per_actor} CPU and "
                    f"{batch.gpus_per_actor} GPU per actor, {ray.cluster_resources()}): ask for fewer actors"
                ) from e
        finally:
            if started:
                ray.shutdown()
        missing = {c.case_id for c in todo} - seen
        if missing:  # cannot happen unless Ray dropped a block; never pass it silently
            raise DrifaError(
                f"Ray returned no record for {len(missing)} case(s), e.g. {sorted(missing)[:3]}; the "
                f"others are in {out_path}: run again with --resume to score the missing ones"
            )

    order = {c.case_id: i for i, c in enumerate(cases)}
    records = read_jsonl(out_path, repair=True)
    records.sort(key=lambda r: order.get(r["case_id"], len(order)))
    rewrite_jsonl(out_path, records)
    if summary.parquet_path is not None:
        write_parquet(summary.parquet_path, records, {t.name: t.classes for t in cards[0].model.tasks})
    return summary


def _collect(ds, out_path: Path, summary: ScoreSummary, on_record) -> set[str]:
    """Append the records of each block as it arrives, once per case id; the ids written."""
    seen: set[str] = set()
    with BlockAppender(out_path) as writer:
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            fresh = []
            for line in block["record"]:
                record = json.loads(line)
                if record["case_id"] in seen:  # Ray re-ran a block after a failure
                    summary.duplicates += 1
                    continue
                seen.add(record["case_id"])
                fresh.append(record)
            writer.write_block(fresh)  # durable before it is counted or reported
            for record in fresh:
                _count(summary, record)
                if on_record is not None:
                    on_record(record)
    return seen


def _pipeline(ray, artifact, runtime, options, cfg, batch: BatchConfig, card, items, allow_conversion):
    """The lazy Ray Dataset of records (JSON strings), one per encoded case of ``items``."""
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.wait_for_min_actors_s = batch.actor_start_timeout_s  # all actors up, then work: each gets a share
    n_blocks = max(1, -(-len(items) // batch.decode_block))
    ds = ray.data.from_items(items, override_num_blocks=n_blocks)
    ds = ds.map_batches(
        decode_batch,
        fn_kwargs={"card": card, "allow_conversion": allow_conversion},
        batch_size=batch.decode_block,
        batch_format="numpy",
        num_cpus=batch.decode_cpus,
    )
    return ds.map_batches(
        ScoringActor,
        fn_constructor_kwargs={
            "artifact": str(Path(artifact).resolve()),
            "runtime": runtime,
            "options": options,
            "engine_cfg": cfg,
        },
        batch_size=batch.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(
            size=batch.actors, max_tasks_in_flight_per_actor=batch.blocks_in_flight
        ),
        num_cpus=batch.cpus_per_actor,
        num_gpus=batch.gpus_per_actor or None,
    )


def _count(summary: ScoreSummary, record: dict[str, Any]) -> None:
    if record["status"] == "ok":
        summary.ok += 1
    else:
        summary.failed += 1
        summary.errors.append((record["case_id"], record["error"]))
        log.error("case %s: %s", record["case_id"], record["error"])
    worker = record.get("worker") or {}
    key = f"{worker.get('host')}:{worker.get('pid')}"
    summary.workers[key] = summary.workers.get(key, 0) + 1
    if len(summary.preview) < 50:
        summary.preview.append(record)


def _check_unique(cases: Sequence[Case]) -> None:
    seen: set[str] = set()
    for case in cases:
        if case.case_id in seen:
            raise ConfigError(f"case_id {case.case_id!r} given twice; case ids must be unique")
        seen.add(case.case_id)


def _cards(artifact: str | Path) -> list:
    from drifa_edge.scaleout.adapter import member_cards

    return member_cards(artifact)


def _sha256(cards: list) -> str:
    from drifa_edge.inference.writers import ensemble_sha256, model_sha256

    return model_sha256(cards[0]) if len(cards) == 1 else ensemble_sha256(cards)


def _resume_settings(
    out_path: Path,
    resume: bool,
    force: bool,
    artifact,
    runtime: str,
    options: RuntimeOptions,
    cfg: EngineConfig,
    sha: str,
) -> dict[str, Any]:
    """The run settings ``--resume`` compares with the file's (``predictor.run_settings``).

    Some of them (the seed policy) depend on the opened runtime, so on a resume the driver
    opens the artifact once, as each actor will; otherwise only the sha256 is read."""
    if not (resume and not force and out_path.exists() and out_path.stat().st_size):
        return {"model_sha256": sha}
    from drifa_edge.scaleout.adapter import Predictor

    with Predictor.open(artifact, runtime=runtime, options=options, engine_cfg=cfg) as predictor:
        return predictor.settings


def _with_threads(options: RuntimeOptions, threads: int) -> RuntimeOptions:
    import dataclasses

    return dataclasses.replace(options, threads=threads)


def write_parquet(path: Path, records: Sequence[dict[str, Any]], classes: dict[str, Sequence[str]]) -> None:
    """The CSV view's columns plus the worker, one row per case, written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from drifa_edge.inference.writers import csv_columns, record_to_row

    columns = csv_columns(classes) + ["worker_host", "worker_pid", "worker_node_id", "worker_actor_id"]
    rows = []
    for record in records:
        row = dict.fromkeys(columns)
        row.update(record_to_row(record, classes))
        worker = record.get("worker") or {}
        for key in ("host", "pid", "node_id", "actor_id"):
            row[f"worker_{key}"] = worker.get(key)
        rows.append(row)
    table = pa.Table.from_pylist(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
