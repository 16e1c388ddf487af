"""Fixtures of the inference tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from inference_helpers import make_checkpoint


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny two-task checkpoint (derm RGB 3 classes, blood gray 2 classes)."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model")
