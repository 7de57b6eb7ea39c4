"""manifest.yml against the code: every registered listener is declared, every Web API method
the bot calls has its scope requested, and nothing is requested that no code needs."""

import ast
from pathlib import Path

import pytest
import yaml

from bot.listeners import register_all

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = yaml.safe_load((ROOT / "manifest.yml").read_text())

# Web API method (as slack_sdk names it) -> the bot scopes it needs ([] = none needed).
METHOD_SCOPES = {
    "chat_postMessage": ["chat:write"],
    "chat_update": ["chat:write"],
    "chat_postEphemeral": ["chat:write"],
    "reactions_add": ["reactions:write"],
    "reactions_remove": ["reactions:write"],
    "usergroups_users_list": ["usergroups:read"],
    "conversations_info": ["channels:read", "groups:read"],
    "files_upload_v2": ["files:write"],
    "views_open": [],
    "auth_test": [],
    "chat_startStream": ["chat:write"],
    "chat_appendStream": ["chat:write"],
    "chat_stopStream": ["chat:write"],
    "assistant_threads_setStatus": ["assistant:write"],
    "assistant_threads_setSuggestedPrompts": ["assistant:write"],
    "users_conversations": ["channels:read", "groups:read"],
    "views_publish": [],
}
EVENT_SCOPES = {
    "app_mention": ["app_mentions:read"],
    "message.channels": ["channels:history"],
    "message.groups": ["groups:history"],
    "message.im": ["im:history"],
    "assistant_thread_started": ["assistant:write"],
    "assistant_thread_context_changed": ["assistant:write"],
    "app_home_opened": [],
}


class Recorder:
    """Stands in for AsyncApp during registration and records what is registered."""

    def __init__(self):
        self.commands, self.events, self.actions, self.views = set(), set(), set(), set()
        self.shortcuts = set()

    def _record(self, bucket, key):
        bucket.add(key)
        return lambda fn: fn

    def command(self, name):
        return self._record(self.commands, name)

    def event(self, name):
        return self._record(self.events, name if isinstance(name, str) else name["type"])

    def action(self, name):
        return self._record(self.actions, name)

    def view(self, name):
        return self._record(self.views, name)

    def shortcut(self, name):
        return self._record(self.shortcuts, name)


@pytest.fixture(scope="module")
def registered():
    recorder = Recorder()
    register_all(recorder, deps=None)
    return recorder


def called_methods() -> set[str]:
    methods = set()
    for path in (ROOT / "bot").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
                if name == "client":
                    methods.add(node.func.attr)
    return methods


def test_commands_are_declared(registered):
    declared = {c["command"] for c in MANIFEST["features"]["slash_commands"]}
    assert registered.commands == declared == {"/ops"}


def test_events_are_declared(registered):
    declared = set(MANIFEST["settings"]["event_subscriptions"]["bot_events"])
    assert "app_mention" in registered.events
    for event in registered.events:
        names = {event} if event != "message" else {"message.channels", "message.groups",
                                                    "message.im"}
        assert names <= declared, f"listener for {event} but manifest lacks {names - declared}"


def test_assistant_threads_need_the_assistant_view(registered):
    assert "assistant_thread_started" in registered.events
    assert MANIFEST["features"]["assistant_view"]["assistant_description"]


def test_the_home_tab_is_enabled_when_it_is_published(registered):
    assert "app_home_opened" in registered.events
    assert MANIFEST["features"]["app_home"]["home_tab_enabled"] is True


def test_shortcuts_are_declared(registered):
    declared = {s["callback_id"]: s["type"] for s in MANIFEST["features"]["shortcuts"]}
    assert registered.shortcuts == set(declared) == {"investigate_message"}
    assert declared["investigate_message"] == "message"


def test_interactivity_is_on_when_buttons_exist(registered):
    assert registered.actions and registered.views
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is True


def test_every_scope_used_is_requested_and_none_is_spare():
    requested = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    methods = called_methods()
    unknown = methods - METHOD_SCOPES.keys()
    assert not unknown, f"add these Web API methods to METHOD_SCOPES: {sorted(unknown)}"
    needed = {"commands"}
    needed |= {s for m in methods for s in METHOD_SCOPES[m]}
    declared_events = MANIFEST["settings"]["event_subscriptions"]["bot_events"]
    needed |= {s for e in declared_events for s in EVENT_SCOPES[e]}
    assert needed - requested == set(), "scopes used but not requested"
    assert requested - needed == set(), "scopes requested but not needed"


def test_request_urls_point_at_bolt_default_path():
    settings = MANIFEST["settings"]
    urls = [settings["event_subscriptions"]["request_url"],
            settings["interactivity"]["request_url"],
            *(c["url"] for c in MANIFEST["features"]["slash_commands"])]
    assert all(u.endswith("/slack/events") for u in urls)
    assert MANIFEST["features"]["bot_user"]["display_name"] == "opsbot"
