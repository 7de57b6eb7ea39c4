"""Runbook files: YAML front matter, the commands it lists, and the body cut into sections.

Pure functions over text (no I/O), so they are easy to test and the CLI can validate a file
without an index. A problem in a file is a :class:`RunbookFileError` carrying the 1-based line
number, which the index turns into ``runbooks/x.md line 3: ...``.

Usage::

    chunks = chunk_file("runbooks/redis.md", Path("runbooks/redis.md").read_text())
    chunks[0].meta.commands        # ["redis info section=memory", ...]
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

import tools
from tools.base import Action
from tools.catalog import CallError, describe_validation, parse_params

NAMESPACE = uuid.UUID("5b0d8f6e-8a4c-4f0e-9a57-0c2f4d1e7a10")
MAX_CHUNK_CHARS = 1000
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def command_problem(command: str) -> str | None:
    """Why ``command`` is not a runnable opsbot command (registered action, valid params)."""
    try:
        words = shlex.split(command)
    except ValueError as e:
        return f"`{command}` cannot be split into words ({e})"
    action = tools.find(words[0], words[1]) if len(words) >= 2 else None
    if action is None:
        return f"`{command}` does not start with a registered opsbot `<toolset> <action>`"
    problem = _params_problem(action, words[2:])
    return f"`{command}`: {problem}" if problem else None


def _params_problem(action: Action[Any], args: list[str]) -> str | None:
    """Read the arguments exactly as the typed command parser does, then validate them."""
    try:
        action.params.model_validate(parse_params(action.params, args, action.name))
    except CallError as e:
        return str(e)
    except ValidationError as e:
        return describe_validation(e)
    return None


def _check_command(command: str) -> str:
    problem = command_problem(command)
    if problem:
        raise ValueError(problem)
    return command


Command = Annotated[str, AfterValidator(_check_command)]


class RunbookMeta(BaseModel):
    """The front matter of one runbook. Unknown keys are errors, so typos don't vanish."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    title: str = Field(min_length=1, max_length=200)
    services: list[str] = []
    alerts: list[str] = []
    tags: list[str] = []
    commands: list[Command] = []

    @field_validator("services", "alerts", "tags", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """``services: redis`` means ``[redis]``; ``tags: [500, 502]`` means strings."""
        items = [value] if isinstance(value, str | int | float) else value
        return [_number_text(v) for v in items] if isinstance(items, list) else items


def _number_text(value: Any) -> Any:
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


@dataclass(frozen=True)
class Chunk:
    """One section of one runbook, as stored in Qdrant."""

    path: str
    index: int
    heading: str
    text: str
    meta: RunbookMeta

    @property
    def id(self) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{self.path}#{self.index}"))

    @property
    def embed_text(self) -> str:
        """What gets embedded: the section in the context of its runbook."""
        facts = ", ".join(self.meta.alerts + self.meta.services)
        return f"{self.meta.title}. {self.heading}. {facts}\n{self.text}"

    def payload(self, model: str) -> dict[str, Any]:
        """Stored beside the vector; ``hash`` covers all of it, so any edit re-embeds."""
        body = {"path": self.path, "chunk": self.index, "heading": self.heading,
                "text": self.text, "model": model, **self.meta.model_dump()}  # fmt: skip
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        return body | {"hash": digest}


class RunbookFileError(ValueError):
    """A problem in one runbook file; ``line`` is 1-based, ``str(e)`` the sentence."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line = line


def parse_runbook(text: str) -> tuple[RunbookMeta, str]:
    """Split front matter from body; raises ``RunbookFileError`` with a 1-based line number."""
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise RunbookFileError(1, "no front matter: the file must start with a `---` line")
    end = next((i for i, ln in enumerate(lines[1:], 1) if ln.strip() in ("---", "...")), None)
    if end is None:
        raise RunbookFileError(1, "front matter opened with `---` is never closed by another `---`")
    source = "\n".join(lines[1:end])
    return _meta(source), "\n".join(lines[end + 1 :])


def _meta(source: str) -> RunbookMeta:
    try:
        node = yaml.compose(source, Loader=yaml.SafeLoader)
        data = yaml.safe_load(source)
    except yaml.MarkedYAMLError as e:
        raise _yaml_error(e) from None
    if not isinstance(data, dict):
        raise RunbookFileError(2, "front matter must be a mapping with at least `title:`")
    try:
        return RunbookMeta.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else str(p) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise RunbookFileError(_line_of(node, first["loc"]), f"`{where}`: {message}") from None


def _yaml_error(e: yaml.MarkedYAMLError) -> RunbookFileError:
    """Where YAML noticed the problem, plus where the construct it was reading began."""
    mark = e.problem_mark or e.context_mark
    line = mark.line + 2 if mark else 2
    message = f"front matter is not valid YAML: {e.problem or e.context}"
    if e.context and e.context_mark and e.context_mark.line + 2 != line:
        message += f" ({e.context} that starts on line {e.context_mark.line + 2})"
    return RunbookFileError(line, message)


def _line_of(node: Any, loc: tuple[Any, ...]) -> int:
    """The file line of the YAML value at ``loc`` (front matter starts on line 2)."""
    line = node.start_mark.line if node is not None else 0
    for step in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == step), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line, pair[1]
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value)
        ):
            node = node.value[step]
            line = node.start_mark.line
    return line + 2


def sections(body: str) -> Iterator[tuple[str, str]]:
    """(heading path, text) per section; headings inside code fences don't count."""
    stack: list[tuple[int, str]] = []
    buf: list[str] = []
    fenced = False
    for line in body.splitlines():
        fenced ^= bool(_FENCE.match(line))
        match = None if fenced else _HEADING.match(line)
        if match is None:
            buf.append(line)
            continue
        yield from _section(stack, buf)
        level = len(match.group(1))
        stack = [(lv, h) for lv, h in stack if lv < level] + [(level, match.group(2))]
        buf = []
    yield from _section(stack, buf)


def _section(stack: list[tuple[int, str]], buf: list[str]) -> Iterator[tuple[str, str]]:
    text = "\n".join(buf).strip()
    if not text:
        return
    heading = " › ".join(h for lv, h in stack if lv > 1) or "Overview"
    for part in _split(text):
        yield heading, part


def _split(text: str) -> Iterator[str]:
    """Pieces of at most ~MAX_CHUNK_CHARS at paragraph breaks (the model reads 256 tokens)."""
    piece = ""
    for para in re.split(r"\n\s*\n", text):
        if piece and len(piece) + len(para) > MAX_CHUNK_CHARS:
            yield piece
            piece = ""
        piece = f"{piece}\n\n{para}" if piece else para
    if piece:
        yield piece


def chunk_file(path: str, text: str) -> list[Chunk]:
    meta, body = parse_runbook(text)
    parts = list(sections(body)) or [("Overview", meta.title)]
    return [Chunk(path, i, h, t, meta) for i, (h, t) in enumerate(parts)]
