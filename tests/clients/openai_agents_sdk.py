"""The OpenAI Agents SDK (`openai-agents`) through `reins serve`: an agent
with a function tool on `OpenAIChatCompletionsModel`, run by `Runner`.

Usage: python3 openai_agents_sdk.py BASE_URL
Prints one line per check and a closing "N passed, N failed".
"""

import sys

from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI
from checks import check, run

BASE = sys.argv[1]
set_tracing_disabled(True)
calls = []


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    calls.append(city)
    return {"Oslo": "cold and clear"}.get(city, "unknown")


client = AsyncOpenAI(base_url=BASE, api_key="unused", max_retries=0, timeout=30)


@check
def agent_with_a_function_tool():
    agent = Agent(
        name="weather",
        instructions="You answer weather questions with the get_weather tool.",
        tools=[get_weather],
        model=OpenAIChatCompletionsModel(model="assistant", openai_client=client),
    )
    result = Runner.run_sync(agent, "What is the weather in Oslo?")
    assert calls == ["Oslo"], calls
    assert result.final_output == "In Oslo the weather is cold and clear.", result.final_output


@check
def streamed_agent_run():
    import asyncio

    async def go():
        # A client of this event loop's own (Runner.run_sync used another loop).
        own = AsyncOpenAI(base_url=BASE, api_key="unused", max_retries=0, timeout=30)
        agent = Agent(
            name="echo",
            instructions="Be brief.",
            model=OpenAIChatCompletionsModel(model="assistant", openai_client=own),
        )
        run = Runner.run_streamed(agent, "ping")
        async for _ in run.stream_events():
            pass
        return run.final_output

    out = asyncio.run(go())
    assert out == "You said: ping", out


run()
