"""Exit codes a new user meets first: a bad option value is 2 (not 4, "missing dependency"),
and a selection that matches nothing is an error, not an empty table with exit 0.

Run through the installed console script with stdout piped, as a script or a CI log would."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError, UnknownChoiceError, UnsupportedBackendError
from drifa_edge.runtimes.base import RuntimeOptions


def test_unknown_precision_is_a_bad_option_still_catchable_as_unsupported():
    with pytest.raises(UnknownChoiceError) as e:
        RuntimeOptions(precision="int4")
    assert e.value.exit_code == 2
    assert isinstance(e.value, ConfigError) and isinstance(e.value, UnsupportedBackendError)
    assert "Did you mean 'int8'" in str(e.value)


def test_predict_with_precision_int4_exits_2(tmp_path, cli):
    pytest.importorskip("torch")
    case = tmp_path / "case.npy"
    case.write_bytes(b"")
    proc = cli("predict", str(tmp_path), "--input", f"derm={case}", "--precision", "int4")
    assert proc.returncode == 2, proc.stderr
    assert "int4" in proc.stderr and "Traceback" not in proc.stderr


def test_check_with_precision_int4_exits_2(tmp_path, cli):
    proc = cli("check", str(tmp_path), str(tmp_path), "--data", "synthetic", "--precision", "int4")
    assert proc.returncode == 2, proc.stderr
    assert "int4" in proc.stderr and "Traceback" not in proc.stderr
