"""``python -m bot.acceptor``: a process that only answers Slack's HTTP requests.

Started by ``opsbot serve`` when ``OPSBOT_ACCEPTOR_PORT`` is set (``bot/forwarding.py``), it
listens on that port for ``POST /slack/events``: it reads the body, checks Slack's signature
on the raw bytes, hands the request to the bot process over the socket it inherited, and
answers ``200`` with an empty body — what Slack expects of every request opsbot takes. Nothing
else runs here, so the answer never waits behind a run's work, a database transaction or a
garbage collection of the bot process: that is the point of a second process.

The bot process runs the request through its Slack listeners as if it had just acked it; what a
listener would have said in its ack (``/ops help``, a command it cannot read) it says through
the command's ``response_url`` instead.

* A request the bot process cannot take (not connected, or more than :data:`MAX_BACKLOG` bytes
  waiting for it) is answered ``503``, so Slack delivers it again, rather than acked and lost.
  A request it can take is handed over once its ``200`` is written: writing to the socket wakes
  the bot process, which must not delay the answer.
* ``url_verification`` (Slack checking the Request URL) and ``ssl_check`` are answered here.
* The process exits when the bot process closes its end of the socket (it stopped or died).

Wire format on the socket, both ways: a 4-byte big-endian length, then that many bytes of JSON.
The bot process sends one frame first (``{"signing_secret": ...}``), then only reads; this
process sends ``{"listening": <port>}`` once it listens, then one frame per accepted request,
``{"body", "query", "headers", "received_ns", "acked_s"}`` (when the request came in, wall
clock, and how long its answer took: the bot process records them in ``/metrics`` and the
request's trace span, as it does for requests it answers itself), and one per request refused
here, ``{"refused": <outcome>}`` (``too_large``, ``bad_signature``, ``malformed``), so that
``opsbot_slack_requests_total`` counts them too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from typing import Any
from urllib.parse import parse_qs

import structlog
from aiohttp import web
from slack_sdk.signature import SignatureVerifier

from bot import logs
from bot.http_body import json_error, read_body

log = structlog.get_logger("opsbot.acceptor")
MAX_BACKLOG = 8 * 1024 * 1024  # bytes handed over but not yet read by the bot process
UNAVAILABLE = "opsbot is restarting; Slack will deliver this request again"


def frame(data: dict[str, Any]) -> bytes:
    payload = json.dumps(data, separators=(",", ":")).encode()
    return len(payload).to_bytes(4, "big") + payload


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next frame; ``asyncio.IncompleteReadError`` at the end of the stream."""
    size = int.from_bytes(await reader.readexactly(4), "big")
    return json.loads(await reader.readexactly(size))


class Handover:
    """This process's end of the socket to the bot process."""

    def __init__(self, writer: asyncio.StreamWriter, backlog: int = MAX_BACKLOG) -> None:
        self.writer, self.backlog = writer, backlog

    @property
    def open(self) -> bool:
        """The bot process is there and not more than ``backlog`` bytes behind."""
        return (not self.writer.is_closing()
                and self.writer.transport.get_write_buffer_size() <= self.backlog)

    def give(self, data: dict[str, Any]) -> None:
        """Queue one request for the bot process: the write goes to the kernel's socket buffer
        without waiting for the bot process to read it."""
        if self.writer.is_closing():  # it went away since ``open`` said yes: nothing to write to
            log.error("the bot process went away with a request acked for it")
            return
        self.writer.write(frame(data))

    def refuse(self, outcome: str, response: web.Response) -> web.Response:
        """``response``, a refusal; the bot process counts it when it can."""
        if self.open:
            self.writer.write(frame({"refused": outcome}))
        return response


def slack_events(verifier: SignatureVerifier, handover: Handover):
    async def accept(request: web.Request) -> web.StreamResponse:
        received, started = time.time_ns(), time.perf_counter()
        body = await read_body(request)
        if isinstance(body, web.Response):
            return handover.refuse("too_large", body)
        if not verifier.is_valid_request(body, dict(request.headers)):
            return handover.refuse("bad_signature", json_error(401, "invalid request signature"))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return handover.refuse("malformed", json_error(400, "malformed request body"))
        answered = _protocol_answer(text, request.headers.get("Content-Type", ""))
        if answered is not None:
            return (handover.refuse("malformed", answered) if answered.status == 400
                    else answered)
        if not handover.open:
            return json_error(503, UNAVAILABLE)
        response = web.Response(status=200)
        with contextlib.suppress(ConnectionResetError):  # Slack went away: the request stands
            await response.prepare(request)
            await response.write_eof()
        acked = time.perf_counter() - started
        # after the answer is out: waking the bot process cannot delay it
        handover.give({"body": text, "query": request.query_string,
                       "headers": {k.lower(): v for k, v in request.headers.items()},
                       "received_ns": received, "acked_s": acked})
        return response

    return accept


def _protocol_answer(text: str, content_type: str) -> web.Response | None:
    """Slack's own checks, answered here: the Request URL's challenge and the SSL check."""
    if content_type.startswith("application/json"):
        try:
            data = json.loads(text)
        except ValueError:
            return json_error(400, "malformed request body")
        if isinstance(data, dict) and data.get("type") == "url_verification":
            return web.json_response({"challenge": data.get("challenge", "")})
        return None
    if parse_qs(text).get("ssl_check") == ["1"]:
        return web.Response(status=200)
    return None


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def serve(fd: int, host: str, port: int) -> None:
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
    first = await read_frame(reader)
    verifier = SignatureVerifier(first["signing_secret"])
    app = web.Application()
    app.router.add_post("/slack/events", slack_events(verifier, Handover(writer)))
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    port = runner.addresses[0][1]
    writer.write(frame({"listening": port}))
    log.info("acceptor listening", port=port, host=host, pid=os.getpid())
    try:
        while await reader.read(65536):  # the bot process sends nothing more: EOF = it is gone
            pass
        log.info("acceptor stopping: the bot process closed the socket")
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.acceptor", description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="the socket to the bot process")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    try:
        asyncio.run(serve(args.fd, args.host, args.port))
    except OSError as e:  # the port is taken, the socket is gone
        log.error("acceptor could not serve", error=str(e), port=args.port)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
