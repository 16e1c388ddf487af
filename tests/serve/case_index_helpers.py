"""A generated DICOM archive for the case-index tests (serve's and score's): three studies,
the instances the index must leave out, and a routes config."""

from __future__ import annotations

import hashlib
from pathlib import Path

from serve_helpers import make_instance, task_pixels, write_files

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR Storage: not an image


def case_id(study_uid: str) -> str:
    """The id drifa-edge serve gives a study's case (written out here, not imported)."""
    return "dcm-" + hashlib.sha256(f"study:{study_uid}".encode()).hexdigest()[:16]


def make_archive(folder: Path) -> dict:
    """Study A: derm + blood, plus an unrouted 'scout' series and an SR; study B: derm only;
    study C: two derm series (SeriesNumber 1 and 5) and a blood series of three instances
    (InstanceNumber 3, 1, 2). A text file beside them. Returns what the index should find."""
    from pydicom.uid import generate_uid

    def inst(task, study, series, description, index, number=1, series_number=1):
        return make_instance(
            task_pixels(task, index), study, series, generate_uid(), description,
            instance_number=number, series_number=series_number,
        )  # fmt: skip

    a, b, c = generate_uid(), generate_uid(), generate_uid()
    a_derm, a_blood = inst("derm", a, generate_uid(), "derm", 0), inst("blood", a, generate_uid(), "blood", 0)
    scout = inst("blood", a, generate_uid(), "scout", 9)
    sr = inst("blood", a, generate_uid(), "report", 8)
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = SR_CLASS
    b_derm = inst("derm", b, generate_uid(), "derm", 1)
    c_derm_old = inst("derm", c, generate_uid(), "derm", 2, series_number=1)
    c_derm_new = inst("derm", c, generate_uid(), "derm", 3, series_number=5)
    c_series = generate_uid()
    c_blood = [inst("blood", c, c_series, "blood", 4 + n, number=n, series_number=2) for n in (3, 1, 2)]
    datasets = [a_derm, a_blood, scout, sr, b_derm, c_derm_old, c_derm_new, *c_blood]
    paths = dict(
        zip(
            [d.SOPInstanceUID for d in datasets], write_files(datasets, folder / "archive" / "x"), strict=True
        )
    )
    (folder / "archive" / "notes.txt").write_text("not DICOM")

    def p(ds):
        return paths[ds.SOPInstanceUID]

    return {
        "folder": folder / "archive",
        "cases": {
            case_id(a): {"derm": p(a_derm), "blood": p(a_blood)},
            case_id(b): {"derm": p(b_derm), "blood": None},
            case_id(c): {"derm": p(c_derm_new), "blood": p(c_blood[2])},  # InstanceNumber 2: the middle
        },
        "studies": {"A": case_id(a), "B": case_id(b), "C": case_id(c)},
        "skipped": {
            "unrouted": [p(scout)],
            "not_image": [p(sr)],
            "not_dicom": [folder / "archive" / "notes.txt"],
        },
    }


def routes_config(path: Path, **assembly: str) -> Path:
    """A serve config holding only what the index reads: [assembly] and its routes."""
    lines = ["[assembly]"] + [f'{k} = "{v}"' for k, v in assembly.items()]
    lines += ["[[assembly.routes]]", 'task = "derm"', 'series_description = "^derm$"',
              "[[assembly.routes]]", 'task = "blood"', 'series_description = "^blood$"']  # fmt: skip
    path.write_text("\n".join(lines) + "\n")
    return path
