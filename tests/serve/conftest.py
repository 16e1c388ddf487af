"""Fixtures for the serve tests: real DICOM peers, no mocks.

- ``orthanc``: a real Orthanc (Debian package ``orthanc``) started as a subprocess with a
  temporary configuration (loopback DICOM and HTTP ports, temporary storage, AE title
  ``ORTHANC_TEST``, only the test SCU ``DRIFA_TEST`` allowed to store), ready when its
  REST API answers and its DICOM port accepts; ``stop()``/``start()`` for outage tests;
  killed after the test. Skipped with the reason when Orthanc is not installed.
- ``recorder``: a pynetdicom C-STORE SCP in a thread that counts deliveries per SOP
  Instance UID (Orthanc ignores a re-sent UID, so it cannot count duplicates); it also
  answers Study Root C-FIND at IMAGE level from what it stored (the sender's look-up of
  in-doubt rows), unless ``answers_find`` is False.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

ORTHANC_AE = "ORTHANC_TEST"
from serve_helpers import TEST_SCU_AE  # noqa: E402 - the AE title the tests call from

RECORDER_AE = "RECORDER"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class OrthancProcess:
    """One Orthanc on loopback ports with its own storage; REST helpers for assertions."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.root = root
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.ae_title = ORTHANC_AE
        self.proc: subprocess.Popen | None = None
        self.config_path = root / "orthanc.json"
        self.log_path = root / "orthanc.log"
        config = {
            "Name": "drifa-edge-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "storage"),
            "StorageCompression": False,
            "DicomAet": ORTHANC_AE,
            "DicomPort": self.dicom_port,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowStore": False,  # only the known modality below may store
            "DicomCheckModalityHost": True,
            "DicomModalities": {"drifa": [TEST_SCU_AE, "127.0.0.1", 104]},
            "HttpPort": self.http_port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "Plugins": [],
            "ConcurrentJobs": 1,
            "HttpThreadsCount": 4,
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 30.0) -> None:
        assert self.proc is None, "already running"
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([self.binary, str(self.config_path)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.get("/system")
                if _port_open(self.dicom_port):
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc not ready after {timeout_s} s:\n{self.log_tail()}")

    def stop(self, graceful: bool = False) -> None:
        """Stop it: SIGKILL by default (an outage; fast), SIGTERM with ``graceful`` (~3 s)."""
        if self.proc is None:
            return
        if graceful:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=5) as r:
            return r.read()

    def get_json(self, path: str):
        return json.loads(self.get(path))

    def post_json(self, path: str, body):
        data = body if isinstance(body, bytes) else body.encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def instance_id(self, sop_instance_uid: str) -> str | None:
        """Orthanc's id of an instance, or None when Orthanc does not have it."""
        hits = [h for h in self.post_json("/tools/lookup", sop_instance_uid) if h["Type"] == "Instance"]
        return hits[0]["ID"] if hits else None

    def instance_file(self, sop_instance_uid: str) -> bytes | None:
        """The stored file of an instance, or None when Orthanc does not have it."""
        orthanc_id = self.instance_id(sop_instance_uid)
        return None if orthanc_id is None else self.get(f"/instances/{orthanc_id}/file")

    def instance_tags(self, sop_instance_uid: str) -> dict:
        """Orthanc's own parse of a stored instance (``/instances/{id}/simplified-tags``)."""
        return self.get_json(f"/instances/{self.instance_id(sop_instance_uid)}/simplified-tags")

    def instance_count(self) -> int:
        return len(self.get_json("/instances"))


@pytest.fixture
def orthanc(tmp_path_factory):
    """A started Orthanc (see :class:`OrthancProcess`); skipped when the package is absent."""
    binary = shutil.which("Orthanc") or shutil.which("orthanc")
    if binary is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc; .ci/run does)")
    server = OrthancProcess(binary, tmp_path_factory.mktemp("orthanc"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


class RecordingReceiver:
    """A C-STORE SCP (pynetdicom) in a thread that counts deliveries per SOP Instance UID.

    Every delivery is counted, duplicates included, and the dataset of the last one kept.
    ``status`` is the C-STORE status it answers (set it to a failure to test rejection);
    ``delay_s`` delays the answer (a slow PACS that stores, then answers too late).
    C-FIND (Study Root, IMAGE level, matching on SOP Instance UID) answers one match per
    stored instance; ``finds`` counts the queries; with ``answers_find = False`` the C-FIND
    context is not offered (a destination that cannot be asked)."""

    def __init__(self, port: int | None = None, ssl_context=None, answers_find: bool = True) -> None:
        self.port = port or free_port()
        self.ssl_context = ssl_context
        self.ae_title = RECORDER_AE
        self.deliveries: Counter[str] = Counter()
        self.datasets: dict = {}
        self.status = 0x0000
        self.delay_s = 0.0  # answer this late (a slow PACS), to test timeouts
        self.answers_find = answers_find
        self.finds = 0
        self._lock = threading.Lock()
        self._server = None

    def start(self) -> None:
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

        ae = AE(ae_title=self.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts
        if self.answers_find:
            ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_FIND, self._on_find)],
            ssl_context=self.ssl_context,
        )

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_store(self, event) -> int:
        time.sleep(self.delay_s)
        ds = event.dataset
        ds.file_meta = event.file_meta
        with self._lock:
            if self.status == 0x0000:
                self.deliveries[str(ds.SOPInstanceUID)] += 1
                self.datasets[str(ds.SOPInstanceUID)] = ds
            return self.status

    def _on_find(self, event):
        from pydicom.dataset import Dataset

        query = event.identifier
        with self._lock:
            self.finds += 1
            stored = dict(self.datasets)
        if query.get("QueryRetrieveLevel") != "IMAGE":
            yield 0xC000, None  # unable to process: only what the sender asks is answered
            return
        wanted = str(query.get("SOPInstanceUID", "") or "")
        for uid, ds in stored.items():
            if wanted and uid != wanted:
                continue
            match = Dataset()
            match.QueryRetrieveLevel = "IMAGE"
            match.StudyInstanceUID, match.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
            match.SOPInstanceUID = uid
            yield 0xFF00, match

    def total(self) -> int:
        with self._lock:
            return sum(self.deliveries.values())


@pytest.fixture
def recorder():
    """A started :class:`RecordingReceiver`, shut down after the test."""
    pytest.importorskip("pynetdicom", reason="pynetdicom not installed: pip install 'drifa-edge[serve]'")
    receiver = RecordingReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


# ------------------------------------------------------------------ a case with a result


def wrap_as_dicom(pixels, study_uid: str, patient_id: str = "TEST-1"):
    """A Secondary Capture pydicom Dataset (with file meta) around a uint8 image (H, W[, 3])."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID, ds.PatientName = patient_id, "Test^Patient"
    ds.PatientBirthDate, ds.PatientSex = "", "O"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "ACC1", "1"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.ConversionType = "OT", "WSD"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = pixels.tobytes()
    return ds


def _image(task_dir, rng):
    """The first real image of a shared-data task folder, else a synthetic one."""
    import numpy as np
    from PIL import Image

    if task_dir is not None and task_dir.is_dir():
        first = next(iter(sorted(task_dir.rglob("*.png"))), None)
        if first is not None:
            return np.asarray(Image.open(first).convert("RGB"))
    return rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)


class ResultCase:
    """A two-task model card, an ``ok`` predict record for one case, and its source DICOM."""

    def __init__(self, case_id: str = "case-001", seed: int = 0) -> None:
        import numpy as np
        from pydicom.uid import generate_uid

        from drifa_edge.artifact.card import ModelCard, ReferralRule
        from drifa_edge.data.preprocess_spec import PreprocessSpec
        from drifa_edge.inference.writers import task_result
        from drifa_edge.metrics.uncertainty import summarize
        from drifa_edge.model.config import ModelConfig, TaskSpec
        from tests.conftest import shared_data_root

        tasks = (
            TaskSpec("blood", ("basophil", "eosinophil", "erythroblast", "neutrophil")),
            TaskSpec("chest", ("normal", "pneumonia")),
        )
        self.card = ModelCard(
            model=ModelConfig(tasks=tasks, image_size=64),
            preprocess={t.name: PreprocessSpec(64) for t in tasks},
            referral={"blood": ReferralRule("mutual_information", 0.01, 0.1)},  # chest: no threshold
            files={"model.safetensors": "5" * 64},
        )
        rng = np.random.default_rng(seed)
        results = {}
        for t in tasks:
            samples = rng.dirichlet(np.ones(t.num_classes) * 0.7, size=(1, 30))  # (B=1, T=30, C)
            results[t.name] = task_result(
                self.card, t.name, summarize(samples), 0, self.card.referral.get(t.name)
            )
        self.record = {
            "case_id": case_id,
            "status": "ok",
            "error": None,
            "tasks": results,
            "inputs": {t.name: f"{t.name}.dcm" for t in tasks},
            "mc_seed": None,
            "model_sha256": "5" * 64,
            "runtime": "openvino",
            "precision": "int8",
            "device": "CPU",
            "samples": 30,
            "seed": None,
            "ensemble_size": 1,
            "rows_per_call": 60,
            "drifa_edge_version": "0.0-test",
        }
        self.study_uid = generate_uid()
        data = shared_data_root()
        folders = {"blood": data / "blood_pbc8", "chest": data / "chest_xray_pneumoniamnist"}
        self.sources = {
            t.name: wrap_as_dicom(_image(folders.get(t.name), rng), self.study_uid) for t in tasks
        }


@pytest.fixture
def result_case() -> ResultCase:
    pytest.importorskip("highdicom", reason="highdicom not installed: pip install 'drifa-edge[serve]'")
    return ResultCase()


# ------------------------------------------------------------------ the service (serve helper)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny untrained two-task checkpoint (see serve_helpers.make_tiny_checkpoint), once per session."""
    from serve_helpers import make_tiny_checkpoint

    return make_tiny_checkpoint(tmp_path_factory.mktemp("serve-model") / "model")
