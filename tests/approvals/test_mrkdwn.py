"""Untrusted text shown as exactly what it is: the one-``translate`` path for ASCII text gives
what the per-character path gives, for any text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from approvals.mrkdwn import code_block, one_line, shown, visible

TRICKY = st.text(alphabet=st.sampled_from("ab \n\r\t\x00\x1b\x7f`&<>\u202e\u2028é"))


def per_character(text: str) -> str:
    return "".join(visible(c) for c in text)


@given(st.one_of(st.text(), TRICKY))
def test_shown_is_each_character_made_visible(text):
    assert shown(text) == per_character(text)
    assert shown(text, keep_lines=True) == "\n".join(per_character(t) for t in text.split("\n"))


def test_controls_are_escapes_and_lines_stay_only_in_a_code_block():
    assert one_line("ok\nfake *Approved*\x1b[2J") == "ok\\nfake *Approved*\\u001b[2J"
    assert code_block("a\tb\nc\u202e") == "```a\\tb\nc\\u202e```"
