"""The adaptive-T options shared by ``predict``, ``check`` and ``bench`` (one definition,
so the three commands spell and explain them alike)."""

from __future__ import annotations

import typer

ADAPTIVE = typer.Option(
    False,
    "--adaptive",
    help="adaptive T: draw MC samples in blocks and stop a case once its class and referral are "
    "settled; --samples is then T_max",
)
MIN_SAMPLES = typer.Option(4, "--min-samples", help="adaptive T: draws before the first look (T_min)")
BLOCK = typer.Option(3, "--block", help="adaptive T: draws added per look")
ERROR_RATE = typer.Option(
    0.05,
    "--error-rate",
    help="adaptive T: stop a case once the predictive probability that drawing on to T_max "
    "changes its class or referral is at most this",
)
STOP_RULE = typer.Option(
    "decision",
    "--stop-rule",
    help="adaptive T: decision (class + referral settled) | precision (MC standard error below "
    "--se-tolerance) | both | either",
)
SE_TOLERANCE = typer.Option(0.02, "--se-tolerance", help="adaptive T: standard error of the precision rule")


def adaptive_config(
    enabled: bool, min_samples: int, block: int, error_rate: float, rule: str, se_tolerance: float
):
    """The :class:`~drifa_edge.inference.adaptive.AdaptiveConfig` of the options, or None without --adaptive."""
    if not enabled:
        return None
    from drifa_edge.inference.adaptive import AdaptiveConfig

    return AdaptiveConfig(
        min_samples=min_samples, block=block, error_rate=error_rate, rule=rule, se_tolerance=se_tolerance
    )
