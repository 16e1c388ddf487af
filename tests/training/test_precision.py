"""Training precision (training.precision), channels_last, and the per-epoch progress lines."""

from __future__ import annotations

import pytest

from drifa_edge.errors import ConfigError
from drifa_edge.training.config import TrainConfig
from drifa_edge.training.precision import cpu_flags, native_bf16, resolve_precision


def test_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: X\nflags\t\t: fpu sse avx512f avx512_bf16\n\nprocessor\t: 1\n"
    )
    assert cpu_flags(info) == ("fpu", "sse", "avx512f", "avx512_bf16")
    assert cpu_flags(tmp_path / "absent") == ()


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (("avx512f", "avx512_bf16"), "fp32"),  # native bf16 but measured no faster: auto keeps fp32
        (("amx_tile", "amx_bf16", "avx512_bf16"), "bf16"),
        (("avx2", "avx512f"), "fp32"),
        ((), "fp32"),
    ],
)
def test_auto_picks_bf16_only_with_amx(flags, expected):
    assert resolve_precision("auto", flags) == expected
    assert native_bf16(flags) == ("avx512_bf16" in flags)
    assert resolve_precision("fp32", flags) == "fp32" and resolve_precision("bf16", flags) == "bf16"


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="bf16"):
        TrainConfig(precision="bf61")


torch = pytest.importorskip("torch")


def _tiny_model(channels_last: bool):
    from drifa_edge.model.config import ModelConfig, TaskSpec
    from drifa_edge.model.drifa import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(
        tasks=(TaskSpec("a", ("x", "y", "z"), 3), TaskSpec("b", ("u", "v"), 1)), image_size=32, width=0.125
    )
    model = build_model(cfg)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def test_channels_last_and_bf16_autocast_agree_with_fp32():
    """Same weights, dropout off: channels_last must agree to float rounding; bf16 (8-bit
    mantissa: 0.4 % per rounding, compounded over ~40 layers and batch-of-4 BatchNorms in
    sequence; ~12 % in norm measured on this random model) to 25 % in norm. Whether training
    follows fp32 is the loss curve in benchmarks/train_precision.py, not this test."""
    from drifa_edge.model.dropout import set_dropout_mode
    from drifa_edge.training.precision import autocast

    g = torch.Generator().manual_seed(1)
    xs = [torch.randn(4, 3, 32, 32, generator=g), torch.randn(4, 1, 32, 32, generator=g)]
    outs = {}
    for name, cl, precision in (("ref", False, "fp32"), ("cl", True, "fp32"), ("bf16", True, "bf16")):
        model = _tiny_model(cl).train()
        set_dropout_mode(model, "off")
        inputs = [x.contiguous(memory_format=torch.channels_last) for x in xs] if cl else xs
        with torch.no_grad(), autocast(precision):
            outs[name] = [z.float() for z in model(inputs)]
    for ref, cl, bf in zip(outs["ref"], outs["cl"], outs["bf16"], strict=True):
        torch.testing.assert_close(cl, ref, rtol=1e-4, atol=1e-4)
        assert torch.linalg.norm(bf - ref) < 0.25 * torch.linalg.norm(ref)
        assert not torch.equal(bf, ref)  # autocast really ran in bf16


def test_a_bf16_run_records_its_precision_and_prints_plain_epoch_lines(tmp_path):
    """~8 s: the CLI off a terminal (CliRunner) prints one plain line per epoch with the
    losses, per-task val accuracy and balanced accuracy, LR, seconds and an ETA, among the
    stage lines (each with its elapsed time) of the data preparation and the evaluation."""
    import re

    from typer.testing import CliRunner

    from drifa_edge.artifact.card import read_card
    from drifa_edge.cli import app

    recipe = tmp_path / "r.toml"
    recipe.write_text(
        'description = "t"\ndata = ["synthetic"]\nimage_size = 32\nwidth = 0.125\nbatch_size = 16\n'
        "mc_samples = 2\nthreads = 1\n"
    )
    out = tmp_path / "o"
    result = CliRunner().invoke(
        app, ["train", "--recipe", str(recipe), "--out", str(out), "--epochs", "2", "--precision", "bf16"]
    )
    assert result.exit_code == 0, result.output
    stamped = re.compile(r"^\[\s*\d+ s\] ")
    lines = [stamped.sub("", ln) for ln in result.output.splitlines() if stamped.match(ln)]
    assert any(ln.startswith("reading and preprocessing") and "32 px" in ln for ln in lines), lines
    assert any(ln.startswith("evaluating the best checkpoint") for ln in lines), lines
    lines = [ln for ln in lines if ln.startswith("epoch ")]
    assert len(lines) == 2
    for line in lines:
        for word in ("train ", "val ", "derm acc ", "scan acc ", " bal ", "lr ", "eta "):
            assert word in line, line
    assert "\x1b[" not in result.output  # no terminal escapes in a log
    card = read_card(out)
    assert card.training["precision"] == "bf16" and card.training["config"]["precision"] == "bf16"
    assert "balanced acc" in result.output


def test_eta_uses_the_recent_epochs_and_reads_as_minutes():
    from drifa_edge.training.progress import _duration, eta_seconds
    from drifa_edge.training.state import RunState

    run = RunState(epoch=6, history=[{"seconds": s} for s in (100, 10, 10, 10, 10, 10)])
    assert eta_seconds(run, 10) == pytest.approx(40.0)  # the last five epochs, 4 to go
    assert eta_seconds(RunState(epoch=10, history=run.history), 10) == 0.0
    assert _duration(3725) == "1h02m" and _duration(65) == "1m05s"
