"""Record the CLI's outputs on a tiny synthetic model, to diff before/after a refactor.

    python tests/golden/record.py /tmp/golden-before      # on the old code
    python tests/golden/record.py /tmp/golden-after1      # on the new code
    python tests/golden/record.py --diff /tmp/golden-before /tmp/golden-after1 --noise /tmp/golden-befor2

(Folder names of equal length: Rich wraps long paths in the tables.)

Trains a tiny DRIFA-Net (fixed seed, one thread), exports ONNX + OpenVINO, builds an
ONNX Runtime INT8 folder, predicts with the (seedable) torch runtime, runs ``check``
(default and strict-clinical policies) and keeps every JSON/JSONL/CSV output plus the
commands' stdout. ``--diff`` compares two such folders, ignoring the fields that
legitimately change between runs (timings, absolute paths, package versions). About
a minute on one core. Not a pytest test: a refactoring tool (issue 11).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

VOLATILE_KEYS = {
    "seconds", "elapsed", "elapsed_s", "time", "timestamp", "created", "created_at", "versions",
    "drifa_edge_version", "wall_s", "duration_s", "started", "finished", "load_s", "compile_s",
    "seconds_per_epoch", "model_sha256",
}  # fmt: skip
# safetensors writes its metadata in hash-map order, so a file's sha256 (and every hash of
# it: card "files", model_sha256) differs between identical trainings; contents are compared.


def run(out: Path, args: list[str], name: str) -> None:
    done = out / f"{name}.rc"
    if done.exists() and done.read_text().strip() in ("0", "8", "9"):
        return  # done in an earlier, interrupted recording
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", "from drifa_edge.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=out,
    )
    (out / f"{name}.stdout").write_text(proc.stdout)
    (out / f"{name}.rc").write_text(str(proc.returncode))
    if proc.returncode not in (0, 8, 9):
        sys.exit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def record(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    train = ["train", "--data", "synthetic", "--out", "ckpt", "--epochs", "2", "--image-size", "32",
             "--width", "0.25", "--seed", "0", "--threads", "1", "--quiet"]  # fmt: skip
    run(out, train, "train")
    run(out, ["export", "ckpt", "--out", "exp", "--openvino", "--check-samples", "200"], "export")
    run(out, ["export", "ckpt", "--out", "exp", "--int8", "--int8-backend", "onnx", "--subset", "16",
              "--calib", "synthetic"], "export_int8")  # fmt: skip
    cases = out / "cases"
    if not cases.is_dir():
        cases.mkdir()
        _write_cases(out / "ckpt", cases)
    run(out, ["predict", "ckpt", "--manifest", "cases/manifest.csv", "--runtime", "torch", "--seed", "3",
              "-T", "8", "--out", "pred.jsonl", "--threads", "1"], "predict")  # fmt: skip
    run(out, ["predict", "ckpt", "--manifest", "cases/manifest.csv", "--runtime", "torch", "--seed", "3",
              "-T", "8", "--out", "table.csv", "--format", "csv", "--threads", "1"], "predict_csv")  # fmt: skip
    run(out, ["check", "ckpt", "ckpt", "--data", "synthetic", "-T", "6", "--limit", "40", "--out", "check",
              "--json"], "check")  # fmt: skip
    run(out, ["check", "ckpt", "ckpt", "--data", "synthetic", "-T", "6", "--limit", "40",
              "--policy", "strict-clinical"], "check_strict")  # fmt: skip
    run(out, ["info"], "info")


def _write_cases(ckpt: Path, folder: Path) -> None:
    """Four synthetic test images per task as PNG, one broken file, a manifest."""
    import csv

    import numpy as np
    from PIL import Image

    from drifa_edge.data.sources import load_datasets

    tasks = json.loads((ckpt / "model_card.json").read_text())["model"]["tasks"]
    names = [t["name"] for t in tasks]
    sets = load_datasets(["synthetic"], seed=0)
    rows = []
    for i in range(4):
        row = {"case_id": f"case-{i}"}
        for task in names:
            img = np.asarray(sets[task].subset("test").load(i))
            px = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
            Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px).save(folder / f"{i}_{task}.png")
            row[task] = f"{i}_{task}.png"
        rows.append(row)
    (folder / "broken.png").write_bytes(b"not a png")
    rows.append({"case_id": "broken", **{t: "broken.png" for t in names}})
    with open(folder / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["case_id", *names])
        w.writeheader()
        w.writerows(rows)


# ---------------------------------------------------------------- diff


def _normalise(obj, root: str):
    if isinstance(obj, dict):
        return {
            k: sorted(v) if k == "files" and isinstance(v, dict) else _normalise(v, root)
            for k, v in obj.items()
            if k not in VOLATILE_KEYS
        }
    if isinstance(obj, list):
        return [_normalise(v, root) for v in obj]
    if isinstance(obj, str):
        return obj.replace(root, "<ROOT>")
    return obj


def _text(path: Path, root: str) -> str:
    text = path.read_text(errors="replace").replace(root, "<ROOT>")
    text = re.sub(r"\d+(\.\d+)? ?(s|ms|seconds)\b", "<T>", text)
    text = re.sub(r'"(seconds|elapsed_s|wall_s)": [0-9.e+-]+', r'"\1": <T>', text)  # JSON on stdout
    text = re.sub(r"\b[0-9a-f]{64}\b", "<SHA>", text)
    text = re.sub(r"model [0-9a-f]{12}\b", "model <SHA>", text)
    return text


def load(folder: Path) -> dict[str, object]:
    root = str(folder.resolve())
    out = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        rel = str(p.relative_to(folder))
        if p.suffix == ".json":
            out[rel] = _normalise(json.loads(p.read_text()), root)
        elif p.suffix == ".jsonl":
            out[rel] = [_normalise(json.loads(line), root) for line in p.read_text().splitlines() if line]
        elif p.suffix in (".csv", ".stdout", ".rc", ".md"):
            out[rel] = _text(p, root)
        elif p.suffix in (".onnx", ".bin", ".xml", ".safetensors"):
            out[rel] = _content_hash(p)
    return out


def _content_hash(p: Path) -> str:
    """sha256 of what a model file computes with: tensors of a safetensors file, an ONNX graph
    without its metadata (the embedded card holds timings), an IR graph without rt_info."""
    h = hashlib.sha256()
    if p.suffix == ".safetensors":
        from safetensors.numpy import load_file

        for name, value in sorted(load_file(p).items()):
            h.update(name.encode() + value.tobytes())
    elif p.suffix == ".onnx":
        import onnx

        model = onnx.load(str(p), load_external_data=False)
        del model.metadata_props[:]
        h.update(model.SerializeToString())
    elif p.suffix == ".xml":
        h.update(re.sub(r"<rt_info>.*</rt_info>", "", p.read_text(), flags=re.S).encode())
    else:
        h.update(p.read_bytes())
    return "sha256:" + h.hexdigest()


def _paths(x, y, prefix: str = "") -> list[str]:
    """The JSON paths where ``x`` and ``y`` differ."""
    if isinstance(x, dict) and isinstance(y, dict):
        return [
            p for k in sorted(set(x) | set(y), key=str) for p in _paths(x.get(k), y.get(k), f"{prefix}.{k}")
        ]
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        return [p for i, (u, v) in enumerate(zip(x, y, strict=True)) for p in _paths(u, v, f"{prefix}[{i}]")]
    if isinstance(x, str) and isinstance(y, str) and x != y:
        return [
            f"{prefix}:{i}"
            for i, (u, v) in enumerate(zip(x.splitlines(), y.splitlines(), strict=False))
            if u != v
        ] or [prefix]
    return [] if x == y else [prefix]


def diff(a: Path, b: Path, noise: Path | None = None) -> int:
    """Differences between recordings ``a`` and ``b``; with ``noise`` (a second recording of
    the same code as ``a``) the paths that already differ between ``a`` and ``noise`` are
    run-to-run noise (unseeded in-graph MC draws, INT8 calibration) and are not counted."""
    da, db = load(a), load(b)
    dn = load(noise) if noise else None
    bad = 0
    for key in sorted(set(da) | set(db)):
        paths = _paths(da.get(key), db.get(key))
        noisy = set(_paths(da.get(key), dn.get(key))) if dn is not None and key in dn else set()
        real = [p for p in paths if p not in noisy and "" not in noisy]  # "": the whole file is noise
        if not paths:
            continue
        if not real:
            print(f"noise:   {key} ({len(paths)} value(s) that differ between two runs of the old code too)")
            continue
        bad += 1
        print(f"DIFFERS: {key}")
        for p in real[:20]:
            print(f"  {p}")
    print(f"{len(set(da) | set(db))} files compared, {bad} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "--diff":
        noise = Path(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--noise" else None
        sys.exit(diff(Path(sys.argv[2]), Path(sys.argv[3]), noise))
    record(Path(sys.argv[1]).resolve())
