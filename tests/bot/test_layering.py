"""Imports flow one way: bot → graph → {approvals, tools, sandbox}; sandbox → tools."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ALLOWED = {
    "bot": {"bot", "graph", "approvals", "tools", "sandbox"},
    "graph": {"graph", "approvals", "tools", "sandbox"},
    "approvals": {"approvals"},
    "tools": {"tools"},
    "sandbox": {"sandbox", "tools"},
}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ALLOWED)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package):
    wrong = {}
    for path in (ROOT / package).rglob("*.py"):
        bad = imports(path) - ALLOWED[package]
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert wrong == {}


def test_graph_never_sees_slack_types():
    for path in (ROOT / "graph").rglob("*.py"):
        text = path.read_text()
        assert "slack_sdk" not in text and "slack_bolt" not in text, path
