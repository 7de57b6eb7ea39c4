"""Talking to one container over its attach socket: request in, result and progress out.

Docker multiplexes stdout and stderr on the attach connection in frames (an 8-byte header:
stream id, three zero bytes, big-endian length). We write the request, half-close so the
container's stdin sees EOF, then read frames until the first complete stdout line, which is the
result. Waiting for that line rather than for end-of-stream saves the ~100 ms the engine needs
to notice the process exited; the runner kills and removes the container afterwards anyway.

Each stream is capped: past ``cap`` bytes the exchange stops (and the runner kills the
container), so a hostile action cannot make opsbot buffer 100 MB.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

STDOUT, STDERR = 1, 2
HEADER = 8
CHUNK = 65536
MAX_LINE = 4000
MAX_DIAGNOSTICS = 20


@dataclass
class Exchange:
    """What came back. ``result_line`` is None when the stream ended (or was cut) without one."""

    result_line: bytes | None = None
    stdout: bytearray = field(default_factory=bytearray)
    stderr_bytes: int = 0
    diagnostics: list[str] = field(default_factory=list)
    truncated: bool = False

    @property
    def eof(self) -> bool:
        """The stream ended without a result (and was not cut)."""
        return self.result_line is None and not self.truncated

    def note(self, line: str) -> None:
        self.diagnostics.append(line[:MAX_LINE])
        del self.diagnostics[:-MAX_DIAGNOSTICS]


class FrameParser:
    """Incremental decoder of Docker's multiplexed stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buffer += data
        while len(self._buffer) >= HEADER:
            size = int.from_bytes(self._buffer[4:HEADER], "big")
            if len(self._buffer) < HEADER + size:
                return
            stream = self._buffer[0]
            payload = bytes(self._buffer[HEADER:HEADER + size])
            del self._buffer[:HEADER + size]
            yield stream, payload


class LineSplitter:
    """Complete lines out of a byte stream; an over-long line is cut rather than buffered."""

    def __init__(self) -> None:
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._partial += data
        *lines, rest = self._partial.split(b"\n")
        self._partial = bytearray(rest[:MAX_LINE])
        return [bytes(line) for line in lines]


READY = "ready"


class Channel:
    """The attach socket of one container plus the decoder state that spans its lifetime.

    A pooled container is attached and watched until its entrypoint reports ``{"ready": true}``
    (imports done); the same channel later carries the request and the result.
    """

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.sock.setblocking(False)
        self._frames = FrameParser()
        self._errors = LineSplitter()

    async def ready(self) -> bool:
        """Read until the entrypoint's ready line; False if the stream ended first."""
        seen = Exchange()
        flag: list[bool] = []
        while not flag:
            if not await self._pump(seen, 0, lambda text: None, flag.append):
                return False
        return True

    def alive(self) -> bool:
        """False once the container's side has closed (it exited while idle in the pool)."""
        try:
            return self.sock.recv(1, socket.MSG_PEEK) != b""
        except BlockingIOError:
            return True
        except OSError:
            return False

    async def exchange(self, payload: bytes, cap: int, progress: Callable[[str], None]
                       ) -> Exchange:
        """Send ``payload``, half-close, and read until the result line, EOF or the cap.

        A connection that breaks counts as end-of-stream: the container is gone, and the
        runner asks the engine why (exit code, out of memory)."""
        seen = Exchange()
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, payload)
            self.sock.shutdown(socket.SHUT_WR)
            while seen.result_line is None and not seen.truncated:
                if not await self._pump(seen, cap, progress, lambda ready: None):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        return seen

    async def _pump(self, seen: Exchange, cap: int, progress: Callable[[str], None],
                    on_ready: Callable[[bool], None]) -> bool:
        data = await asyncio.get_running_loop().sock_recv(self.sock, CHUNK)
        if not data:
            return False
        for stream, chunk in self._frames.feed(data):
            if stream == STDOUT:
                _on_stdout(seen, chunk, cap)
            elif stream == STDERR:
                _on_stderr(seen, self._errors.feed(chunk), len(chunk), cap, progress, on_ready)
        return True


def _on_stdout(seen: Exchange, chunk: bytes, cap: int) -> None:
    seen.stdout += chunk
    line, newline, _ = seen.stdout.partition(b"\n")
    if newline:
        seen.result_line = bytes(line)
    elif cap and len(seen.stdout) > cap:
        seen.truncated = True
        del seen.stdout[cap:]


def _on_stderr(
    seen: Exchange, lines: list[bytes], size: int, cap: int, progress: Callable[[str], None],
    on_ready: Callable[[bool], None],
) -> None:
    seen.stderr_bytes += size
    if cap and seen.stderr_bytes > cap:
        seen.truncated = True
        return
    for raw in lines:
        text = raw.decode(errors="replace").strip()
        body = _json_object(text)
        if isinstance(body.get("progress"), str):
            progress(body["progress"][:MAX_LINE])
        elif body.get(READY) is True:
            on_ready(True)
        elif text:
            seen.note(text)


def _json_object(line: str) -> dict:
    """The line as a JSON object, or {} for anything else (plain diagnostics)."""
    if not line.startswith("{"):
        return {}
    try:
        body = json.loads(line)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
