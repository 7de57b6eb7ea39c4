"""The plumbing every emulator shares: an aiohttp server in its own thread, its lifecycle, and
waiting helpers.

Each emulator runs on its own event loop in a daemon thread, so a test on pytest's session loop,
a Bolt app on that same loop, and blocking code (a CLI, ``requests``) can all talk to it over real
loopback HTTP without the emulator ever being starved by the code under test.

Usage::

    thread = ServerThread(app, name="slack-emulator")
    port = thread.start()
    thread.submit(some_coroutine()).result(timeout=5)
    thread.stop()

    class MyEmulator(Emulator):                 # start/stop, ``with``, origin, wait_for
        def __init__(self):
            super().__init__(web.Application(), "my-emulator")

        def describe(self) -> str:
            return "the emulator saw: ..."
"""

from __future__ import annotations

import asyncio
import inspect
import concurrent.futures
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")

POLL_INTERVAL = 0.01


class ServerThread:
    """One aiohttp :class:`web.Application` served on 127.0.0.1:<free port> from a daemon thread."""

    def __init__(self, app: web.Application, name: str):
        self.app = app
        self.name = name
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None)
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def start(self) -> int:
        """Bind, start serving, and return the port (raises if the server could not start)."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"{self.name} did not start within 10 s")
        if self._failure is not None:
            raise RuntimeError(f"{self.name} failed to start: {self._failure!r}")
        return self.port

    def stop(self) -> None:
        """Close connections, stop the loop and join the thread; safe to call twice."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run a coroutine on the emulator's loop from any thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Schedule a plain callback on the emulator's loop from any thread."""
        self.loop.call_soon_threadsafe(fn, *args)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._bind())
        except OSError as e:  # cannot bind: reported to start() in the test's thread
            self._failure = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    async def _bind(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]


class Emulator:
    """Start and stop an emulator's server (also as a ``with`` block) and wait on what it saw.

    Subclasses build their aiohttp app, pass it here, and say in :meth:`describe` what they have
    seen, which ends every timeout message of :meth:`wait_for`.
    """

    def __init__(self, app: web.Application, name: str):
        self._thread = ServerThread(app, name)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._thread.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._thread.port}"

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Wait (without blocking the loop) until ``predicate()`` is truthy; return its value."""
        return await wait_until(predicate, timeout, self.describe)

    def describe(self) -> str:
        raise NotImplementedError


async def wait_until(
    predicate: Callable[[], T], timeout: float, describe: Callable[[], str]
) -> T:
    """Poll ``predicate`` on the caller's loop until it returns something truthy, and return it.
    ``predicate`` may return an awaitable (e.g. a store query); it is awaited each time.

    On timeout, raises :class:`TimeoutError` whose message ends with ``describe()`` (what the
    emulator has seen so far), so a failing end-to-end test says what the bot actually did.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout} s; {describe()}")
        await asyncio.sleep(POLL_INTERVAL)


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a JSON-like value, decoding strings that themselves hold JSON.

    The emulators' ``all_text()`` is built on this, so a canary secret is found whether the
    bot sent it as a plain field, inside form-encoded ``blocks`` JSON, or escaped in a view.
    """
    if isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)
    elif isinstance(value, str):
        yield from _decoded(value)


def _decoded(text: str) -> Iterator[str]:
    if text[:1] in ("{", "["):
        try:
            yield from strings_in(json.loads(text))
            return
        except json.JSONDecodeError:
            pass
    yield text
