"""The run's state machine, one node per job (DESIGN §3).

    understand ─► policy ─► (Send per call) ─► approval ─► execute ─► observe ─► report
                       │                      └──────────► observe (denied/expired)
                       └─► execute (allowed) ───────────────────────► observe

* ``policy`` is pure. Denied calls get their result right there.
* ``approval`` contains nothing but ``interrupt()`` (a resume re-runs the node from the top).
* ``execute`` never interrupts; it re-checks the approval is bound to the exact action hash.
* ``observe`` is a barrier: each branch lands here; only when every call of the round has a
  result does the run move on (to the agent for another round, or to the report).

Each tool call gets its own branch (``Send``), so a safe call runs while a gated sibling waits,
and a resume never re-runs a call that already finished (see the LangGraph guide, §1.2).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Annotated, Any, TypedDict

import structlog
from langchain_core.messages import AnyMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END
from langgraph.graph.message import add_messages
from langgraph.types import Command, Send, interrupt

from approvals.mrkdwn import one_line
from graph import checks, commands, help, tracing, usage
from graph.deps import GraphDeps
from graph.memory import worth_remembering
from graph.policy import Channel, Proposer, Requester, Verdict, evaluate
from graph.surface import CallReport, Citation, Report, RunState, StepState
from graph.task import Source, Task
from sandbox.credentials import VaultError
from sandbox.protocol import SandboxRequest
from tools.base import Status, ToolResult
from tools.catalog import Call, CallError
from tools.secrets import REDACTOR

log = structlog.get_logger("opsbot.graph")
CALLED_BY = {Source.RUNBOOK: "Save as runbook"}  # whose exact call a run makes; else an MCP client
PREVIEW_LIMIT = 20_000  # kept whole for the approver (the card attaches what it can't show)
INTERRUPTED = ("interrupted: opsbot stopped while this action was running, so its outcome is "
               "unknown; it was not run again")


def merge(left: dict | None, right: dict | None) -> dict:
    return {**(left or {}), **(right or {})}


class GraphState(TypedDict, total=False):
    run_id: str
    task: dict[str, Any]
    started: float
    messages: Annotated[list[AnyMessage], add_messages]
    calls: list[dict[str, Any]]  # this round's proposed calls (Call dumps)
    reviews: Annotated[dict[str, dict[str, Any]], merge]  # call id -> policy review
    results: Annotated[dict[str, dict[str, Any]], merge]  # call id -> {"result", "note"}
    run_calls: list[str]  # every call id of the current run, in order
    rounds: int
    usage: dict[str, int]
    cancelled: bool
    mode: str  # "typed" (one command) or "llm" (agent rounds)
    answer: str
    headline: str
    citations: list[dict[str, str]]
    similar: list[str]  # past incidents recalled for this run (graph/memory.py)
    cap: str  # which hard cap ended the run, if any
    report: dict[str, Any]


class Branch(TypedDict, total=False):
    """What a Send carries to one approval/execute branch."""

    run_id: str
    task: dict[str, Any]
    call: dict[str, Any]
    review: dict[str, Any]
    approval: dict[str, Any]


def task_of(state: GraphState | Branch) -> Task:
    return Task.model_validate(state["task"])


def emit(event: dict[str, Any]) -> None:
    """Progress for the status message (``custom`` stream); a no-op outside a streamed run.

    A step's text and detail quote untrusted text (a summary naming a key, a tool's progress
    line): kept to one line, with ``<!channel>`` and links shown as text (``one_line``)."""
    shown = {k: one_line(v) if k in ("text", "detail") and isinstance(v, str) else v
             for k, v in event.items()}
    get_stream_writer()(shown)


class Nodes:
    """The graph's nodes, closed over their dependencies."""

    def __init__(self, deps: GraphDeps):
        self.deps = deps

    # understand ---------------------------------------------------------------------------

    async def understand(self, state: GraphState) -> dict[str, Any]:
        task = task_of(state)
        fresh = {"run_calls": [], "calls": [], "rounds": 0, "usage": {},
                 "answer": "", "cap": "", "citations": [], "similar": [], "started": time.time(),
                 "report": {}, "cancelled": False, "mode": "typed"}
        if task.alert is not None:
            return {**fresh, "mode": "llm", "headline": f"Investigating: {task.alert.title}"}
        if task.call is not None:  # exact (an MCP client, a runbook's draft PR): nothing to parse
            call = Call(id=f"{state['run_id']}-1", **task.call)
            return {**fresh, "calls": [call.model_dump()], "run_calls": [call.id],
                    "headline": f"`{call.ref}` ({CALLED_BY.get(task.source, 'MCP')})"}
        try:
            command = commands.parse(task.text, self.deps.catalog)
        except commands.ParseError as e:
            return {**fresh, "answer": str(e), "headline": "not understood"}
        if isinstance(command, commands.RunAction):
            call = Call(id=f"{state['run_id']}-1", toolset=command.toolset,
                        action=command.action, params=command.params)
            return {**fresh, "calls": [call.model_dump()], "run_calls": [call.id],
                    "headline": f"`{command.text}`"}
        if isinstance(command, commands.Help):
            return {**fresh, "answer": help.help_text(self.deps.catalog, command.toolset),
                    "headline": "help"}
        if isinstance(command, commands.FreeText):
            return {**fresh, "mode": "llm", "headline": _clip(command.text, 80)}
        return {**fresh, "answer": "That command is answered directly, not as a run.",
                "headline": "not a run"}

    def after_understand(self, state: GraphState) -> str:
        if state.get("calls"):
            return "policy"
        if state.get("answer"):
            return "report"
        return "agent" if self.deps.llm is not None else "no_llm"

    async def no_llm(self, state: GraphState) -> dict[str, Any]:
        """Free text or an alert with no LLM configured: runbooks plus the commands that help."""
        task = task_of(state)
        query = task.alert.title if task.alert else task.text
        hits = await self.deps.runbooks.search(query, 3) if self.deps.runbooks else []
        lines = ["No LLM is configured (set `OPENAI_API_KEY`), so I can't investigate free text."]
        if hits:
            lines.append("*Runbooks that match:*")
            lines += [f"• *{h.title}* (`{h.path}`)" for h in hits]
            suggested = list(dict.fromkeys(" ".join(c.split()) for h in hits
                                           for c in h.commands))[:6]  # runbooks share commands
            if suggested:
                lines.append("*Commands from those runbooks:*")
                lines += [f"• `/ops {c}`" for c in suggested]
        lines.append("*Typed commands you can run now:*")
        lines += [f"• {c}" for c in help.command_examples(self.deps.catalog)]
        citations = [{"title": h.title, "path": h.path} for h in hits]
        return {"answer": "\n".join(lines), "citations": citations}

    # policy -------------------------------------------------------------------------------

    async def policy(self, state: GraphState) -> dict[str, Any]:
        requester, channel = asked_by(task_of(state))
        proposer = proposer_of(state)
        reviews, results = {}, {}
        for raw in state["calls"]:
            call = Call.model_validate(raw)
            review = self.review(call, requester, channel, proposer)
            reviews[call.id] = review
            if review["verdict"] == Verdict.DENY:
                result = ToolResult(status=Status.DENIED, invocation=call.ref, error=review["reason"])
                results[call.id] = {"result": result.model_dump(mode="json"), "note": "denied by policy"}
        return {"reviews": reviews, "results": results}

    def review(self, call: Call, requester: Requester, channel: Channel,
               proposer: Proposer = Proposer.PERSON) -> dict[str, Any]:
        with tracing.tracer.start_as_current_span("policy.evaluate") as span:
            review = self._review(call, requester, channel, proposer)
            span.set_attributes({"opsbot.call_id": call.id, "opsbot.tool": call.ref,
                                 "opsbot.policy.verdict": str(review["verdict"]),
                                 "opsbot.policy.rule": review["rule"] or "",
                                 "opsbot.policy.tier": int(review["tier"])})
            return review

    def _review(self, call: Call, requester: Requester, channel: Channel,
                proposer: Proposer) -> dict[str, Any]:
        decision = evaluate(self.deps.policy, self.deps.catalog, call, requester, channel,
                            proposer)
        review: dict[str, Any] = {**decision.model_dump(mode="json"), "summary": call.ref,
                                  "target": "", "hash": "", "canonical": {}}
        try:
            resolved = self.deps.catalog.resolve(call)
        except CallError:
            return review
        review.update(summary=resolved.summary, target=str(resolved.target),
                      hash=resolved.hash, canonical=resolved.canonical)
        hidden = _secrets_in(review) if review["verdict"] == Verdict.APPROVE else []
        if hidden:  # the card would show a marker where the secret is: less than what runs
            review.update(verdict=Verdict.DENY, rule="redaction",
                          reason=_unshowable(call, hidden))
        return review

    def fan_out(self, state: GraphState) -> list[Send] | str:
        done = state.get("results", {})
        sends = []
        for call in state["calls"]:
            if call["id"] in done:
                continue
            review = state["reviews"][call["id"]]
            node = "execute"
            if review["verdict"] == Verdict.APPROVE:
                node = "preview" if self._previewable(call) else "approval"
            branch: Branch = {"run_id": state["run_id"], "task": state["task"], "call": call,
                              "review": review}
            sends.append(Send(node, branch))
        return sends or "observe"

    def _previewable(self, call: dict[str, Any]) -> bool:
        try:
            return self.deps.catalog.resolve(Call.model_validate(call)).action.preview is not None
        except CallError:
            return False

    # preview (side effects allowed, never interrupts) ----------------------------------------

    async def preview(self, branch: Branch) -> Command:
        """Run the action's dry run in the sandbox so the approver sees what would change."""
        call = Call.model_validate(branch["call"])
        resolved = self.deps.catalog.resolve(call)
        emit({"step": call.id, "text": resolved.summary, "state": StepState.RUNNING,
              "detail": "preparing a preview for the approver"})
        result = await self._run_sandboxed(branch, resolved, preview=True)
        text = result.output if result.status is Status.OK else f"(no preview: {result.text})"
        review = {**branch["review"], "preview": _clip(text, PREVIEW_LIMIT)}
        return Command(goto=Send("approval", {**branch, "review": review}))

    # approval (interrupt only) ------------------------------------------------------------

    async def approval(self, branch: Branch) -> Command:
        answer = interrupt({"kind": "approval", "run_id": branch["run_id"],
                            "call": branch["call"], "review": branch["review"]})
        if answer.get("status") == "approved" and answer.get("hash") == branch["review"]["hash"]:
            return Command(goto=Send("execute", {**branch, "approval": answer}))
        note = _approval_note(answer)
        result = ToolResult(status=Status.DENIED, invocation=branch["call"]["toolset"] + " "
                            + branch["call"]["action"], error=note)
        update: dict[str, Any] = {
            "results": {branch["call"]["id"]: {"result": result.model_dump(mode="json"),
                                               "note": note}},
        }
        if answer.get("status") == "cancelled":
            update["cancelled"] = True
        return Command(goto="observe", update=update)

    # execute (never interrupts) -------------------------------------------------------------

    async def execute(self, branch: Branch) -> dict[str, Any]:
        call = Call.model_validate(branch["call"])
        result, note = await self._execute(branch, call)
        state = StepState.OK if result.status in (Status.OK, Status.NO_DATA) else StepState.FAILED
        emit({"step": call.id, "text": branch["review"]["summary"], "state": state,
              "detail": _clip(result.error or result.status.value, 200)})
        entry: dict[str, Any] = {"result": result.model_dump(mode="json"), "note": note}
        if note == INTERRUPTED:
            entry["interrupted"] = True
        elif result.status is Status.OK:
            check = await checks.follow_up(self, branch, call)
            if check is not None:
                entry["check"] = check.model_dump(mode="json")
        return {"results": {call.id: entry}}

    async def _execute(self, branch: Branch, call: Call) -> tuple[ToolResult, str]:
        try:
            resolved = self.deps.catalog.resolve(call)
        except CallError as e:
            return ToolResult(status=Status.DENIED, invocation=call.ref, error=str(e)), ""
        refusal = _refuse(branch, resolved.hash)
        if refusal:
            await self.deps.audit.record("execute.refused", branch["run_id"], call_id=call.id,
                                         reason=refusal, hash=resolved.hash)
            return ToolResult(status=Status.DENIED, invocation=call.ref, error=refusal), refusal
        if not await self._claim(branch["run_id"], call.id, resolved.hash):
            await self.deps.audit.record("execute.refused", branch["run_id"], call_id=call.id,
                                         reason="already attempted", hash=resolved.hash)
            return ToolResult.fail(call.ref, INTERRUPTED), INTERRUPTED
        emit({"step": call.id, "text": resolved.summary, "state": StepState.RUNNING})
        result = await self._run_sandboxed(branch, resolved)
        if self.deps.executions is not None:
            await self.deps.executions.finish(branch["run_id"], call.id, result.status.value)
        return result, _approved_note(branch)

    async def _claim(self, run_id: str, call_id: str, action_hash: str) -> bool:
        """The execute guard: the first attempt at a call claims it; a replay (a drive that died
        mid-action and was continued) never repeats the side effect."""
        if self.deps.executions is None:
            return True
        first = await self.deps.executions.claim(run_id, call_id, action_hash, self.deps.worker)
        return first or not self.deps.guard

    async def _run_sandboxed(self, branch: Branch, resolved, preview: bool = False) -> ToolResult:
        """One sandboxed action (or preview); at most ``max_parallel_per_run`` of a run at once
        (the sandbox runner caps the whole process too)."""
        limit = self.deps.limits.max_parallel_per_run

        def waiting() -> None:
            emit({"step": resolved.call.id, "text": resolved.summary, "state": StepState.RUNNING,
                  "detail": f"waiting: {limit} of this run's actions are running (its limit)"})

        async with self.deps.run_slots.hold(branch["run_id"], limit, waiting):
            return await self._run_in_slot(branch, resolved, preview)

    async def _run_in_slot(self, branch: Branch, resolved, preview: bool) -> ToolResult:
        """One action in an ``execute_tool`` span: credentials, sandbox, revocation."""
        with tracing.tool_span(resolved.toolset.name, resolved.action.name, resolved.call.id,
                               preview) as span:
            result = await self._run_in_box(branch, resolved, preview)
            span.set_attribute("opsbot.status", result.status.value)
            if result.status is Status.ERROR:
                tracing.failed(span, "the action failed")
            return result

    async def _run_in_box(self, branch: Branch, resolved, preview: bool) -> ToolResult:
        run_id, call = branch["run_id"], resolved.call
        lease = None
        await self.deps.cleanup.settle(run_id)  # earlier leases die before this one is taken
        try:
            secrets = resolved.preview_secrets if preview else resolved.secrets
            with tracing.tracer.start_as_current_span("credential.mint", attributes={
                    "opsbot.secret_kinds": sorted({str(s.kind) for s in secrets})}):
                lease = await self.deps.broker.mint(run_id, call.id, secrets,
                                                    resolved.action.timeout)
            await self.deps.audit.record("credential.lease", run_id, call_id=call.id, **lease.audit())
            request = SandboxRequest(
                run_id=run_id, call_id=call.id, toolset=resolved.toolset.name,
                action=resolved.action.name, params=resolved.params.model_dump(mode="json"),
                config=resolved.config.model_dump(mode="json"), secrets=dict(lease.values),
                egress=resolved.egress, mounts=resolved.mounts,
                warm=resolved.toolset.warm(resolved.config), timeout=resolved.action.timeout,
                preview=preview,
            )

            async def progress(line: str) -> None:
                emit({"step": call.id, "text": resolved.summary, "state": StepState.RUNNING,
                      "detail": _clip(line, 200)})

            with tracing.tracer.start_as_current_span("sandbox.run") as box:
                outcome = await self.deps.executor.run(request, on_progress=progress)
                box.set_attributes({"opsbot.sandbox.pooled": outcome.pooled,
                                    "opsbot.sandbox.seconds": outcome.duration_s,
                                    "opsbot.sandbox.timed_out": outcome.timed_out,
                                    "opsbot.sandbox.container": (outcome.container_id or "")[:12]})
        except VaultError as e:  # a sentence for the user: Vault down, path or key missing
            message = str(e)
            await self.deps.audit.record("sandbox.error", run_id, call_id=call.id, error=message)
            return ToolResult(status=Status.ERROR, invocation=call.ref, error=message)
        except Exception as e:  # noqa: BLE001 - a bug: logged in full, a reference id in chat
            message = _unexpected(e, run_id, call.id)
            await self.deps.audit.record("sandbox.error", run_id, call_id=call.id, error=message)
            return ToolResult(status=Status.ERROR, invocation=call.ref, error=message)
        finally:
            if lease is not None:  # off the critical path, still awaited by the run's end
                self.deps.cleanup.start(run_id, self._revoke(run_id, call.id, lease))
        await self.deps.audit.record(
            "sandbox.preview" if preview else "sandbox.exec", run_id, call_id=call.id,
            action=call.ref,
            params=resolved.params.model_dump(mode="json"), hash=resolved.hash,
            container=outcome.container_id, exit_code=outcome.exit_code,
            duration_s=round(outcome.duration_s, 3), timed_out=outcome.timed_out,
            network=outcome.network, status=outcome.result.status.value,
            error=outcome.result.error,
        )
        return outcome.result

    async def _revoke(self, run_id: str, call_id: str, lease) -> None:
        """The action is over: its credentials die, and the audit log says so."""
        with tracing.tracer.start_as_current_span("credential.revoke"):
            await self.deps.broker.revoke(lease)
        await self.deps.audit.record("credential.revoke", run_id, call_id=call_id,
                                     **lease.audit())

    # observe / report ---------------------------------------------------------------------

    async def observe(self, state: GraphState) -> dict[str, Any]:
        return {}

    def after_observe(self, state: GraphState) -> str:
        results = state.get("results", {})
        if not all(c["id"] in results for c in state.get("calls", [])):
            return END  # another branch of this round is still on its way here
        if _interrupted(state):
            return "report"  # an action's outcome is unknown: a person looks before anything else
        if state.get("mode") == "llm" and not state.get("cancelled"):
            return "agent"
        return "report"

    async def report(self, state: GraphState) -> dict[str, Any]:
        results = state.get("results", {})
        reviews = state.get("reviews", {})
        calls = [_call_report(reviews.get(cid, {}), results.get(cid)) for cid in state.get("run_calls", [])]
        failed = any(c.status == "error" for c in calls)
        run_state = RunState.FAILED if failed and not state.get("answer") else RunState.DONE
        if state.get("cancelled"):
            run_state = RunState.CANCELLED
        if _interrupted(state):
            run_state = RunState.INTERRUPTED
        investigated = state.get("mode") == "llm" and bool(state.get("answer"))
        report = Report(
            run_id=state["run_id"], state=run_state, headline=state.get("headline", ""),
            answer=state.get("answer", ""), calls=calls,
            citations=[Citation(**c) for c in state.get("citations", [])],
            similar=state.get("similar", []),
            usage=_usage(state, self.deps.model_name),
            draftable=run_state is RunState.DONE and worth_remembering(
                task_of(state), investigated, calls),
        )
        return {"report": report.model_dump(mode="json")}


def asked_by(task: Task) -> tuple[Requester, Channel]:
    """Who asked and where, as policy sees them."""
    return (Requester(user=task.user, groups=task.user_groups),
            Channel(id=task.channel, name=task.channel_name, is_dm=task.is_dm))


def proposer_of(state: GraphState) -> Proposer:
    """A person typed the call only in a typed-command run that no alert or MCP client began:
    anything else was chosen by a model after reading text anyone could have written."""
    task = task_of(state)
    typed = state.get("mode") == "typed" and task.alert is None and task.source != Source.MCP
    return Proposer.PERSON if typed else Proposer.MODEL


def _secrets_in(review: dict[str, Any]) -> list[str]:
    shown = json.dumps([review["summary"], review["canonical"]], ensure_ascii=False)
    return REDACTOR.found(shown)


def _unshowable(call: Call, hidden: list[str]) -> str:
    return (f"`{call.ref}` can't be put on an approval card: its parameters hold something "
            f"shaped like a secret ({', '.join(hidden)}), which opsbot never posts in Slack, so "
            "an approver could not see the whole action. Keep the secret in Vault and refer "
            "to it instead.")


def _interrupted(state: GraphState) -> bool:
    return any(entry.get("interrupted") for entry in state.get("results", {}).values())


def _refuse(branch: Branch, actual_hash: str) -> str:
    """Why ``execute`` must not run this call (empty when it may)."""
    review = branch["review"]
    if review["verdict"] == Verdict.ALLOW:
        return "" if review["hash"] == actual_hash else "the action changed after policy review."
    if review["verdict"] != Verdict.APPROVE:
        return "policy did not allow this action."
    approval = branch.get("approval") or {}
    if approval.get("status") != "approved":
        return "this action has no approval."
    if not (approval.get("hash") == review["hash"] == actual_hash):
        return "the approval was given for a different action; nothing was run."
    return ""


def _approval_note(answer: dict[str, Any]) -> str:
    status = answer.get("status", "denied")
    by = ", ".join(f"<@{u}>" for u in answer.get("by", []))
    reason = answer.get("reason") or ""
    text = {"denied": f"denied by {by}" if by else "denied",
            "expired": "the approval request expired",
            "cancelled": "the run was cancelled"}.get(status, status)
    return f"{text}: {reason}" if reason else text


def _approved_note(branch: Branch) -> str:
    approval = branch.get("approval")
    if not approval:
        return ""
    return "approved by " + ", ".join(f"<@{u}>" for u in approval.get("by", []))


def _call_report(review: dict[str, Any], entry: dict[str, Any] | None) -> CallReport:
    if entry is None:
        return CallReport(summary=review.get("summary", "?"), invocation="", status="pending")
    result = ToolResult.model_validate(entry["result"])
    return CallReport(summary=review.get("summary", result.invocation), invocation=result.invocation,
                      command=_typed(review.get("canonical") or {}),
                      status=result.status.value, output=result.text, note=entry.get("note", ""),
                      check=entry.get("check"), tier=int(review.get("tier", 0)))


def _typed(canonical: dict[str, Any]) -> str:
    """The reviewed call as a person would type it after ``/ops`` (unset parameters left out)."""
    if not canonical.get("toolset") or not canonical.get("action"):
        return ""
    params = {k: v for k, v in (canonical.get("params") or {}).items() if v is not None}
    return commands.RunAction(canonical["toolset"], canonical["action"], params).text


def _usage(state: GraphState, model: str) -> str:
    return usage.describe(model, state.get("usage", {}))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unexpected(error: Exception, run_id: str, call_id: str) -> str:
    """Log an unexpected failure in full; chat gets a reference id, never ``str(error)``."""
    ref = secrets.token_hex(4)
    log.exception("action failed unexpectedly", ref=ref, run_id=run_id, call_id=call_id)
    return f"{type(error).__name__} while running the action (opsbot log reference `{ref}`)."
