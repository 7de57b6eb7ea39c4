"""The ``opsbot`` command.

    opsbot serve              Slack (HTTP, or Socket Mode with SLACK_APP_TOKEN); console if no tokens
    opsbot serve --role ingress   scale-out: Slack + webhooks only (acks and enqueues)
    opsbot worker             scale-out: runs jobs (graph, sandbox, Vault)
    opsbot db migrate         create/upgrade the PostgreSQL schema (OPSBOT_DATABASE_URL)
    opsbot chat               the bot in a terminal
    opsbot sandbox build      build the sandbox image (offline-capable)
    opsbot image build        build opsbot's own image (offline-capable; deploy/Dockerfile)
    opsbot policy check FILE  validate a policy file
    opsbot policy explain "<command>" --user U --channel C
    opsbot schedules check FILE  validate a schedules file
    opsbot tokens create --as U123 [--toolsets a,b] [--max-tier N] [--expires 30d] | list | revoke ID
    opsbot mcp                opsbot's catalog for an MCP client on stdio (OPSBOT_TOKEN)
    opsbot audit [RUN] [--json] [--refused]
    opsbot runbooks ingest DIR | search "query"
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import closing
from collections.abc import Callable

from bot import logs
from bot.errors import ConfigError
from bot.settings import Settings, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        logs.configure(settings.log_level)
        return args.func(args, settings)
    except ConfigError as e:
        print(f"opsbot: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opsbot", description="ChatOps for SRE teams.")
    parser.set_defaults(func=_serve)
    sub = parser.add_subparsers(dest="command")
    serve = _add(sub, "serve", _serve, "run in Slack (or the console when no Slack tokens are set)")
    serve.add_argument("--role", choices=["all", "ingress"], default="all",
                       help="ingress: Slack and webhooks only, jobs run in `opsbot worker` "
                            "processes (needs OPSBOT_DATABASE_URL)")
    _add(sub, "worker", _worker, "run jobs from the PostgreSQL queue (scale-out)")
    _add(sub, "chat", _chat, "run in this terminal")

    db = _add(sub, "db", None, "the PostgreSQL database").add_subparsers(dest="sub", required=True)
    _add(db, "migrate", _db_migrate, "create or upgrade the schema (idempotent)")

    sandbox = _add(sub, "sandbox", None, "the sandbox image").add_subparsers(dest="sub", required=True)
    _add(sandbox, "build", _sandbox_build, "build the sandbox image")

    image = _add(sub, "image", None, "opsbot's own image").add_subparsers(dest="sub", required=True)
    _add(image, "build", _image_build, "build opsbot's image (opsbot:<tag>, opsbot:latest)")

    policy = _add(sub, "policy", None, "policy files").add_subparsers(dest="sub", required=True)
    check = _add(policy, "check", _policy_check, "validate a policy file")
    check.add_argument("file")
    explain = _add(policy, "explain", _policy_explain, "show the decision for a command")
    explain.add_argument("text")
    explain.add_argument("--user", required=True)
    explain.add_argument("--channel", required=True)
    explain.add_argument("--channel-name", default="")
    explain.add_argument("--groups", default="", help="comma-separated Slack user-group ids")
    explain.add_argument("--policy", default=None, help="policy file (default: OPSBOT_POLICY)")
    explain.add_argument("--redis-url", default=None, help="Redis target (default: REDIS_URL)")

    schedules = _add(sub, "schedules", None, "schedules files (OPSBOT_SCHEDULES)"
                     ).add_subparsers(dest="sub", required=True)
    _add(schedules, "check", _schedules_check, "validate a schedules file").add_argument("file")

    tokens = _add(sub, "tokens", None, "bearer tokens for MCP clients and the task API"
                  ).add_subparsers(dest="sub", required=True)
    create = _add(tokens, "create", _tokens_create, "create a token (its secret is shown once)")
    create.add_argument("--as", dest="user", required=True, help="the Slack user id it acts as")
    create.add_argument("--toolsets", default="", help="comma-separated (default: all)")
    create.add_argument("--max-tier", default="4", help="highest tier it may call (0-4)")
    create.add_argument("--expires", default="90d", help="e.g. 12h, 30d, 2w, never")
    create.add_argument("--channels", default="", help="channel ids its runs report in")
    create.add_argument("--name", default="", help="a note: whose laptop, which CI")
    _add(tokens, "list", _tokens_list, "list tokens (never their secrets)")
    revoke = _add(tokens, "revoke", _tokens_revoke, "revoke a token now")
    revoke.add_argument("id")
    _add(sub, "mcp", _mcp, "serve opsbot's catalog to an MCP client on stdio "
                           "(through the running opsbot's /mcp, with OPSBOT_TOKEN)")

    audit = _add(sub, "audit", _audit, "print a run's audit trail")
    audit.add_argument("run", nargs="?")
    audit.add_argument("--json", action="store_true")
    audit.add_argument("--refused", action="store_true",
                       help="every refusal: clicks, cancels, executions")

    feedback = _add(sub, "feedback", _feedback, "the runs people rated, worst first")
    feedback.add_argument("--since", default=None, help="e.g. 12h, 7d, 2w or 2026-12-01")
    feedback.add_argument("--json", action="store_true")

    runbooks = _add(sub, "runbooks", None, "runbook search").add_subparsers(dest="sub", required=True)
    ingest = _add(runbooks, "ingest", _runbooks_ingest, "load Markdown runbooks into Qdrant")
    ingest.add_argument("directory")
    search = _add(runbooks, "search", _runbooks_search, "search the runbooks")
    search.add_argument("query")
    search.add_argument("--limit", type=int, default=3)
    return parser


def _add(sub, name: str, func: Callable | None, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    if func is not None:
        p.set_defaults(func=func)
    return p


def _serve(args, settings: Settings) -> int:
    from bot.wiring import Role

    role = Role(getattr(args, "role", "all"))
    if not settings.slack_enabled:
        if role is not Role.ALL:
            raise ConfigError("SLACK_BOT_TOKEN is not set: the ingress role serves Slack.")
        print("opsbot: no SLACK_BOT_TOKEN set; starting the console (opsbot chat).", file=sys.stderr)
        return _chat(args, settings)
    from bot.server import serve

    asyncio.run(serve(settings, role))
    return 0


def _worker(args, settings: Settings) -> int:
    from bot.server import serve
    from bot.wiring import Role, check_role

    check_role(settings, Role.WORKER)
    if not settings.slack_enabled:
        raise ConfigError("SLACK_BOT_TOKEN is not set: workers post progress and reports "
                          "through the Slack Web API.")
    asyncio.run(serve(settings, Role.WORKER))
    return 0


def _db_migrate(args, settings: Settings) -> int:
    from bot.wiring import open_records

    if not settings.scale_out:
        raise ConfigError("OPSBOT_DATABASE_URL is not set: embedded mode keeps its SQLite "
                          "schema up to date by itself.")

    async def go() -> None:
        records = await open_records(settings)  # migrates first
        await records.close()

    asyncio.run(go())
    print("database schema is up to date")
    return 0


def _chat(args, settings: Settings) -> int:
    from bot.console import ConsoleSurface, repl

    logs.configure_console(settings.log_level, settings.data_dir / "opsbot.log")
    from bot.runbooks import runbooks_for
    from bot.wiring import runtime

    async def go() -> None:
        surface = ConsoleSurface()
        with closing(runbooks_for(settings)) as runbooks:
            async with runtime(settings, surface, console=True, runbooks=runbooks) as rt:
                await repl(rt.runs, surface, rt.catalog)

    asyncio.run(go())
    return 0


def _sandbox_build(args, settings: Settings) -> int:
    from sandbox.image import build_image

    return _build("the sandbox image", lambda: build_image(log=print,
                                                           docker_host=settings.docker_host))


def _image_build(args, settings: Settings) -> int:
    from bot.image import build_app_image

    return _build("opsbot's image", lambda: build_app_image(log=print,
                                                            docker_host=settings.docker_host))


def _build(what: str, build: Callable[[], str]) -> int:
    from sandbox.image import ImageBuildError

    try:
        tag = build()
    except ImageBuildError as e:
        print(f"opsbot: {what} could not be built: {e}", file=sys.stderr)
        return 1
    print(f"built {tag}")
    return 0


def _policy_check(args, settings: Settings) -> int:
    from bot import policy_cmd

    return policy_cmd.check(args.file, settings)


def _policy_explain(args, settings: Settings) -> int:
    from bot import policy_cmd

    return policy_cmd.explain_namespace(args, settings)


def _schedules_check(args, settings: Settings) -> int:
    from bot import schedules_cmd

    return schedules_cmd.check(args.file, settings)


def _tokens_create(args, settings: Settings) -> int:
    from bot import tokens_cmd

    return tokens_cmd.create(settings, args.user, args.toolsets, args.max_tier, args.expires,
                             args.channels, args.name)


def _tokens_list(args, settings: Settings) -> int:
    from bot import tokens_cmd

    return tokens_cmd.show(settings)


def _tokens_revoke(args, settings: Settings) -> int:
    from bot import tokens_cmd

    return tokens_cmd.revoke(settings, args.id)


def _mcp(args, settings: Settings) -> int:
    from bot.mcp_stdio import bridge

    asyncio.run(bridge(settings))
    return 0


def _audit(args, settings: Settings) -> int:
    from bot.audit_cmd import show

    return show(settings, args.run, as_json=args.json, refused=args.refused)


def _feedback(args, settings: Settings) -> int:
    from bot.feedback_cmd import show

    return show(settings, args.since, as_json=args.json)


def _runbooks_ingest(args, settings: Settings) -> int:
    from bot.runbooks import ingest

    return ingest(settings, args.directory)


def _runbooks_search(args, settings: Settings) -> int:
    from bot.runbooks import search

    return search(settings, args.query, args.limit)


if __name__ == "__main__":
    sys.exit(main())
