"""The Pulumi connector: contract tests everywhere, the real engine where the CLI exists.

The automation API drives the `pulumi` binary. It cannot be installed on every machine (its
installers download from the internet), so tests that need the engine skip with the reason;
everything else (params, targets, tiers, the missing-CLI error) always runs.
"""

import shutil
from pathlib import Path

import pytest

from tools.base import ActionContext, Status, Tier
from tools.catalog import Call, CallError, Catalog
from tools.pulumi import TOOLSET, PulumiConfig
from tools.pulumi_ops import NO_CLI, _env

FIXTURE = Path(__file__).parent.parent / "fixtures" / "pulumi"
PASSPHRASE = "fixture-passphrase-51c0"
SECRET_OUTPUT = "fixture-secret-output-7f3a"
needs_cli = pytest.mark.skipif(
    shutil.which("pulumi") is None,
    reason="pulumi CLI not on PATH: the automation API needs it; its installers download from "
    "the internet, so the real-engine tests run only where the CLI is preinstalled",
)


def config(**overrides) -> PulumiConfig:
    values = {
        "work_dir": str(FIXTURE),
        "backend_url": "file:///tmp/opsbot-state",
        "stacks": ("dev", "staging-*"),
    }
    return PulumiConfig(**(values | overrides))


def resolve(action: str, cfg: PulumiConfig | None = None, **params):
    catalog = Catalog([TOOLSET], {"pulumi": cfg or config()})
    return catalog.resolve(Call(id="t", toolset="pulumi", action=action, params=params))


def run(action: str, cfg: PulumiConfig, secrets=None, progress=None, **params):
    resolved = resolve(action, cfg, **params)
    ctx = ActionContext(
        config=resolved.config.model_dump(),
        secrets=secrets or {},
        progress=progress or (lambda _: None),
    )
    return resolved.action.run(resolved.params, ctx)


def test_project_name_comes_from_pulumi_yaml():
    assert config().project == "opsbot-fixture"
    assert config(project="explicit").project == "explicit"
    with pytest.raises(ValueError, match="has no Pulumi.yaml; point it at a Pulumi project"):
        config(work_dir=str(FIXTURE.parent))


def test_targets_tiers_and_summaries():
    up = resolve("up", stack="dev", message="roll forward")
    assert up.target.model_dump() == {
        "kind": "pulumi_stack",
        "name": "opsbot-fixture/dev",
        "attrs": {"stack": "dev", "project": "opsbot-fixture"},
    }
    assert up.summary == "Deploy (pulumi up) stack `dev`: roll forward"
    assert up.action.preview is TOOLSET.action("preview").run
    assert resolve("stacks").target.attrs == {"stack": "*", "project": "opsbot-fixture"}
    assert resolve("preview", stack="staging-eu", refresh=True).summary == (
        "Preview changes to Pulumi stack `staging-eu` (after a refresh)"
    )
    assert {a.name: a.tier for a in TOOLSET.actions} == {
        "stacks": Tier.OBSERVE,
        "outputs": Tier.OBSERVE,
        "history": Tier.OBSERVE,
        "preview": Tier.DRAFT,
        "refresh": Tier.SANDBOX_EXECUTE,
        "up": Tier.SANDBOX_EXECUTE,
        "cancel": Tier.SANDBOX_EXECUTE,
    }


def test_stacks_outside_the_allow_list_are_refused_before_anything_runs():
    with pytest.raises(
        CallError, match=r"Stack `prod` is not one opsbot may use \(allowed: `dev`, `staging-\*`\)."
    ):
        resolve("up", stack="prod")


def test_egress_and_secrets():
    local = resolve("up", stack="dev")
    assert local.egress == [] and local.secrets == []
    cloud = config(
        backend_url="https://api.pulumi.example",
        passphrase_secret="kv/data/pulumi/dev#passphrase",
        access_token_secret="static:PULUMI_ACCESS_TOKEN",
        extra_egress=("ec2.eu-west-1.amazonaws.com:443",),
    )
    resolved = resolve("up", cloud, stack="dev")
    assert [str(e) for e in resolved.egress] == [
        "api.pulumi.example:443",
        "ec2.eu-west-1.amazonaws.com:443",
    ]
    assert [(s.name, s.path, s.key) for s in resolved.secrets] == [
        ("pulumi_passphrase", "kv/data/pulumi/dev", "passphrase"),
        ("pulumi_token", "static:PULUMI_ACCESS_TOKEN", "PULUMI_ACCESS_TOKEN"),
    ]


def test_a_remote_backend_is_dialled_through_the_sandbox_mapping():
    cloud = config(backend_url="https://api.pulumi.example/state")
    mapped = {"api.pulumi.example:443": "10.9.0.1:8443"}
    ctx = ActionContext(cloud.model_dump(), {"pulumi_passphrase": PASSPHRASE}, mapped)
    assert _env(cloud, ctx) == {
        "PULUMI_BACKEND_URL": "https://10.9.0.1:8443/state",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
    }
    local = config()
    assert _env(local, ActionContext(local.model_dump()))["PULUMI_BACKEND_URL"] == (
        "file:///tmp/opsbot-state"
    )


@pytest.mark.parametrize(
    "action,params,message",
    [
        ("up", {}, "stack: Field required"),
        ("up", {"stack": "dev; rm -rf /"}, "stack: String should match pattern"),
        (
            "history",
            {"stack": "dev", "limit": 0},
            "limit: Input should be greater than or equal to 1",
        ),
        ("preview", {"stack": "dev", "target": "x"}, "target: Extra inputs are not permitted"),
        ("stacks", {"stack": "dev"}, "stack: Extra inputs are not permitted"),
        ("destroy", {"stack": "dev"}, "has no action `destroy`"),
    ],
)
def test_bad_calls_are_specific_sentences(action, params, message):
    with pytest.raises(CallError, match=message):
        resolve(action, **params)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"backend_url": "s3://bucket"}, "must be file:///<absolute path> or an http\\(s\\)"),
        ({"backend_url": "file://relative/dir"}, "must name an absolute path"),
        ({"backend_url": "https://user:pw@api.pulumi.example"}, "must not contain credentials"),
        ({"stacks": ()}, "stacks\n  Tuple should have at least 1 item"),
        ({"passphrase_secret": "hunter2"}, "must look like static:NAME or kv/data/<path>#<key>"),
        ({"extra_egress": ("no-port",)}, "must be host:port, got no-port"),
    ],
)
def test_bad_config_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


@pytest.mark.parametrize(
    "action,params", [("stacks", {}), ("preview", {"stack": "dev"}), ("up", {"stack": "dev"})]
)
def test_missing_cli_is_a_clear_error_value(monkeypatch, tmp_path, action, params):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no `pulumi` binary anywhere
    result = run(action, config(), **params)
    assert result.status is Status.ERROR
    assert result.error == NO_CLI
    assert result.error.startswith("The Pulumi CLI is not installed in the sandbox image")


# --- the real engine ------------------------------------------------------------------------------
@pytest.fixture
def project(tmp_path, monkeypatch):
    """The fixture project copied to tmp, with `dev` and `prod` stacks in a file:// backend."""
    from pulumi import automation as auto

    work = shutil.copytree(FIXTURE, tmp_path / "project")
    state = tmp_path / "state"
    state.mkdir()
    monkeypatch.setenv("PULUMI_HOME", str(tmp_path / "home"))
    env = {"PULUMI_BACKEND_URL": state.as_uri(), "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE}
    for name in ("dev", "prod"):
        opts = auto.LocalWorkspaceOptions(env_vars=env, secrets_provider="passphrase")
        auto.create_or_select_stack(name, work_dir=str(work), opts=opts)
    return config(work_dir=str(work), backend_url=state.as_uri(), passphrase_secret="kv/data/p#k")


@needs_cli
def test_real_preview_up_outputs_and_history(project):
    secrets = {"pulumi_passphrase": PASSPHRASE}
    lines: list[str] = []
    preview = run("preview", project, secrets, progress=lines.append, stack="dev")
    assert preview.status is Status.OK, preview.error
    assert preview.data["changes"].get("create", 0) >= 1 and lines
    up = run("up", project, secrets, progress=lines.append, stack="dev", message="first deploy")
    assert up.status is Status.OK, up.error
    assert up.data["result"] == "succeeded"
    outputs = run("outputs", project, secrets, stack="dev")
    assert outputs.data == {"greeting": "hello", "apiKey": "[secret]"}
    history = run("history", project, secrets, stack="dev")
    assert history.data[0]["kind"] == "update" and history.data[0]["message"] == "first deploy"
    everything = "\n".join(
        [*lines, *(r.model_dump_json() for r in (preview, up, outputs, history))]
    )
    assert SECRET_OUTPUT not in everything and PASSPHRASE not in everything


@needs_cli
def test_real_stack_list_is_filtered_by_the_allow_list(project):
    listed = run("stacks", project, {"pulumi_passphrase": PASSPHRASE})
    assert listed.status is Status.OK, listed.error
    assert [row["name"].rpartition("/")[2] for row in listed.data] == ["dev"]


@needs_cli
def test_real_failures_are_error_values(project):
    missing = run("outputs", project.model_copy(update={"stacks": ("*",)}), {}, stack="nope")
    assert missing.status is Status.ERROR and missing.error.startswith(
        "No such stack in the backend"
    )
    idle = run("cancel", project, {"pulumi_passphrase": PASSPHRASE}, stack="dev")
    assert idle.status is Status.ERROR and idle.error
