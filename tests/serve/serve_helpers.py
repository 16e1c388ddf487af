"""Helpers of the service tests: a tiny model, DICOM test studies, a service in-process or as
a real subprocess, and a pynetdicom sender.

Test studies wrap the shared real images (skin_isic9 for ``derm``, blood_pbc8 as gray for
``blood``) as DICOM Secondary Capture with pydicom; synthetic pixels when the data is absent.
Nothing is committed: everything is made under pytest's tmp folders.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TEST_SCU_AE = "DRIFA_TEST"  # the calling AE title of the tests' SCUs (Orthanc and the service allow it)

REPO = Path(__file__).resolve().parents[2]
SCU_AE = "TEST_SCU"
TASKS = ("derm", "blood")


# ------------------------------------------------------------------ model


def make_tiny_checkpoint(folder: Path) -> Path:
    """A tiny untrained two-task checkpoint (derm RGB 3 classes, blood gray 2 classes, 32 px)."""
    torch = pytest.importorskip("torch")
    from drifa_edge.artifact.card import ReferralRule, default_card
    from drifa_edge.artifact.checkpoint import save_checkpoint
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    cfg = ModelConfig(
        tasks=(TaskSpec("derm", ("nevus", "melanoma", "other")), TaskSpec("blood", ("a", "b"), channels=1)),
        image_size=32, width=0.125, dropout=0.25,
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for head in model.heads:
            head.weight.mul_(20.0)
    save_checkpoint(
        model, default_card(cfg, referral={"derm": ReferralRule("mutual_information", 1e-3, 0.1)}), folder
    )
    return folder


# ------------------------------------------------------------------ studies


def _shared_images(task: str) -> list[Path]:
    root = Path(os.environ.get("DRIFA_SHARED_DATA", REPO.parent / "shared" / "data"))
    folder = {"derm": root / "skin_isic9", "blood": root / "blood_pbc8"}[task]
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:64]


def task_pixels(task: str, index: int) -> np.ndarray:
    """uint8 pixels of one test image: RGB (H, W, 3) for derm, gray (H, W) for blood."""
    files = _shared_images(task)
    if files:
        from PIL import Image

        im = Image.open(files[index % len(files)]).convert("RGB" if task == "derm" else "L")
        im = im.resize((64, 64))
        return np.asarray(im, dtype=np.uint8)
    rng = np.random.default_rng(index * 7 + (task == "blood"))
    shape = (64, 64, 3) if task == "derm" else (64, 64)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def make_instance(pixels: np.ndarray, study_uid: str, series_uid: str, sop_uid: str, description: str,
                  patient_id: str = "PAT-1", instance_number: int = 1, series_number: int = 1):  # fmt: skip
    """A Secondary Capture instance (pydicom Dataset with file meta) holding ``pixels``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "Test^Patient"
    ds.PatientID = patient_id
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "ACC1", "1"
    ds.PatientBirthDate, ds.PatientSex, ds.ReferringPhysicianName = "", "O", ""
    ds.Modality = "OT"
    ds.SeriesDescription = description
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if pixels.ndim == 3:
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def make_study(index: int, patient_id: str | None = None) -> list:
    """A two-task study: one derm instance (series 'derm') and one blood instance (series 'blood')."""
    from pydicom.uid import generate_uid

    study = generate_uid()
    out = []
    for n, task in enumerate(TASKS, start=1):
        out.append(
            make_instance(
                task_pixels(task, index),
                study,
                generate_uid(),
                generate_uid(),
                task,
                patient_id or f"PAT-{index}",
                series_number=n,
            )  # fmt: skip
        )
    return out


def write_files(datasets: list, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# ------------------------------------------------------------------ senders


def send(datasets: list, port: int, ae_title: str = SCU_AE, called: str = "DRIFA_EDGE",
         timeout: float = 10.0, tls_args=None) -> list[int | None]:  # fmt: skip
    """C-STORE each dataset over one association with pynetdicom; the statuses (None: no answer)."""
    from pynetdicom import AE

    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for ds in datasets:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls_args)
    if not assoc.is_established:
        return [None] * len(datasets)
    statuses = []
    try:
        for ds in datasets:
            if not assoc.is_established:  # the peer went away (a crash point): no answer
                statuses.append(None)
                continue
            status = assoc.send_c_store(ds)
            statuses.append(int(status.Status) if status else None)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def dcmtk_storescu() -> str:
    """Path of dcmtk's storescu (not pynetdicom's app of the same name); skip when absent."""
    for path in (shutil.which("storescu", path="/usr/bin:/usr/local/bin"),):
        if path and "dcmtk" in subprocess.run([path, "--version"], capture_output=True, text=True).stdout:
            return path
    pytest.skip("dcmtk's storescu is not installed (apt-get install dcmtk)")


# ------------------------------------------------------------------ service


def serve_config(root: Path, **sections) -> Path:
    """A serve.toml for the tests: ephemeral ports, short quiet period, routes by description."""
    cfg = {
        "dicom": {"port": 0, "allowed_calling_aes": [SCU_AE, "STORESCU"]},
        "storage": {"root": str(root), "disk_floor_mb": 1.0},
        "assembly": {"quiet_seconds": 0.4, "max_wait_seconds": 30.0},
        "inference": {"runtime": "torch", "samples": 4, "batch_wait_ms": 50.0, "threads": 1},
        "http": {"port": 0},
        "retention": {"interval_s": 3600.0},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value

    def value(v):  # JSON is TOML for strings, numbers, booleans and arrays; not for tables
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return json.dumps(v)

    lines = []
    for section, body in cfg.items():
        if isinstance(body, list):
            for item in body:
                lines.append(f"[[{section}]]")
                lines += [f"{k} = {value(v)}" for k, v in item.items()]
            continue
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in body.items()]
    lines += ["[[assembly.routes]]", 'task = "derm"', 'series_description = "derm"',
              "[[assembly.routes]]", 'task = "blood"', 'series_description = "blood"']  # fmt: skip
    path = root.parent / f"{root.name}.toml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def start_service(artifact: Path, config: Path):
    """The service in this process (threads), started; stop it with ``.stop()``."""
    from drifa_edge.serve.config import load_config
    from drifa_edge.serve.service import Service

    return Service(artifact, load_config(config)).start()


class ServeProcess:
    """``drifa-edge serve`` as a real subprocess (crash-point and restart tests)."""

    def __init__(self, artifact: Path, config: Path, crash_at: str | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("DRIFA_EDGE_CRASH_AT", None)
        if crash_at:
            env["DRIFA_EDGE_CRASH_AT"] = crash_at
        self.log = config.with_suffix(f".{time.time_ns()}.log")
        self._log = open(self.log, "wb")
        code = "import sys; from drifa_edge.cli import main; sys.argv[0] = 'drifa-edge'; main()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, "serve", str(artifact), "--config", str(config)],
            stdout=self._log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        self.ports = self._wait_ready()

    def _wait_ready(self, timeout: float = 90.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"event": "ready"' in line:
                    return json.loads(line)
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            time.sleep(0.1)
        raise RuntimeError(f"serve not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    @property
    def dicom_port(self) -> int:
        return self.ports["dicom_port"]

    @property
    def http_port(self) -> int:
        return self.ports["http_port"]

    def wait_exit(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> int:
        """kill -9 (also a crash: the store must not care)."""
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self._log.close()
        return code

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1):
    """Poll ``predicate`` until it returns a truthy value; that value, or raise after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
