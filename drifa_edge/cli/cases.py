"""Where `predict` and `score` get their cases: a CSV manifest or a DICOM archive folder
indexed by its headers with `drifa-edge serve`'s routing rules."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from drifa_edge.errors import ConfigError

DICOM_HELP = (
    "an archive folder of DICOM files (searched recursively): cases are built from the headers "
    "with the routing rules of --routes, as drifa-edge serve would build them"
)
ROUTES_HELP = (
    "a drifa-edge serve config (TOML) whose \\[assembly] table (routes, group_by, multi_series, "
    "multi_image) turns the --dicom folder into cases"
)


def dicom_cases(dicom: Path, routes: Path | None, tasks, err: Console):
    """(cases, index) of a DICOM folder; the index's summary and unresolved groups go to ``err``."""
    from drifa_edge.serve.case_index import index_dicom_folder, load_assembly

    if routes is None:
        raise ConfigError(
            "--dicom needs --routes CONFIG.toml: a serve config whose [[assembly.routes]] map series "
            "to tasks (print an example with: drifa-edge serve-ctl example-config)"
        )
    index = index_dicom_folder(dicom, tasks, load_assembly(routes))
    err.print(f"DICOM index of {dicom}: {index.summary()}", highlight=False, markup=False)
    for item in index.unresolved:
        err.print(
            f"{item.case_id} ({item.group}): not scored, {item.reason}: {item.detail}",
            highlight=False,
            markup=False,
        )
    return index.cases, index


def exit_for_unresolved(index) -> None:
    """Exit 9 (some cases failed) when the index left a group unresolved, even if every scored case succeeded."""
    from drifa_edge.errors import PARTIAL_FAILURE_EXIT

    if index is not None and index.unresolved:
        raise typer.Exit(PARTIAL_FAILURE_EXIT)
