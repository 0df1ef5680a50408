"""The README's code blocks run as written, so its examples cannot rot.

Every ```python block runs in a fresh interpreter (this venv's python), every ```bash block under
`bash -euo pipefail` with this venv's bin/ first on PATH, each in a temporary folder; a failing block fails its
test. A block that cannot run in a test (installing, activating a venv, the full demo) is marked by an HTML
comment `<!-- not run by tests: REASON -->` on the line before its fence; ```console blocks are transcripts and
```text blocks pictures, never run. Any other fence fails `test_every_block_is_run_or_marked`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUN = {"python": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
NEVER_RUN = {"console", "text"}  # transcripts and pictures
MARK = re.compile(r"^<!--\s*not run by tests:\s*(\S.*?)\s*-->$")
FENCE = re.compile(r"^```(\S*)\s*$")
TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip_reason: str | None  # from the marker comment before the fence

    @property
    def name(self) -> str:
        return f"README.md:{self.line}:{self.language or 'plain'}"


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of a Markdown text, each with the marker comment on the line before it, if any."""
    found, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"README.md:{i + 1}: a code block that is never closed"
        previous = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARK.match(previous)
        found.append(Block(i + 1, opening.group(1), "\n".join(lines[i + 1 : end]) + "\n", marker and marker.group(1)))
        i = end + 1
    return found


README_BLOCKS = blocks(README.read_text(encoding="utf-8"))
RUNNABLE = [b for b in README_BLOCKS if b.language in RUN and b.skip_reason is None]


def test_every_block_is_run_or_marked():
    """Each block is run (python or bash, no marker), marked as not run with its reason, or a console/text block;
    and the README keeps runnable examples of both kinds."""
    unclear = [b.name for b in README_BLOCKS if b.language not in RUN and b.language not in NEVER_RUN]
    assert not unclear, f"fence these as python, bash, console or text: {unclear}"
    marked_but_never_run = [b.name for b in README_BLOCKS if b.skip_reason and b.language not in RUN]
    assert not marked_but_never_run, f"a marker is only for python or bash blocks: {marked_but_never_run}"
    assert {RUN[b.language] for b in RUNNABLE} == {"python", "bash"}, [b.name for b in RUNNABLE]


def test_markers_sit_on_blocks():
    """A marker comment that is not directly followed by a fence marks nothing (a stray or misplaced comment)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if MARK.match(line.strip()):
            following = next((text for text in lines[number:] if text.strip()), "")
            assert FENCE.match(following), f"README.md:{number}: marker not followed by a code block"


def environment() -> dict[str, str]:
    """This interpreter's venv first on PATH (cmrvsr-fast, python), no GPU, quiet progress bars."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["TQDM_DISABLE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_block_runs(block: Block, tmp_path):
    python = RUN[block.language] == "python"
    script = tmp_path / ("block.py" if python else "block.sh")
    script.write_text(block.code, encoding="utf-8")
    command = [sys.executable, str(script)] if python else ["bash", "-euo", "pipefail", str(script)]
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(command, cwd=work, env=environment(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"{block.name} failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}"
