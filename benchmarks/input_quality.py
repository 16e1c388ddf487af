"""How many real images the input-quality check flags (drifa_edge.data.quality defaults).

Reads every image of ../shared/data (blood_pbc8, skin_isic9, pap_smear_cric6 and the
PneumoniaMNIST 28x28 .npz) and writes benchmarks/results/input_quality.json: per data set
the image count, how many the check flags for a 128 px model, and the flagged files.

    nice -n 10 python benchmarks/input_quality.py [--data /work/shared/data] [--size 128]
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np

from drifa_edge.data.quality import QualityLimits, check_quality
from drifa_edge.data.readers import IMAGE_SUFFIXES, array_to_image, read_image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "input_quality.json")
    args = ap.parse_args()
    results = {}
    for folder in sorted(p for p in args.data.iterdir() if p.is_dir()):
        flagged, count = {}, 0
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.suffix.lower() != ".npy":
                count += 1
                issues = check_quality(read_image(f), args.size)
                if issues:
                    flagged[str(f.relative_to(args.data))] = issues
            elif f.suffix == ".npz":
                with np.load(f, allow_pickle=False) as z:
                    for key in (k for k in z.files if k.endswith("images")):
                        for i, image in enumerate(z[key]):
                            count += 1
                            issues = check_quality(array_to_image(image), args.size)
                            if issues:
                                flagged[f"{f.name}:{key}[{i}]"] = issues
        results[folder.name] = {"images": count, "flagged": len(flagged), "flagged_files": flagged}
        print(folder.name, count, "images,", len(flagged), "flagged")
    args.out.write_text(
        json.dumps(
            {
                "command": f"python benchmarks/input_quality.py --size {args.size}",
                "model_input_size": args.size,
                "limits": QualityLimits().to_dict(),
                "machine": {"processor": platform.processor(), "python": platform.python_version()},
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
