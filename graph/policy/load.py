"""Loading a policy file: YAML with line numbers, schema errors mapped back to ``file:line``.

PyYAML's compose API keeps a node tree with marks; :func:`read_spec` walks it once to record the
line of every key and list item (and to catch duplicate keys, which plain YAML loading silently
collapses), validates the data against :class:`~graph.policy.schema.PolicyFile`, then runs the
checks that need the whole file (unknown group names, unreachable rules, toolset and action
names that match nothing). Every problem becomes one :class:`Issue`; all of them are reported
at once, sorted by line::

    policy.yml:14: rules[2].match.tier: 7 is not a tier (0-4)
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Annotated, Any, Self, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from approvals.mrkdwn import shown
from graph.policy.lint import semantic_issues
from graph.policy.model import Policy, compile_policy
from graph.policy.schema import PolicyFile, show
from tools import TOOLSETS
from tools.base import Toolset

Path = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)
POLICY_SHAPE = "the policy must be a mapping of keys (version, groups, rules, ...)"
_TYPE_WORDS = {
    "string_type": "expected text",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "tuple_type": "expected a list",
    "list_type": "expected a list",
}
_MISSING_HINTS = {"version": " (write `version: 1` at the top of the file)"}


@dataclass(frozen=True)
class Issue:
    """One problem in a policy file, at a 1-based line."""

    line: int
    where: str
    message: str

    def render(self, source: str) -> str:
        """One line, whatever the file held (keys and values are quoted from it)."""
        where = f" {shown(self.where)}:" if self.where else ""
        return f"{source}:{self.line}:{where} {shown(self.message)}"


class YamlFileError(ValueError):
    """A YAML file opsbot reads is invalid; ``str(e)`` is one ``file:line: path: sentence`` per
    issue (the policy, the schedules: :func:`read_model` reads any of them)."""

    def __init__(self, message: str, issues: Sequence[Issue] = ()):
        super().__init__(message)
        self.issues = tuple(issues)

    @classmethod
    def from_issues(cls, source: str, issues: Sequence[Issue]) -> Self:
        ordered = sorted(issues, key=lambda i: i.line)
        return cls("\n".join(i.render(source) for i in ordered), ordered)


class PolicyError(YamlFileError):
    """The policy file is invalid."""


@dataclass
class _Marks:
    """Where each key and list item of the document is, plus problems found while walking."""

    lines: dict[Path, int]
    items: set[Path]
    issues: list[Issue]
    seen: set[int] = field(default_factory=set)  # node ids: an alias is walked once

    def line(self, path: Path) -> int:
        for end in range(len(path), 0, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def where(self, path: Path) -> str:
        text = ""
        for end in range(1, len(path) + 1):
            part = path[end - 1]
            text += f"[{part}]" if path[:end] in self.items else f".{part}"
        return text.lstrip(".")

    def issue(self, path: Path, message: str) -> Issue:
        return Issue(self.line(path), self.where(path), message)


def read_spec(text: str, source: str, toolsets: Sequence[Toolset[Any]] | None = None) -> PolicyFile:
    """Validate policy YAML; raise :class:`PolicyError` listing every problem with its line.

    ``toolsets`` are the connectors this opsbot has: rule patterns that match none of their
    names are errors. ``None`` skips that check (for tools that have no registry at hand).
    """
    spec, marks = read_model(text, source, PolicyFile, PolicyError, POLICY_SHAPE)
    issues = marks.issues + [marks.issue(p, m) for p, m in semantic_issues(spec, toolsets)]
    if issues:
        raise PolicyError.from_issues(source, issues)
    return spec


def read_model(text: str, source: str, model: type[M], error: type[YamlFileError],
               shape: str) -> tuple[M, _Marks]:
    """YAML validated against ``model``, and where each key is; raises ``error`` listing every
    syntax and schema problem with its line (``shape``: the sentence for a document that is not
    a mapping). Problems found while walking (duplicate keys) are returned in ``marks.issues``
    for the caller to add its own checks to, and raise them together."""
    data, marks = _compose(text, source, error, shape)
    try:
        return model.model_validate(data), marks
    except ValidationError as e:
        raise error.from_issues(source, marks.issues + _schema_issues(e, data, marks, model)
                                ) from None


def _compose(text: str, source: str, error: type[YamlFileError], shape: str
             ) -> tuple[Any, _Marks]:
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses control characters at once
        node = loader.get_single_node()
        marks = _Marks({}, set(), [])
        if node is not None:
            _walk(node, (), marks, loader)
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as e:
        raise error.from_issues(source, [_syntax_issue(e)]) from None
    except yaml.YAMLError as e:  # the reader's: control characters, bad encoding
        raise error.from_issues(source, [Issue(1, "", f"not valid YAML: {e}")]) from None
    except RecursionError:
        deep = Issue(1, "", "nested too deeply to be read")
        raise error.from_issues(source, [deep]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise error.from_issues(source, [Issue(1, "", shape)])
    return data, marks


def _syntax_issue(error: yaml.MarkedYAMLError) -> Issue:
    mark = error.problem_mark or error.context_mark
    context = ""
    if error.context and error.context_mark:
        context = f" ({error.context} that starts on line {error.context_mark.line + 1})"
    return Issue(mark.line + 1 if mark else 1, "", f"not valid YAML: {error.problem}{context}")


def _walk(node: yaml.Node, path: Path, marks: _Marks, loader: yaml.SafeLoader) -> None:
    if id(node) in marks.seen:
        return
    marks.seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            marks.lines[path + (index,)] = item.start_mark.line + 1
            marks.items.add(path + (index,))
            _walk(item, path + (index,), marks, loader)
    elif isinstance(node, yaml.MappingNode):
        _walk_mapping(node, path, marks, loader)


def _walk_mapping(
    node: yaml.MappingNode, path: Path, marks: _Marks, loader: yaml.SafeLoader
) -> None:
    seen: dict[Any, int] = {}
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
            continue
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in seen:
            message = (
                f"duplicate key (first on line {seen[key]}); YAML would silently keep only the "
                "last one"
            )
            marks.issues.append(Issue(line, marks.where(path + (key,)), message))
        seen.setdefault(key, line)
        marks.lines[path + (key,)] = line
        _walk(value_node, path + (key,), marks, loader)


def _schema_issues(error: ValidationError, data: Any, marks: _Marks,
                   root: type[BaseModel]) -> list[Issue]:
    issues = []
    for item in error.errors(include_url=False):
        path, extra = _data_path(item["loc"], data)
        message = _message(item, path, extra, root)
        where = path + ((extra,) if extra is not None else ())
        issues.append(Issue(marks.line(path), marks.where(where), message))
    return issues


def _data_path(loc: tuple[Any, ...], data: Any) -> tuple[Path, str | None]:
    """The path into the YAML data that a pydantic ``loc`` points at, plus a missing key."""
    path: list[str | int] = []
    node = data
    for i, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            path.append(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
        elif i == len(loc) - 1 and part != "[key]":
            return tuple(path), str(part)
    return tuple(path), None


def _message(item: Any, path: Path, missing: str | None, root: type[BaseModel]) -> str:
    kind = item["type"]
    if kind == "value_error":
        return str(item["ctx"]["error"])
    if kind == "missing":
        return f"missing required key `{missing}`{_MISSING_HINTS.get(missing or '', '')}"
    if kind == "extra_forbidden":
        return _unknown_key(path, root)
    if kind == "literal_error":
        return f"{show(item['input'])} is not supported; this opsbot reads policy version 1"
    if kind in _TYPE_WORDS:
        return f"{_TYPE_WORDS[kind]}, got {show(item['input'])}"
    return str(item["msg"])


def _unknown_key(path: Path, root: type[BaseModel]) -> str:
    key = str(path[-1])
    known = _fields_at(path[:-1], root)
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean `{close[0]}`?)" if close else ""
    return f"unknown key `{key}`{hint}; known keys here: {', '.join(known)}"


def _fields_at(path: Path, root: type[BaseModel]) -> list[str]:
    """The keys the schema allows at ``path`` (for "did you mean" hints)."""
    annotation: Any = root
    for part in path:
        annotation = _child(_unwrap(annotation), part)
    model = _unwrap(annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _child(annotation: Any, part: str | int) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return field.annotation if field else None
    args = get_args(annotation)
    if get_origin(annotation) in (list, tuple) and args:
        return args[0]
    if get_origin(annotation) is dict and args:
        return args[1]
    return None


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            annotation = next(a for a in get_args(annotation) if a is not type(None))
        else:
            return annotation


def load_policy(
    path: str | FilePath | None, toolsets: Sequence[Toolset[Any]] | None = TOOLSETS
) -> Policy:
    """The policy at ``path`` (``OPSBOT_POLICY``), or the safe default when ``path`` is None.

    Raises :class:`PolicyError` with one ``file:line: path: sentence`` per problem. Rule
    patterns are checked against ``toolsets`` (the registry by default; None skips that).
    """
    if path is None:
        return Policy()
    try:
        text = FilePath(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise PolicyError(f"{path}: cannot read the policy file: {reason}") from None
    return parse_policy(text, str(path), toolsets)


def parse_policy(
    text: str, source: str = "policy.yml", toolsets: Sequence[Toolset[Any]] | None = TOOLSETS
) -> Policy:
    """Like :func:`load_policy` for YAML already in memory; ``source`` names it in errors."""
    return compile_policy(read_spec(text, source, toolsets), source)
