"""Load on `drifa-edge serve`: N two-task studies from 4 concurrent DICOM senders on loopback to
one service (a real subprocess), results delivered to a real Orthanc and to a recording
C-STORE receiver.

Reports throughput (cases/min, first C-STORE to last SR delivered), end-to-end latency per
study (last instance acknowledged -> its SR received by the recording receiver, which is
sent in the same pass as Orthanc; includes the configured quiet period), C-STORE
acknowledgement latency under load, the service's peak RSS (VmHWM), lost and duplicated
results (deliveries per SR SOP Instance UID), and the ratio of the service's throughput to
plain ``predict`` throughput on the same files with the same model, runtime and T.

``--kills K`` adds K ``kill -9`` of the service at random times during sending; it is
restarted on the same ports and the senders re-send every study that was not fully
acknowledged (as a modality does); the kills fall anywhere from the first C-STORE to the
last delivery. Latencies of that run are not comparable; lost and
duplicated are what it is for (a crash between a destination's acknowledgement and the
outbox commit re-sends that result once: at-least-once, see ``serve/outbox.py``).

The model is demo-size (64 px, width 0.25, two tasks) with untrained weights unless
``--artifact`` is given: throughput does not depend on the weights' values.

The result goes into ``--out`` under ``runs[<--name>]``; other runs already in the file are
kept (a file in the older one-run format becomes ``runs["demo-torch-fp32"]``, or
``runs["demo-torch-fp32-kills<K>-at-least-once-sender"]`` for a kill run of that time).

    nice -n 10 python benchmarks/serve_load.py                      # 200 studies -> benchmarks/results/serve_load.json
    # the paper configuration (random weights, tasks named derm/blood), OpenVINO INT8 (NNCF), T = 30:
    nice -n 10 python benchmarks/serve_load.py --artifact EXPORT --runtime openvino --precision int8 \
        --samples 30 --name paper-openvino-int8
    nice -n 10 python benchmarks/serve_load.py --kills 3 --out benchmarks/results/serve_load_kills.json
    python benchmarks/serve_load.py --studies 8 --out /tmp/x.json   # smoke test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "serve"))

from drifa_edge.bench.runner import machine_info  # noqa: E402
from drifa_edge.serve.results import result_uids  # noqa: E402
from tests.serve.conftest import TEST_SCU_AE, OrthancProcess, RecordingReceiver, free_port  # noqa: E402
from tests.serve.serve_helpers import SCU_AE, ServeProcess, make_study, serve_config  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "serve_load.json"


class TimedReceiver(RecordingReceiver):
    """The tests' recording receiver (it also answers the sender's C-FIND look-ups from what it
    stored), plus the time of the first delivery of each UID."""

    def __init__(self) -> None:
        super().__init__()
        self.first_at: dict[str, float] = {}

    def _on_store(self, event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        ds = event.dataset
        with self._lock:
            self.first_at.setdefault(uid, time.time())
            self.deliveries[uid] += 1
            self.datasets[uid] = ds  # what C-FIND answers from
        return 0x0000


def demo_size_checkpoint(folder: Path) -> Path:
    import torch

    from drifa_edge.artifact.card import ReferralRule, default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    cfg = ModelConfig(
        tasks=(TaskSpec("derm", ("nevus", "melanoma", "other")), TaskSpec("blood", ("a", "b"), channels=1)),
        image_size=64,
        width=0.25,
        dropout=0.25,
    )
    torch.manual_seed(0)
    card = default_card(cfg, referral={"derm": ReferralRule("mutual_information", 1e-3, 0.1)})
    save_checkpoint(build_model(cfg), card, folder)
    return folder


def case_id_of(study_uid: str) -> str:
    return "dcm-" + hashlib.sha256(f"study:{study_uid}".encode()).hexdigest()[:16]


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    q = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else [values[0]] * 99
    return {
        "n": len(values),
        "p50": round(q[49], 4),
        "p95": round(q[94], 4),
        "p99": round(q[98], 4),
        "max": round(max(values), 4),
    }


class Senders:
    """4 threads, each sending its share of studies (one association per study); a study that was
    not fully acknowledged is sent again once the service answers."""

    def __init__(self, studies, n_threads: int, port: int) -> None:
        self.studies, self.port = studies, port
        self.ack_s: list[float] = []
        self.last_ack: dict[str, float] = {}
        self.resent = 0
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, args=(studies[i::n_threads],), daemon=True)
            for i in range(n_threads)
        ]

    def _send_study(self, ae, study) -> bool:
        assoc = ae.associate("127.0.0.1", self.port, ae_title=TEST_SCU_AE)
        if not assoc.is_established:
            return False
        ok = True
        try:
            for ds in study:
                t0 = time.perf_counter()
                status = assoc.send_c_store(ds) if assoc.is_established else None
                dt = time.perf_counter() - t0
                if not status or int(status.Status) != 0:
                    ok = False
                    break
                with self._lock:
                    self.ack_s.append(dt)
        finally:
            if assoc.is_established:
                assoc.release()
        if ok:
            with self._lock:
                self.last_ack[str(study[0].StudyInstanceUID)] = time.time()
        return ok

    def _run(self, studies) -> None:
        from pynetdicom import AE

        ae = AE(ae_title=SCU_AE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
        ae.add_requested_context(studies[0][0].SOPClassUID, studies[0][0].file_meta.TransferSyntaxUID)
        for study in studies:
            tries = 0
            while not self._send_study(ae, study):
                tries += 1
                with self._lock:
                    self.resent += 1
                if tries > 200:
                    raise RuntimeError("service did not come back")
                time.sleep(0.5)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def join(self) -> None:
        for t in self.threads:
            t.join()


def verify_counts(audit: Path) -> dict[str, int]:
    """How the sender's look-ups of in-doubt results ended: present (not resent), absent (sent),
    unavailable (sent again without asking), from the audit log's ``sent`` lines."""
    counts = Counter()
    for line in audit.read_text().splitlines() if audit.is_file() else []:
        event = json.loads(line)
        if event.get("event") == "sent" and event.get("verify"):
            counts[event["verify"].split(":")[0]] += 1
    return dict(counts)


def failed_cases(db: Path) -> list[tuple[str, str]]:
    """(case_id, reason) of FAILED cases in the service's store (read-only, while it runs)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute("SELECT case_id, reason FROM cases WHERE state='FAILED'").fetchall()
    except sqlite3.Error:
        return []


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat), all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def relevant_cpu_flags() -> list[str]:
    """The CPU flags that decide which INT8/BF16 kernels OpenVINO and torch can use."""
    from drifa_edge.runtimes.cpu import cpu_flags

    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
    flags = set(cpu_flags())
    return [f for f in wanted if f in flags]


def needs_channel_conversion(artifact: Path) -> bool:
    """True when the model's blood task wants RGB: the test studies hold blood as gray
    (the paper configuration has two RGB tasks); the service and predict then both repeat
    the gray plane (``allow_channel_conversion``), the same work on both sides."""
    from drifa_edge.artifact.card import read_card

    card = read_card(artifact)
    return card.preprocess["blood"].channels == 3


def predict_throughput(
    artifact: Path, root: Path, runtime: str, samples: int, threads: int | None, precision: str = "fp32"
) -> dict:
    """Plain predict on the stored input files of every DONE/SENT case (same model, runtime, T)."""
    from drifa_edge.inference.engine import EngineConfig
    from drifa_edge.inference.manifest import Case
    from drifa_edge.inference.predict import predict_cases
    from drifa_edge.runtimes.base import RuntimeOptions
    from drifa_edge.serve.store import Store

    store = Store(root / "store.sqlite")
    cases = [
        Case(c.case_id, {t: Path(p) for t, p in c.inputs.items()}) for c in store.cases(("SENT", "DONE"))
    ]
    store.close()
    out = root.parent / "predict.jsonl"
    predict_cases(
        artifact,
        cases[:4],
        out,
        runtime=runtime,
        options=RuntimeOptions(threads=threads, precision=precision),
        engine_cfg=EngineConfig(samples=samples, seed=0),
        batch_size=4,
        force=True,
        allow_channel_conversion=needs_channel_conversion(artifact),
    )  # warm-up; fmt: skip
    t0, cpu0 = time.perf_counter(), time.process_time()
    summary = predict_cases(artifact, cases, out, runtime=runtime, options=RuntimeOptions(threads=threads, precision=precision),
                            engine_cfg=EngineConfig(samples=samples, seed=0), batch_size=4, force=True,
                            allow_channel_conversion=needs_channel_conversion(artifact))  # fmt: skip
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"cases": summary.ok, "seconds": round(seconds, 2), "cases_per_min": round(60 * summary.ok / seconds, 1),
            "cpu_s_per_case": round(cpu / max(summary.ok, 1), 4)}  # fmt: skip


def write_run(path: Path, name: str, result: dict) -> None:
    """Put ``result`` under ``runs[name]`` in ``path``, keeping the other runs there."""
    doc = {"benchmark": "serve_load", "runs": {}}
    if path.is_file():
        old = json.loads(path.read_text())
        if "runs" in old:
            doc = old
        elif "throughput_cases_per_min" in old:  # the one-run format of the first runs
            settings = old.get("settings", {})
            legacy = f"demo-{settings.get('runtime', 'torch')}-fp32"
            if settings.get("kills"):  # made before the exactly-once sender
                legacy += f"-kills{settings['kills']}-at-least-once-sender"
            doc["runs"][legacy] = old
    doc["runs"][name] = result
    path.write_text(json.dumps(doc, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=200)
    p.add_argument("--senders", type=int, default=4)
    p.add_argument("--samples", type=int, default=10, help="MC samples T (the demo recipe's 10)")
    p.add_argument("--quiet", type=float, default=1.0, help="assembly quiet_seconds")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="runtime threads of the service (and of predict)")
    p.add_argument("--runtime", default="torch")
    p.add_argument("--precision", default="fp32", help="fp32, int8 (an INT8 build in the export), ...")
    p.add_argument("--name", default="demo-torch-fp32", help="key of this run in the output's runs")
    p.add_argument("--artifact", type=Path, default=None, help="default: a demo-size untrained checkpoint")
    p.add_argument("--kills", type=int, default=0, help="kill -9 the service this many times during sending")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    machine = machine_info()
    machine["cpu_flags"] = relevant_cpu_flags()

    work = Path(tempfile.mkdtemp(prefix="drifa-serve-load-"))
    artifact = args.artifact or demo_size_checkpoint(work / "model")
    (work / "orthanc").mkdir(exist_ok=True)
    orthanc = OrthancProcess(shutil.which("Orthanc") or shutil.which("orthanc"), work / "orthanc")
    recorder = TimedReceiver()
    orthanc.start()
    recorder.start()
    try:
        return _run(args, rng, machine, work, artifact, orthanc, recorder, argv)
    finally:
        orthanc.stop()
        recorder.stop()


def _run(args, rng, machine, work, artifact, orthanc, recorder, argv) -> dict:
    dicom_port, http_port = free_port(), free_port()
    config = serve_config(
        work / "root",
        dicom={"ae_title": TEST_SCU_AE, "port": dicom_port},
        http={"port": http_port},
        assembly={"quiet_seconds": args.quiet, "max_wait_seconds": 600.0},
        inference={
            "runtime": args.runtime,
            "precision": args.precision,
            "samples": args.samples,
            "batch_size": args.batch_size,
            "batch_wait_ms": 200.0,
            "threads": args.threads,
            "allow_channel_conversion": needs_channel_conversion(artifact),
        },  # fmt: skip
        destinations=[
            {
                "name": "orthanc",
                "ae_title": orthanc.ae_title,
                "host": "127.0.0.1",
                "port": orthanc.dicom_port,
            },
            {"name": "recorder", "ae_title": recorder.ae_title, "host": "127.0.0.1", "port": recorder.port},
        ],
        outbox={"first_delay_s": 1.0, "max_delay_s": 5.0},
    )
    print(f"[1/4] {args.studies} studies, model {artifact}, T={args.samples}", flush=True)
    studies = [make_study(i) for i in range(args.studies)]
    t_start_service = time.perf_counter()
    service = ServeProcess(artifact, config)
    cold_start_s = time.perf_counter() - t_start_service
    rss_peaks = []
    try:
        print(f"[2/4] service up in {cold_start_s:.1f} s; {args.senders} senders", flush=True)
        senders = Senders(studies, args.senders, dicom_port)
        cpu_start = cpu_seconds(service.proc.pid)  # after start-up and warm-up
        t0 = time.time()
        senders.start()
        expected = {
            result_uids(s[0].StudyInstanceUID, case_id_of(s[0].StudyInstanceUID), 1).sr_instance: s
            for s in studies
        }
        kills = 0
        # kill -9 at random times while sending, inferring and delivering (not after the last delivery)
        while kills < args.kills and not set(expected) <= set(recorder.first_at):
            time.sleep(rng.uniform(2.0, 8.0))
            rss_peaks.append(peak_rss_mb(service.proc.pid))
            service.kill()
            kills += 1
            print(f"      kill -9 #{kills}", flush=True)
            service = ServeProcess(artifact, config)
        senders.join()  # the senders may have finished before the kills did
        sent_at = time.time()
        print(f"[3/4] all studies acknowledged after {sent_at - t0:.1f} s; waiting for results", flush=True)
        deadline = time.time() + args.timeout
        while time.time() < deadline and not set(expected) <= set(recorder.first_at):
            time.sleep(0.2)
            failed = failed_cases(work / "root" / "store.sqlite")
            if failed:  # a failed case never gets an SR: stop instead of waiting for the timeout
                raise RuntimeError(f"{len(failed)} case(s) FAILED, e.g. {failed[0]}; see {service.log}")
        done_at = max(recorder.first_at.values()) if recorder.first_at else time.time()
        rss_peaks.append(peak_rss_mb(service.proc.pid))
        cpu_end = cpu_seconds(service.proc.pid)
    finally:
        service.stop()
    delivered = {uid: recorder.deliveries[uid] for uid in expected}
    latencies = [
        recorder.first_at[uid] - senders.last_ack[str(s[0].StudyInstanceUID)]
        for uid, s in expected.items()
        if uid in recorder.first_at
    ]
    n_ok = sum(1 for n in delivered.values() if n >= 1)
    extra_versions = sum(1 for uid in recorder.deliveries if uid not in expected)
    orthanc_srs = sum(1 for uid in expected if orthanc.instance_id(uid) is not None)
    print("[4/4] plain predict on the same files", flush=True)
    plain = predict_throughput(
        artifact, work / "root", args.runtime, args.samples, args.threads, args.precision
    )
    service_cpm = 60 * n_ok / (done_at - t0)
    result = {
        "benchmark": "serve_load",
        "command": "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine,
        "settings": {
            "studies": args.studies,
            "senders": args.senders,
            "samples": args.samples,
            "quiet_seconds": args.quiet,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "runtime": args.runtime,
            "precision": args.precision,
            "kills": args.kills,
            "model": str(args.artifact)
            if args.artifact
            else "demo-size (64 px, width 0.25), untrained weights",
        },  # fmt: skip
        "kills_done": kills,
        "cold_start_s": round(cold_start_s, 2),
        "throughput_cases_per_min": round(service_cpm, 1),
        "wall_s": round(done_at - t0, 2),
        "send_s": round(sent_at - t0, 2),
        "end_to_end_latency_s": percentiles(latencies),
        "ack_latency_s": percentiles(senders.ack_s),
        "peak_rss_mb": max((r for r in rss_peaks if r is not None), default=None),
        "results_expected": len(expected),
        "results_delivered": n_ok,
        "lost": len(expected) - n_ok,
        "duplicated_deliveries": sum(n - 1 for n in delivered.values() if n > 1),
        "other_result_versions_delivered": extra_versions,
        "studies_resent_by_senders": senders.resent,
        "srs_in_orthanc": orthanc_srs,
        # results in doubt after a kill, looked up at the destination before resending (audit "sent")
        "in_doubt_lookups": verify_counts(work / "root" / "audit.jsonl"),
        "delivery_histogram": dict(Counter(delivered.values())),
        "plain_predict": plain,
        "service_over_predict_throughput": round(service_cpm / plain["cases_per_min"], 3),
        # CPU seconds per case (all threads): less sensitive to other jobs than wall-clock throughput;
        # without kills only (a restarted process starts counting again)
        "service_cpu_s_per_case": None
        if args.kills or cpu_start is None or cpu_end is None
        else round((cpu_end - cpu_start) / max(n_ok, 1), 4),
        "predict_cpu_s_per_case": plain["cpu_s_per_case"],
        "loadavg_end": list(__import__("os").getloadavg()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_run(args.out, args.name, result)
    print(json.dumps({k: result[k] for k in ("throughput_cases_per_min", "end_to_end_latency_s", "lost",
                                              "duplicated_deliveries", "service_over_predict_throughput")}))  # fmt: skip
    if result["lost"] or result["duplicated_deliveries"]:
        print(f"kept {work} (store, audit log, service logs) to see why", flush=True)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
