"""The README's command blocks run as written on a fresh clone.

Blocks are tagged after their language (```` ```console ci ````): ``ci`` blocks run here, in
README order, in one empty folder (later blocks use what earlier ones wrote, as a reader's
shell would), with the substitutions of the ``<!-- ci: replace A => B | exit 0 8 -->`` comment
just above a block (smaller sizes; exit codes accepted besides the block's own ``exit N`` line
and 0; ``--force`` on export where a 3-epoch model may be flagged at chance). ``realdata``, ``gpu`` and ``manual`` blocks are not run here.
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TAGS = {"ci", "realdata", "gpu", "manual"}
FENCE = re.compile(r"^```(\S*)(.*)$")
COMMENT = re.compile(r"^<!--\s*ci:(.*)-->\s*$")


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
                block.commands.append(lines[k][2:])
            elif re.fullmatch(r"exit \d+", lines[k].strip()):
                block.exits.add(int(lines[k].split()[1]))
            k += 1
        blocks.append(block)
        k += 1
    return blocks


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
        ]
    )
    ci, manual = readme_blocks(text)
    assert ci.tags == {"ci"} and ci.commands == ["drifa-edge export x --subset 64"]
    assert ci.replace == [("--subset 64", "--subset 8")] and ci.exits == {0, 8, 9}
    assert manual.tags == {"manual"} and manual.commands == []


@pytest.mark.slow  # trains, exports, quantizes, checks, predicts and benches: ~10+ min on 2 cores
def test_ci_blocks_run_as_written(tmp_path):
    shutil.copytree(ROOT / "train", tmp_path / "train")  # recipes named by path in the README
    for block in (b for b in _blocks() if "ci" in b.tags):
        for command in block.commands:
            for old, new in block.replace:
                command = command.replace(old, new)
            words = command.split()
            assert words[0] == "drifa-edge", f"README line {block.line}: {command}"
            proc = _run(words[1:], tmp_path)
            assert proc.returncode in block.exits, (
                f"README line {block.line}: `{command}` exited {proc.returncode}, expected one of "
                f"{sorted(block.exits)}\n{proc.stderr[-3000:]}"
            )


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
