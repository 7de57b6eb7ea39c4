"""Reading a request's body whole and answering JSON errors: shared by the HTTP front door
(``bot/web.py``) and the acceptor process (``bot/acceptor.py``), which imports nothing more."""

from __future__ import annotations

from aiohttp import web

MAX_BODY = 256 * 1024  # Slack payloads are far smaller; a message's text is capped at 40k chars


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": message}, status=status)


async def read_body(request: web.Request, limit: int = MAX_BODY) -> bytes | web.Response:
    """The whole raw body, or a 413 response when it is (or claims to be) too large.

    A body arrives in as many TCP segments as the network likes; one ``read(n)`` returns only
    what has arrived so far, so a signature checked on that prefix fails at random. Read until
    the end of the body, never more than ``limit + 1`` bytes.
    """
    if request.content_length is not None and request.content_length > limit:
        return json_error(413, f"body larger than {limit} bytes")
    body = bytearray()
    while len(body) <= limit:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
    return json_error(413, f"body larger than {limit} bytes")
