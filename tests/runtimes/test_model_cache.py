"""OpenVINO's model cache (drifa_edge.runtimes.model_cache): where, keyed by build, off with none."""

from __future__ import annotations

from pathlib import Path

import pytest

from drifa_edge.runtimes.model_cache import (
    CACHE_ENV,
    build_cache_dir,
    build_key,
    default_cache_root,
    resolve_cache_dir,
)


def test_default_cache_root_per_platform(tmp_path):
    home = Path.home()
    assert default_cache_root({}, "linux") == home / ".cache" / "drifa-edge" / "ov"
    assert default_cache_root({"XDG_CACHE_HOME": str(tmp_path)}, "linux") == tmp_path / "drifa-edge" / "ov"
    assert default_cache_root({}, "darwin") == home / "Library" / "Caches" / "drifa-edge" / "ov"
    win = default_cache_root({"LOCALAPPDATA": str(tmp_path)}, "win32")
    assert win == tmp_path / "drifa-edge" / "cache" / "ov"
    assert (
        default_cache_root({CACHE_ENV: str(tmp_path / "x"), "XDG_CACHE_HOME": "/y"}, "linux")
        == tmp_path / "x"
    )


def test_resolve_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "user"))
    assert resolve_cache_dir(None) == tmp_path / "user"
    assert resolve_cache_dir("auto") == tmp_path / "user"
    for off in ("none", "NONE", "off", ""):
        assert resolve_cache_dir(off) is None
    assert resolve_cache_dir(tmp_path / "mine") == tmp_path / "mine"


def test_build_key_follows_the_files_hashes():
    hashes = {"openvino-int8/suffix.xml": "a" * 64, "openvino-int8/suffix.bin": "b" * 64}
    files = list(hashes)
    key = build_key(hashes, files)
    assert len(key) == 16 and key == build_key(hashes, reversed(files))
    assert build_key({**hashes, "openvino-int8/suffix.bin": "c" * 64}, files) != key
    assert build_key(hashes, files[:1]) != key


def test_build_cache_dir_unwritable_turns_the_cache_off(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert build_cache_dir(blocker, {}, ["x"]) is None
    assert "cache off" in caplog.text
    made = build_cache_dir(tmp_path / "ok", {}, ["x"])
    assert made is not None and made.is_dir() and made.parent == tmp_path / "ok"


def test_openvino_runtime_caches_per_build(tiny_artifacts, tmp_path):
    pytest.importorskip("openvino")
    import numpy as np

    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime

    root = tmp_path / "cache"
    rt = open_runtime(
        "openvino", tiny_artifacts[1], RuntimeOptions(threads=1, extra={"cache_dir": str(root)})
    )
    try:
        (sub,) = root.iterdir()
        assert rt.cache_dir == sub and len(sub.name) == 16
        size = rt.card.model.image_size
        feats = rt.run_prefix(
            [np.zeros((1, t.channels, size, size), np.float32) for t in rt.card.model.tasks]
        )
        rt.run_suffix([np.repeat(f, 3, axis=0) for f in feats])
        assert list(sub.glob("*.blob")), "OpenVINO wrote no compiled blob into the build's folder"
    finally:
        rt.close()
    bf16 = open_runtime(
        "openvino",
        tiny_artifacts[1],
        RuntimeOptions(precision="bf16", threads=1, extra={"cache_dir": str(root)}),
    )
    try:  # same IR files as fp32 (a compile hint): same build folder; OpenVINO keys the blob by config
        assert bf16.cache_dir == sub
    finally:
        bf16.close()
    off = open_runtime("openvino", tiny_artifacts[1], RuntimeOptions(threads=1))
    try:
        assert off.cache_dir is None
    finally:
        off.close()


def test_card_check_without_reading_the_graph(tiny_artifacts, tmp_path):
    """With the cache on, the graph is compiled from its file; the card embedded in it is read
    from the XML text, as read_model would give it, and an edited model_card.json is refused."""
    ov = pytest.importorskip("openvino")
    import json
    import shutil

    from drifa_edge.errors import ArtifactError
    from drifa_edge.runtimes.base import RuntimeOptions, open_runtime
    from drifa_edge.runtimes.openvino import RT_INFO_CARD, embedded_card_in_ir

    xml = tiny_artifacts[1] / "openvino" / "suffix.xml"
    model = ov.Core().read_model(str(xml))
    assert embedded_card_in_ir(xml) == model.get_rt_info(RT_INFO_CARD).astype(str)
    export = tmp_path / "export"
    shutil.copytree(tiny_artifacts[1], export)
    card_file = export / "model_card.json"
    card = json.loads(card_file.read_text())
    task = next(iter(card["preprocess"]))
    card["preprocess"][task]["mean"] = [0.123] * len(card["preprocess"][task]["mean"])
    card_file.write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match="edited"):
        open_runtime("openvino", export, RuntimeOptions(threads=1, extra={"cache_dir": str(tmp_path / "c")}))
