"""Runs one tool action in a fresh, hardened, throwaway container.

Usage (the graph's execute node)::

    runner = await SandboxRunner.start(config)   # connect, verify image, reap, warm the pool
    outcome = await runner.run(request, on_progress=post)
    outcome.result                               # a ToolResult; never an exception
    await runner.close()

``run`` never raises for action or container failures: time-outs, memory exhaustion, output
floods, crashes, a missing image and engine errors all come back as an error ``ToolResult``
with one clear sentence (sandbox/messages.py). Secrets travel only in the request written to
the container's stdin; they are never in the container's env, args, labels or logs, and the
runner scrubs them from anything it reports.

The container is always removed. When a result arrives, its forwarders close; the removal (and
the network's) runs in the background after ``housekeeping_delay_s``, so neither the caller
nor the answer that follows is kept waiting or short of CPU; :meth:`settle` and :meth:`close`
wait for it, and :meth:`start` reaps whatever a crashed predecessor of the same instance left
behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable

import structlog
from pydantic import ValidationError

from sandbox import messages, metrics
from sandbox.box import Box, HostsFileError, Provisioner, slug
from sandbox.config import SandboxConfig
from sandbox.egress import EgressError, named_hosts
from sandbox.engine import Engine, EngineError
from sandbox.firewall import Firewall, FirewallError
from sandbox.firewall import chains as firewall_chains
from sandbox.firewall import drop as drop_chain
from sandbox.hardening import ENTRYPOINT, LABEL, Identity, instance_filter
from sandbox.instances import HOST, InstanceInUse, Instances, default_dir
from sandbox.image import image_tag
from sandbox.pool import Housekeeping, Kind, WarmPool
from sandbox.protocol import SandboxOutcome, SandboxRequest
from sandbox.stream import Exchange
from tools.base import ToolResult
from tools.secrets import REDACTOR, Redactor

log = structlog.get_logger(__name__)

Progress = Callable[[str], Awaitable[None]]
DRAIN_TIMEOUT_S = 10.0


class SandboxRunner:
    def __init__(self, config: SandboxConfig, engine: Engine, firewall: Firewall, image: str):
        self.config = config
        self.engine = engine
        self.firewall = firewall
        self.image = image
        self.provisioner = Provisioner(engine, firewall, config, image)
        self.housekeeping = Housekeeping(config.housekeeping_delay_s)
        self.pool = WarmPool(self.provisioner, config.instance, config.warm_pool,
                             config.warm_pool_max, self.housekeeping, config.preload)
        metrics.POOLS.add(self.pool)
        self._image_ok = False
        self._background: set[asyncio.Task[None]] = set()
        self._closed = False
        self._slots = asyncio.Semaphore(config.max_running)
        self.instances = Instances(config.instances_dir or default_dir())

    @classmethod
    async def start(cls, config: SandboxConfig) -> SandboxRunner:
        """Connect to the engine, check the image, reap leftovers, start warming the pool.

        An unreachable engine raises :class:`~sandbox.engine.EngineError` (the app cannot
        work without it); a missing image does not: ``run`` reports it on every call until the
        image is built, and :attr:`image_problem` tells the app at boot.
        """
        instances = Instances(config.instances_dir or default_dir())
        if not instances.claim(config.instance):
            raise InstanceInUse(messages.instance_in_use(config.instance))
        try:
            engine = await Engine.connect(config.engine_url)
        except EngineError:
            instances.release(config.instance)
            raise
        firewall = Firewall(config.instance, enabled=config.firewall)
        runner = cls(config, engine, firewall, config.image or image_tag())
        runner.instances = instances  # the one holding our lock
        reaped = await runner.reap()  # before the firewall is on: its start empties the chain
        reaped += await runner.reap_dead()
        await firewall.start()
        runner.provisioner.spares.fill()
        if await runner._check_image():
            runner.pool.fill()
        log.info("sandbox.started", image=runner.image, reaped=reaped, instance=config.instance,
                 firewall=firewall.available, warm_pool=config.warm_pool)
        return runner

    @property
    def image_problem(self) -> str | None:
        return None if self._image_ok else messages.image_missing(self.image)

    async def run(self, request: SandboxRequest, on_progress: Progress | None = None
                  ) -> SandboxOutcome:
        """Run ``request.toolset``/``request.action`` through the image's entrypoint."""
        return await self.execute(request, ENTRYPOINT, on_progress)

    async def execute(
        self, request: SandboxRequest, command: list[str] | None, on_progress: Progress | None
    ) -> SandboxOutcome:
        """The one code path for every container: ``command`` None is the production
        entrypoint (and may use the warm pool); tests pass a hostile program instead. The
        request (with ``endpoints`` filled in) is written to stdin either way."""
        began = time.perf_counter()
        if problem := await self._refusal():
            return _outcome(request, ToolResult.fail(_invocation(request), problem), began)
        if not await self._take_slot(on_progress):
            busy = messages.no_free_slot(self.config.max_running, self.config.slot_wait_s)
            return _outcome(request, ToolResult.fail(_invocation(request), busy), began)
        try:
            return await self._execute(request, command, on_progress, began)
        finally:
            self._slots.release()

    async def _take_slot(self, on_progress: Progress | None) -> bool:
        """One of ``max_running`` slots, waiting up to ``slot_wait_s`` (and saying so)."""
        if self._slots.locked() and on_progress is not None:
            await on_progress(messages.waiting_for_slot(self.config.max_running))
        try:
            async with asyncio.timeout(self.config.slot_wait_s):
                await self._slots.acquire()
        except TimeoutError:
            return False
        return True

    async def _execute(self, request: SandboxRequest, command: list[str] | None,
                       on_progress: Progress | None, began: float) -> SandboxOutcome:
        redactor = _redactor(request)
        box: Box | None = None
        try:
            box = await self._box(request, command)
            request = request.model_copy(update={"endpoints": box.endpoints})
            outcome = await self._converse(box, request, redactor, on_progress, began)
        except (EngineError, FirewallError, EgressError, OSError) as e:
            outcome = _outcome(request, ToolResult.fail(_invocation(request), _failure(e)), began)
        finally:
            if box is not None:
                self._later(self._discard(box))
        self._log(request, outcome)
        metrics.sandbox_ran(outcome.pooled, outcome.phases, outcome.result.status.value)
        return outcome

    async def _refusal(self) -> str | None:
        if self._closed:
            return messages.runner_closed()
        if not self._image_ok and await self._check_image():
            self.pool.fill()
        return self.image_problem

    async def _check_image(self) -> bool:
        self._image_ok = await self.engine.image_exists(self.image)
        if not self._image_ok:
            log.error("sandbox.image_missing", image=self.image)
        return self._image_ok

    async def _box(self, request: SandboxRequest, command: list[str] | None) -> Box:
        """A pooled box for the production entrypoint when one is ready (and, for named
        endpoints, while pooled hosts files can be written; with mounts only in a kind of its
        own, as they are fixed at creation), else a cold one."""
        names = named_hosts(request.egress)
        kind, fresh = self._kind(request)
        poolable = command is ENTRYPOINT and not fresh and (
            kind is not None or not request.mounts) and (
            not names or self.provisioner.pool_names)
        if poolable and (box := await self._warm_box(request, kind)) is not None:
            return box
        return await self._cold_box(request, command, names)

    def _kind(self, request: SandboxRequest) -> tuple[str | None, bool]:
        """The pool kind of a request that asks for its own, and whether it was new (its
        first request goes cold while the pool prepares the next)."""
        if not request.warm or self.config.warm_pool == 0:
            return None, False
        recipe = json.dumps([request.warm, bool(request.egress),
                             [m.model_dump() for m in request.mounts]], sort_keys=True)
        name = "w-" + hashlib.sha256(recipe.encode()).hexdigest()[:10]
        fresh = self.pool.add(Kind(name, bool(request.egress), tuple(request.warm),
                                   tuple(request.mounts), size=1, family=request.toolset))
        return name, fresh

    async def _warm_box(self, request: SandboxRequest, kind: str | None = None) -> Box | None:
        box = await self.pool.take(kind or bool(request.egress))
        if box is None:
            return None
        try:
            await self.provisioner.equip(box, request.egress)
        except HostsFileError:
            self._later(self.provisioner.destroy(box))
            return None
        except BaseException:
            self._later(self.provisioner.destroy(box))
            raise
        self._later(self._deferred(self._rename(box, request)))
        return box

    async def _cold_box(self, request: SandboxRequest, command: list[str] | None,
                        names: list[str]) -> Box:
        identity = Identity(self.config.instance, request.run_id, request.call_id,
                            _invocation(request))
        box = await self.provisioner.create(identity, bool(request.egress), command, names,
                                            request.mounts)
        try:
            await self.provisioner.equip(box, request.egress)
            await self.provisioner.attach_and_start(box)
        except BaseException:
            self._later(self.provisioner.destroy(box))
            raise
        return box

    async def _rename(self, box: Box, request: SandboxRequest) -> None:
        name = f"opsbot-{self.config.instance}-{slug(request.call_id)}-{box.name[-10:]}"
        try:
            await self.engine.rename(box.container, name)
        except EngineError as e:
            log.info("sandbox.rename_failed", container=box.container[:12], error=str(e)[:200])

    async def _converse(self, box: Box, request: SandboxRequest, redactor: Redactor,
                        on_progress: Progress | None, began: float) -> SandboxOutcome:
        assert box.channel is not None
        timeout = self.config.timeout_for(request.timeout)
        relay = _ProgressRelay(on_progress, redactor)
        seen: Exchange | None = None
        try:
            with box.phase("exec"):
                async with asyncio.timeout(timeout):
                    seen = await box.channel.exchange(request.wire(),
                                                      self.config.output_cap_bytes, relay.push)
        except TimeoutError:
            pass
        finally:
            await relay.drain()
        if seen is None or seen.truncated:
            await self.provisioner.kill(box)
        result, exit_code = await self._verdict(box, seen, timeout, request, redactor)
        return SandboxOutcome(
            result=result, container_id=box.container, exit_code=exit_code,
            duration_s=round(time.perf_counter() - began, 4), timed_out=seen is None,
            output_truncated=bool(seen and seen.truncated), network=box.network_name,
            phases=box.phases, pooled=box.pooled,
            diagnostics=[redactor.redact(line) for line in seen.diagnostics] if seen else [],
        )

    async def _verdict(self, box: Box, seen: Exchange | None, timeout: float,
                       request: SandboxRequest, redactor: Redactor
                       ) -> tuple[ToolResult, int | None]:
        invocation = _invocation(request)
        if seen is None:
            return ToolResult.fail(invocation, messages.timed_out(timeout)), None
        if seen.truncated:
            cut = messages.output_cut(self.config.output_cap_bytes)
            return ToolResult.fail(invocation, cut), None
        if seen.result_line is not None:
            return _parse(seen.result_line, invocation, redactor), None
        exit_code = await self.engine.wait(box.container)
        if (await self.engine.state(box.container)).get("OOMKilled"):
            oom = messages.out_of_memory(self.config.memory_mb)
            return ToolResult.fail(invocation, oom), exit_code
        last = redactor.redact(seen.diagnostics[-1]) if seen.diagnostics else ""
        return ToolResult.fail(invocation, messages.no_result(exit_code, last[:300])), exit_code

    async def _discard(self, box: Box) -> None:
        """The box's way out closes with its action (its entrypoint has exited, or is cut off:
        no forwarder is left to reach); the engine's removal work waits a moment, off the
        answer's path."""
        await self.provisioner.cut_off(box)
        await self._deferred(self.provisioner.destroy(box))

    async def _deferred(self, work: Awaitable[None]) -> None:
        """``work`` once housekeeping may run; cancelled while waiting, it still runs (a
        removal is owed)."""
        try:
            await self.housekeeping.wait()
        finally:
            await work

    def _later(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def settle(self) -> None:
        """Wait until every finished run's container and network are gone (deferred
        housekeeping begun now)."""
        while self._background:
            self.housekeeping.hurry()
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def reap(self) -> int:
        """Remove containers, networks and firewall rules of this instance that no live run or
        pooled box owns (what a crashed predecessor left). Returns how many objects went."""
        filters = instance_filter(self.config.instance)
        containers = set(await self.engine.containers(filters)) - self.provisioner.containers
        await asyncio.gather(*(self.engine.remove(c) for c in containers))
        networks = set(await self.engine.networks(filters)) - self.provisioner.networks
        for network in networks:
            await self.engine.remove_network(network)
        if not self.provisioner.containers:
            await self.firewall.reset()
        if containers or networks:
            log.warning("sandbox.reaped", containers=len(containers), networks=len(networks))
        return len(containers) + len(networks)

    async def reap_dead(self) -> int:
        """Remove what dead instances on this host left: their containers, networks and
        firewall chains. A live sibling (its lock is held) is never touched."""
        found = {labels.get(f"{LABEL}.instance", "") for labels in
                 await self.engine.labelled(LABEL) if labels.get(f"{LABEL}.host", HOST) == HOST}
        chains = await firewall_chains()
        dead = {i for i in found | set(chains) if i and i != self.config.instance
                and self.instances.dead(i)}
        count = 0
        for instance in sorted(dead):
            filters = instance_filter(instance)
            containers = await self.engine.containers(filters)
            await asyncio.gather(*(self.engine.remove(c) for c in containers))
            networks = await self.engine.networks(filters)
            for network in networks:
                await self.engine.remove_network(network)
            if instance in chains:
                await drop_chain(chains[instance])
            count += len(containers) + len(networks)
        if dead:
            log.warning("sandbox.reaped_dead", instances=sorted(dead), objects=count)
        return count

    async def close(self) -> None:
        """Stop taking runs, empty the pool, wait for removals (retrying any that failed), drop
        the firewall chain."""
        self._closed = True
        await self.pool.close()
        await self.provisioner.spares.close()
        await self.settle()
        if await self.provisioner.retry_teardown():
            log.warning("sandbox.teardown_retried", detail="removed what a failed removal left")
        await self.firewall.close()
        self.engine.close()
        self.instances.release(self.config.instance)

    def _log(self, request: SandboxRequest, outcome: SandboxOutcome) -> None:
        log.info("sandbox.run", run_id=request.run_id, call_id=request.call_id,
                 action=_invocation(request), status=outcome.result.status.value,
                 container=(outcome.container_id or "")[:12], pooled=outcome.pooled,
                 duration_s=outcome.duration_s, phases=outcome.phases,
                 timed_out=outcome.timed_out, truncated=outcome.output_truncated)


class _ProgressRelay:
    """Feeds progress lines to the caller's coroutine in order, without stalling the reader."""

    def __init__(self, callback: Progress | None, redactor: Redactor):
        self._callback = callback
        self._redactor = redactor
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._deliver()) if callback else None

    def push(self, text: str) -> None:
        if self._task is not None:
            self._queue.put_nowait(self._redactor.redact(text))

    async def _deliver(self) -> None:
        assert self._callback is not None
        while True:
            text = await self._queue.get()
            try:
                await self._callback(text)
            except Exception as e:  # noqa: BLE001 - a failing sink must not fail the action
                log.warning("sandbox.progress_failed", error=type(e).__name__)
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), DRAIN_TIMEOUT_S)
        except TimeoutError:
            log.warning("sandbox.progress_slow", dropped=self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def _redactor(request: SandboxRequest) -> Redactor:
    redactor = Redactor(shapes=())  # secret values; shapes are redacted on the host (policy)
    for secret in request.secrets.values():
        redactor.add(secret.get_secret_value())
    return redactor


def _parse(line: bytes, invocation: str, redactor: Redactor) -> ToolResult:
    try:
        result = ToolResult.model_validate_json(line)
    except ValidationError:
        return ToolResult.fail(invocation, messages.malformed_result())
    return ToolResult.model_validate(REDACTOR.redact_obj(redactor.redact_obj(
        result.model_dump(mode="json"))))


def _invocation(request: SandboxRequest) -> str:
    return f"{request.toolset} {request.action}"


def _failure(error: Exception) -> str:
    if isinstance(error, EngineError):
        return messages.engine_failed(error.step, error.explanation)
    if isinstance(error, EgressError):
        return str(error)
    return messages.egress_failed(str(error))


def _outcome(request: SandboxRequest, result: ToolResult, began: float) -> SandboxOutcome:
    return SandboxOutcome(result=result, duration_s=round(time.perf_counter() - began, 4))
