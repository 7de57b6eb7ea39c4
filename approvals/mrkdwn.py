"""Untrusted text in Slack mrkdwn: shown as exactly what it is, never as formatting.

Key names, model-chosen params, tool output and alert titles are untrusted. In plain mrkdwn a
newline, ``*bold*``, a backtick or a bidi control (U+202A-U+202E, U+2066-U+2069) in such text
can draw a fake "*Target*" or "*Approvals* already approved" line on an approval card, or make
``gnp`` read as ``png``. Every builder puts untrusted text through one of these functions:

- :func:`code`: one line of untrusted text as inline code (nothing inside is formatted;
  line breaks and invisible characters are shown as escapes such as ``\\n`` or ``\\u202e``);
- :func:`code_block`: many lines (tool output, a preview) as a code block that the text
  cannot close;
- :func:`json_text`: a value as ASCII JSON, for a code block: the exact value, every non-ASCII
  or invisible character written as ``\\uXXXX`` (look-alike letters included);
- :func:`one_line`: text that keeps its mrkdwn (our own sentences with untrusted parts already
  in :func:`code`) but cannot start a new line or reorder what follows it.

All of them also escape ``&``, ``<`` and ``>`` (:func:`escape`), so nothing untrusted can form a
mention, a ``<!channel>`` or a link.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

MARKER = "… (truncated)"
_INVISIBLE = {"Cc", "Cf", "Co", "Cs", "Cn", "Zl", "Zp"}
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GRAVE = "\u02cb"  # ˋ: stands in for a backtick inside inline code, which cannot hold one


def escape(text: str) -> str:
    """Slack's three control characters; keeps untrusted text from forming mentions or links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def visible(char: str) -> str:
    """``char`` itself, or an escape naming it when it is a line break or invisible."""
    if char in _NAMED:
        return _NAMED[char]
    if unicodedata.category(char) in _INVISIBLE:
        return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"
    return char


_ASCII = {c: visible(chr(c)) for c in range(128) if visible(chr(c)) != chr(c)}
_ASCII_LINES = {c: shown for c, shown in _ASCII.items() if c != ord("\n")}


def shown(text: str, keep_lines: bool = False) -> str:
    """``text`` with each character through :func:`visible` (line breaks kept if asked);
    ASCII text, most of what tools print, in one ``str.translate``."""
    if text.isascii():
        return text.translate(_ASCII_LINES if keep_lines else _ASCII)
    if keep_lines:
        return "\n".join(shown(line) for line in text.split("\n"))
    return "".join(visible(c) for c in text)


def one_line(text: str) -> str:
    """``text`` on one line: breaks and invisible characters shown as escapes, ``&<>`` escaped."""
    return escape(shown(text))


def code(text: str) -> str:
    """Untrusted text as inline code (backticks shown as ``ˋ``, which inline code can hold)."""
    return "`" + one_line(text).replace("`", _GRAVE) + "`"


def code_block(text: str) -> str:
    """Untrusted lines as a code block; they keep their line breaks but cannot close it."""
    body = escape(shown(text, keep_lines=True)).replace("`", _GRAVE)
    return f"```{body}```"


def json_text(value: Any) -> str:
    """``value`` as indented ASCII JSON with no backticks (``\\u0060`` is the same string)."""
    text = json.dumps(value, indent=1, sort_keys=True, ensure_ascii=True, default=str)
    return text.replace("`", "\\u0060")


def truncate(text: str, limit: int) -> str:
    """For text that is not the action itself (a report, a reason): cut with a marker."""
    return text if len(text) <= limit else text[: limit - len(MARKER)] + MARKER
