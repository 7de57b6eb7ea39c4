"""Block Kit validation as Slack's Web API applies it, for the emulator.

Slack rejects a message whose blocks break a limit with ``invalid_blocks`` and one error per
problem, each naming the offending field with a JSON pointer::

    {"ok": false, "error": "invalid_blocks",
     "errors": ["must be less than 3001 characters [json-pointer:/blocks/0/text/text]"],
     "response_metadata": {"messages": ["[ERROR] must be less than 3001 characters ..."]}}

:func:`block_errors` returns that ``errors`` list (empty when the blocks are valid) and
:func:`error_fields` the fields that go with it. Limits come from Slack's Block Kit reference;
then every block must also pass slack_sdk's own models (:func:`sdk_errors`): the type is one
the SDK knows, its validators accept it, and it survives a round trip through the model
unchanged (a field the SDK drops is a field Slack would not understand either).

Usage::

    errors = block_errors(blocks, max_blocks=MESSAGE_MAX_BLOCKS)
"""

from __future__ import annotations

from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block

MESSAGE_MAX_BLOCKS = 50
VIEW_MAX_BLOCKS = 100

SECTION_TEXT = 3000
SECTION_FIELDS = 10
SECTION_FIELD_TEXT = 2000
HEADER_TEXT = 150
ACTIONS_ELEMENTS = 25
CONTEXT_ELEMENTS = 10
ID_CHARS = 255
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
URL_CHARS = 3000
CONFIRM_TITLE = 100
CONFIRM_TEXT = 300
CONFIRM_BUTTON = 30
PLACEHOLDER = 150
OPTIONS = 100
OPTION_TEXT = 75
OPTION_VALUE = 150
MARKDOWN_TEXT = 12000
IMAGE_ALT = 2000

BLOCK_TYPES = {
    "section", "header", "actions", "context", "divider", "image", "input", "rich_text",
    "markdown", "file", "video", "context_actions", "table", "plan", "task_card",
}
SELECT_TYPES = {
    "static_select", "external_select", "users_select", "conversations_select",
    "channels_select", "multi_static_select", "multi_users_select", "multi_conversations_select",
    "multi_channels_select", "multi_external_select", "overflow", "radio_buttons", "checkboxes",
}
PICKER_TYPES = {"datepicker", "timepicker", "datetimepicker", "plain_text_input", "number_input",
                "email_text_input", "url_text_input", "rich_text_input", "file_input"}
TEXT_TYPES = {"plain_text", "mrkdwn"}


def block_errors(blocks: Any, max_blocks: int = MESSAGE_MAX_BLOCKS) -> list[str]:
    """Every problem Slack would report for ``blocks`` (a decoded JSON value)."""
    check = _Checker()
    if not isinstance(blocks, list):
        check.fail("/blocks", "must be an array")
        return check.errors
    check.at_most_items("/blocks", blocks, max_blocks)
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        check.block(f"/blocks/{i}", block, seen_ids)
    return check.errors or sdk_errors(blocks)


def sdk_errors(blocks: list[Any]) -> list[str]:
    """What slack_sdk's Block Kit models say about ``blocks`` (already shaped like blocks)."""
    errors = []
    for i, block in enumerate(blocks):
        problem = _sdk_problem(block)
        if problem:
            errors.append(f"slack_sdk: {problem} [json-pointer:/blocks/{i}]")
    return errors


def _sdk_problem(block: dict[str, Any]) -> str:
    parsed = Block.parse(dict(block))
    if parsed is None:
        return f"unknown block type `{block.get('type')}`"
    try:
        dumped = parsed.to_dict()
    except (SlackObjectFormationError, AttributeError, TypeError) as e:
        return str(e) or type(e).__name__
    if dumped != block:
        return f"does not survive the model unchanged (sent {_keys(block)}, kept {_keys(dumped)})"
    return ""


def _keys(value: Any) -> str:
    """A short account of a value's shape: which fields, nested, for the error message."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_keys(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_keys(v) for v in value[:3]) + ("…" if len(value) > 3 else "") + "]"
    return type(value).__name__


def error_fields(errors: list[str]) -> dict[str, Any]:
    """The fields Slack puts next to ``"error": "invalid_blocks"`` for a list of errors."""
    return {"errors": errors, "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]}}


class _Checker:
    """Walks blocks, collecting Slack-shaped error strings instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def fail(self, pointer: str, message: str) -> None:
        self.errors.append(f"{message} [json-pointer:{pointer}]")

    def at_most_items(self, pointer: str, items: list[Any], limit: int) -> None:
        if len(items) > limit:
            self.fail(pointer, f"must be less than {limit + 1} items")

    def at_most_chars(self, pointer: str, value: Any, limit: int) -> None:
        if not isinstance(value, str):
            self.fail(pointer, "must provide a string")
        elif not value:
            self.fail(pointer, "must be more than 0 characters")
        elif len(value) > limit:
            self.fail(pointer, f"must be less than {limit + 1} characters")

    def optional_chars(self, pointer: str, obj: dict[str, Any], key: str, limit: int) -> None:
        if key in obj:
            self.at_most_chars(f"{pointer}/{key}", obj[key], limit)

    def text(self, pointer: str, obj: Any, limit: int, plain_only: bool = False) -> None:
        if not isinstance(obj, dict):
            self.fail(pointer, "must provide an object")
            return
        allowed = {"plain_text"} if plain_only else TEXT_TYPES
        if obj.get("type") not in allowed:
            self.fail(f"{pointer}/type", f"must be one of {sorted(allowed)}")
        self.at_most_chars(f"{pointer}/text", obj.get("text"), limit)

    def block(self, pointer: str, block: Any, seen_ids: set[str]) -> None:
        if not isinstance(block, dict):
            self.fail(pointer, "must provide an object")
            return
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            self.fail(f"{pointer}/type", f"unsupported block type `{kind}`")
            return
        self.block_id(pointer, block, seen_ids)
        rules = {
            "section": self._section, "header": self._header, "markdown": self._markdown,
            "image": self._image, "actions": self._actions, "context": self._context,
            "input": self._input,
        }
        rules.get(kind, _no_rules)(pointer, block)

    def block_id(self, pointer: str, block: dict[str, Any], seen_ids: set[str]) -> None:
        if "block_id" not in block:
            return
        self.at_most_chars(f"{pointer}/block_id", block["block_id"], ID_CHARS)
        if block["block_id"] in seen_ids:
            self.fail(f"{pointer}/block_id", f"duplicate block_id `{block['block_id']}`")
        seen_ids.add(block["block_id"])

    def _section(self, pointer: str, block: dict[str, Any]) -> None:
        if "text" not in block and "fields" not in block:
            self.fail(pointer, "must provide `text` or `fields`")
        if "text" in block:
            self.text(f"{pointer}/text", block["text"], SECTION_TEXT)
        fields = block.get("fields", [])
        if not isinstance(fields, list):
            self.fail(f"{pointer}/fields", "must be an array")
            return
        self.at_most_items(f"{pointer}/fields", fields, SECTION_FIELDS)
        for i, field in enumerate(fields):
            self.text(f"{pointer}/fields/{i}", field, SECTION_FIELD_TEXT)
        if "accessory" in block:
            self.element(f"{pointer}/accessory", block["accessory"])

    def _header(self, pointer: str, block: dict[str, Any]) -> None:
        self.text(f"{pointer}/text", block.get("text"), HEADER_TEXT, plain_only=True)

    def _markdown(self, pointer: str, block: dict[str, Any]) -> None:
        self.at_most_chars(f"{pointer}/text", block.get("text"), MARKDOWN_TEXT)

    def _image(self, pointer: str, block: dict[str, Any]) -> None:
        self.at_most_chars(f"{pointer}/alt_text", block.get("alt_text"), IMAGE_ALT)
        if "image_url" in block:
            self.at_most_chars(f"{pointer}/image_url", block["image_url"], URL_CHARS)

    def _actions(self, pointer: str, block: dict[str, Any]) -> None:
        elements = self.elements_list(pointer, block, ACTIONS_ELEMENTS)
        action_ids: set[str] = set()
        for i, element in enumerate(elements):
            self.element(f"{pointer}/elements/{i}", element)
            action_id = element.get("action_id") if isinstance(element, dict) else None
            if action_id is not None and action_id in action_ids:
                self.fail(f"{pointer}/elements/{i}/action_id", f"duplicate action_id `{action_id}`")
            action_ids.add(action_id)

    def _context(self, pointer: str, block: dict[str, Any]) -> None:
        for i, element in enumerate(self.elements_list(pointer, block, CONTEXT_ELEMENTS)):
            if isinstance(element, dict) and element.get("type") == "image":
                self.at_most_chars(f"{pointer}/elements/{i}/alt_text", element.get("alt_text"),
                                   IMAGE_ALT)
            else:
                self.text(f"{pointer}/elements/{i}", element, MARKDOWN_TEXT)

    def _input(self, pointer: str, block: dict[str, Any]) -> None:
        self.text(f"{pointer}/label", block.get("label"), 2000, plain_only=True)
        if "element" not in block:
            self.fail(pointer, "must provide `element`")
        else:
            self.element(f"{pointer}/element", block["element"])

    def elements_list(self, pointer: str, block: dict[str, Any], limit: int) -> list[Any]:
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements:
            self.fail(f"{pointer}/elements", "must provide a non-empty array")
            return []
        self.at_most_items(f"{pointer}/elements", elements, limit)
        return elements

    def element(self, pointer: str, element: Any) -> None:
        if not isinstance(element, dict):
            self.fail(pointer, "must provide an object")
            return
        kind = element.get("type")
        self.optional_chars(pointer, element, "action_id", ID_CHARS)
        if "confirm" in element:
            self.confirm(f"{pointer}/confirm", element["confirm"])
        if kind == "button":
            self.button(pointer, element)
        elif kind in SELECT_TYPES:
            self.select(pointer, element)
        elif kind not in PICKER_TYPES | {"image", "workflow_button"}:
            self.fail(f"{pointer}/type", f"unsupported element type `{kind}`")

    def button(self, pointer: str, element: dict[str, Any]) -> None:
        self.text(f"{pointer}/text", element.get("text"), BUTTON_TEXT, plain_only=True)
        self.optional_chars(pointer, element, "value", BUTTON_VALUE)
        self.optional_chars(pointer, element, "url", URL_CHARS)
        if element.get("style", "primary") not in ("primary", "danger"):
            self.fail(f"{pointer}/style", "must be one of ['danger', 'primary']")

    def select(self, pointer: str, element: dict[str, Any]) -> None:
        if "placeholder" in element:
            self.text(f"{pointer}/placeholder", element["placeholder"], PLACEHOLDER,
                      plain_only=True)
        options = element.get("options", [])
        if isinstance(options, list):
            self.at_most_items(f"{pointer}/options", options, OPTIONS)
            for i, option in enumerate(options):
                self.option(f"{pointer}/options/{i}", option)

    def option(self, pointer: str, option: Any) -> None:
        if not isinstance(option, dict):
            self.fail(pointer, "must provide an object")
            return
        self.text(f"{pointer}/text", option.get("text"), OPTION_TEXT)
        self.at_most_chars(f"{pointer}/value", option.get("value"), OPTION_VALUE)

    def confirm(self, pointer: str, confirm: Any) -> None:
        if not isinstance(confirm, dict):
            self.fail(pointer, "must provide an object")
            return
        self.text(f"{pointer}/title", confirm.get("title"), CONFIRM_TITLE, plain_only=True)
        self.text(f"{pointer}/text", confirm.get("text"), CONFIRM_TEXT)
        self.text(f"{pointer}/confirm", confirm.get("confirm"), CONFIRM_BUTTON, plain_only=True)
        self.text(f"{pointer}/deny", confirm.get("deny"), CONFIRM_BUTTON, plain_only=True)


def _no_rules(pointer: str, block: dict[str, Any]) -> None:
    """Block types whose limits the emulator does not model (divider, rich_text, file ...)."""
