"""Cut a published OpenAPI document down to the operations opsbot declares.

opsbot ships, for each OpenAPI connector, the part of the vendor's published document that its
allow-list uses: those operations plus every component they reference (transitively), with the
document's ``info``, ``servers`` and security schemes. The rest (hundreds of operations opsbot
never calls) stays out of the repository and the sandbox image. Run it again when the vendor
publishes a new version::

    python scripts/openapi_subset.py neon-v2.json tools/openapi_docs/neon.json \\
        listProjects getProject createProjectBranch ...

It prints the operations it kept and fails on an operationId the document does not have.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def subset(document: dict[str, Any], operation_ids: list[str]) -> dict[str, Any]:
    wanted, paths = set(operation_ids), {}
    for path, item in document["paths"].items():
        kept = {m: op for m, op in item.items() if m in METHODS and op.get("operationId") in wanted}
        if kept:
            shared = {k: v for k, v in item.items() if k == "parameters"}
            paths[path] = shared | kept
    found = {op["operationId"] for item in paths.values() for m, op in item.items() if m in METHODS}
    missing = wanted - found
    if missing:
        raise SystemExit(f"not in the document: {', '.join(sorted(missing))}")
    out = {k: document[k] for k in ("openapi", "info", "servers", "security") if k in document}
    out["paths"] = paths
    out["components"] = _components(document, paths)
    return out


def _components(document: dict[str, Any], paths: dict[str, Any]) -> dict[str, Any]:
    components = document.get("components", {})
    keep: dict[str, dict[str, Any]] = {}
    todo = list(_refs(paths))
    while todo:
        section, name = todo.pop()
        if name in keep.setdefault(section, {}):
            continue
        keep[section][name] = components[section][name]
        todo += _refs(components[section][name])
    if "securitySchemes" in components:
        keep["securitySchemes"] = components["securitySchemes"]
    return {section: dict(sorted(items.items())) for section, items in sorted(keep.items())}


def _refs(node: Any) -> list[tuple[str, str]]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        found = []
        if isinstance(ref, str) and ref.startswith("#/components/"):
            section, name = ref.removeprefix("#/components/").split("/", 1)
            found.append((section, name))
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def main(argv: list[str]) -> None:
    source, target, *operation_ids = argv
    document = json.loads(Path(source).read_text())
    out = subset(document, operation_ids)
    Path(target).write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
    print(f"{target}: {len(operation_ids)} operations, {len(Path(target).read_bytes())} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
