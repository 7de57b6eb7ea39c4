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


def sources(package: str):
    """The package's own modules (not the build copies under ``sandbox/.build``, where
    ``opsbot image build`` stages the whole source tree)."""
    return (p for p in (ROOT / package).rglob("*.py") if ".build" not in p.parts)


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_flow_one_way(package):
    wrong = {}
    for path in sources(package):
        bad = imports(path) - ALLOWED[package]
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert wrong == {}


def test_graph_never_sees_slack_types():
    for path in sources("graph"):
        text = path.read_text()
        assert "slack_sdk" not in text and "slack_bolt" not in text, path


def test_what_ships_into_the_sandbox_image_imports_only_what_ships_with_it():
    """The image holds tools/ and a few sandbox/ files (sandbox.image.image_files); host-only
    services such as the credential broker (sandbox/credentials/) stay out of it."""
    from sandbox.image import image_files

    shipped = [p for p in image_files(ROOT) if p.suffix == ".py"]
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts) for p in shipped}
    modules |= {m.removesuffix(".__init__") for m in modules}
    wrong = {}
    for path in shipped:
        bad = {m for m in _modules_imported(path) if m.split(".")[0] in ("sandbox", "tools")
               and m not in modules}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert wrong == {}
    assert "sandbox.credentials" not in modules


def _modules_imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found
