"""Pair samples of several tasks into multimodal rows.

DRIFA-Net's authors train on independent single-modality data sets and pair the i-th samples of
each (``index`` mode): every epoch each set is reshuffled and shorter sets are resampled up to the
longest by walking through fresh permutations, so every sample is used about equally often.
When the sets describe the same patients, ``case_id`` mode joins them on the case id instead.
"""

from __future__ import annotations

import zlib
from collections import defaultdict

import numpy as np

from drifa_edge.data.labelled import LabelledSet
from drifa_edge.errors import ConfigError

MODES = ("index", "case_id")


def _rng(seed: int, task: str, *more: int) -> np.random.Generator:
    # crc32 of the name, not its position, so the order of --data options does not change the draw
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(task.encode()), *more])


class PairedSampler:
    """Rows of {task: sample index within that task's set}, reshuffled every epoch."""

    def __init__(self, sets: dict[str, LabelledSet], mode: str = "index", seed: int = 0) -> None:
        if mode not in MODES:
            raise ConfigError(f"pairing mode must be one of {MODES}, got {mode!r}")
        if not sets:
            raise ConfigError("PairedSampler needs at least one data set")
        empty = [name for name, s in sets.items() if len(s) == 0]
        if empty:
            raise ConfigError(f"data set(s) {empty} have no samples to pair")
        self.sets = dict(sets)
        self.mode = mode
        self.seed = int(seed)
        self.lengths = {name: len(s) for name, s in self.sets.items()}
        self._cases = _join_cases(self.sets) if mode == "case_id" else None

    def __len__(self) -> int:
        """Rows per epoch."""
        if self._cases is not None:
            return sum(max(len(v) for v in per_task.values()) for per_task in self._cases.values())
        return max(self.lengths.values())

    def epoch(self, epoch: int) -> list[dict[str, int]]:
        if self._cases is not None:
            return self._case_epoch(epoch)
        n = len(self)
        columns = {name: self._walk(name, m, epoch * n, n) for name, m in self.lengths.items()}
        return [{name: int(col[i]) for name, col in columns.items()} for i in range(n)]

    def _walk(self, task: str, m: int, start: int, count: int) -> np.ndarray:
        """Positions [start, start + count) of an endless stream of fresh permutations of range(m);
        permutation k is drawn from (seed, task, k), so any epoch can be made on its own."""
        first, last = start // m, (start + count - 1) // m
        stream = np.concatenate([_rng(self.seed, task, k).permutation(m) for k in range(first, last + 1)])
        offset = start - first * m
        return stream[offset : offset + count]

    def _case_epoch(self, epoch: int) -> list[dict[str, int]]:
        assert self._cases is not None
        rows = []
        for case, per_task in self._cases.items():
            shuffled = {
                t: [
                    idx[j] for j in _rng(self.seed, t, epoch, zlib.crc32(case.encode())).permutation(len(idx))
                ]
                for t, idx in per_task.items()
            }
            m = max(len(v) for v in shuffled.values())
            rows += [{t: v[j % len(v)] for t, v in shuffled.items()} for j in range(m)]
        order = np.random.default_rng([self.seed & 0xFFFFFFFF, epoch, 1]).permutation(len(rows))
        return [rows[i] for i in order]


def _join_cases(sets: dict[str, LabelledSet]) -> dict[str, dict[str, list[int]]]:
    """Inner join on case id: {case: {task: [sample indices]}} for cases present in every set."""
    for name, s in sets.items():
        if not s.has_case_ids:
            raise ConfigError(
                f"data set {name!r} lacks case ids; case_id pairing needs a case_id column in every "
                "labels.csv (or use index pairing)"
            )
    per: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for name, s in sets.items():
        for i, sample in enumerate(s.samples):
            per[str(sample.case_id)].setdefault(name, []).append(i)
    joined = {case: tasks for case, tasks in sorted(per.items()) if len(tasks) == len(sets)}
    if not joined:
        distinct = {n: len({x.case_id for x in s.samples}) for n, s in sets.items()}
        raise ConfigError(
            f"no case id appears in every data set ({distinct} "
            "distinct cases per set); check that the sets describe the same cases"
        )
    return joined


def eval_rows(
    sets: dict[str, LabelledSet], seed: int = 0
) -> tuple[list[dict[str, int]], list[dict[str, bool]], list[str]]:
    """Deterministic evaluation rows: (rows of {task: index}, whether each entry is that sample's
    first use (so it is scored once), a row id). Joined on case id when every set has case ids,
    else index pairing where each set is shuffled once (seeded) and shorter sets cycle."""
    if all(s.has_case_ids for s in sets.values()):
        rows, first, ids = [], [], []
        cases = list(_join_cases(sets).items())
        order = np.random.default_rng([int(seed) & 0xFFFFFFFF, 2]).permutation(len(cases))
        for case, per_task in (cases[i] for i in order):
            m = max(len(v) for v in per_task.values())
            for j in range(m):
                rows.append({t: v[j % len(v)] for t, v in per_task.items()})
                first.append({t: j < len(v) for t, v in per_task.items()})
                ids.append(case if m == 1 else f"{case}#{j}")
        return rows, first, ids
    orders = {t: _rng(seed, t).permutation(len(s)) for t, s in sets.items()}
    n = max(len(s) for s in sets.values())
    rows = [{t: int(o[i % len(o)]) for t, o in orders.items()} for i in range(n)]
    first = [{t: i < len(o) for t, o in orders.items()} for i in range(n)]
    ids = [" | ".join(f"{t}:{sets[t].samples[r[t]].key}" for t in sets) for r in rows]
    return rows, first, ids
