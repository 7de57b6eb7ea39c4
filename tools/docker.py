"""Docker connector: look at containers and, behind approval, restart or stop one — without ever
holding the engine's socket.

``ps``, ``inspect``, ``logs`` (tail, since) and ``stats`` are tier 0; ``restart`` is 3 and
``stop`` 4, each checked afterwards with ``inspect`` (running again; stopped). Containers are
selected by ``name`` or ``label`` (``key=value``) among those opsbot saw on the engine
(``DockerConfig.containers``, refreshed on the host every few seconds; opsbot's own sandbox
containers are never listed). The policy target is that container: kind
``container``, its ``id``, ``name``, ``image`` and one ``label.<key>`` per label, so a rule on
``label.env: prod`` sees exactly the container that will be touched.

Inside the sandbox an action reaches only opsbot's filtering proxy (host side,
``sandbox/docker_proxy.py``), with a token minted for it (credential kind ``docker``): the proxy
forwards the Docker API requests this action declares (:data:`API`: method, path, query keys)
for the container ids its target names, and refuses everything else (``exec``, ``/images``,
another container, an expired token).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.base import (
    Action,
    ActionContext,
    Check,
    Endpoint,
    SecretKind,
    SecretRef,
    Target,
    Tier,
    ToolResult,
    Toolset,
)
from tools.catalog import CallError
from tools.docker_api import DockerAPI, DockerAPIError, describe_stats, log_text

# What each action may ask of the engine through the proxy: "METHOD /path/{id}?query,keys".
API = {
    "ps": ["GET /containers/{id}/json"],
    "inspect": ["GET /containers/{id}/json"],
    "logs": ["GET /containers/{id}/json", "GET /containers/{id}/logs?stdout,stderr,tail,since,"
             "timestamps"],
    "stats": ["GET /containers/{id}/stats?stream"],
    "restart": ["POST /containers/{id}/restart?t"],
    "stop": ["POST /containers/{id}/stop?t"],
}
LABEL = re.compile(r"^([A-Za-z0-9_.\-/]{1,128})=([^\x00-\x1f]{0,256})$")


class ContainerFact(BaseModel):
    """What opsbot saw of one container (immutable facts of its id, plus its state)."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str
    image: str
    state: str = ""
    labels: dict[str, str] = {}


class DockerConfig(BaseModel):
    """Where the filtering proxy listens (set when opsbot starts it) and the containers seen."""

    model_config = ConfigDict(frozen=True)

    proxy_host: str = "127.0.0.1"
    proxy_port: int = Field(0, ge=0, le=65535)
    containers: tuple[ContainerFact, ...] = ()


class Selector(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, pattern=r"^/?[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$",
                             max_length=129, description="The container's name.")
    label: str | None = Field(None, max_length=386, description="Select by label: key=value.")

    @model_validator(mode="after")
    def _label(self) -> Selector:
        if self.label is not None and not LABEL.match(self.label):
            raise ValueError("label must look like key=value")
        return self


class One(Selector):
    @model_validator(mode="after")
    def _exactly_one_way(self) -> One:
        if (self.name is None) == (self.label is None):
            raise ValueError("give the container's name or a label (key=value), not both")
        return self


class LogsParams(One):
    tail: int = Field(100, ge=1, le=5000, description="How many lines from the end.")
    since: str | None = Field(None, pattern=r"^\d{1,4}[smh]$", max_length=5,
                              description="Only lines newer than this, e.g. 10m, 2h.")


class StopParams(One):
    wait_s: int = Field(10, ge=0, le=120, description="Seconds to wait before killing it.")


def select(selector: Selector, config: DockerConfig) -> list[ContainerFact]:
    """The seen containers the selector names (all of them when it names nothing)."""
    found = list(config.containers)
    if selector.name is not None:
        found = [c for c in found if c.name == selector.name.lstrip("/")]
    if selector.label is not None:
        key, _, value = selector.label.partition("=")
        found = [c for c in found if c.labels.get(key) == value]
    return found


def _one(selector: Selector, config: DockerConfig) -> ContainerFact:
    found = select(selector, config)
    what = f"named `{selector.name}`" if selector.name else f"labelled `{selector.label}`"
    if not found:
        raise CallError(f"No container {what} (opsbot refreshes its list every few seconds).")
    if len(found) > 1:
        names = ", ".join(sorted(c.name for c in found)[:10])
        raise CallError(f"{len(found)} containers are {what} ({names}); name one.")
    return found[0]


def _api(ctx: ActionContext) -> DockerAPI:
    config = DockerConfig.model_validate(ctx.config)
    host, port = ctx.address(config.proxy_host, config.proxy_port)
    return DockerAPI(f"http://{host}:{port}", ctx.secrets.get("docker_token", ""))


def _ps(p: Selector, ctx: ActionContext) -> ToolResult:
    found = select(p, DockerConfig.model_validate(ctx.config))
    inv = "docker ps" + (f" --filter label={p.label}" if p.label else "")
    if not found:
        return ToolResult.no_data(inv, "No containers match.")
    api, rows = _api(ctx), []
    for fact in found:
        body = api.get(f"/containers/{fact.id}/json")
        rows.append({"name": fact.name, "id": fact.id[:12], "image": fact.image,
                     "status": body["State"]["Status"], "started": body["State"]["StartedAt"],
                     "labels": fact.labels})
    lines = [f"{r['name']}  {r['id']}  {r['image']}  {r['status']} since {r['started']}"
             for r in rows]
    return ToolResult.ok(inv, "\n".join(lines), rows)


def _inspect(p: One, ctx: ActionContext) -> ToolResult:
    fact = _one(p, DockerConfig.model_validate(ctx.config))
    body = _api(ctx).get(f"/containers/{fact.id}/json")
    keep = {k: body.get(k) for k in ("Id", "Name", "Created", "State", "RestartCount", "Image")}
    keep["Config"] = {k: (body.get("Config") or {}).get(k) for k in ("Image", "Labels", "Cmd")}
    keep["HostConfig"] = {k: (body.get("HostConfig") or {}).get(k)
                          for k in ("RestartPolicy", "Memory", "NanoCpus")}
    return ToolResult.ok(f"docker inspect {fact.name}", json.dumps(keep, indent=2), keep)


def _logs(p: LogsParams, ctx: ActionContext) -> ToolResult:
    fact = _one(p, DockerConfig.model_validate(ctx.config))
    api = _api(ctx)
    tty = bool((api.get(f"/containers/{fact.id}/json").get("Config") or {}).get("Tty"))
    query = {"stdout": "1", "stderr": "1", "tail": str(p.tail), "timestamps": "1"}
    if p.since:
        query["since"] = str(_since(p.since))
    raw = api.raw("GET", f"/containers/{fact.id}/logs", query)
    inv = f"docker logs --tail {p.tail}" + (f" --since {p.since}" if p.since else "") + \
        f" {fact.name}"
    text = log_text(raw, tty)
    return ToolResult.ok(inv, text) if text else ToolResult.no_data(inv, "No log lines.")


def _since(text: str) -> int:
    import time

    seconds = int(text[:-1]) * {"s": 1, "m": 60, "h": 3600}[text[-1]]
    return int(time.time()) - seconds


def _stats(p: One, ctx: ActionContext) -> ToolResult:
    fact = _one(p, DockerConfig.model_validate(ctx.config))
    body = _api(ctx).get(f"/containers/{fact.id}/stats", {"stream": "false"})
    return ToolResult.ok(f"docker stats --no-stream {fact.name}", describe_stats(body))


def _change(verb: str):
    def run(p: StopParams, ctx: ActionContext) -> ToolResult:
        fact = _one(p, DockerConfig.model_validate(ctx.config))
        _api(ctx).raw("POST", f"/containers/{fact.id}/{verb}", {"t": str(p.wait_s)})
        return ToolResult.ok(f"docker {verb} -t {p.wait_s} {fact.name}",
                             f"Container {fact.name} ({fact.id[:12]}): {verb} done.")

    return run


def _preview(p: StopParams, ctx: ActionContext) -> ToolResult:
    fact = _one(p, DockerConfig.model_validate(ctx.config))
    body = _api(ctx).get(f"/containers/{fact.id}/json")
    state = body.get("State") or {}
    labels = ", ".join(f"{k}={v}" for k, v in sorted(fact.labels.items())) or "none"
    return ToolResult.ok(f"docker inspect {fact.name}",
                         f"{fact.name} ({fact.id[:12]}), image {fact.image}, "
                         f"{state.get('Status')} since {state.get('StartedAt')}, "
                         f"restarted {body.get('RestartCount', 0)} times; labels: {labels}")


def _guarded(run):
    """Failures as values: what the proxy or the engine refused, or a connection problem."""
    def guarded(p: BaseModel, ctx: ActionContext) -> ToolResult:
        import requests

        try:
            return run(p, ctx)
        except (DockerAPIError, CallError, requests.RequestException) as e:
            return ToolResult.fail("docker", f"{type(e).__name__}: {e}")

    return guarded


def _read(name: str, description: str, params: type[BaseModel], summary, run) -> Action[Any]:
    return Action(name=name, description=description, tier=Tier.OBSERVE, params=params,
                  summary=summary, run=_guarded(run), timeout=30)


def _same_one(p: One) -> dict[str, Any]:
    """The follow-up ``inspect`` of the container a change named."""
    return {"name": p.name, "label": p.label}


def _in_state(status: str) -> Callable[[ToolResult], bool]:
    """Whether ``inspect`` found the container in ``status`` (its ``State.Status``)."""
    return lambda result: ((result.data or {}).get("State") or {}).get("Status") == status


def _who(p: Selector) -> str:
    return f"`{p.name}`" if p.name else f"labelled `{p.label}`" if p.label else "all containers"


ACTIONS: list[Action[Any]] = [
    _read("ps", "List containers (all, or those with a label key=value) with image and state.",
          Selector, lambda p: f"List containers ({_who(p)})", _ps),
    _read("inspect", "Show one container's state, restart count, image, labels and limits.",
          One, lambda p: f"Inspect container {_who(p)}", _inspect),
    _read("logs", "Read the last lines of one container's logs (stdout and stderr).",
          LogsParams, lambda p: f"Read the last {p.tail} log lines of container {_who(p)}",
          _logs),
    _read("stats", "One sample of a container's CPU, memory, network and block I/O.", One,
          lambda p: f"Read resource usage of container {_who(p)}", _stats),
    Action(name="restart", description="Restart one container (stop, then start it again).",
           tier=Tier.SANDBOX_EXECUTE, params=StopParams,
           summary=lambda p: f"Restart container {_who(p)}", run=_guarded(_change("restart")),
           timeout=150, preview=_guarded(_preview),
           check=Check("inspect", _same_one, _in_state("running"), "the container is running")),
    Action(name="stop", description="Stop one container (it stays stopped).",
           tier=Tier.PRODUCTION, params=StopParams,
           summary=lambda p: f"Stop container {_who(p)}", run=_guarded(_change("stop")),
           timeout=150, preview=_guarded(_preview),
           check=Check("inspect", _same_one, _in_state("exited"), "the container is stopped")),
]


def _target(action: Action[Any], params: BaseModel, config: DockerConfig) -> Target:
    if action.name == "ps":
        return _many(select(params, config), params)  # type: ignore[arg-type]
    fact = _one(params, config)  # type: ignore[arg-type]
    attrs = {"id": fact.id, "name": fact.name, "image": fact.image,
             **{f"label.{k}": v for k, v in fact.labels.items()}}
    return Target(kind="container", name=fact.name, attrs=attrs)


def _many(found: list[ContainerFact], selector: Selector) -> Target:
    """Several containers: the labels they all share (a rule on ``label.env: prod`` matches
    a listing of prod containers only), and their ids."""
    shared = dict(found[0].labels) if found else {}
    for fact in found[1:]:
        shared = {k: v for k, v in shared.items() if fact.labels.get(k) == v}
    attrs = {"ids": ",".join(f.id for f in found), "count": str(len(found)),
             **{f"label.{k}": v for k, v in shared.items()}}
    return Target(kind="container", name=f"containers ({_who(selector)})", attrs=attrs)


def _ids(action: Action[Any], params: BaseModel, config: DockerConfig) -> list[str]:
    if action.name == "ps":
        return [f.id for f in select(params, config)]  # type: ignore[arg-type]
    return [_one(params, config).id]  # type: ignore[arg-type]


def _egress(action: Action[Any], params: BaseModel, config: DockerConfig) -> list[Endpoint]:
    return [Endpoint(host=config.proxy_host, port=config.proxy_port)]


def _secrets(action: Action[Any], params: BaseModel, config: DockerConfig) -> list[SecretRef]:
    """A proxy token for exactly this action's API requests on its target's ids. A change asked
    for at tier 0 is its preview (``Resolved.preview_secrets``): it may only read."""
    changes = action.name in ("restart", "stop")
    rules = API["inspect"] if changes and action.tier <= Tier.RECOMMEND else API[action.name]
    scope = (("allow", ";".join(rules)),
             ("containers", ",".join(_ids(action, params, config))))
    return [SecretRef(name="docker_token", path="docker-proxy", key="token",
                      kind=SecretKind.DOCKER, params=scope)]


TOOLSET: Toolset[DockerConfig] = Toolset(
    name="docker",
    description="Look at containers (ps, inspect, logs, stats) and, with approval, restart or "
    "stop one, through opsbot's filtering proxy (never the engine's socket).",
    config=DockerConfig,
    actions=ACTIONS,
    target=_target,
    egress=_egress,
    secrets=_secrets,
    target_kinds=("container",),
    preload=("requests",),
)
