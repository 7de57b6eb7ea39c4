"""The Slack emulator driven by the real ``slack_sdk`` AsyncWebClient over loopback HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import aiohttp
import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import APP_TOKEN, BOT_TOKEN, SlackEmulator

CARD = [
    {"type": "section", "block_id": "summary", "text": {"type": "mrkdwn", "text": "*Restart* api"}},
    {"type": "actions", "block_id": "decide", "elements": [
        {"type": "button", "action_id": "approve", "text": {"type": "plain_text", "text": "Approve"},
         "value": "run-1", "style": "primary"},
        {"type": "button", "action_id": "deny", "text": {"type": "plain_text", "text": "Deny"},
         "value": "run-1", "style": "danger"},
    ]},
]


@pytest.fixture
def slack() -> Iterator[SlackEmulator]:
    with SlackEmulator() as emulator:
        yield emulator


@pytest.fixture
def client(slack: SlackEmulator) -> AsyncWebClient:
    return AsyncWebClient(base_url=slack.base_url, token=BOT_TOKEN)


async def error_of(call) -> dict:
    with pytest.raises(SlackApiError) as caught:
        await call
    return caught.value.response.data


async def test_auth_test_reports_the_bot_identity(client: AsyncWebClient) -> None:
    identity = await client.auth_test()
    assert (identity["user_id"], identity["bot_id"], identity["team_id"]) == ("UBOT", "BBOT", "T1")


async def test_wrong_missing_and_misused_tokens_are_refused(slack: SlackEmulator) -> None:
    url = slack.base_url
    wrong = AsyncWebClient(base_url=url, token="xoxb-not-the-bot")
    assert (await error_of(wrong.auth_test()))["error"] == "invalid_auth"
    missing = AsyncWebClient(base_url=url)
    assert (await error_of(missing.auth_test()))["error"] == "not_authed"
    app_level = AsyncWebClient(base_url=url, token=APP_TOKEN)
    assert (await error_of(app_level.auth_test()))["error"] == "not_allowed_token_type"
    bot = AsyncWebClient(base_url=url, token=BOT_TOKEN)
    refused = await error_of(bot.apps_connections_open(app_token=BOT_TOKEN))
    assert refused["error"] == "not_allowed_token_type"
    opened = await bot.apps_connections_open(app_token=APP_TOKEN)
    assert opened["url"].startswith(f"ws://127.0.0.1:{url.split(':')[2].split('/')[0]}/link?")


async def test_unknown_method(client: AsyncWebClient) -> None:
    assert (await error_of(client.api_call("chat.teleport")))["error"] == "unknown_method"


async def test_post_then_update_keeps_history_and_increasing_ts(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    first = await client.chat_postMessage(channel="C1", text="Working…", blocks=CARD)
    second = await client.chat_postMessage(channel="C1", text="reply", thread_ts=first["ts"])
    assert float(second["ts"]) > float(first["ts"])
    assert first["message"]["bot_id"] == "BBOT" and first["message"]["user"] == "UBOT"

    await client.chat_update(channel="C1", ts=first["ts"], text="Step 1/3", blocks=[])
    await client.chat_update(channel="C1", ts=first["ts"], text="Done")

    [status, _reply] = slack.messages("C1")
    assert (status.text, status.blocks) == ("Done", [])
    assert [e.text for e in status.edits] == ["Working…", "Step 1/3"]
    assert status.edits[0].blocks == CARD
    assert [m.text for m in slack.messages("C1", thread_ts=first["ts"])] == ["reply"]
    assert [m.ts for m in slack.thread("C1", first["ts"])] == [first["ts"], second["ts"]]


async def test_form_encoded_calls_are_understood(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    await client.api_call("chat.postMessage", data={"channel": "C9", "text": "form",
                                                    "blocks": json.dumps(CARD)})
    [message] = slack.messages("C9")
    assert message.blocks == CARD
    assert slack.calls("chat.postMessage")[0].headers["Content-Type"].startswith(
        "application/x-www-form-urlencoded")


async def test_update_errors(client: AsyncWebClient, slack: SlackEmulator) -> None:
    posted = await client.chat_postMessage(channel="C1", text="status")
    too_long = await error_of(client.chat_update(channel="C1", ts=posted["ts"], text="x" * 4001))
    assert too_long["error"] == "msg_too_long"
    missing = await error_of(client.chat_update(channel="C1", ts="1.000001", text="hi"))
    assert missing["error"] == "message_not_found"
    human = slack.add_message("C1", "a human wrote this", user="U7")
    refused = await error_of(client.chat_update(channel="C1", ts=human, text="edited"))
    assert refused["error"] == "cant_update_message"
    assert slack.message("C1", posted["ts"]).edits == []


async def test_archived_and_unknown_channels(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    slack.add_channel("C2", "old-incidents", archived=True)
    archived = await error_of(client.chat_postMessage(channel="C2", text="hi"))
    assert archived["error"] == "is_archived"
    assert (await error_of(client.chat_postMessage(channel="#nope", text="hi")))["error"] == (
        "channel_not_found")
    info = await client.conversations_info(channel="C2")
    assert info["channel"]["is_archived"] is True and info["channel"]["name"] == "old-incidents"


async def test_strict_workspace_rejects_unknown_ids() -> None:
    with SlackEmulator(strict=True) as strict:
        client = AsyncWebClient(base_url=strict.base_url, token=BOT_TOKEN)
        assert (await error_of(client.chat_postMessage(channel="C1", text="x")))["error"] == (
            "channel_not_found")
        assert (await error_of(client.users_info(user="U1")))["error"] == "user_not_found"
        with pytest.raises(ValueError, match="no channel 'C1'; add_channel"):
            strict.add_message("C1", "hi")
        strict.add_channel("C1", "ops")
        posted = await client.chat_postMessage(channel="#ops", text="by name")
        assert posted["channel"] == "C1"
        assert strict.env()["OPSBOT_SLACK_API_URL"] == strict.base_url


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        ([{"type": "divider"}] * 51, "must be less than 51 items [json-pointer:/blocks]"),
        ([{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}],
         "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"),
        ([CARD[0], {**CARD[1], "elements": [{**CARD[1]["elements"][0], "value": "v" * 2001}]}],
         "must be less than 2001 characters [json-pointer:/blocks/1/elements/0/value]"),
    ],
)
async def test_invalid_blocks_name_the_field(client: AsyncWebClient, blocks, pointer) -> None:
    refused = await error_of(client.chat_postMessage(channel="C1", text="t", blocks=blocks))
    assert refused["error"] == "invalid_blocks"
    assert pointer in refused["errors"]
    assert f"[ERROR] {pointer}" in refused["response_metadata"]["messages"]


async def test_rate_limit_is_honoured_by_the_sdk_retry_handler(
    slack: SlackEmulator,
) -> None:
    client = AsyncWebClient(base_url=slack.base_url, token=BOT_TOKEN,
                            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    posted = await client.chat_postMessage(channel="C1", text="status")
    slack.rate_limit("chat.update", times=1, retry_after=1)

    await client.chat_update(channel="C1", ts=posted["ts"], text="step 2")

    limited, accepted = slack.calls("chat.update")
    assert (limited.status, limited.error, accepted.status) == (429, "ratelimited", 200)
    assert accepted.at - limited.at >= 1.0
    assert slack.message("C1", posted["ts"]).text == "step 2"


async def test_rate_limit_without_retry_handler_surfaces_429(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=7)
    with pytest.raises(SlackApiError) as caught:
        await client.chat_postMessage(channel="C1", text="x")
    assert caught.value.response.status_code == 429
    assert caught.value.response.headers["Retry-After"] == "7"
    assert (await client.chat_postMessage(channel="C1", text="x"))["ok"]


async def test_fail_and_delay_injection(client: AsyncWebClient, slack: SlackEmulator) -> None:
    slack.fail("reactions.add", "internal_error", times=2)
    for _ in range(2):
        assert (await error_of(client.reactions_add(channel="C1", timestamp="1.1", name="eyes"))
                )["error"] == "internal_error"
    await client.reactions_add(channel="C1", timestamp="1.1", name="eyes")
    assert slack.reactions("C1", "1.1") == ["eyes"]

    slack.delay("users.info", 0.3, times=1)
    started = time.monotonic()
    await client.users_info(user="U1")
    assert time.monotonic() - started >= 0.3
    with pytest.raises(ValueError, match="does not implement `chat.postMesage`"):
        slack.fail("chat.postMesage", "oops")


async def test_reactions_rules(client: AsyncWebClient, slack: SlackEmulator) -> None:
    ts = slack.add_message("C1", "<@UBOT> help")
    await client.reactions_add(channel="C1", timestamp=ts, name="eyes")
    assert (await error_of(client.reactions_add(channel="C1", timestamp=ts, name="eyes"))
            )["error"] == "already_reacted"
    assert (await error_of(client.reactions_add(channel="C1", timestamp=ts, name=":x:"))
            )["error"] == "invalid_name"
    await client.reactions_remove(channel="C1", timestamp=ts, name="eyes")
    assert (await error_of(client.reactions_remove(channel="C1", timestamp=ts, name="eyes"))
            )["error"] == "no_reaction"
    assert slack.reactions("C1", ts) == []


async def test_people_groups_and_threads(client: AsyncWebClient, slack: SlackEmulator) -> None:
    slack.add_user("U7", "dana", real_name="Dana Lead", email="dana@example.com")
    slack.set_usergroup("S0SRE", ["U7", "U8"])
    assert (await client.users_info(user="U7"))["user"]["real_name"] == "Dana Lead"
    assert (await client.usergroups_users_list(usergroup="S0SRE"))["users"] == ["U7", "U8"]
    assert (await error_of(client.usergroups_users_list(usergroup="S0NOPE")))["error"] == (
        "no_such_subteam")

    parent = slack.add_message("C1", "redis is slow", user="U7")
    await client.chat_postMessage(channel="C1", thread_ts=parent, text="looking")
    replies = await client.conversations_replies(channel="C1", ts=parent)
    assert [m["text"] for m in replies["messages"]] == ["redis is slow", "looking"]
    assert replies["messages"][0]["reply_count"] == 1
    assert (await error_of(client.conversations_replies(channel="C1", ts="9.9")))["error"] == (
        "thread_not_found")


async def test_ephemeral_and_delete(client: AsyncWebClient, slack: SlackEmulator) -> None:
    await client.chat_postEphemeral(channel="C1", user="U3", text="only you: denied")
    [note] = slack.ephemerals(user="U3")
    assert note.text == "only you: denied" and slack.ephemerals(user="U4") == []

    posted = await client.chat_postMessage(channel="C1", text="temporary")
    await client.chat_delete(channel="C1", ts=posted["ts"])
    assert slack.messages("C1") == []
    assert (await error_of(client.chat_delete(channel="C1", ts=posted["ts"])))["error"] == (
        "message_not_found")


async def test_views_open_update_and_trigger_rules(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    from tests.fakes.payloads import new_trigger_id

    view = {"type": "modal", "title": {"type": "plain_text", "text": "Reason"}, "blocks": CARD[:1]}
    trigger = new_trigger_id()
    opened = await client.views_open(trigger_id=trigger, view=view)
    assert (await error_of(client.views_open(trigger_id=trigger, view=view)))["error"] == (
        "exchanged_trigger_id")
    stale = f"{int(time.time() * 1000) - 5000}.1.abc"
    assert (await error_of(client.views_open(trigger_id=stale, view=view)))["error"] == (
        "expired_trigger_id")

    updated = {**view, "title": {"type": "plain_text", "text": "Thanks"}}
    await client.views_update(view_id=opened["view"]["id"], view=updated,
                              hash=opened["view"]["hash"])
    conflict = await error_of(client.views_update(view_id=opened["view"]["id"], view=view,
                                                  hash=opened["view"]["hash"]))
    assert conflict["error"] == "hash_conflict"
    [stored] = slack.views()
    assert stored.view["title"]["text"] == "Thanks" and stored.history == [view]


async def test_files_upload_v2_shares_into_the_thread(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    parent = slack.add_message("C1", "incident")
    response = await client.files_upload_v2(channel="C1", thread_ts=parent, filename="info.txt",
                                            content="used_memory:1024\n", title="INFO memory",
                                            initial_comment="Redis INFO attached")
    [file] = slack.files()
    assert (file.content, file.title, file.channel, file.thread_ts) == (
        b"used_memory:1024\n", "INFO memory", "C1", parent)
    assert response["file"]["id"] == file.id
    [share] = slack.messages("C1", thread_ts=parent)
    assert share.text == "Redis INFO attached" and share.files[0]["id"] == file.id


async def test_response_url_replaces_posts_and_whispers(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    card = await client.chat_postMessage(channel="C1", text="approve?", blocks=CARD)
    bound = slack.response_url(channel="C1", user="U1", message_ts=card["ts"])
    async with aiohttp.ClientSession() as http:
        replaced = await http.post(bound, json={"replace_original": True, "text": "Approved"})
        whisper = await http.post(bound, json={"text": "only for U1"})
        public = await http.post(bound, json={"response_type": "in_channel", "text": "Running"})
        bad = await http.post(bound, json={"blocks": [{"type": "header", "text": {
            "type": "plain_text", "text": "h" * 151}}]})
        unknown = await http.post(slack.origin + "/webhook/H404", json={"text": "x"})
    assert [r.status for r in (replaced, whisper, public, bad, unknown)] == [200, 200, 200, 400, 404]
    assert "must be less than 151 characters" in (await bad.json())["errors"][0]
    assert [m.text for m in slack.messages("C1")] == ["Approved", "Running"]
    assert [e.text for e in slack.ephemerals("U1")] == ["only for U1"]
    assert len(slack.responses(bound)) == 3


async def test_all_text_sees_every_channel_the_bot_writes_to(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    canary = "canary-7f3a91"
    await client.api_call("chat.postMessage", data={"channel": "C1", "text": "x", "blocks":
                          '[{"type":"section","text":{"type":"mrkdwn","text":"k=canary-7f3a91"}}]'})
    assert "k=" + canary in slack.all_text()
    assert BOT_TOKEN not in slack.all_text()
    fresh = SlackEmulator().start()
    try:
        async with aiohttp.ClientSession() as http:
            await http.post(fresh.response_url(), json={"text": f"leak {canary}"})
        assert canary in fresh.all_text()
    finally:
        fresh.stop()


async def test_wait_for_reports_what_happened_on_timeout(
    client: AsyncWebClient, slack: SlackEmulator
) -> None:
    await client.chat_postMessage(channel="C1", text="hello")
    found = await slack.wait_for(lambda: slack.messages("C1"), timeout=1)
    assert found[0].text == "hello"
    with pytest.raises(TimeoutError, match=r"chat.postMessage\(ok\)×1"):
        await slack.wait_for(lambda: slack.messages("C2"), timeout=0.05)
    assert slack.calls("chat.postMessage")


def test_blocking_clients_work_too(slack: SlackEmulator) -> None:
    WebClient(base_url=slack.base_url, token=BOT_TOKEN).chat_postMessage(channel="C1", text="sync")
    assert slack.messages("C1")[0].text == "sync"  # recorded before the answer was sent
