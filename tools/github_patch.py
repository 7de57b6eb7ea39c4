"""Applying a unified diff (``git diff`` / ``diff -u`` output) to files read from the API.

Strict on purpose: every hunk's context and removed lines must match the file exactly at the
line the hunk names, or the whole patch is refused with a sentence saying which file and hunk.
A change proposed against an older version of a file is then refused rather than guessed at.

Usage::

    changes = parse(patch_text)                    # path -> list of hunks (or deletion)
    new_text = apply(old_text, changes["app.py"])  # ValueError when a hunk does not apply
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
DEV_NULL = "/dev/null"


@dataclass
class FilePatch:
    old: str | None  # None: the file is created
    new: str | None  # None: the file is deleted
    hunks: list[tuple[int, list[str]]] = field(default_factory=list)  # (old start, lines)

    @property
    def path(self) -> str:
        return self.new or self.old or ""


def parse(text: str) -> list[FilePatch]:
    patches: list[FilePatch] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("--- ") and i + 1 < len(lines) and lines[i + 1].startswith("+++ "):
            patches.append(FilePatch(_name(lines[i][4:]), _name(lines[i + 1][4:])))
            i += 2
            continue
        hunk = _HUNK.match(lines[i])
        if hunk and patches:
            body, i = _hunk_lines(lines, i + 1)
            patches[-1].hunks.append((int(hunk[1]), body))
            continue
        i += 1
    if not patches or not any(p.hunks for p in patches):
        raise ValueError("the patch has no file changes (expected unified diff: ---, +++, @@)")
    return patches


def apply(original: str | None, patch: FilePatch) -> str | None:
    """The file after the patch (None: deleted); ValueError naming the hunk that does not fit."""
    if patch.new is None:
        return None
    lines = (original or "").splitlines(keepends=True)
    out: list[str] = []
    at = 0
    for number, (start, body) in enumerate(patch.hunks, 1):
        begin = max(start - 1, 0) if start else 0
        expected = [line[1:] for line in body if line[:1] in (" ", "-")]
        actual = [line.rstrip("\n") for line in lines[begin:begin + len(expected)]]
        if begin < at or actual != expected:
            raise ValueError(f"hunk {number} of {patch.path} does not apply: the file differs "
                             f"at line {start}")
        out += lines[at:begin]
        out += [line[1:] + "\n" for line in body if line[:1] in (" ", "+")]
        at = begin + len(expected)
    out += lines[at:]
    return "".join(out)


def _name(raw: str) -> str | None:
    name = raw.split("\t")[0].strip()
    if name == DEV_NULL:
        return None
    return re.sub(r"^[ab]/", "", name)


def _hunk_lines(lines: list[str], i: int) -> tuple[list[str], int]:
    body = []
    while i < len(lines) and lines[i][:1] in (" ", "+", "-", "\\", "") \
            and not lines[i].startswith(("--- ", "+++ ")) and not _HUNK.match(lines[i]):
        if not lines[i].startswith("\\"):  # "\ No newline at end of file"
            body.append(lines[i] if lines[i] else " ")
        i += 1
    return body, i
