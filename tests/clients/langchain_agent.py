"""`langchain-openai` through `reins serve`: `ChatOpenAI(base_url=...)` with
`bind_tools`, run as a tool loop the way LangChain applications write it.

Usage: python3 langchain_agent.py BASE_URL
Prints one line per check and a closing "N passed, N failed".
"""

import sys

from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from checks import check, run

BASE = sys.argv[1]


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return {"Oslo": "cold and clear", "Lisbon": "sunny"}.get(city, "unknown")


llm = ChatOpenAI(model="assistant", base_url=BASE, api_key="unused", temperature=0, max_retries=0, timeout=30)


@check
def bind_tools_loop():
    agent = llm.bind_tools([get_weather])
    messages = [SystemMessage("You answer weather questions."), HumanMessage("How is the weather in Lisbon?")]
    ai = agent.invoke(messages)
    assert ai.tool_calls, ai
    call = ai.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"] == {"city": "Lisbon"}, call
    messages.append(ai)
    messages.append(ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]))
    final = agent.invoke(messages)
    assert not final.tool_calls, final
    assert final.content == "In Lisbon the weather is sunny.", final.content
    assert final.usage_metadata["total_tokens"] == 18, final.usage_metadata


@check
def plain_invoke_and_stream():
    assert llm.invoke("good morning").content == "You said: good morning"
    text = "".join(chunk.content for chunk in llm.stream("good night"))
    assert text == "You said: good night", text


run()
