"""The bot process's side of the acceptor (``bot/acceptor.py``, ``OPSBOT_ACCEPTOR_PORT``).

:class:`Acceptor` starts ``python -m bot.acceptor`` with one end of a socket pair, starts it
again a second after it exits (crashed, killed), and runs every request it hands over through
the Slack listeners — already answered, so what a listener would have put in its ack goes out
through the command's ``response_url`` (:data:`bot.deps.ACKED_ELSEWHERE`). The acceptor ends
when this process does: it reads the end of the socket.

The acceptor says how long each answer took and when the request came in: the bot process
records that in ``opsbot_slack_ack_seconds`` and, when traces are exported, as the request's
``POST /slack/events`` server span (from the request to its answer, in the acceptor) with the
run it starts as its child — what a request answered by this process gets. The requests the
acceptor refused are counted under their outcome.

A request handed over is in this process's socket buffer from the moment Slack has its
``200``: if this process dies before reading it, it is lost, as a request acked by this
process and not yet recorded is (the window is a few milliseconds either way).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import metrics, telemetry
from bot.acceptor import frame, read_frame
from bot.deps import ACKED_ELSEWHERE
from bot.web import request_attributes
from graph import tracing

log = structlog.get_logger("opsbot.acceptor")
RESTART_S = 1.0
STOP_S = 5.0
REFUSALS = frozenset({"too_large", "bad_signature", "malformed"})  # the acceptor's outcomes
Spawn = Callable[[Awaitable[object]], None]


class Acceptor:
    def __init__(self, app: AsyncApp, spawn: Spawn, signing_secret: str, host: str, port: int,
                 log_level: str = "info", python: str = sys.executable) -> None:
        self.app, self.spawn, self.secret = app, spawn, signing_secret
        self.host, self.port, self.log_level, self.python = host, port, log_level, python
        self.listening: int | None = None  # the port it answers on, once it does
        self.starts = 0
        self.start_error = ""  # why the last attempt to start it failed, until one succeeds
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._keep_running(), name="acceptor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._stop_process()

    def readiness(self) -> str:
        """``ok`` when the acceptor answers Slack; otherwise why not."""
        if self.listening:
            return "ok"
        if self.start_error:
            return f"the acceptor process could not be started: {self.start_error}"
        return "the acceptor process is not listening yet"

    async def _keep_running(self) -> None:
        while True:
            try:
                code = await self._run_once()
            except OSError as e:  # it could not be started (no interpreter, no file descriptors)
                self.start_error = str(e)
                log.error("acceptor could not be started; trying again", error=str(e),
                          in_s=RESTART_S)
            else:
                log.warning("acceptor exited; starting it again", code=code, in_s=RESTART_S)
            await asyncio.sleep(RESTART_S)

    async def _run_once(self) -> int | None:
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self.python, "-m", "bot.acceptor", "--fd", str(theirs.fileno()),
                "--host", self.host, "--port", str(self.port), "--log-level", self.log_level,
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.starts += 1
        self.start_error = ""
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        try:
            writer.write(frame({"signing_secret": self.secret}))
            await self._take(reader)
        finally:
            self.listening = None
            writer.close()
        return await self._proc.wait()

    async def _take(self, reader: asyncio.StreamReader) -> None:
        """Every frame the acceptor sends, until it closes the socket (it exited)."""
        while True:
            try:
                data = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            except ValueError:  # not our wire format: closing the socket ends it (restarted)
                log.error("unreadable frame from the acceptor; restarting it")
                return
            if not isinstance(data, dict):
                log.warning("unexpected frame from the acceptor", kind=type(data).__name__)
            elif "listening" in data:
                self.listening = int(data["listening"])
            elif "refused" in data:
                if data["refused"] in REFUSALS:
                    metrics.SLACK_REQUESTS.labels(outcome=data["refused"]).inc()
            else:
                self.spawn(self._dispatch(data))

    async def _dispatch(self, data: dict) -> None:
        try:
            request = AsyncBoltRequest(body=data["body"], query=data.get("query") or "",
                                       headers=data.get("headers") or {},
                                       context={ACKED_ELSEWHERE: True})
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("malformed request from the acceptor", error=type(e).__name__)
            return
        metrics.SLACK_REQUESTS.labels(outcome="acceptor").inc()
        acked = _seconds(data.get("acked_s"))
        if acked is not None:
            metrics.ACK_SECONDS.observe(acked)
        with _server_span(data.get("received_ns"), acked):
            response = await self.app.async_dispatch(request)
        if response.status >= 400:
            log.warning("a request the acceptor took failed here", status=response.status)

    async def _stop_process(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and 0 <= value < 3600 else None


@contextlib.contextmanager
def _server_span(received_ns: Any, acked_s: float | None) -> Iterator[None]:
    """The request's server span as the acceptor saw it (it ends at the answer, before the
    work it hands off starts, as a span of a request answered here does), current while the
    listeners run so that a run started by them continues its trace."""
    if not telemetry.active():
        yield
        return
    start = received_ns if isinstance(received_ns, int) and received_ns > 0 else None
    span = tracing.tracer.start_span(
        "POST /slack/events", kind=SpanKind.SERVER, start_time=start,
        attributes={**request_attributes("POST", "/slack/events"),
                    "http.response.status_code": 200, "opsbot.acceptor": True})
    try:
        with trace.use_span(span, end_on_exit=False):
            yield
    finally:
        end = start + int(acked_s * 1e9) if start is not None and acked_s is not None else None
        span.end(end_time=end)
