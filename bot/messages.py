"""Every sentence opsbot says in Slack outside of run reports, and to MCP clients, in one
place."""

MALFORMED_COMMAND = "That slash command arrived without a user or channel; nothing was run."
BAD_BUTTON = "That button's payload is malformed; nothing was changed."
NOT_A_RUN = "That is answered right here, not as a run."
NO_ACTIVE_RUNS = "No active runs in this channel."
QUEUED = "Queued as run `{run_id}`."
DENY_GONE = "That approval request no longer exists; nothing was changed."


def runs_list(rows) -> str:
    if not rows:
        return NO_ACTIVE_RUNS
    lines = ["*Active runs in this channel:*"]
    for run, state, pending in rows:
        waiting = ""
        if pending:
            who = "; ".join(f"{a.summary} → {a.rule.describe()}" for a in pending)
            waiting = f" — waiting on {who}"
        lines.append(f"• `{run.run_id}` {state.value} · <@{run.task.user}> · "
                     f"{run.task.text[:60] or 'alert'}{waiting}")
    return "\n".join(lines)


NO_SCHEDULES = "No schedules: set OPSBOT_SCHEDULES to a schedules file (README, Schedules)."


def schedules_list(schedules, rows, now) -> str:
    """``/ops schedules``: each schedule, its last result and its next fire time."""
    if not schedules:
        return NO_SCHEDULES
    lines = ["*Schedules:*"]
    for schedule in schedules:
        row = rows.get(schedule.name)
        last = "not run yet"
        if row is not None and row.reported_at is not None:
            last = f"last {_when(row.reported_at)}: {row.summary or row.state}"
        asks = f"`{schedule.command}`" if schedule.command else "a question"
        lines.append(f"• *{schedule.name}* {schedule.describe()} in <#{schedule.channel}> as "
                     f"<@{schedule.identity}>, {asks}, posts {schedule.post.value} · {last} · "
                     f"next {_when(schedule.next(now))}")
    return "\n".join(lines)


def _when(moment) -> str:
    stamp = int(moment.timestamp())
    return f"<!date^{stamp}^{{date_short_pretty}} {{time_secs}}|{moment.isoformat()}>"


# MCP clients (bot/mcp_server.py) -----------------------------------------------------------

MCP_NO_CHANNEL = ("opsbot has no channel for approvals of MCP calls: set OPSBOT_MCP_CHANNEL, "
                  "or create the token with --channels.")


def mcp_out_of_scope(scope: str, ref: str) -> str:
    return f"This token may call only {scope}; `{ref}` is outside it."


def mcp_tier_too_high(ref: str, tier: str, max_tier: str) -> str:
    return f"`{ref}` is tier {tier}; this token may call tiers up to {max_tier}."


def mcp_no_result(run_id: str, state: str) -> str:
    return f"Run {run_id} ended {state} without a result."


def mcp_failed(text: str, run_id: str) -> str:
    return f"{text}\n(run {run_id} in Slack; `opsbot audit {run_id}` has the story)"


def mcp_waiting(run_id: str, who: str) -> str:
    return f"run {run_id} is waiting for approval in Slack by {who}"

# assistant threads (bot/listeners/assistant.py)
PROMPTS_TITLE = "Ask opsbot about your services:"
PROMPT_INCIDENT = ("Investigate the incident \"{title}\" (posted in <#{channel}>): what is "
                   "happening, and what should we do next?")
PROMPT_TOOLSET_TITLE = "Check {toolset}"
PROMPT_TOOLSET = "Check the health of {toolset}, read-only, and tell me if anything looks wrong."


# Webhook receivers (bot/web.py) ------------------------------------------------------------

ALERTMANAGER_UNAUTHORISED = (
    "POST /webhooks/alertmanager needs Authorization: Bearer <OPSBOT_ALERTMANAGER_TOKEN> or "
    "Basic auth with OPSBOT_ALERTMANAGER_USER and OPSBOT_ALERTMANAGER_PASSWORD (set them in "
    "the receiver's http_config)")
GITHUB_UNSIGNED = "missing body or X-Hub-Signature-256 (set the webhook's secret)"
GITHUB_BAD_SIGNATURE = "invalid X-Hub-Signature-256 (the webhook's secret must equal GITHUB_WEBHOOK_SECRET)"

# the task API (bot/api/) ------------------------------------------------------------------

API_JSON_ONLY = "Send the body as application/json."
API_TOO_LARGE = "The body is larger than the API accepts (256 KB)."
API_NOT_JSON = "The body is not valid JSON."
API_NO_CHANNEL = ("Which channel should the run report in? Give `channel`, or create the token "
                  "with --channels.")
API_NOT_A_COMMAND = ("`command` must be one action (`<toolset> <action> ...`); `help`, `runs` "
                     "and `cancel` have no run (cancel with POST /api/v1/runs/{id}/cancel).")


def api_rate_limited(wait_s: int) -> str:
    return f"This token made too many requests; try again in {wait_s} s."


def api_channel_out_of_scope(channel: str, channels) -> str:
    return f"This token may report only in {', '.join(channels)}; `{channel}` is outside it."


def api_question_scoped(scope: str) -> str:
    return (f"This token is limited to {scope}; a question lets the agent choose actions "
            "beyond a scope that can be checked in advance, so ask with a token without "
            "--toolsets and --max-tier, or send a typed `command`.")


def api_no_run(run_id: str) -> str:
    return f"There is no run `{run_id}` of this token's user."


# App Home (bot/home.py)
HOME_APPROVALS = "Waiting for your approval"
HOME_NO_APPROVALS = "Nothing is waiting for your approval."
HOME_ACTIVE = "Your active runs"
HOME_NO_ACTIVE = "You have no active runs."
HOME_RECENT = "Recent runs in your channels"
HOME_NO_RECENT = "No runs in your channels lately."

# the "Investigate this message" shortcut (bot/listeners/shortcuts.py)
INVESTIGATE_REQUEST = "Investigate this message: what does it report, is it real, and what next?"

# "Save as runbook" (bot/listeners/runbook_drafts.py)
RUNBOOK_DRAFTED = ("Drafted `{path}` from run `{run_id}`. Review and edit it, then "
                   "`opsbot runbooks ingest runbooks/` to make it searchable.")
RUNBOOK_NOT_WRITTEN = "Could not write the runbook draft under `{directory}`: {error}."
RUNBOOK_PROPOSING = ("Proposing the runbook drafted from run `{run_id}` as a draft PR in "
                     "`{repo}`: run `{pr_run}` in this thread opens it.")
RUNBOOK_NOT_PROPOSED = "The runbook drafted from run `{run_id}` was not proposed: see above."
RUNBOOK_PR_BODY = ("Drafted by opsbot from run `{run_id}` (\"Save as runbook\"): `{path}`. "
                   "Review and edit it before merging; once merged, ingest `runbooks/` to make "
                   "it searchable.")
RUNBOOK_NO_GITHUB = ("OPSBOT_RUNBOOK_REPO names `{repo}`, but the GitHub connector is not "
                     "configured (GITHUB_TOKEN or a GitHub App), so no PR can be opened; "
                     "nothing was drafted.")
