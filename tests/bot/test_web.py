"""The HTTP extras on a real port: /metrics behind an optional bearer token, /healthz open."""

import aiohttp
import pytest
from aiohttp import web

from bot.web import build_web

TOKEN = "metrics-scrape-token-7c1f"


@pytest.fixture
async def served(request):
    runner = web.AppRunner(build_web(None, None, metrics_token=request.param))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as reply:
        return reply.status, await reply.text()


@pytest.mark.parametrize("served", [TOKEN], indirect=True)
async def test_metrics_need_the_bearer_token_when_one_is_set(served):
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        status, body = await get(f"{served}/metrics", headers)
        assert status == 401 and "OPSBOT_METRICS_TOKEN" in body and "python_info" not in body
    status, body = await get(f"{served}/metrics", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "python_info" in body
    assert (await get(f"{served}/healthz"))[0] == 200, "health stays open for probes"


@pytest.mark.parametrize("served", [None], indirect=True)
async def test_metrics_are_open_without_a_token(served):
    status, body = await get(f"{served}/metrics")
    assert status == 200 and "python_info" in body
