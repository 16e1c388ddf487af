"""The service on an exported artifact with the OpenVINO runtime: the model cache is filled at
the first start (and used by later ones), a study gets its result. Slow: the export runs here."""

from __future__ import annotations

import pytest
from serve_helpers import make_study, send, serve_config, start_service, wait_for


@pytest.mark.slow
def test_openvino_runtime_with_model_cache(tiny_model, tmp_path):
    pytest.importorskip("openvino")
    from drifa_edge.export import export_all

    export = tmp_path / "export"
    export_all(tiny_model, export, openvino=True, check=False)
    root = tmp_path / "root"
    config = serve_config(root, inference={"runtime": "openvino", "samples": 4, "threads": 1})
    svc = start_service(export, config)
    try:
        assert svc.predictor.runtime == "openvino"
        assert any((root / "ov-cache").iterdir())  # compiled blobs cached for the next start
        assert send(make_study(0), svc.dicom_port) == [0, 0]
        wait_for(lambda: svc.store.counts()["DONE"] == 1, 60)
        (case,) = svc.store.cases()
        record = svc.store.result(case.case_id)
        assert record["runtime"] == "openvino" and record["status"] == "ok"
    finally:
        svc.stop()
