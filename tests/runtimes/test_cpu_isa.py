"""ISA class of a CPU from its /proc/cpuinfo flags, and what `info` recommends for it."""

from __future__ import annotations

import pytest

from drifa_edge.runtimes.cpu import ISA_CLASSES, ISA_FLAGS, isa_class, isa_info

SAPPHIRE_RAPIDS = "avx2 fma avx512f avx512_vnni avx512_bf16 amx_tile amx_int8 amx_bf16 avx_vnni"
ZEN5 = "avx2 fma avx512f avx512_vnni avx512_bf16 avx_vnni"  # this project's machine: no AMX
CASCADE_LAKE = "avx2 fma avx512f avx512_vnni"
SKYLAKE_SP = "avx2 fma avx512f"
HASWELL = "avx2 fma"


@pytest.mark.parametrize(
    "flags, expected",
    [
        (SAPPHIRE_RAPIDS, "amx"),
        (ZEN5, "avx512_bf16"),
        (CASCADE_LAKE, "avx512_vnni"),
        (SKYLAKE_SP, "avx512"),
        (HASWELL, "avx2"),
        ("sse4_2 avx", "baseline"),
        ("fp asimd sve", "baseline"),  # Arm 'Features'
        ("", "baseline"),
        # AMX tiles without AMX-BF16 are not the amx class (all three flags are needed)
        ("avx2 fma avx512f avx512_vnni amx_tile amx_int8", "avx512_vnni"),
    ],
)
def test_isa_class_from_flags(flags, expected):
    assert isa_class(tuple(flags.split())) == expected


def test_isa_info_reads_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
        f"flags\t\t: fpu {SAPPHIRE_RAPIDS}\n\nprocessor\t: 1\nflags\t\t: fpu\n"
    )
    info = isa_info(cpuinfo=cpuinfo)
    assert info["cpu"] == "Intel(R) Xeon(R) Platinum 8480+"
    assert info["isa"] == "amx"
    assert set(info["flags"]) == set(ISA_FLAGS)
    assert info["flags"]["amx_bf16"] is True and info["flags"]["avx2"] is True
    assert "bf16" in info["recommendation"]


def test_isa_info_without_cpuinfo(tmp_path):
    info = isa_info(cpuinfo=tmp_path / "missing")
    assert info["isa"] == "baseline" and info["cpu"] == "" and not any(info["flags"].values())


def test_every_class_has_a_recommendation():
    for name in ISA_CLASSES:
        flags = {"amx": SAPPHIRE_RAPIDS, "avx512_bf16": ZEN5, "avx512_vnni": CASCADE_LAKE,
                 "avx512": SKYLAKE_SP, "avx2": HASWELL, "baseline": ""}[name]  # fmt: skip
        assert isa_info(tuple(flags.split()))["recommendation"]


def test_info_cli_reports_the_isa(monkeypatch):
    import json

    from typer.testing import CliRunner

    from drifa_edge.cli.app import app

    result = CliRunner().invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    cpu = json.loads(result.output)["cpu"]
    assert cpu["isa"] == isa_class()
    assert cpu["default_threads"] >= 1 and cpu["cpus_available"] >= cpu["default_threads"]


def test_info_off_a_terminal_prints_plain_columns_and_refuses_a_bad_format():
    """Piped (CliRunner is not a terminal), `info` prints the runtimes as plain columns: no box
    characters, no cell cut short (the TensorRT hint was cut at 80 columns before); a bad
    --format is exit 2."""
    from typer.testing import CliRunner

    from drifa_edge.cli.app import app

    result = CliRunner().invoke(app, ["info"])
    assert result.exit_code == 0, result.output
    assert not set("┃│┏━╇─") & set(result.stdout)
    assert "pip install 'drifa-edge[tensorrt]'" in result.stdout or "tensorrt  " in result.stdout
    bad = CliRunner().invoke(app, ["info", "--format", "xml"])  # main() maps it to its exit_code
    assert type(bad.exception).__name__ == "UnknownChoiceError" and bad.exception.exit_code == 2


def test_cpu_summary_reads_model_and_simd_flags(tmp_path):
    """The CPU record every benchmark JSON carries (one reader instead of a copy per script)."""
    import os

    from drifa_edge.runtimes.cpu import cpu_summary

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R45\nflags\t\t: sse2 fma avx512_bf16 avx2 amx_tile\n")
    assert cpu_summary(cpuinfo) == {
        "model": "AMD EPYC 9R45",
        "logical_cpus": os.cpu_count(),
        "simd_flags": ["amx_tile", "avx2", "avx512_bf16", "fma"],
    }
