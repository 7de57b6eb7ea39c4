"""Connector settings become connector configs at boot; a bad one is one sentence naming the
variable (``bot.connectors.connector_configs``)."""

import pytest

from bot.errors import ConfigError
from bot.settings import Settings
from bot.connectors import connector_configs

REDIS = {"redis_url": "redis://127.0.0.1:6379/0"}
READ, WRITE = "database/creds/opsbot-redis-read", "database/creds/opsbot-redis-write"


def configs(**values):
    return connector_configs(Settings(_env_file=None, **values))


@pytest.mark.parametrize(
    "values,message",
    [
        ({**REDIS, "redis_read_role": READ},
         "OPSBOT_REDIS_READ_ROLE is invalid: dynamic credentials need both a read role and a "
         "write role."),
        ({**REDIS, "redis_read_role": "database/creds/*", "redis_write_role": WRITE},
         "OPSBOT_REDIS_READ_ROLE is invalid: must look like database/creds/<role>."),
        ({**REDIS, "redis_read_role": READ, "redis_write_role": WRITE,
          "redis_password_secret": "kv/data/redis#password"},
         "OPSBOT_REDIS_READ_ROLE is invalid: set either dynamic roles or a password secret, "
         "not both."),
    ],
)
def test_bad_connector_settings_are_one_sentence(values, message):
    with pytest.raises(ConfigError) as caught:
        configs(**values)
    assert str(caught.value) == message


def test_redis_roles_pick_the_credential_by_tier():
    from tools.redis import TOOLSET

    config = configs(**REDIS, redis_read_role=READ, redis_write_role=WRITE)["redis"]
    for action, role in (("info", READ), ("scan", READ), ("del", WRITE), ("flushall", WRITE)):
        refs = TOOLSET.secrets(TOOLSET.action(action), None, config)
        assert [(r.name, r.path, r.key, r.kind) for r in refs] == [
            ("redis_username", role, "username", "database"),
            ("redis_password", role, "password", "database")]


COMMANDS = """\
commands:
  - {name: uptime, description: Load and uptime., command: uptime, tier: 0, hosts: ["web-*"]}
"""


@pytest.mark.parametrize(
    "files,values,message",
    [
        ({"commands.yml": COMMANDS}, {"ssh_known_hosts": "known_hosts"},
         "OPSBOT_SSH_ROLE is not set, but OPSBOT_COMMANDS is: set the Vault SSH role"),
        ({"commands.yml": COMMANDS}, {"ssh_role": "ssh/sign/opsbot"},
         "OPSBOT_SSH_KNOWN_HOSTS is not set, but OPSBOT_COMMANDS is: point it at a known_hosts"),
        ({"commands.yml": COMMANDS, "known_hosts": ""}, {"ssh_role": "ssh/*/x"},
         "OPSBOT_COMMANDS: ssh_role: must look like ssh/sign/<role>"),
        ({"commands.yml": "commands: [{name: Bad}]", "known_hosts": ""},
         {"ssh_role": "ssh/sign/opsbot"}, "OPSBOT_COMMANDS: commands.0.name: String should"),
        ({"commands.yml": "commands: [", "known_hosts": ""}, {"ssh_role": "ssh/sign/opsbot"},
         "OPSBOT_COMMANDS: line 1: expected the node content"),
        ({"known_hosts": ""}, {"ssh_role": "ssh/sign/opsbot"},
         "OPSBOT_COMMANDS: [Errno 2] No such file or directory"),
    ],
)
def test_bad_shell_settings_are_one_sentence(tmp_path, files, values, message):
    from bot.connectors import install_shell
    from tools.catalog import Catalog

    for name, text in files.items():
        (tmp_path / name).write_text(text)
    paths = {k: tmp_path / v if k == "ssh_known_hosts" else v for k, v in values.items()}
    settings = Settings(_env_file=None, commands=tmp_path / "commands.yml", **paths)
    if "known_hosts" in files and "ssh_known_hosts" not in paths:
        settings = settings.model_copy(update={"ssh_known_hosts": tmp_path / "known_hosts"})
    with pytest.raises(ConfigError) as caught:
        install_shell(settings, Catalog([], {}))
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_the_commands_file_becomes_the_shell_toolset(tmp_path):
    from bot.connectors import install_shell
    from tools.catalog import Catalog

    (tmp_path / "commands.yml").write_text(COMMANDS)
    (tmp_path / "known_hosts").write_text("web-1 ssh-ed25519 AAAA\n")
    settings = Settings(_env_file=None, commands=tmp_path / "commands.yml",
                        ssh_role="ssh/sign/opsbot", ssh_known_hosts=tmp_path / "known_hosts")
    catalog = Catalog([], {})
    install_shell(settings, catalog)
    assert [a.name for a in catalog.toolset("shell").actions] == ["uptime"]
    assert catalog.configs["shell"].user == "opsbot"


def test_the_warm_pool_preloads_what_the_deployment_configured(tmp_path):
    """Pooled boxes import the configured connectors (shell once commands are declared), and
    the MCP client once MCP servers are: the sandbox config the runtime starts with says so."""
    from bot.connectors import install_shell
    from bot.wiring import sandbox_config
    from tools import TOOLSETS
    from tools.catalog import Catalog

    (tmp_path / "commands.yml").write_text(COMMANDS)
    (tmp_path / "known_hosts").write_text("web-1 ssh-ed25519 AAAA\n")
    settings = Settings(_env_file=None, **REDIS)
    catalog = Catalog(TOOLSETS, connector_configs(settings))
    assert sandbox_config(settings, "i", catalog).preload == ["redis"]

    settings = Settings(_env_file=None, **REDIS, commands=tmp_path / "commands.yml",
                        ssh_role="ssh/sign/opsbot", ssh_known_hosts=tmp_path / "known_hosts",
                        mcp=tmp_path / "mcp.yml")
    catalog = Catalog(TOOLSETS, connector_configs(settings))
    install_shell(settings, catalog)
    assert sandbox_config(settings, "i", catalog).preload == ["redis", "shell", "mcp"]


@pytest.mark.docker
async def test_help_marks_pulumi_unavailable_when_the_image_has_no_cli(sandbox_runner, tmp_path):
    from bot.connectors import mark_pulumi
    from graph.help import command_examples, help_text
    from sandbox.image import pulumi_cli
    from tools import TOOLSETS
    from tools.catalog import Catalog
    from tools.pulumi import PulumiConfig

    if pulumi_cli():
        pytest.skip("a Pulumi CLI is on this host's PATH, so the image holds it: nothing to mark")
    (tmp_path / "Pulumi.yaml").write_text("name: infra\nruntime: python\n")
    pulumi = PulumiConfig(work_dir=str(tmp_path), backend_url="file:///tmp/s", stacks=("dev",))
    catalog = Catalog(TOOLSETS, {"pulumi": pulumi})
    assert "Unavailable" not in help_text(catalog)
    await mark_pulumi(catalog, sandbox_runner)
    assert "no Pulumi CLI (none was on the host's PATH" in help_text(catalog)
    assert "_Unavailable: the sandbox image holds the Pulumi SDK but no Pulumi CLI" in help_text(
        catalog, "pulumi")
    assert not [line for line in command_examples(catalog) if "pulumi" in line]


def test_a_github_app_gives_each_action_an_installation_token(tmp_path):
    from bot.wiring import broker_for
    from tests.tools.test_github_app import keypair
    from tools.base import SecretKind

    key = tmp_path / "app.pem"
    key.write_text(keypair()[0])
    app = {"github_app_id": 4242, "github_app_installation_id": 77,
           "github_app_private_key_file": key}
    settings = Settings(_env_file=None, **app)
    github = connector_configs(settings)["github"]
    assert github.app and github.token_secret is None
    assert SecretKind.GITHUB_APP in broker_for(settings)._kinds
    assert SecretKind.GITHUB_APP not in broker_for(Settings(_env_file=None))._kinds
    key.write_text("not a key")
    with pytest.raises(ConfigError, match="OPSBOT_GITHUB_APP_PRIVATE_KEY_FILE: cannot read a PEM"):
        broker_for(settings)
    with pytest.raises(ConfigError, match="OPSBOT_GITHUB_APP_INSTALLATION_ID is not set"):
        broker_for(Settings(_env_file=None, github_app_id=1, github_app_private_key_file=key))
