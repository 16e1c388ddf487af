"""Split names and seeded, stratified train/val/test splits.

A split is assigned per group: a group is one case (patient/lesion) when case ids are known,
otherwise one sample, so images of one case never land on both sides of a split.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from drifa_edge.errors import ConfigError

if TYPE_CHECKING:  # labelled.py imports this module
    from drifa_edge.data.labelled import Sample

SPLITS = ("train", "val", "test")

# Lower-case folder or labels.csv names -> canonical split; "all"/"" mean "no split given".
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "test": "test",
    "testing": "test",
    "tst": "test",
}
UNSPLIT_NAMES = ("", "all", "none", "unsplit", "-")


def canonical_split(name: str) -> str | None:
    """'Training' -> 'train'; None for a name that is not a split name."""
    return SPLIT_ALIASES.get(name.strip().lower())


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ConfigError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must each be in [0, 1) "
            "and sum to less than 1 (e.g. 0.15 and 0.15)"
        )


def _counts_for(n: int, fractions: Sequence[float]) -> list[int]:
    """How many of n groups go to each carved split; every carved split gets >= 1 when
    n leaves at least one group for the remaining (train) part."""
    out = []
    for f in fractions:
        k = int(round(n * f))
        if f > 0 and k == 0 and n - sum(out) >= 2:
            k = 1
        out.append(k)
    while sum(out) >= n and n > 0 and max(out) > 0:  # keep one group for training
        out[int(np.argmax(out))] -= 1
    return out


def stratified_assign(
    labels: Sequence[int],
    fractions: dict[str, float],
    seed: int,
    groups: Sequence[str] | None = None,
    rest: str = "train",
) -> list[str]:
    """Assign each item a split name: per class, a seeded permutation of its groups is cut
    into ``fractions`` (e.g. {"val": .15, "test": .15}), the remainder goes to ``rest``.

    With ``groups`` (case ids) the unit is a group, stratified by its most common label."""
    n = len(labels)
    group_of = list(groups) if groups is not None else [str(i) for i in range(n)]
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(group_of):
        members[g].append(i)
    by_class: dict[int, list[str]] = defaultdict(list)
    for g in sorted(members):
        group_labels = [int(labels[i]) for i in members[g]]
        by_class[max(set(group_labels), key=lambda c: (group_labels.count(c), -c))].append(g)
    names = list(fractions)
    assignment: dict[str, str] = {}
    for c in sorted(by_class):
        gs = by_class[c]
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, c])
        order = [gs[j] for j in rng.permutation(len(gs))]
        start = 0
        for name, k in zip(names, _counts_for(len(order), [fractions[x] for x in names]), strict=True):
            for g in order[start : start + k]:
                assignment[g] = name
            start += k
        for g in order[start:]:
            assignment[g] = rest
    return [assignment[g] for g in group_of]


def assign_splits(
    samples: list[Sample], given: set[str | None], seed: int, val_fraction: float, test_fraction: float
) -> tuple[list[Sample], str]:
    """Complete the split of ``samples``: none given -> seeded stratified train/val/test; train given
    without val and/or test -> carve the missing ones out of train. Cases never straddle splits."""
    how = f"stratified, seed={seed}"
    if given == {None}:
        target, fractions = list(range(len(samples))), {"val": val_fraction, "test": test_fraction}
        source = f"seeded split ({how}, val={val_fraction:g}, test={test_fraction:g}); no split given"
    else:
        missing = [s for s in ("val", "test") if s not in given]
        if "train" not in given or not missing:
            present = "/".join(s for s in SPLITS if s in given)
            return samples, "given" if not missing else f"given ({present} only)"
        target = [i for i, s in enumerate(samples) if s.split == "train"]
        fractions = {s: {"val": val_fraction, "test": test_fraction}[s] for s in missing}
        carved = ", ".join(f"{s}={f:g}" for s, f in fractions.items())
        present = "/".join(s for s in SPLITS if s in given)
        source = f"given {present}; {'/'.join(missing)} carved from train ({how}, {carved} of train)"
    labels = [samples[i].label for i in target]
    groups = [samples[i].case_id or f"\0{samples[i].key}" for i in target]
    names = stratified_assign(labels, fractions, seed, groups=groups)
    out = list(samples)
    for i, split_name in zip(target, names, strict=True):
        out[i] = replace(samples[i], split=split_name)
    return out, source
