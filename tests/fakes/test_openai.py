"""The OpenAI emulator driven by the real ``ChatOpenAI`` (and ``openai``) clients."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.fakes.openai import (
    API_KEY,
    Delay,
    OpenAIEmulator,
    http_error,
    last_user_text,
    text,
    tool_call,
    tool_results,
)
from tests.fakes.openai_script import Usage


@tool
def redis_info(section: str = "") -> str:
    """Read Redis server INFO for one section."""
    return "used_memory:1024"


@tool
def redis_slowlog(count: int = 10) -> str:
    """List the slowest recent Redis commands."""
    return "#1 20000 µs KEYS *"


@pytest.fixture
def llm_api() -> Iterator[OpenAIEmulator]:
    with OpenAIEmulator() as emulator:
        yield emulator


def chat(llm_api: OpenAIEmulator, api_key: str = API_KEY) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=llm_api.base_url, api_key=api_key,
                      use_responses_api=False, stream_usage=True, max_retries=0, timeout=5)


async def collect(stream) -> AIMessageChunk:
    full = None
    async for chunk in stream:
        full = chunk if full is None else full + chunk
    return full


async def test_json_tool_call_then_text(llm_api: OpenAIEmulator) -> None:
    llm_api.push(tool_call("redis_info", {"section": "memory"}), text("Memory is fine."))
    bound = chat(llm_api).bind_tools([redis_info, redis_slowlog])

    first = await bound.ainvoke([HumanMessage("why is redis slow?")])
    [call] = first.tool_calls
    assert (call["name"], call["args"]) == ("redis_info", {"section": "memory"})
    answer = await bound.ainvoke([HumanMessage("why is redis slow?"), first,
                                  ToolMessage("used_memory:1024", tool_call_id=call["id"])])
    assert answer.content == "Memory is fine."

    sent = llm_api.requests()[0].body
    assert [t["function"]["name"] for t in sent["tools"]] == ["redis_info", "redis_slowlog"]
    assert llm_api.requests()[1].body["messages"][2]["tool_call_id"] == call["id"]
    assert llm_api.errors == []


async def test_streamed_parallel_tool_calls_are_reassembled(llm_api: OpenAIEmulator) -> None:
    llm_api.push([tool_call("redis_info", {"section": "memory"}),
                  tool_call("redis_slowlog", {"count": 5}, id="call_fixed")])
    full = await collect(chat(llm_api).bind_tools([redis_info, redis_slowlog]).astream("go"))
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [
        ("redis_info", {"section": "memory"}), ("redis_slowlog", {"count": 5})]
    assert full.tool_calls[1]["id"] == "call_fixed"
    assert full.response_metadata["finish_reason"] == "tool_calls"
    assert llm_api.requests()[0].body["stream_options"] == {"include_usage": True}


async def test_streamed_text_with_scripted_usage(llm_api: OpenAIEmulator) -> None:
    llm_api.push(text("Redis  memory is\nfine.", usage=Usage(120, 7)))
    chunks = [c async for c in chat(llm_api).astream("status?")]
    assert "".join(c.content for c in chunks) == "Redis  memory is\nfine."
    assert sum(1 for c in chunks if c.content) == 4
    full = sum(chunks[1:], chunks[0])
    assert full.usage_metadata["input_tokens"] == 120
    assert full.usage_metadata["total_tokens"] == 127


async def test_a_script_function_answers_from_the_conversation(llm_api: OpenAIEmulator) -> None:
    def model(request: dict) -> object:
        if tool_results(request):
            return text(f"Saw: {tool_results(request)[-1]['content']}")
        return tool_call("redis_info", {"section": last_user_text(request)})

    llm_api.respond_with(model)
    bound = chat(llm_api).bind_tools([redis_info])
    first = await bound.ainvoke("clients")
    assert first.tool_calls[0]["args"] == {"section": "clients"}
    reply = await bound.ainvoke(["clients", first,
                                 ToolMessage("connected_clients:3",
                                             tool_call_id=first.tool_calls[0]["id"])])
    assert reply.content == "Saw: connected_clients:3"


async def test_wrong_key_gets_401(llm_api: OpenAIEmulator) -> None:
    llm_api.push(text("never sent"))
    with pytest.raises(openai.AuthenticationError) as caught:
        await chat(llm_api, api_key="sk-wrong-key-123456").ainvoke("hi")
    assert "Incorrect API key provided: sk-*****3456." in str(caught.value)
    assert "wrong-key" not in str(caught.value)
    assert caught.value.body["code"] == "invalid_api_key"
    assert llm_api.remaining == 1


async def test_scripted_http_errors_and_delays(llm_api: OpenAIEmulator) -> None:
    llm_api.push(http_error(429, retry_after=1), Delay(0.2), text("late"))
    with pytest.raises(openai.RateLimitError) as caught:
        await chat(llm_api).ainvoke("hi")
    assert caught.value.response.headers["retry-after"] == "1"
    assert caught.value.body["code"] == "rate_limit_exceeded"
    started = time.monotonic()
    assert (await chat(llm_api).ainvoke("hi")).content == "late"
    assert time.monotonic() - started >= 0.2


async def test_requests_the_real_api_rejects_are_rejected(llm_api: OpenAIEmulator) -> None:
    llm_api.push(tool_call("redis_info", {}))
    bound = chat(llm_api).bind_tools([redis_info])
    proposal = await bound.ainvoke("hi")
    result = ToolMessage("used_memory:1", tool_call_id=proposal.tool_calls[0]["id"])
    for history in (["hi", proposal], ["hi", proposal, "and then?"],
                    ["hi", proposal, "and then?", result]):
        with pytest.raises(openai.BadRequestError, match="did not have response messages"):
            await bound.ainvoke(history)

    dotted = {"type": "function", "function": {"name": "redis.info", "parameters": {}}}
    with pytest.raises(openai.BadRequestError, match="does not match pattern"):
        await chat(llm_api).bind_tools([dotted]).ainvoke("hi")
    assert llm_api.remaining == 0


async def test_an_exhausted_script_fails_loudly(llm_api: OpenAIEmulator) -> None:
    with pytest.raises(openai.InternalServerError, match="script exhausted"):
        await chat(llm_api).ainvoke("hi")
    [error] = llm_api.errors
    assert error.startswith("script exhausted at chat request #1; push() more steps")


async def test_embeddings_are_deterministic_and_word_sensitive(llm_api: OpenAIEmulator) -> None:
    client = openai.AsyncOpenAI(base_url=llm_api.base_url, api_key=API_KEY, max_retries=0)
    texts = ["redis latency high", "redis latency spike", "rotate tls certificate"]
    result = await client.embeddings.create(model="text-embedding-3-small", input=texts,
                                            dimensions=256)
    again = await client.embeddings.create(model="text-embedding-3-small", input=texts[0],
                                           dimensions=256, encoding_format="float")
    a, b, c = (d.embedding for d in result.data)
    assert len(a) == 256 and math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-5)
    assert again.data[0].embedding == pytest.approx(a, abs=1e-6)
    assert dot(a, b) > 0.5 > abs(dot(a, c))
    models = await client.models.list()
    assert "gpt-4o-mini" in [m.id for m in models.data]
    await client.close()


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_all_text_holds_everything_the_model_was_shown(llm_api: OpenAIEmulator) -> None:
    llm_api.push(text("ok"))
    await chat(llm_api).ainvoke("the password is canary-51c0ffee")
    assert "the password is canary-51c0ffee" in llm_api.all_text()
    assert API_KEY not in llm_api.all_text()
