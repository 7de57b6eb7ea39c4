"""The one typed settings object, read once in ``main`` from the environment and ``.env``.

Names follow the ecosystem where it has them (``SLACK_BOT_TOKEN``, ``VAULT_ADDR`` ...) and carry
an ``OPSBOT_`` prefix otherwise (DESIGN §6). A missing or bad value fails at boot with one
sentence naming the variable and the fix (:class:`ConfigError`), never a pydantic dump.

Each package keeps its own config model beside its code (``RedisConfig`` in ``tools/redis.py``,
``SandboxConfig`` in ``sandbox/config.py`` ...); the methods here build them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    Field,
    IPvAnyAddress,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from bot.errors import ConfigError
from tools import TOOLSETS

SLACK_API_URL = "https://slack.com/api/"
FIXES = {
    "SLACK_BOT_TOKEN": "copy the Bot User OAuth Token (xoxb-…) from your Slack app's "
                       "OAuth & Permissions page",
    "SLACK_SIGNING_SECRET": "copy the Signing Secret from your Slack app's Basic Information page",
    "SLACK_APP_TOKEN": "create an app-level token (xapp-…) with connections:write under Basic "
                       "Information → App-Level Tokens",
    "OPSBOT_PORT": "use a TCP port number between 1 and 65535 (0 picks a free one)",
    "OPSBOT_ACCEPTOR_PORT": "use a TCP port number between 1 and 65535 (0 picks a free one), "
                            "other than OPSBOT_PORT",
    "REDIS_URL": "use a URL like redis://127.0.0.1:6379/0",
    "OPSBOT_WORKERS": "use a number of run workers between 1 and 64",
    "OPSBOT_DATABASE_URL": "use a URL like postgresql://opsbot:…@db.internal:5432/opsbot",
    "OPSBOT_WORKER_LANES": "list lanes from maintenance, incident, chat, scheduled, "
                           "comma-separated",
}
LANES = ("maintenance", "incident", "chat", "scheduled")


def _env(name: str, *more: str) -> Any:
    return Field(None, validation_alias=AliasChoices(name, *more))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    slack_bot_token: SecretStr | None = _env("SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = _env("SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = _env("SLACK_APP_TOKEN")
    slack_api_url: str = Field(SLACK_API_URL, validation_alias="OPSBOT_SLACK_API_URL")

    openai_api_key: SecretStr | None = _env("OPENAI_API_KEY")
    openai_base_url: str | None = _env("OPENAI_BASE_URL")
    model: str = Field("gpt-4o-mini", validation_alias="OPSBOT_MODEL")
    embeddings: Literal["local", "openai"] = Field("local", validation_alias="OPSBOT_EMBEDDINGS")
    # The memory of past incidents (graph/memory.py): a Qdrant collection beside the runbooks.
    memory: bool = Field(True, validation_alias="OPSBOT_MEMORY")
    memory_collection: str = Field("incidents", pattern=r"^[A-Za-z0-9_\-]{1,64}$",
                                   validation_alias="OPSBOT_MEMORY_COLLECTION")

    # "Save as runbook" on a report writes its draft here (bot/listeners/runbook_drafts.py)...
    runbook_drafts: Path = Field(Path("runbooks/drafts"), validation_alias="OPSBOT_RUNBOOK_DRAFTS")
    # ... or, with a runbooks repository, proposes it there as a draft PR (the GitHub connector,
    # tier 2: a run in the report's thread, under policy, with the clicker as its requester)
    runbook_repo: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$",
        validation_alias="OPSBOT_RUNBOOK_REPO")
    runbook_repo_dir: str = Field("runbooks/drafts", pattern=r"^[\w.-]+(/[\w.-]+)*$",
                                  validation_alias="OPSBOT_RUNBOOK_REPO_DIR")

    vault_addr: str | None = _env("VAULT_ADDR")
    vault_token: SecretStr | None = _env("VAULT_TOKEN")
    github_token: SecretStr | None = _env("GITHUB_TOKEN")
    github_api_url: str = Field("https://api.github.com", validation_alias="OPSBOT_GITHUB_API_URL")
    # A GitHub App instead of GITHUB_TOKEN: a token per action (sandbox/credentials/github_app.py)
    github_app_id: int | None = _env("OPSBOT_GITHUB_APP_ID")
    github_app_installation_id: int | None = _env("OPSBOT_GITHUB_APP_INSTALLATION_ID")
    github_app_private_key_file: Path | None = _env("OPSBOT_GITHUB_APP_PRIVATE_KEY_FILE")
    pulumi_dir: Path | None = _env("OPSBOT_PULUMI_DIR")
    pulumi_backend: str | None = _env("OPSBOT_PULUMI_BACKEND")
    pulumi_stacks: str | None = _env("OPSBOT_PULUMI_STACKS")
    pulumi_passphrase_secret: str | None = _env("OPSBOT_PULUMI_PASSPHRASE_SECRET")
    redis_url: str | None = _env("REDIS_URL")
    redis_password_secret: str | None = _env("OPSBOT_REDIS_PASSWORD_SECRET")
    redis_read_role: str | None = _env("OPSBOT_REDIS_READ_ROLE")
    redis_write_role: str | None = _env("OPSBOT_REDIS_WRITE_ROLE")
    postgres_url: str | None = _env("OPSBOT_POSTGRES_URL")
    postgres_password_secret: str | None = _env("OPSBOT_POSTGRES_PASSWORD_SECRET")
    postgres_read_role: str | None = _env("OPSBOT_POSTGRES_READ_ROLE")
    postgres_write_role: str | None = _env("OPSBOT_POSTGRES_WRITE_ROLE")
    commands: Path | None = _env("OPSBOT_COMMANDS")
    ssh_role: str | None = _env("OPSBOT_SSH_ROLE")
    ssh_known_hosts: Path | None = _env("OPSBOT_SSH_KNOWN_HOSTS")
    ssh_user: str = Field("opsbot", validation_alias="OPSBOT_SSH_USER")
    docker_socket: str | None = _env("OPSBOT_DOCKER_SOCKET")
    docker_host: str | None = _env("DOCKER_HOST")
    qdrant_url: str | None = _env("QDRANT_URL")
    pagerduty_webhook_secret: SecretStr | None = _env("PAGERDUTY_WEBHOOK_SECRET")
    # POST /webhooks/alertmanager: Alertmanager's http_config bearer token and/or basic auth
    alertmanager_token: SecretStr | None = _env("OPSBOT_ALERTMANAGER_TOKEN")
    alertmanager_user: str = Field("alertmanager", validation_alias="OPSBOT_ALERTMANAGER_USER")
    alertmanager_password: SecretStr | None = _env("OPSBOT_ALERTMANAGER_PASSWORD")
    github_webhook_secret: SecretStr | None = _env("GITHUB_WEBHOOK_SECRET")  # X-Hub-Signature-256
    metrics_token: SecretStr | None = _env("OPSBOT_METRICS_TOKEN")  # bearer for GET /metrics
    # Traces (OTLP/HTTP) go here when set; prompts and answers only with OPSBOT_TRACE_CONTENT.
    otel_endpoint: str | None = _env("OTEL_EXPORTER_OTLP_ENDPOINT")
    otel_service_name: str = Field("opsbot", validation_alias="OTEL_SERVICE_NAME")
    trace_content: bool = Field(False, validation_alias="OPSBOT_TRACE_CONTENT")
    # The web console (/console): who may read it, its cookie key, Sign in with Slack.
    console_groups: str | None = _env("OPSBOT_CONSOLE_GROUPS")
    console_secret: SecretStr | None = _env("OPSBOT_CONSOLE_SECRET")
    slack_client_id: str | None = _env("SLACK_CLIENT_ID")
    slack_client_secret: SecretStr | None = _env("SLACK_CLIENT_SECRET")
    slack_oidc_url: str = Field("https://slack.com/", validation_alias="OPSBOT_SLACK_OIDC_URL")
    public_url: str | None = _env("OPSBOT_PUBLIC_URL")

    mcp: Path | None = _env("OPSBOT_MCP")
    mcp_channel: str | None = _env("OPSBOT_MCP_CHANNEL")
    mcp_url: str | None = _env("OPSBOT_MCP_URL")
    token: SecretStr | None = _env("OPSBOT_TOKEN")

    data_dir: Path = Field(Path(".opsbot"), validation_alias="OPSBOT_DATA_DIR")
    policy: Path | None = _env("OPSBOT_POLICY")
    schedules: Path | None = _env("OPSBOT_SCHEDULES")  # graph/schedules/spec.py
    api_rate: int = Field(60, ge=1, le=100_000, validation_alias="OPSBOT_API_RATE")  # per token/min
    port: int = Field(3000, ge=0, le=65535, validation_alias="OPSBOT_PORT")
    # Slack's requests on a port of their own, answered by a process that does nothing else
    # (bot/acceptor.py); unset, OPSBOT_PORT's /slack/events takes them (it always does too)
    acceptor_port: int | None = Field(None, ge=0, le=65535, validation_alias="OPSBOT_ACCEPTOR_PORT")
    sandbox_image: str | None = _env("OPSBOT_SANDBOX_IMAGE")
    # Host names the sandbox's egress dials at these addresses instead of asking DNS (JSON,
    # {"github.corp.example": "10.2.0.7"}): split-horizon names; the action still dials the name
    egress_hosts: dict[str, IPvAnyAddress] = Field(default_factory=dict,
                                                   validation_alias="OPSBOT_EGRESS_HOSTS")
    database_url: SecretStr | None = _env("OPSBOT_DATABASE_URL")
    workers: int = Field(4, ge=1, le=64, validation_alias="OPSBOT_WORKERS")
    heartbeat_s: float = Field(5.0, ge=0.1, le=300, validation_alias="OPSBOT_HEARTBEAT_S")
    queue_poll_s: float = Field(1.0, ge=0.05, le=60, validation_alias="OPSBOT_QUEUE_POLL_S")
    # PostgreSQL ends a transaction whose process went silent between statements for this long,
    # releasing its row locks (a frozen worker would otherwise hold its runs until it wakes).
    db_tx_idle_timeout_s: float = Field(30.0, ge=0.5, le=3600,
                                        validation_alias="OPSBOT_DB_TX_IDLE_TIMEOUT_S")
    worker_lanes: str = Field("maintenance,incident,chat,scheduled",
                              validation_alias="OPSBOT_WORKER_LANES")
    # Test-only: turns off the per-thread job lock, the lease and the execute guard, to show
    # what they prevent. Never set it in a deployment.
    unsafe_no_fencing: bool = Field(False, validation_alias="OPSBOT_UNSAFE_NO_FENCING")
    log_level: str = Field("info", validation_alias="OPSBOT_LOG_LEVEL")
    # first wait before retrying a call Slack refused with HTTP 200 ``ratelimited`` (it says
    # nothing about how long; each further attempt waits longer): bot/slack_retry.py
    slack_backoff_s: float = Field(1.0, ge=0.01, le=60, validation_alias="OPSBOT_SLACK_BACKOFF_S")
    # The variables connectors declare themselves (Toolset.env), by name: see ConnectorEnv.
    connector_env: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                   dotenv_settings, file_secret_settings):  # noqa: ANN001
        return (init_settings, env_settings, dotenv_settings, ConnectorEnv(settings_cls),
                file_secret_settings)

    @field_validator("slack_bot_token")
    @classmethod
    def _bot_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with xoxb-")
        return v

    @field_validator("slack_app_token")
    @classmethod
    def _app_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with xapp-")
        return v

    @field_validator("slack_api_url")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @property
    def slack_enabled(self) -> bool:
        return self.slack_bot_token is not None

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must be a PostgreSQL URL (postgresql://…)")
        return v

    @field_validator("worker_lanes")
    @classmethod
    def _lanes(cls, v: str) -> str:
        lanes = [lane.strip() for lane in v.split(",") if lane.strip()]
        unknown = [lane for lane in lanes if lane not in LANES]
        if not lanes or unknown:
            raise ValueError(f"unknown lane {', '.join(unknown) or '(none given)'}")
        return ",".join(lanes)

    @property
    def scale_out(self) -> bool:
        """PostgreSQL mode: records, checkpoints and the queue live in OPSBOT_DATABASE_URL."""
        return self.database_url is not None

    @property
    def dsn(self) -> str:
        assert self.database_url is not None
        return self.database_url.get_secret_value()

    def check_slack(self) -> None:
        """Slack needs a signing secret in HTTP mode; Socket Mode does not."""
        if self.slack_enabled and not self.socket_mode and self.slack_signing_secret is None:
            raise ConfigError(
                "SLACK_SIGNING_SECRET is not set: HTTP mode needs it to verify requests; "
                f"{FIXES['SLACK_SIGNING_SECRET']} (or set SLACK_APP_TOKEN for Socket Mode)."
            )
        if self.socket_mode and not self.slack_enabled:
            raise ConfigError(f"SLACK_APP_TOKEN is set but SLACK_BOT_TOKEN is not: "
                              f"{FIXES['SLACK_BOT_TOKEN']}.")
        if self.acceptor_port is not None and self.socket_mode:
            raise ConfigError("OPSBOT_ACCEPTOR_PORT is set but Slack is in Socket Mode "
                              "(SLACK_APP_TOKEN): its requests come over the socket, not HTTP; "
                              "unset one of them.")
        if self.acceptor_port and self.acceptor_port == self.port:
            raise ConfigError(f"OPSBOT_ACCEPTOR_PORT is OPSBOT_PORT ({self.port}): "
                              f"{FIXES['OPSBOT_ACCEPTOR_PORT']}.")


class ConnectorEnv(PydanticBaseSettingsSource):
    """Reads the variables each toolset declares in ``Toolset.env`` (environment, then .env), so
    a connector adds its settings where it is declared instead of here."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        names = {name for toolset in TOOLSETS for name in toolset.env.values()}
        env_file = self.settings_cls.model_config.get("env_file")
        dotenv = dotenv_values(env_file) if env_file and Path(str(env_file)).is_file() else {}
        found = {n: os.environ.get(n, dotenv.get(n)) for n in sorted(names)}
        return {"connector_env": {n: v for n, v in found.items() if v}}


def load_settings(**overrides: Any) -> Settings:
    """Build settings or raise :class:`ConfigError` with one sentence."""
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        raise ConfigError(_sentence(e)) from None
    settings.check_slack()
    return settings


def _sentence(error: ValidationError) -> str:
    first = error.errors(include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else "settings"
    name = _env_name(field)
    message = first["msg"].removeprefix("Value error, ")
    fix = FIXES.get(name)
    return f"{name} is invalid: {message}" + (f"; {fix}." if fix else ".")


def _env_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias or field).upper()
