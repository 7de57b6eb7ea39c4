"""OpenAPI connectors (Neon, Lambda Cloud, Estuary) against emulators built from the same documents.

The emulators validate every request with openapi-core against the shipped document, and every
reply too. The approval flows run the real graph (policy, interrupt, resume, execute) with an
executor that runs the real action code in-process through the sandbox entrypoint's ``handle``
(the same code the container runs); one test runs a Neon action in a real sandbox container.
"""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from graph.build import build_graph
from graph.deps import GraphDeps, Limits
from graph.policy import parse_policy
from graph.records.sqlite import SqliteRecords
from graph.task import Source, Task
from sandbox.credentials import CredentialBroker
from sandbox.entrypoint import handle
from sandbox.protocol import SandboxOutcome, SandboxRequest
from tests.fakes.openapi_api import OpenApiEmulator
from tests.fakes.openapi_apis import (
    ESTUARY_TOKEN,
    JUPYTER_TOKEN,
    LAMBDA_TOKEN,
    NEON_TOKEN,
    ROLE_PASSWORD,
    Neon,
)
from tests.services.docker import run_once
from tools.base import ActionContext, Status, Tier
from tools.catalog import Call, CallError, Catalog
from tools.openapi import OpenApiConfig
from tools.openapi_apis import ESTUARY_TOOLSET, LAMBDA_TOOLSET, NEON_TOOLSET

pytest_plugins = ["tests.fakes.openapi_apis"]

TOOLSETS = {"neon": NEON_TOOLSET, "lambda": LAMBDA_TOOLSET, "estuary": ESTUARY_TOOLSET}
TOKENS = {"neon": NEON_TOKEN, "lambda": LAMBDA_TOKEN, "estuary": ESTUARY_TOKEN}
POLICY = """\
version: 1
groups:
  sre: {users: [UAPPR1]}
defaults:
  autonomous_max_tier: 2
  approvers: [sre]
"""
_ids = itertools.count()


def catalog(emulators: dict) -> Catalog:
    configs = {name: TOOLSETS[name].config(base_url=api.url, token_secret=f"static:{name.upper()}")
               for name, api in emulators.items()}
    return Catalog(list(TOOLSETS.values()), configs)


def run(api, toolset: str, action: str, preview: bool = False, **params):
    resolved = catalog({toolset: api}).resolve(Call(id="t", toolset=toolset, action=action,
                                                    params=params))
    ctx = ActionContext(config=resolved.config.model_dump(mode="json"),
                        secrets={"api_token": TOKENS[toolset]})
    body = resolved.action.preview if preview else resolved.action.run
    return body(resolved.params, ctx)


class InlineExecutor:
    """Runs the real action code through the sandbox entrypoint's ``handle``, without Docker."""

    def __init__(self) -> None:
        self.requests: list[SandboxRequest] = []

    async def run(self, request: SandboxRequest, on_progress=None) -> SandboxOutcome:
        self.requests.append(request)
        result = await asyncio.to_thread(handle, request.wire(), lambda text: None)
        return SandboxOutcome(result=result)


def graph_for(tmp_path, emulators: dict, executor: InlineExecutor):
    static = {name.upper(): TOKENS[name] for name in emulators}
    from pydantic import SecretStr

    deps = GraphDeps(
        catalog=catalog(emulators), policy=parse_policy(POLICY), executor=executor,
        broker=CredentialBroker(None, {k: SecretStr(v) for k, v in static.items()}),
        audit=SqliteRecords(tmp_path / "audit.sqlite").audit, limits=Limits())
    return build_graph(deps, InMemorySaver())


async def start(graph, text: str):
    task = Task(source=Source.SLASH, team="T1", channel="C1", user="UREQ1", text=text,
                thread_ts=f"1.{next(_ids)}")
    config = {"configurable": {"thread_id": task.thread_id()}, "recursion_limit": 60}
    await graph.ainvoke({"run_id": f"r-{next(_ids):08x}", "task": task.model_dump(mode="json")},
                        config)
    return config, await graph.aget_state(config)


async def approve(graph, config, state):
    (pending,) = state.interrupts
    decision = {"status": "approved", "by": ["UAPPR1"], "hash": pending.value["review"]["hash"]}
    await graph.ainvoke(Command(resume={pending.id: decision}), config)
    return pending


# --- the tests the issue names ----------------------------------------------------------------

async def test_neon_create_branch_is_gated_approved_and_executed_once(neon_api, tmp_path):
    main = neon_api.fake.add_project("calm-sea-123456", "api")
    executor = InlineExecutor()
    graph = graph_for(tmp_path, {"neon": neon_api}, executor)
    body = json.dumps({"branch": {"name": "fix-migration", "parent_id": main}})
    config, state = await start(graph, f"neon create_branch calm-sea-123456 body='{body}'")
    assert len(state.interrupts) == 1 and not neon_api.calls("createProjectBranch")
    pending = await approve(graph, config, state)
    decision = {"status": "approved", "by": ["UAPPR1"], "hash": pending.value["review"]["hash"]}
    await graph.ainvoke(Command(resume={pending.id: decision}), config)  # a duplicate resume
    (created,) = neon_api.calls("createProjectBranch")
    assert created.body == {"branch": {"name": "fix-migration", "parent_id": main}}
    assert [b["name"] for b in neon_api.fake.branches.values()] == ["main", "fix-migration"]
    report = (await graph.aget_state(config)).values["report"]
    assert report["calls"][0]["status"] == "ok" and "fix-migration" in report["calls"][0]["output"]


async def test_neon_branch_passwords_never_leave_the_action(neon_api, tmp_path):
    neon_api.fake.add_project("calm-sea-123456", "api")
    result = run(neon_api, "neon", "create_branch", project_id="calm-sea-123456",
                 body={"branch": {"name": "b"}})
    assert result.status is Status.OK, result.error
    assert ROLE_PASSWORD not in result.model_dump_json()
    assert result.data["roles"][0]["password"] == "[redacted]"
    assert result.data["connection_uris"][0]["connection_uri"] == "[redacted]"


async def test_lambda_terminate_is_previewed_and_gated(lambda_api, tmp_path):
    doomed = lambda_api.fake.add_instance("train-7")
    executor = InlineExecutor()
    graph = graph_for(tmp_path, {"lambda": lambda_api}, executor)
    body = json.dumps({"instance_ids": [doomed]})
    text = f"lambda terminate body='{body}'"
    config, state = await start(graph, text)
    (pending,) = state.interrupts
    review = pending.value["review"]
    assert review["verdict"] == "approve" and review["tier"] == Tier.PRODUCTION
    assert "This would affect:" in review["preview"] and "train-7" in review["preview"]
    assert JUPYTER_TOKEN not in review["preview"]
    assert [c.operation for c in lambda_api.requests] == ["getInstance"]
    assert doomed in lambda_api.fake.instances  # nothing terminated before the approval
    await approve(graph, config, state)
    assert len(lambda_api.calls("terminateInstance")) == 1 and not lambda_api.fake.instances


def test_an_operation_not_in_the_allow_list_does_not_exist(neon_api):
    names = {a.name for a in NEON_TOOLSET.actions}
    assert "reveal_role_password" not in names and "create_api_key" not in names
    with pytest.raises(CallError, match="`neon` has no action `getProjectBranchRolePassword`"):
        catalog({"neon": neon_api}).resolve(Call(id="x", toolset="neon",
                                                 action="getProjectBranchRolePassword"))
    from tools import find
    assert find("neon", "getProjectBranchRolePassword") is None  # the sandbox cannot run it


@pytest.mark.parametrize("toolset,action,params,message", [
    ("neon", "create_branch", {"project_id": "p-1", "body": {"branch": {"name": 5}}},
     "body.branch.name: 5 is not of type 'string'"),
    ("neon", "create_branch", {"project_id": "p-1", "body": {"branch": {"parent_id": "../x"}}},
     "body.branch.parent_id: '../x' does not match"),
    ("neon", "branch", {"project_id": "UPPER CASE", "branch_id": "br-1"},
     "project_id: 'UPPER CASE' does not match"),
    ("lambda", "terminate", {"body": {}}, "body: 'instance_ids' is a required property"),
    ("lambda", "terminate", {"body": {"instance_ids": "abc"}},
     "body.instance_ids: 'abc' is not of type 'array'"),
    ("lambda", "instance", {"id": ".."}, "id: `..` is not a valid path value"),
    ("estuary", "status", {"name": []}, "name: \\[\\] should be non-empty"),
])
def test_a_call_that_violates_the_document_is_refused_before_any_request(
        neon_api, lambda_api, estuary_api, toolset, action, params, message):
    emulators = {"neon": neon_api, "lambda": lambda_api, "estuary": estuary_api}
    with pytest.raises(CallError, match=message):
        catalog(emulators).resolve(Call(id="x", toolset=toolset, action=action, params=params))
    assert not any(api.requests for api in emulators.values())


def test_the_document_check_is_what_refuses(neon_api):
    """Turn the guard off (skip the model's document check): the emulator, validating against
    the same document, refuses the request instead, so the guard is what keeps it from going out."""
    action = NEON_TOOLSET.action("create_branch")
    unchecked = action.params.model_construct(project_id="p-1", body={"branch": {"name": 5}})
    ctx = ActionContext(config={"base_url": neon_api.url}, secrets={"api_token": NEON_TOKEN})
    result = action.run(unchecked, ctx)
    assert result.status is Status.ERROR and "400" in result.error
    assert neon_api.refused and "name" in neon_api.refused[0][1]


# --- behaviour -----------------------------------------------------------------------------

def test_reads_render_the_api_answer(neon_api, estuary_api, lambda_api):
    neon_api.fake.add_project("calm-sea-123456", "api")
    projects = run(neon_api, "neon", "projects")
    assert projects.status is Status.OK and projects.data["projects"][0]["name"] == "api"
    assert projects.invocation == "GET /projects"
    estuary_api.fake.add("acme/pg-cdc", "capture", disabled=True)
    estuary_api.fake.add("acme/to-bq", "materialization", error="shard failed")
    status = run(estuary_api, "estuary", "status", name=["acme/pg-cdc", "acme/to-bq"], short=True)
    assert [s["summary"]["status"] for s in status.data] == ["taskDisabled", "error"]
    assert status.invocation == "GET /api/v1/catalog/status?name=acme/pg-cdc,acme/to-bq&short=true"
    lambda_api.fake.add_instance("a")
    listed = run(lambda_api, "lambda", "instances")
    assert listed.data["data"][0]["jupyter_token"] == "[redacted]"
    assert JUPYTER_TOKEN not in listed.output


def test_upstream_errors_are_values_with_the_apis_message(neon_api, lambda_api):
    missing = run(neon_api, "neon", "project", project_id="nope-1")
    assert missing.error == "The neon API answered 404: project not found"
    gone = run(lambda_api, "lambda", "instance", id="ffff")
    assert gone.error == "The lambda API answered 404: Instance not found"
    ctx = ActionContext(config={"base_url": neon_api.url}, secrets={"api_token": "wrong"})
    action = NEON_TOOLSET.action("projects")
    assert "401" in action.run(action.params.model_validate({}), ctx).error


def test_path_values_stay_on_the_declared_host_and_redirects_are_not_followed(neon_api):
    neon_api.fake.add_project("calm-sea-123456", "api")
    action = NEON_TOOLSET.action("project")
    sneaky = action.params.model_construct(project_id="x/../../evil.example")
    ctx = ActionContext(config={"base_url": neon_api.url}, secrets={"api_token": NEON_TOKEN})
    assert action.run(sneaky, ctx).status is Status.ERROR
    (call,) = neon_api.requests  # it went to the emulator, with the slashes encoded
    assert call.path == "/api/v2/projects/x%2F..%2F..%2Fevil.example"
    with OpenApiEmulator("neon.json", Neon().handlers(), NEON_TOKEN) as elsewhere:
        moved = {"code": "", "message": "moved"}
        target = {"Location": elsewhere.url + "/projects"}
        neon_api.handlers["listProjects"] = lambda call: (302, moved, target)
        redirected = run(neon_api, "neon", "projects")
        assert "does not follow redirects" in (redirected.error or "")
        assert not elsewhere.requests  # turn allow_redirects on and this fails


def test_token_goes_only_in_the_authorization_header(neon_api, lambda_api):
    neon_api.fake.add_project("calm-sea-123456", "api")
    run(neon_api, "neon", "projects")
    (call,) = neon_api.requests
    assert call.headers["Authorization"] == f"Bearer {NEON_TOKEN}"
    lambda_api.fake.add_instance("a")
    run(lambda_api, "lambda", "instances")
    assert lambda_api.requests[0].headers["Authorization"] == f"Bearer {LAMBDA_TOKEN}"
    for api, token in ((neon_api, NEON_TOKEN), (lambda_api, LAMBDA_TOKEN)):
        assert all(token not in c.path + c.raw + json.dumps(c.query) for c in api.requests)


def test_tiers_targets_egress_and_secrets(neon_api):
    tiers = {a.name: int(a.tier) for a in NEON_TOOLSET.actions}
    assert tiers["create_branch"] == 3 and tiers["delete_branch"] == 4
    assert tiers["delete_project"] == 4 and tiers["projects"] == tiers["operations"] == 0
    assert {a.name: int(a.tier) for a in LAMBDA_TOOLSET.actions} == {
        "instances": 0, "instance": 0, "instance_types": 0, "launch": 3, "restart": 3,
        "terminate": 4}
    cat = Catalog(list(TOOLSETS.values()), {"neon": NEON_TOOLSET.config(
        token_secret="kv/data/neon#token")})
    resolved = cat.resolve(Call(id="1", toolset="neon", action="delete_branch",
                                params={"project_id": "calm-sea-1", "branch_id": "br-x"}))
    assert resolved.target.kind == "neon_project" and resolved.target.name == "calm-sea-1"
    assert resolved.target.attrs["branch_id"] == "br-x"
    assert [str(e) for e in resolved.egress] == ["console.neon.tech:443"]
    assert [(s.name, s.path, s.key) for s in resolved.secrets] == [
        ("api_token", "kv/data/neon", "token")]
    assert resolved.summary == "Delete branch: DELETE /projects/calm-sea-1/branches/br-x"


@pytest.mark.parametrize("config,message", [
    ({"base_url": "ftp://x"}, "must be an http\\(s\\) URL"),
    ({"base_url": "https://u:p@x.example"}, "no credentials"),
    ({"base_url": "https://x.example", "token_secret": "NEON"}, "must look like"),
])
def test_bad_config_is_refused(config, message):
    with pytest.raises(ValueError, match=message):
        OpenApiConfig(**config)


@pytest.mark.docker
async def test_neon_in_the_sandbox_reaches_only_its_host(neon_api, sandbox_image):
    neon_api.fake.add_project("calm-sea-123456", "api")
    port = neon_api.url.split(":")[2].split("/")[0]
    api_url = f"http://neon.example.test:{port}/api/v2"
    cat = Catalog([NEON_TOOLSET], {"neon": NEON_TOOLSET.config(base_url=api_url)})
    resolved = cat.resolve(Call(id="n", toolset="neon", action="projects"))
    request = SandboxRequest(
        run_id="neon", call_id="n", toolset="neon", action="projects", params={},
        config=resolved.config.model_dump(mode="json"), secrets={"api_token": NEON_TOKEN},
        egress=resolved.egress)
    outcome = await run_once(request, sandbox_image, "neon", {"neon.example.test": "127.0.0.1"})
    assert outcome.result.status is Status.OK, (outcome.result.error, outcome.diagnostics)
    assert outcome.result.data["projects"][0]["id"] == "calm-sea-123456"
    assert NEON_TOKEN not in outcome.model_dump_json()
