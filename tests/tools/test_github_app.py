"""GitHub App auth: an installation token per action, with only the permissions it needs
(``tools.github.PERMISSIONS``), minted on the host (``sandbox/credentials/github_app.py``) from
the emulator's App token endpoint, which checks the App JWT and enforces the token's
repositories and permissions on every request."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.credentials.github_app import GitHubApp, GitHubAppError, app_jwt, mint, revoke
from tests.tools.test_github import catalog
from tools.base import ActionContext, SecretKind, SecretRef, Status
from tools.catalog import Call, Catalog
from tools.github import PERMISSIONS, TOOLSET, GitHubConfig

pytest_plugins = ["tests.fakes.github"]

APP_ID, INSTALLATION = 4242, 77
EVERYTHING = {"contents": "write", "pull_requests": "write", "checks": "read", "statuses": "read",
              "issues": "write", "actions": "write", "administration": "read"}


def keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public.decode()


@pytest.fixture(scope="module")
def keys():
    return keypair()


@pytest.fixture
def app(github_api, keys):
    private, public = keys
    github_api.apps.install(APP_ID, public, INSTALLATION, "acme", EVERYTHING)
    github_api.add_repo("acme/api", files={"app.py": "VERSION = 1\n"})
    github_api.add_repo("acme/billing")
    return GitHubApp(api_url=github_api.url, app_id=APP_ID, installation_id=INSTALLATION,
                     private_key=private)


def act(github_api, token: str, action: str, **params):
    resolved = catalog(github_api.url, default_repos=("acme/api",)).resolve(
        Call(id="a", toolset="github", action=action, params=params))
    ctx = ActionContext(config=resolved.config.model_dump(), secrets={"github_token": token})
    return resolved.action.run(resolved.params, ctx)


def test_every_action_declares_its_permissions():
    assert set(PERMISSIONS) == {a.name for a in TOOLSET.actions}
    reads = [a.name for a in TOOLSET.actions if int(a.tier) == 0]
    assert all(level == "read" for name in reads for level in PERMISSIONS[name].values())


def test_a_token_per_action_with_only_its_permissions(github_api, app):
    token = mint(app, "acme/api", PERMISSIONS["branch"])
    assert github_api.apps.minted == [{"installation": INSTALLATION,
                                       "repositories": ["acme/api"],
                                       "permissions": {"contents": "write"}}]
    made = act(github_api, token.value, "branch", branch="fix")
    assert made.status is Status.OK, made.error
    refused = act(github_api, token.value, "issue", title="not allowed")  # issues:write missing
    assert refused.error == "GitHub answered 403: Resource not accessible by integration"
    other = act(github_api, token.value, "repo", repo="acme/billing")  # not the token's repo
    assert other.error == "GitHub answered 404: Not Found"
    assert token.audit()["permissions"] == {"contents": "write"} and token.value not in str(
        token.audit())


def test_a_read_action_token_cannot_write(github_api, app):
    token = mint(app, "acme/api", PERMISSIONS["file"])
    assert act(github_api, token.value, "file", path="app.py").output == "VERSION = 1\n"
    assert "403" in act(github_api, token.value, "branch", branch="x").error
    assert "x" not in github_api.repos["acme/api"].branches


def test_revoked_after_the_action(github_api, app):
    token = mint(app, "acme/api", PERMISSIONS["repo"])
    assert act(github_api, token.value, "repo").status is Status.OK
    assert revoke(app, token) is None
    assert act(github_api, token.value, "repo").error == "GitHub answered 401: Bad credentials"
    assert revoke(app, token) is None  # idempotent: an already revoked token is fine


def test_the_app_jwt_must_be_signed_by_the_apps_key(github_api, app):
    stranger = GitHubApp(**(app.model_dump() | {"private_key": keypair()[0]}))
    with pytest.raises(GitHubAppError, match="GitHub refused an installation token for "
                                             "acme/api \\(401: A JSON web token could not"):
        mint(stranger, "acme/api", PERMISSIONS["repo"])
    with pytest.raises(GitHubAppError, match="not granted to this installation"):
        mint(app, "acme/api", {"members": "write"})
    assert not github_api.apps.tokens
    assert app_jwt(app).count(".") == 2


# --- the broker's kind: the token an action runs with ------------------------------------------

def app_graph(github_api, app, tmp_path):
    """The run graph over an App-authenticated GitHub connector; actions run in-process through
    the sandbox entrypoint (InlineExecutor), credentials come from the broker's github_app kind.
    Also returns the graph's cleanup, which revokes after the answer (the driver awaits it)."""
    from langgraph.checkpoint.memory import InMemorySaver

    from graph.build import build_graph
    from graph.deps import GraphDeps, Limits
    from graph.policy import parse_policy
    from graph.records.sqlite import SqliteRecords
    from sandbox.credentials import CredentialBroker
    from sandbox.credentials.github_app import GitHubAppToken
    from tests.tools.test_openapi import POLICY, InlineExecutor

    config = GitHubConfig(api_url=github_api.url, default_repos=("acme/api",), app=True,
                          token_secret=None)
    broker = CredentialBroker(None, kinds={SecretKind.GITHUB_APP: GitHubAppToken(app)})
    executor = InlineExecutor()
    records = SqliteRecords(tmp_path / "audit.sqlite")
    deps = GraphDeps(catalog=Catalog([TOOLSET], {"github": config}), policy=parse_policy(POLICY),
                     executor=executor, broker=broker, audit=records.audit, limits=Limits())
    return build_graph(deps, InMemorySaver()), executor, records, deps.cleanup


async def test_an_action_runs_with_a_token_for_its_repo_and_permissions_only(
        github_api, app, tmp_path):
    from tests.tools.test_openapi import start

    graph, executor, records, cleanup = app_graph(github_api, app, tmp_path)
    config, state = await start(graph, "github branch fix-burst")
    await cleanup.close()  # as the driver does at the run's end: revocation follows the answer
    report = state.values["report"]
    assert report["calls"][0]["status"] == "ok", report
    assert "fix-burst" in github_api.repos["acme/api"].branches
    assert github_api.apps.minted == [{"installation": INSTALLATION, "repositories": ["acme/api"],
                                       "permissions": {"contents": "write"}}]
    (request,) = executor.requests
    token = request.secrets["github_token"].get_secret_value()
    assert token.startswith("ghs_") and github_api.apps.revoked == [token], "revoked after"
    used = {r.headers.get("Authorization") for r in github_api.requests
            if not r.path.startswith(("/app/", "/installation/"))}
    assert used == {f"token {token}"}, "every API call of the action used that token"
    (lease,) = [r["data"] for r in await records.audit.story(state.values["run_id"])
                if r["kind"] == "credential.revoke"]
    (grant,) = lease["grants"]
    assert grant["kind"] == "github_app" and grant["permissions"] == {"contents": "write"}
    assert grant["repositories"] == ["acme/api"] and grant["revoked_at"]
    assert token not in str(lease)


async def test_a_merge_preview_reads_with_a_read_only_token(github_api, app, tmp_path):
    from tests.tools.test_github import TOKEN, run
    from tests.tools.test_openapi import start

    graph, executor, _, _ = app_graph(github_api, app, tmp_path)
    github_api.tokens.add(TOKEN)  # set-up through the plain token; the run itself uses the App
    run(github_api, "branch", branch="fix")
    run(github_api, "commit", branch="fix", message="Fix", files={"app.py": "VERSION = 2\n"})
    number = run(github_api, "open_pr", head="fix", title="Fix").data["number"]
    github_api.apps.minted.clear()
    _, state = await start(graph, f"github merge number={number} base=main")
    assert len(state.interrupts) == 1, "tier 3: waits for approval, after its preview"
    (minted,) = github_api.apps.minted
    assert set(minted["permissions"].values()) == {"read"}
    assert minted["permissions"] == {k: "read" for k in PERMISSIONS["merge"]}


def test_permission_text_and_refusals():
    from sandbox.credentials import VaultError
    from sandbox.credentials.github_app import GitHubAppToken
    from tools.github import permission_text

    assert permission_text(TOOLSET.action("open_pr")) == "contents=read,pull_requests=write"
    kind = GitHubAppToken(GitHubApp(app_id=1, installation_id=2, private_key="x"))
    for path, perms in (("acme", "contents=read"), ("acme/api", "contents=admin"),
                        ("acme/api", "")):
        ref = SecretRef(name="github_token", path=path, key="token",
                        kind=SecretKind.GITHUB_APP, params=(("permissions", perms),))
        with pytest.raises(VaultError, match="did not run"):
            kind.validate(ref)
