"""Reading an OpenAPI 3.0/3.1 document: operations, their parameters, and schema validation.

:func:`load_operations` resolves each allowed ``operationId`` to an :class:`Operation` (method,
path, parameters with ``$ref`` resolved, request body schema). :meth:`Operation.validate` checks a
call's values against the document's own schemas with ``jsonschema`` (2020-12; OpenAPI 3.0's
``nullable`` is rewritten to a JSON Schema type list), so what opsbot sends is what the vendor
documents. A violation is a ``ValueError`` whose text names the field and the rule.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from jsonschema import Draft202012Validator

METHODS = ("get", "put", "post", "delete", "patch", "head")
_PY_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}
_DOT_SEGMENTS = {".", ".."}


@dataclass(frozen=True)
class Parameter:
    name: str
    where: str  # "path" or "query"
    required: bool
    schema: dict[str, Any]
    description: str

    @property
    def field(self) -> str:
        """A Python identifier for the params model (the document's name is its alias)."""
        name = re.sub(r"\W", "_", self.name)
        return f"{name}_" if keyword.iskeyword(name) or name == "body" else name

    @property
    def alias(self) -> str | None:
        return self.name if self.field != self.name else None

    @property
    def python_type(self) -> Any:
        kind = _type(self.schema)
        if kind == "array":
            item = _PY_TYPES.get(_type(self.schema.get("items", {})), str)
            return list[item]  # type: ignore[valid-type]
        return _PY_TYPES.get(kind, str)


@dataclass(frozen=True)
class Operation:
    id: str
    method: str
    path: str
    summary: str
    description: str
    parameters: tuple[Parameter, ...]
    body: dict[str, Any] | None
    body_required: bool
    components: dict[str, Any]

    @property
    def body_description(self) -> str:
        ref = (self.body or {}).get("$ref", "")
        named = f" ({ref.rsplit('/', 1)[-1]})" if ref else ""
        return f"JSON request body{named}, as the API documents it."

    def fill(self, values: dict[str, Any]) -> str:
        """The path with its parameters filled in, each percent-encoded (``/`` included)."""
        path = self.path
        for p in self.parameters:
            if p.where == "path":
                path = path.replace("{" + p.name + "}", quote(str(values.get(p.name, "")), safe=""))
        return path

    def query(self, values: dict[str, Any]) -> dict[str, Any]:
        return {p.name: values[p.name] for p in self.parameters
                if p.where == "query" and p.name in values}

    def validate(self, values: dict[str, Any]) -> None:
        for p in self.parameters:
            if p.name in values:
                self._check(p.schema, values[p.name], p.name)
                if p.where == "path" and str(values[p.name]) in _DOT_SEGMENTS:
                    raise ValueError(f"{p.name}: `{values[p.name]}` is not a valid path value")
        if self.body is not None and "body" in values:
            self._check(self.body, values["body"], "body")

    def _check(self, schema: dict[str, Any], value: Any, where: str) -> None:
        validator = Draft202012Validator({**schema, "components": self.components})
        error = next(iter(sorted(validator.iter_errors(value), key=lambda e: e.path)), None)
        if error is not None:
            at = ".".join([where, *map(str, error.absolute_path)])
            raise ValueError(f"{at}: {_message(error)} (per the API's document)")


def load_operations(document: dict[str, Any], wanted: list[str]) -> dict[str, Operation]:
    """The operations named in ``wanted``; an id the document lacks is a declaration bug."""
    components = _json_schema(document.get("components", {}))
    found: dict[str, Operation] = {}
    for path, item in document.get("paths", {}).items():
        shared = item.get("parameters", [])
        for method in METHODS:
            op = item.get(method)
            if op and op.get("operationId") in wanted:
                found[op["operationId"]] = _operation(document, components, path, method, op,
                                                      shared)
    missing = [w for w in wanted if w not in found]
    if missing:
        raise ValueError(f"the OpenAPI document has no operation {', '.join(missing)}")
    return found


def _operation(document, components, path, method, op, shared) -> Operation:
    params = {}
    for raw in [*shared, *op.get("parameters", [])]:
        p = _resolve(document, raw)
        if p.get("in") in ("path", "query"):
            params[(p["name"], p["in"])] = Parameter(
                name=p["name"], where=p["in"], required=bool(p.get("required")),
                schema=_json_schema(p.get("schema", {})),
                description=_first_line(p.get("description", "")))
    body = _resolve(document, op.get("requestBody") or {})
    schema = body.get("content", {}).get("application/json", {}).get("schema")
    return Operation(
        id=op["operationId"], method=method, path=path,
        summary=op.get("summary") or op["operationId"],
        description=_describe(op), parameters=tuple(params.values()),
        body=_json_schema(schema) if schema is not None else None,
        body_required=bool(body.get("required")), components=components)


def _resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema quirks → JSON Schema 2020-12 (``nullable``, boolean exclusives)."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True and not out:  # Qdrant's `anyOf: [{$ref}, {nullable: true}]`
        return {"type": "null"}
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(out.get(bound), bool):
            flag = out.pop(bound)
            if flag and limit in out:
                out[bound] = out.pop(limit)
    return out


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    return kind or ""


def _message(error: Any) -> str:
    text = error.message
    return text if len(text) <= 200 else text[:199] + "…"


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


def _describe(op: dict[str, Any]) -> str:
    summary = op.get("summary") or op["operationId"]
    detail = _first_line(op.get("description", ""))
    return f"{summary}. {detail}" if detail and detail != summary else summary
