"""Cost of the results path of `drifa-edge serve`, per case, on this machine.

For N two-task cases (records made like ``predict``'s, sources wrapped as DICOM from the
shared real images when present): build and atomically write the SR and the summary
image, enqueue both for two destinations, then deliver with ``Sender.run_once`` to a
real Orthanc (loopback) and to a pynetdicom recording receiver. Reports the median and
p95 milliseconds per case of each step, the delivery count per SOP Instance UID (must be
exactly 1) and the outbox state (all SENT). The share of each step in the total is the
ratio to compare between machines; the absolute milliseconds are this machine's (shared
2-core machine: noisy).

    python benchmarks/serve_results.py                 # writes benchmarks/results/serve_results.json
    python benchmarks/serve_results.py --cases 5 --out /tmp/x.json   # smoke test
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the Orthanc and case helpers live with the tests

from drifa_edge.bench.runner import machine_info  # noqa: E402
from drifa_edge.serve import results  # noqa: E402
from drifa_edge.serve.outbox import SENT, Outbox  # noqa: E402
from drifa_edge.serve.sender import Destination, Sender, SenderConfig  # noqa: E402
from tests.serve.conftest import TEST_SCU_AE, OrthancProcess, RecordingReceiver, ResultCase  # noqa: E402

WARMUP = 2
RESULTS = REPO / "benchmarks" / "results" / "serve_results.json"


def _stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "median_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


def run(cases: int, work: Path) -> dict:
    binary = shutil.which("Orthanc") or shutil.which("orthanc")
    if binary is None:
        raise SystemExit("Orthanc is not installed (apt-get install orthanc)")
    (work / "orthanc").mkdir()
    orthanc = OrthancProcess(binary, work / "orthanc")
    recorder = RecordingReceiver()
    orthanc.start()
    recorder.start()
    try:
        outbox = Outbox(work / "serve.db")
        sender = Sender(
            outbox,
            SenderConfig(
                (
                    Destination("orthanc", orthanc.ae_title, "127.0.0.1", orthanc.dicom_port),
                    Destination("recorder", recorder.ae_title, "127.0.0.1", recorder.port),
                ),
                calling_ae_title=TEST_SCU_AE,
            ),
        )
        steps: dict[str, list[float]] = {"build_write": [], "enqueue": [], "send": []}
        uids = set()
        for k in range(-WARMUP, cases):  # negative k: warm-up (imports, first association)
            case = ResultCase(case_id=f"bench-{k + WARMUP:04d}", seed=k + WARMUP)
            t = time.perf_counter()
            files = results.write_results(
                work / "results" / case.record["case_id"], case.record, case.sources, case.card
            )
            steps["build_write"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            for path in files.paths:
                outbox.enqueue(case.record["case_id"], 1, path, ["orthanc", "recorder"])
            steps["enqueue"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            report = sender.run_once()  # 2 files x 2 destinations, 2 associations
            steps["send"].append((time.perf_counter() - t) * 1e3)
            if report.sent != 4:
                raise SystemExit(f"case {k}: {[a.reason for a in report.attempts]}")
            uids |= {files.uids.sr_instance, files.uids.sc_instance}
            if k < 0:
                for values in steps.values():
                    values.pop()
        total = [sum(v) for v in zip(*steps.values(), strict=True)]
        counts = outbox.counts()
        deliveries = dict(recorder.deliveries)
        return {
            "cases": cases,
            "files_per_case": 2,
            "destinations": 2,
            "steps": {name: _stats(ms) for name, ms in steps.items()},
            "total_per_case": _stats(total),
            "share_of_total_median": {
                name: round(statistics.median(ms) / statistics.median(total), 3) for name, ms in steps.items()
            },
            "orthanc_instances": orthanc.instance_count(),
            "recorder_deliveries_per_uid": sorted(set(deliveries.values())),
            "recorder_uids": len(deliveries),
            "expected_uids": len(uids),
            "outbox": counts,
            "all_sent": counts[SENT] == 4 * (cases + WARMUP),
            "warmup_cases_not_timed": WARMUP,
            "orthanc_version": orthanc.get_json("/system")["Version"],
        }
    finally:
        recorder.stop()
        orthanc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.cases, Path(tmp))
    result = {
        "benchmark": "serve_results",
        "command": f"python benchmarks/serve_results.py --cases {args.cases}",
        "machine": info,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
