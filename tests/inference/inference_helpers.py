"""Helpers of the inference tests: tiny checkpoints (width 0.125, 32 px) and case files."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from tiny_model import make_tiny_checkpoint

from drifa_edge.artifact.card import ReferralRule
from drifa_edge.model.config import ModelConfig, TaskSpec

TASKS = (TaskSpec("derm", ("nevus", "melanoma", "other")), TaskSpec("blood", ("a", "b"), channels=1))


def tiny_config(dropout: float = 0.25) -> ModelConfig:
    return ModelConfig(tasks=TASKS, image_size=32, width=0.125, dropout=dropout)


def make_checkpoint(folder: Path, seed: int = 0, temperature: dict | None = None) -> Path:
    """The tiny model with its heads spread (x20) so that cases and samples differ visibly."""
    return make_tiny_checkpoint(
        folder,
        tuple((t.name, t.classes, t.channels) for t in TASKS),
        seed=seed,
        head_scale=20.0,
        referral={"derm": ReferralRule("mutual_information", 1e-3, 0.1)},
        temperature=temperature or {},
    )


def write_png(path: Path, array: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


def png_bomb(path: Path, side: int = 100_000) -> Path:
    """A tiny PNG whose header claims side x side pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])  # 8-bit gray
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def write_good_case(folder: Path, name: str, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    derm = write_png(folder / f"{name}_derm.png", rng.random((40, 44, 3)))
    blood = folder / f"{name}_blood.npy"
    np.save(blood, rng.random((36, 36)).astype(np.float32))
    return derm, blood


def write_manifest(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = ["case_id,derm,blood,label"] + [f"{c},{d},{b},x" for c, d, b in rows]
    path.write_text("\n".join(lines) + "\n")
    return path
