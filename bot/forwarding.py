"""The bot process's side of the acceptor (``bot/acceptor.py``, ``OPSBOT_ACCEPTOR_PORT``).

:class:`Acceptor` starts ``python -m bot.acceptor`` with one end of a socket pair, starts it
again a second after it exits (crashed, killed), and runs every request it hands over through
the Slack listeners — already answered, so what a listener would have put in its ack goes out
through the command's ``response_url`` (:data:`bot.deps.ACKED_ELSEWHERE`). The acceptor ends
when this process does: it reads the end of the socket.

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
from collections.abc import Awaitable, Callable

import structlog
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot import metrics
from bot.acceptor import frame, read_frame
from bot.deps import ACKED_ELSEWHERE

log = structlog.get_logger("opsbot.acceptor")
RESTART_S = 1.0
STOP_S = 5.0
Spawn = Callable[[Awaitable[object]], None]


class Acceptor:
    def __init__(self, app: AsyncApp, spawn: Spawn, signing_secret: str, host: str, port: int,
                 log_level: str = "info") -> None:
        self.app, self.spawn, self.secret = app, spawn, signing_secret
        self.host, self.port, self.log_level = host, port, log_level
        self.listening: int | None = None  # the port it answers on, once it does
        self.starts = 0
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
        return "ok" if self.listening else "the acceptor process is not listening yet"

    async def _keep_running(self) -> None:
        while True:
            code = await self._run_once()
            log.warning("acceptor exited; starting it again", code=code, in_s=RESTART_S)
            await asyncio.sleep(RESTART_S)

    async def _run_once(self) -> int | None:
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.acceptor", "--fd", str(theirs.fileno()),
                "--host", self.host, "--port", str(self.port), "--log-level", self.log_level,
                pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        finally:
            theirs.close()
        self.starts += 1
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
            if "listening" in data:
                self.listening = int(data["listening"])
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
