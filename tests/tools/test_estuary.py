"""Estuary disable/enable: a draft and a publication through the control plane's PostgREST
endpoint, against emulators built from the documents the connector ships (every request and
reply checked with openapi-core), sharing one fake control plane with the status API.
"""

from __future__ import annotations

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import SecretStr

from graph.build import build_graph
from graph.deps import GraphDeps, Limits
from graph.policy import parse_policy
from graph.records.sqlite import SqliteRecords
from sandbox.credentials import CredentialBroker
from tests.fakes.openapi_apis import ESTUARY_REST_KEY, ESTUARY_TOKEN
from tests.tools.test_openapi import POLICY, InlineExecutor, approve, start
from tools.base import ActionContext, Status, Tier
from tools.catalog import Call, CallError, Catalog
from tools.estuary import TOOLSET, EstuaryConfig

pytest_plugins = ["tests.fakes.openapi_apis"]
TASK = "acme/pg-cdc"


def config(status, rest) -> EstuaryConfig:
    return EstuaryConfig(base_url=status.url, token_secret="static:ESTUARY",
                         rest_url=rest.url, rest_key=ESTUARY_REST_KEY)


def act(status, rest, action: str, preview: bool = False, **params):
    resolved = Catalog([TOOLSET], {"estuary": config(status, rest)}).resolve(
        Call(id="e", toolset="estuary", action=action, params=params))
    ctx = ActionContext(config=resolved.config.model_dump(mode="json"),
                        secrets={"api_token": ESTUARY_TOKEN})
    run = resolved.action.preview if preview else resolved.action.run
    return run(resolved.params, ctx)


def graph_for(tmp_path, status, rest, executor):
    deps = GraphDeps(
        catalog=Catalog([TOOLSET], {"estuary": config(status, rest)}),
        policy=parse_policy(POLICY), executor=executor,
        broker=CredentialBroker(None, {"ESTUARY": SecretStr(ESTUARY_TOKEN)}),
        audit=SqliteRecords(tmp_path / "audit.sqlite").audit, limits=Limits())
    return build_graph(deps, InMemorySaver())


async def test_disable_is_previewed_gated_and_publishes_the_spec_with_shards_disabled(
        estuary_api, estuary_rest, tmp_path):
    fake = estuary_api.fake
    fake.add(TASK, "capture")
    before = fake.live[TASK]["last_pub_id"]
    graph = graph_for(tmp_path, estuary_api, estuary_rest, InlineExecutor())
    config_, state = await start(graph, f"estuary disable {TASK}")
    (pending,) = state.interrupts
    review = pending.value["review"]
    assert review["tier"] == Tier.SANDBOX_EXECUTE
    assert f"{TASK} (capture) is enabled; last publication {before}" in review["preview"]
    assert not estuary_rest.calls("createDraft"), "nothing drafted before the approval"
    await approve(graph, config_, state)

    (staged,) = estuary_rest.calls("upsertDraftSpec")
    assert staged.body["spec"]["shards"] == {"disable": True}
    assert staged.body["expect_pub_id"] == before and staged.body["spec_type"] == "capture"
    assert staged.body["spec"]["endpoint"] == fake.live[TASK]["spec"]["endpoint"]
    assert len(estuary_rest.calls("createPublication")) == 1
    assert fake.disabled(TASK) and not fake.drafts, "published; Estuary deletes the draft"
    report = (await graph.aget_state(config_)).values["report"]
    assert f"{TASK} (capture) is now disabled" in report["calls"][0]["output"]
    status = act(estuary_api, estuary_rest, "status", name=[TASK])
    assert status.data[0]["summary"]["status"] == "taskDisabled"


def test_enable_removes_the_disable_flag_and_a_task_already_so_publishes_nothing(
        estuary_api, estuary_rest):
    fake = estuary_api.fake
    fake.add(TASK, "materialization", disabled=True)
    enabled = act(estuary_api, estuary_rest, "enable", name=TASK)
    assert enabled.status is Status.OK, enabled.error
    assert "shards" not in fake.live[TASK]["spec"] or not fake.disabled(TASK)
    again = act(estuary_api, estuary_rest, "enable", name=TASK)
    assert again.output == f"{TASK} is already enabled; nothing was published."
    assert len(estuary_rest.calls("createDraft")) == 1


def test_a_failed_publication_reports_the_drafts_errors_and_deletes_the_draft(
        estuary_api, estuary_rest):
    fake = estuary_api.fake
    fake.add(TASK, "capture")
    fake.fail_next = ("buildFailed", "endpoint config is invalid: missing password")
    failed = act(estuary_api, estuary_rest, "disable", name=TASK)
    assert failed.error == ("Estuary did not publish (buildFailed): flow://connector: endpoint "
                            "config is invalid: missing password")
    assert not fake.disabled(TASK) and not fake.drafts
    assert len(estuary_rest.calls("deleteDraft")) == 1


def test_a_concurrent_publication_wins_over_a_stale_disable(estuary_api, estuary_rest):
    """expect_pub_id: a spec someone published between our read and our publication is not
    overwritten; the publication fails with Estuary's reason."""
    fake = estuary_api.fake
    fake.add(TASK, "capture")
    read = estuary_rest.fake._live_specs  # the live spec moves on right after opsbot reads it

    def moving(call):
        answer = read(call)
        fake.live[TASK]["last_pub_id"] = "00000000000000ff"
        return answer

    estuary_rest.handlers["getLiveSpecs"] = moving
    failed = act(estuary_api, estuary_rest, "disable", name=TASK)
    assert failed.error.startswith("Estuary did not publish (expectPubIdMismatch): flow://"
                                   f"{TASK}: expected publication")
    assert not fake.disabled(TASK)


def test_only_captures_and_materializations_and_names_checked_before_any_request(
        estuary_api, estuary_rest):
    estuary_api.fake.add("acme/orders", "collection")
    refused = act(estuary_api, estuary_rest, "disable", name="acme/orders")
    assert refused.error == ("acme/orders is a collection; only captures and materializations "
                             "can be disabled or enabled.")
    missing = act(estuary_api, estuary_rest, "disable", name="acme/nope")
    assert missing.error == "Estuary has no live spec named acme/nope."
    with pytest.raises(CallError, match="name"):
        Catalog([TOOLSET], {"estuary": config(estuary_api, estuary_rest)}).resolve(
            Call(id="x", toolset="estuary", action="disable", params={"name": "../etc"}))
    assert not estuary_rest.calls("createDraft")


def test_credentials_travel_in_headers_only_and_the_endpoint_must_be_configured(
        estuary_api, estuary_rest):
    estuary_api.fake.add(TASK, "capture")
    act(estuary_api, estuary_rest, "disable", name=TASK)
    for call in estuary_rest.requests:
        assert call.headers["Authorization"] == f"Bearer {ESTUARY_TOKEN}"
        assert call.headers["apikey"] == ESTUARY_REST_KEY
        assert ESTUARY_TOKEN not in call.path + call.raw + str(call.query)
    bare = Catalog([TOOLSET], {"estuary": EstuaryConfig(base_url=estuary_api.url)})
    with pytest.raises(CallError, match="needs OPSBOT_ESTUARY_REST_URL"):
        bare.resolve(Call(id="x", toolset="estuary", action="disable", params={"name": TASK}))
    assert bare.resolve(Call(id="y", toolset="estuary", action="status",
                             params={"name": [TASK]})).egress  # status needs no endpoint
    wrong_key = config(estuary_api, estuary_rest).model_copy(update={"rest_key": "nope"})
    resolved = Catalog([TOOLSET], {"estuary": wrong_key}).resolve(
        Call(id="z", toolset="estuary", action="disable", params={"name": TASK}))
    ctx = ActionContext(config=resolved.config.model_dump(mode="json"),
                        secrets={"api_token": ESTUARY_TOKEN})
    assert "No API key found" in resolved.action.run(resolved.params, ctx).error
