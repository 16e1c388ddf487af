"""The README's command blocks run as written on a fresh clone.

Blocks are tagged after their language (```` ```console ci ````): ``ci`` blocks run here, in
README order, in one empty folder (later blocks use what earlier ones wrote, as a reader's
shell would), with the substitutions of the ``<!-- ci: replace A => B | exit 0 8 -->`` comment
just above a block (smaller sizes; exit codes accepted besides the block's own ``exit N`` line
and 0; ``--force`` on export where a 3-epoch model may be flagged at chance). ``realdata``
blocks run the same way (their comment is ``<!-- realdata: ... -->``) in a folder that has
the shared data at ``../shared/data``, as a clone beside it has; skipped without the data.
``gpu`` and ``manual`` blocks are not run here. A command may continue over lines ending in
a backslash.
"""

from __future__ import annotations

import itertools
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TAGS = {"ci", "realdata", "gpu", "manual"}
FENCE = re.compile(r"^```(\S*)(.*)$")
COMMENT = re.compile(r"^<!--\s*(?:ci|realdata):(.*)-->\s*$")


@dataclass
class Block:
    line: int  # 1-based line of the opening fence
    tags: set[str]
    commands: list[str]
    exits: set[int] = field(default_factory=lambda: {0})
    replace: list[tuple[str, str]] = field(default_factory=list)


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block of the README with its tags, its ``$ `` commands and its ci settings."""
    lines = text.splitlines()
    blocks, k = [], 0
    while k < len(lines):
        m = FENCE.match(lines[k])
        if not m:
            k += 1
            continue
        tags = set(m.group(2).split()) & TAGS
        block = Block(k + 1, tags, [])
        comment = COMMENT.match(lines[k - 1]) if k else None
        for part in comment.group(1).split("|") if comment else []:
            part = part.strip()
            if part.startswith("replace "):
                old, _, new = part[len("replace ") :].partition(" => ")
                block.replace.append((old.strip(), new.strip()))
            elif part.startswith("exit "):
                block.exits |= {int(x) for x in part.split()[1:]}
        k += 1
        while k < len(lines) and not lines[k].startswith("```"):
            if lines[k].startswith("$ "):
                command = lines[k][2:]
                while command.endswith("\\") and k + 1 < len(lines) and not lines[k + 1].startswith("```"):
                    k += 1
                    command = command[:-1].rstrip() + " " + lines[k].strip()
                block.commands.append(command)
            elif re.fullmatch(r"exit \d+", lines[k].strip()):
                block.exits.add(int(lines[k].split()[1]))
            k += 1
        blocks.append(block)
        k += 1
    return blocks


STAMP = re.compile(r"^\[\s*(\d+) s\] ", re.M)
SILENCE_LIMIT_S = 60


def longest_silence(log: str) -> int:
    """The longest gap in seconds between two consecutive progress lines of a command's stderr."""
    stamps = [int(s) for s in STAMP.findall(log)]
    return max((b - a for a, b in itertools.pairwise(stamps)), default=0)


def test_longest_silence_reads_the_progress_stamps():
    log = "[    0 s] export\nnoise\n[   10 s] still: export\n[   55 s] ONNX checks\n[   57 s] done\n"
    assert longest_silence(log) == 45
    assert longest_silence("no stamps at all") == 0


def _blocks() -> list[Block]:
    return readme_blocks((ROOT / "README.md").read_text())


def test_every_command_block_is_tagged():
    """Set-up and command blocks carry a tag; blocks in other sections are their authors'."""
    text = (ROOT / "README.md").read_text()
    mine = text[text.index("## Set up") : text.index("### Inputs:")]
    untagged = [b.line for b in readme_blocks(mine) if b.commands and not b.tags]
    assert not untagged, f"untagged command blocks at lines {untagged} of the set-up/commands part"
    ci = [b for b in _blocks() if "ci" in b.tags]
    assert len(ci) >= 6 and all(b.commands for b in ci)


def test_parser_reads_tags_substitutions_and_exits():
    text = "\n".join(
        [
            "<!-- ci: replace --subset 64 => --subset 8 | exit 0 8 -->",
            "```console ci",
            "$ drifa-edge export x --subset 64",
            "output",
            "exit 9",
            "```",
            "```bash manual",
            "make demo",
            "```",
            "<!-- realdata: replace --epochs 60 => --epochs 1 -->",
            "```console realdata",
            "$ drifa-edge train --out runs/x \\",
            "    --epochs 60",
            "```",
        ]
    )
    ci, manual, real = readme_blocks(text)
    assert ci.tags == {"ci"} and ci.commands == ["drifa-edge export x --subset 64"]
    assert ci.replace == [("--subset 64", "--subset 8")] and ci.exits == {0, 8, 9}
    assert manual.tags == {"manual"} and manual.commands == []
    assert real.tags == {"realdata"} and real.commands == ["drifa-edge train --out runs/x --epochs 60"]
    assert real.replace == [("--epochs 60", "--epochs 1")]


def _run_blocks(tag: str, clone: Path) -> None:
    """Every ``tag`` block's commands, in README order, in ``clone`` (a fresh folder holding the
    recipes in ``train/``, as a clone does)."""
    shutil.copytree(ROOT / "train", clone / "train")  # recipes named by path in the README
    blocks = [b for b in _blocks() if tag in b.tags]
    assert blocks, f"no {tag} blocks in the README"
    for block in blocks:
        for command in block.commands:
            for old, new in block.replace:
                command = command.replace(old, new)
            words = command.split()
            assert words[0] == "drifa-edge", f"README line {block.line}: {command}"
            proc = _run(words[1:], clone)
            assert proc.returncode in block.exits, (
                f"README line {block.line}: `{command}` exited {proc.returncode}, expected one of "
                f"{sorted(block.exits)}\n{proc.stderr[-3000:]}"
            )
            # piped, as in a log: the progress lines ("[  12 s] ...") leave no long silence; the
            # repeat comes every 10 s, the limit leaves room for a starved machine
            assert longest_silence(proc.stderr) <= SILENCE_LIMIT_S, (
                f"README line {block.line}: `{command}` was silent for {longest_silence(proc.stderr)} s "
                f"in its log\n{proc.stderr[-3000:]}"
            )


@pytest.mark.slow  # trains, exports, quantizes, checks, predicts and benches: ~10+ min on 2 cores
def test_ci_blocks_run_as_written(tmp_path):
    _run_blocks("ci", tmp_path / "clone")


@pytest.mark.slow  # reads and preprocesses ~4,000 real images, trains, exports, checks: many minutes
def test_realdata_blocks_run_as_written(shared_data, tmp_path):
    """The real-data path as a clone beside ``shared/`` runs it: ``../shared/data`` is the data."""
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data, target_is_directory=True)
    _run_blocks("realdata", tmp_path / "clone")


def _run(args: list[str], cwd: Path):
    import os
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="80", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "drifa_edge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=1800,
    )
