"""Shell steps over SSH: named commands an operator declared, never free-form shell.

``OPSBOT_COMMANDS`` (YAML) declares each command: a name, a description, a command template
with typed params, a tier and the host globs it may run on. Each becomes an action of the
``shell`` toolset (``/ops shell disk host=web-1 path=/var``), so policy, approvals and the
sandbox treat it like any connector. Neither a person nor the model can change the command:
they fill its typed params, which are validated before anything runs (a string param matches
its pattern — by default no spaces, quotes or shell characters, no leading ``-``) and then
shell-quoted into the template, so ``; rm -rf /``, ``$(…)`` or a newline can never become a
second command.

The action runs in the sandbox and reaches the host over SSH through its egress forwarder,
logging in with a certificate the Vault SSH engine signed for this action alone (principal
``opsbot-<tier>``, TTL = the command's timeout plus a margin) and trusting only the host keys
pinned in ``OPSBOT_SSH_KNOWN_HOSTS``. Output is capped. The SSH client (asyncssh) runs inside the
container only (``tools/shell_ssh.py``).

Usage::

    config = load_commands(text, ssh_role="ssh/sign/opsbot", known_hosts=pinned)
    toolset = build_toolset(config)      # catalog.install(toolset, config)
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from tools.base import (
    Action,
    ActionContext,
    Endpoint,
    SecretKind,
    SecretRef,
    Target,
    Tier,
    ToolResult,
    Toolset,
)

NAME = r"[a-z][a-z0-9_-]{0,40}"
SAFE = r"[A-Za-z0-9_.:/@%+=,][A-Za-z0-9_.:/@%+=,-]{0,127}"  # no shell syntax, no leading "-"
HOST = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,252}"
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SENTINEL = "a b'c\"d$(e)`f`;g"  # a value that survives only if quoting holds


class ParamSpec(BaseModel):
    """One typed parameter of a command: ``str`` (matching ``pattern``), ``int`` (between
    ``min`` and ``max``) or ``choice`` (one of ``choices``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["str", "int", "choice"] = "str"
    description: str = ""
    pattern: str = SAFE
    choices: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    default: str | int | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        re.compile(pattern)
        return pattern

    @model_validator(mode="after")
    def _consistent(self) -> ParamSpec:
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice param needs `choices`")
        if any(_CONTROL.search(c) for c in self.choices):
            raise ValueError("choices may not contain control characters")
        return self


class CommandSpec(BaseModel):
    """A command the operator allows: what it is, what it runs, where, and how risky it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=f"^{NAME}$")
    description: str = Field(min_length=1, max_length=500)
    command: str = Field(min_length=1, max_length=2000)
    params: dict[str, ParamSpec] = {}
    tier: Tier
    hosts: tuple[str, ...] = Field(min_length=1)
    timeout_s: int = Field(30, ge=1, le=600)
    user: str | None = Field(None, pattern=r"^[a-z_][a-z0-9_-]{0,31}$")

    @model_validator(mode="after")
    def _template(self) -> CommandSpec:
        named = set(_PLACEHOLDER.findall(self.command))
        if named != set(self.params):
            raise ValueError(f"the template's placeholders {sorted(named)} must be exactly the "
                             f"declared params {sorted(self.params)}")
        if _CONTROL.search(self.command):
            raise ValueError("the command may not contain newlines or control characters")
        rendered = render(self, {name: _SENTINEL for name in self.params})
        tokens = shlex.split(rendered)
        if sum(t.count(_SENTINEL) for t in tokens) != len(_PLACEHOLDER.findall(self.command)):
            raise ValueError("a placeholder sits inside quotes; write {param} unquoted (opsbot "
                             "quotes every value)")
        return self


class ShellConfig(BaseModel):
    """The declared commands plus how to reach hosts: the Vault SSH role that signs each
    action's certificate, the pinned host keys (known_hosts text), the login user, the port."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    commands: tuple[CommandSpec, ...] = Field(min_length=1)
    ssh_role: str
    known_hosts: str
    user: str = Field("opsbot", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    port: int = Field(22, ge=1, le=65535)
    output_cap: int = Field(65_536, ge=1024, le=1_048_576)

    @field_validator("ssh_role")
    @classmethod
    def _role(cls, path: str) -> str:
        return SecretRef.check_role(path, "sign") or path

    @model_validator(mode="after")
    def _unique(self) -> ShellConfig:
        names = [c.name for c in self.commands]
        if len(set(names)) != len(names):
            raise ValueError(f"command names must be unique: {sorted(names)}")
        return self

    def command(self, name: str) -> CommandSpec | None:
        return next((c for c in self.commands if c.name == name), None)


def load_commands(text: str, **settings: Any) -> ShellConfig:
    """Parse an ``OPSBOT_COMMANDS`` file; ``settings`` are the other ShellConfig fields.
    Raises ValueError (a pydantic one for a bad field) or yaml.YAMLError."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict) or not isinstance(data.get("commands"), list):
        raise ValueError("the file must hold a `commands:` list")
    return ShellConfig(commands=data["commands"], **settings)


def render(spec: CommandSpec, values: Mapping[str, Any]) -> str:
    """The template with every param value shell-quoted in place of its ``{name}``."""
    return _PLACEHOLDER.sub(lambda m: shlex.quote(str(values[m.group(1)])), spec.command)


def pinned_keys(known_hosts: str, host: str, port: int = 22) -> list[str]:
    """``"<type> <base64>"`` of every key ``known_hosts`` pins for ``host`` (plain patterns and
    ``[host]:port``; hashed entries and markers are not read)."""
    names = {host} if port == 22 else {f"[{host}]:{port}"}
    keys = []
    for line in known_hosts.splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@", "|")):
            continue
        patterns = fields[0].split(",")
        if any(fnmatchcase(name, p) for name in names for p in patterns if not p.startswith("!")):
            keys.append(f"{fields[1]} {fields[2]}")
    return keys


def principal(tier: Tier) -> str:
    """The certificate principal for a tier (``opsbot-observe`` ... ``opsbot-production``)."""
    return "opsbot-" + tier.name.lower().replace("_", "-")


def _field(name: str, spec: ParamSpec) -> tuple[Any, Any]:
    default = ... if spec.default is None else spec.default
    if spec.type == "int":
        return int, Field(default, ge=spec.min, le=spec.max, description=spec.description)
    if spec.type == "choice":
        return Literal[spec.choices], Field(default, description=spec.description)  # type: ignore[valid-type]
    return str, Field(default, pattern=f"^(?:{spec.pattern})$", max_length=1024,
                      description=spec.description)


def params_model(spec: CommandSpec, config: ShellConfig) -> type[BaseModel]:
    """The typed params of one command: ``host`` (one of its globs, with a pinned key) plus the
    declared ones; control characters are refused in every string."""
    fields = {name: _field(name, p) for name, p in spec.params.items()}
    host_help = f"The host to run on; matches {', '.join(spec.hosts)}."

    def checks(self: BaseModel) -> BaseModel:
        _check_values(self)
        _check_host(self.host, spec, config)  # type: ignore[attr-defined]
        return self

    return create_model(  # type: ignore[call-overload,no-any-return]
        f"Shell_{spec.name.replace('-', '_')}", __config__=ConfigDict(extra="forbid"),
        __validators__={"_checks": model_validator(mode="after")(checks)},
        host=(str, Field(..., pattern=f"^{HOST}$", description=host_help)), **fields)


def _check_values(params: BaseModel) -> None:
    for name, value in params.model_dump().items():
        if isinstance(value, str) and _CONTROL.search(value):
            raise ValueError(f"`{name}` may not contain newlines or control characters")


def _check_host(host: str, spec: CommandSpec, config: ShellConfig) -> None:
    if not any(fnmatchcase(host, glob) for glob in spec.hosts):
        raise ValueError(f"`{spec.name}` may run on {', '.join(spec.hosts)} only, not {host}")
    if not pinned_keys(config.known_hosts, host, config.port):
        raise ValueError(f"{host} has no pinned host key in OPSBOT_SSH_KNOWN_HOSTS")


def _run(spec: CommandSpec, params: BaseModel, ctx: ActionContext) -> ToolResult:
    from tools.shell_ssh import run_command

    config = ShellConfig.model_validate(ctx.config)
    values = params.model_dump()
    host = values.pop("host")
    command = render(spec, values)
    return run_command(config, spec, host, command, ctx)


def action_for(spec: CommandSpec, config: ShellConfig) -> Action[Any]:
    def summary(params: BaseModel) -> str:
        values = params.model_dump()
        host = values.pop("host")
        return f"Run `{render(spec, values)}` on {host} as {spec.user or config.user}"

    return Action(name=spec.name, description=spec.description, tier=spec.tier,
                  params=params_model(spec, config), summary=summary,
                  run=lambda p, ctx: _run(spec, p, ctx), timeout=spec.timeout_s + 5)


def _target(action: Action[Any], params: BaseModel, config: ShellConfig) -> Target:
    host = params.host  # type: ignore[attr-defined]
    spec = config.command(action.name)
    user = (spec.user if spec else None) or config.user
    return Target(kind="ssh_host", name=host,
                  attrs={"host": host, "command": action.name, "user": user})


def _egress(action: Action[Any], params: BaseModel, config: ShellConfig) -> list[Endpoint]:
    return [Endpoint(host=params.host, port=config.port)]  # type: ignore[attr-defined]


def _secrets(action: Action[Any], params: BaseModel, config: ShellConfig) -> list[SecretRef]:
    scope = (("principal", principal(action.tier)),)
    return [SecretRef(name=f"ssh_{key}", path=config.ssh_role, key=key, kind=SecretKind.SSH,
                      params=scope) for key in ("private_key", "certificate")]


def build_toolset(config: ShellConfig) -> Toolset[ShellConfig]:
    return Toolset(
        name="shell",
        description="Run the commands your operators declared (OPSBOT_COMMANDS) on their hosts "
        "over SSH, with a certificate signed for each action.",
        config=ShellConfig, actions=[action_for(c, config) for c in config.commands],
        target=_target, egress=_egress, secrets=_secrets, target_kinds=("ssh_host",),
    )


def sandbox_action(toolset: str, action: str, config: Mapping[str, Any]) -> Action[Any] | None:
    """Inside the container: rebuild the declared command from the request's config."""
    if toolset != "shell":
        return None
    try:
        return build_toolset(ShellConfig.model_validate(config)).action(action)
    except ValueError:
        return None
