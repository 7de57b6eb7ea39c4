"""Every sentence opsbot says in Slack outside of run reports, in one place."""

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
