"""The Qdrant connector (declared in tools/openapi_apis.py) against Qdrant's REST API.

No Qdrant server binary can be installed here (none on PyPI, npm or Debian), so the server is
``tests/fakes/openapi_apis.Qdrant``: Qdrant's published OpenAPI document (requests and replies
checked with openapi-core) in front of qdrant-client's local-mode engine, which holds the real
collections and points the answers come from.
"""

from __future__ import annotations

import pytest

from tests.fakes.openapi_apis import QDRANT_KEY
from tools.base import ActionContext, Status, Tier
from tools.catalog import Call, CallError, Catalog
from tools.openapi_apis import QDRANT_TOOLSET

pytest_plugins = ["tests.fakes.openapi_apis"]

CANARY = "payload-canary-8f3b1d"


def resolve(api, action: str, **params):
    config = QDRANT_TOOLSET.config(base_url=api.url, token_secret="kv/data/qdrant#api_key")
    return Catalog([QDRANT_TOOLSET], {"qdrant": config}).resolve(
        Call(id="q", toolset="qdrant", action=action, params=params))


def run(api, action: str, preview: bool = False, **params):
    resolved = resolve(api, action, **params)
    ctx = ActionContext(config=resolved.config.model_dump(mode="json"),
                        secrets={"api_token": QDRANT_KEY})
    return (resolved.action.preview if preview else resolved.action.run)(resolved.params, ctx)


@pytest.fixture
def runbooks(qdrant_api):
    qdrant_api.fake.add_collection("runbooks", [{"text": CANARY, "n": i} for i in range(3)])
    return qdrant_api


def test_metadata_is_shown_and_payload_values_never(runbooks):
    results = [run(runbooks, "collections"),
               run(runbooks, "collection", collection_name="runbooks"),
               run(runbooks, "count", collection_name="runbooks", body={"exact": True}),
               run(runbooks, "health"), run(runbooks, "cluster"), run(runbooks, "version")]
    assert all(r.status is Status.OK for r in results), [r.error for r in results]
    assert results[0].data["result"]["collections"] == [{"name": "runbooks"}]
    assert results[1].data["result"]["points_count"] == 3
    assert results[2].data["result"] == {"count": 3}
    assert results[3].output == '"healthz check passed"'
    assert all(CANARY not in r.model_dump_json() for r in results)
    assert CANARY not in runbooks.all_text()  # nor was any point or payload ever asked for


def test_no_action_reads_points_or_payloads():
    names = {a.name for a in QDRANT_TOOLSET.actions}
    assert names == {"version", "health", "ready", "cluster", "telemetry", "collections",
                     "collection", "shards", "count", "snapshots", "create_snapshot"}
    assert {int(a.tier) for a in QDRANT_TOOLSET.actions if a.name != "create_snapshot"} == {0}


def test_create_snapshot_is_tier_3_previewed_and_creates_one(runbooks):
    resolved = resolve(runbooks, "create_snapshot", collection_name="runbooks")
    assert resolved.tier is Tier.SANDBOX_EXECUTE
    assert resolved.target.kind == "qdrant_collection" and resolved.target.name == "runbooks"
    preview = run(runbooks, "create_snapshot", preview=True, collection_name="runbooks")
    assert preview.status is Status.OK and "points_count" in preview.output
    assert not runbooks.fake.snapshots
    made = run(runbooks, "create_snapshot", collection_name="runbooks", wait=True)
    assert made.status is Status.OK, made.error
    assert len(runbooks.fake.snapshots["runbooks"]) == 1
    listed = run(runbooks, "snapshots", collection_name="runbooks")
    assert listed.data["result"][0]["name"] == made.data["result"]["name"]
    assert runbooks.calls("create_snapshot")[0].headers["Authorization"] == f"Bearer {QDRANT_KEY}"


def test_missing_collection_and_bad_count_body(runbooks):
    missing = run(runbooks, "collection", collection_name="nope")
    assert missing.status is Status.ERROR and "404" in missing.error
    with pytest.raises(CallError, match="body.exact: 'yes' is not of type 'boolean'"):
        resolve(runbooks, "count", collection_name="runbooks", body={"exact": "yes"})
    assert not runbooks.calls("count_points")
