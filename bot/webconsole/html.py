"""The console's pages as plain HTML strings: no template engine, no JavaScript, no build step.

Everything that came from outside (run text, channel names, audit data) is escaped here and
passed through the redactor once more on its way out, although the audit log is redacted when
written: nothing secret is rendered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from approvals.models import ApprovalRequest
from graph.records.base import RunListing
from graph.surface import RunState
from graph.task import Source
from tools.secrets import REDACTOR

CLIP = 300
MENTION = re.compile(r"<[@!](?:subteam\^)?([A-Z0-9]+)(?:\|[^>]*)?>")


def text(value: Any, limit: int = CLIP) -> str:
    """Escaped, redacted, clipped; Slack mentions (``<@U1>``, ``<!subteam^S1>``) as ``@U1``."""
    shown = MENTION.sub(r"@\1", REDACTOR.redact(str(value if value is not None else "")))
    return escape(shown if len(shown) <= limit else shown[: limit - 1] + "…")


def when(moment: datetime | str | None) -> str:
    if moment is None:
        return ""
    stamp = moment if isinstance(moment, str) else moment.isoformat()
    return f'<time datetime="{escape(stamp)}">{escape(stamp[:19].replace("T", " "))}</time>'


def page(title: str, body: str, user: str | None = None, csrf: str = "") -> str:
    nav = ""
    if user:
        nav = (f'<nav><a href="/console/runs">Runs</a> <a href="/console/approvals">Pending '
               f'approvals</a><span class="who">signed in as {text(user)}</span>'
               f'<form method="post" action="/console/logout"><input type="hidden" name="csrf" '
               f'value="{escape(csrf)}"><button type="submit">Sign out</button></form></nav>')
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{text(title)} · opsbot</title>"
            '<link rel="stylesheet" href="/console/static/console.css">'
            '<link rel="icon" href="/console/static/favicon.svg"></head>'
            f"<body><header><h1>opsbot</h1>{nav}</header><main><h2>{text(title)}</h2>"
            f"{body}</main></body></html>")


def sign_in(slack_url: str | None, csrf: str, problem: str = "") -> str:
    parts = [f'<p class="problem">{text(problem)}</p>' if problem else ""]
    if slack_url:
        parts.append(f'<p><a class="button" href="{escape(slack_url)}">Sign in with Slack</a></p>')
    parts.append('<form method="post" action="/console/login" class="token">'
                 '<label for="token">Operator token</label>'
                 '<input type="password" id="token" name="token" autocomplete="off" required>'
                 f'<input type="hidden" name="csrf" value="{escape(csrf)}">'
                 '<button type="submit">Sign in</button></form>')
    return page("Sign in", "".join(parts))


def filters_form(values: dict[str, str]) -> str:
    def field(name: str, label: str, kind: str = "text") -> str:
        return (f'<label>{label} <input type="{kind}" name="{name}" '
                f'value="{escape(values.get(name, ""))}"></label>')

    def choice(name: str, label: str, options: Iterable[str]) -> str:
        picked = values.get(name, "")
        opts = "".join(f'<option value="{o}"{" selected" if o == picked else ""}>{o or "any"}'
                       "</option>" for o in ("", *options))
        return f'<label>{label} <select name="{name}">{opts}</select></label>'

    return ('<form method="get" action="/console/runs" class="filters">'
            + field("channel", "Channel") + choice("state", "State", (s.value for s in RunState))
            + choice("source", "Source", (s.value for s in Source))
            + field("requester", "Requester") + field("since", "Since", "datetime-local")
            + field("until", "Until", "datetime-local")
            + '<button type="submit">Filter</button></form>')


def runs_table(runs: list[RunListing], values: dict[str, str]) -> str:
    rows = "".join(
        f'<tr><td><a href="/console/runs/{escape(r.run.run_id)}">{escape(r.run.run_id)}</a></td>'
        f"<td>{when(r.created_at)}</td><td class=\"state {r.state.value}\">{r.state.value}</td>"
        f"<td>{r.run.task.source.value}</td><td>{text(r.run.task.channel_name or r.run.task.channel)}"
        f"</td><td>{text(r.run.task.user)}</td><td>{text(_asked(r), 120)}</td></tr>"
        for r in runs)
    table = ("<table class=\"runs\"><thead><tr><th>Run</th><th>Started</th><th>State</th>"
             "<th>Source</th><th>Channel</th><th>Requester</th><th>Request</th></tr></thead>"
             f"<tbody>{rows}</tbody></table>") if runs else '<p class="empty">No runs match.</p>'
    return filters_form(values) + table


def run_page(listing: RunListing, story: list[dict[str, Any]],
             approvals: list[ApprovalRequest]) -> str:
    task = listing.run.task
    facts = (f"<dl><dt>State</dt><dd class=\"state {listing.state.value}\">"
             f"{listing.state.value}</dd><dt>Requester</dt><dd>{text(task.user)}</dd>"
             f"<dt>Channel</dt><dd>{text(task.channel_name or task.channel)}</dd>"
             f"<dt>Source</dt><dd>{task.source.value}</dd><dt>Started</dt>"
             f"<dd>{when(listing.created_at)}</dd><dt>Request</dt><dd>{text(_asked(listing))}"
             "</dd></dl>")
    return facts + "<h3>Approvals</h3>" + approvals_table(approvals, with_run=False) + \
        "<h3>Timeline</h3>" + timeline(story)


def approvals_table(approvals: list[ApprovalRequest], with_run: bool = True) -> str:
    if not approvals:
        return '<p class="empty">None.</p>'
    head = "<th>Run</th>" if with_run else ""
    rows = "".join(
        "<tr>" + (f'<td><a href="/console/runs/{escape(a.run_id)}">{escape(a.run_id)}</a></td>'
                  if with_run else "")
        + f"<td>{text(a.summary)}</td><td>{a.tier}</td><td>{text(a.requester)}</td>"
        f"<td>{text(a.rule.describe())}</td><td>{a.status.value}</td>"
        f"<td>{text(', '.join(a.deciders))}</td><td>{when(a.decided_at or a.expires_at)}</td></tr>"
        for a in approvals)
    return (f"<table class=\"approvals\"><thead><tr>{head}<th>Action</th><th>Tier</th>"
            "<th>Requester</th><th>Who may decide</th><th>Status</th><th>Decided by</th>"
            f"<th>Decided / expires</th></tr></thead><tbody>{rows}</tbody></table>")


def timeline(story: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<li class="{escape(r["kind"].replace(".", "-"))}">{when(r["ts"])} '
        f'<span class="kind">{escape(r["kind"])}</span> '
        f'{"<span class=actor>" + text(r["actor"]) + "</span> " if r.get("actor") else ""}'
        f"{describe(r['kind'], r['data'])}</li>" for r in story)
    return f'<ol class="timeline">{rows}</ol>'


def describe(kind: str, data: dict[str, Any]) -> str:
    """One line for an audit row: the facts a reader wants, never a whole payload."""
    known = DESCRIBE.get(kind)
    if known is not None:
        return known(data)
    scalars = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool)) and v != ""}
    return " ".join(f"{escape(k)}={text(v, 80)}" for k, v in list(scalars.items())[:8])


DESCRIBE: dict[str, Callable[[dict[str, Any]], str]] = {
    "task": lambda d: f"asked from {text(d.get('source'))}: {text(d.get('text'))}",
    "policy": lambda d: (f"<b>{text(d.get('verdict'))}</b> by rule <code>{text(d.get('rule'))}"
                         f"</code>, tier {text(d.get('tier'))}: {text(d.get('reason'))}"),
    "approval.request": lambda d: (f"approval {text(d.get('approval'))} asked; expires "
                                   f"{text(str(d.get('expires_at'))[:19])}"),
    "approval.vote": lambda d: f"{'approved' if d.get('approve') else 'denied'} {text(d.get('reason'))}",
    "approval.decision": lambda d: (f"approval {text(d.get('approval'))} <b>{text(d.get('status'))}"
                                    f"</b> by {text(', '.join(d.get('by') or []) or 'opsbot')}"),
    "credential.lease": lambda d: (f"credentials {text(', '.join(d.get('names') or []) or 'none')}"
                                   f" leased ({text(d.get('lease'))}, ttl {text(d.get('ttl_s'))} s)"),
    "credential.revoke": lambda d: (f"lease {text(d.get('lease'))} "
                                    + ("revoked" if d.get("revoked_at") else
                                       f"not revoked: {text(d.get('revoke_error'))}")),
    "sandbox.exec": lambda d: (f"ran <code>{text(d.get('action'))}</code>: {text(d.get('status'))}"
                               f" in {text(d.get('duration_s'))} s"),
    "sandbox.preview": lambda d: (f"previewed <code>{text(d.get('action'))}</code>: "
                                  f"{text(d.get('status'))}"),
    "llm.call": lambda d: (f"model {text(d.get('model'))}: {text(d.get('total_tokens'))} tokens,"
                           f" ≈ ${text(d.get('cost_usd'))}"),
    "report": lambda d: f"report: <b>{text(d.get('state'))}</b> {text(d.get('headline'))}",
}


def filters_query(values: dict[str, str]) -> str:
    return urlencode({k: v for k, v in values.items() if v})


def _asked(listing: RunListing) -> str:
    task = listing.run.task
    if task.alert is not None:
        return f"incident: {task.alert.title}"
    return task.text
