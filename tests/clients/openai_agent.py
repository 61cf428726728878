"""The official `openai` package running agent loops through `reins serve`.

Usage: python3 openai_agent.py BASE_URL

Each check drives Reins the way an application would: a manual tool loop
over several turns (the SDK's own message objects go back as they came), a
streamed tool call, a streamed answer with `include_usage`, gates that deny
and escalate in the middle of a loop, and requests Reins must refuse.
Prints one line per check and a closing "N passed, N failed".
"""

import json
import sys

import openai
from openai import OpenAI
from checks import check, run

BASE = sys.argv[1]
client = OpenAI(base_url=BASE, api_key="unused-when-auth-is-off", max_retries=0, timeout=30)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
REFUND = {
    "type": "function",
    "function": {
        "name": "issue_refund",
        "description": "Refund an order",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}, "amount": {"type": "number"}},
            "required": ["order", "amount"],
        },
    },
}


def get_weather(city):
    return {"Oslo": "cold and clear", "Paris": "mild"}.get(city, "unknown")




@check
def manual_tool_loop_over_two_turns():
    messages = [
        {"role": "system", "content": "You are a weather assistant."},
        {"role": "user", "content": "What is the weather in Oslo?"},
    ]
    turns = 0
    while True:
        turns += 1
        assert turns <= 4, "the loop does not end"
        r = client.chat.completions.create(
            model="assistant",
            messages=messages,
            tools=[WEATHER],
            temperature=0.3,
            seed=7,
            max_tokens=200,
            user="alice",
        )
        choice = r.choices[0]
        if not choice.message.tool_calls:
            break
        assert choice.finish_reason == "tool_calls", choice
        # The SDK's own message object goes back into the conversation.
        messages.append(choice.message)
        for call in choice.message.tool_calls:
            args = json.loads(call.function.arguments)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": get_weather(args["city"])})
    assert turns == 2, turns
    assert choice.finish_reason == "stop", choice
    assert choice.message.content == "In Oslo the weather is cold and clear.", choice.message.content
    assert r.usage.total_tokens > 0


@check
def streamed_tool_call_and_usage():
    stream = client.chat.completions.create(
        model="assistant",
        messages=[{"role": "user", "content": "Weather in Paris, please."}],
        tools=[WEATHER],
        stream=True,
        stream_options={"include_usage": True},
    )
    calls = {}
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                c = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                c["id"] = d.id or c["id"]
                if d.function is not None:
                    c["name"] += d.function.name or ""
                    c["arguments"] += d.function.arguments or ""
    assert finish == "tool_calls", finish
    assert len(calls) == 1, calls
    call = calls[0]
    assert call["name"] == "get_weather" and call["id"], call
    assert json.loads(call["arguments"]) == {"city": "Paris"}, call
    assert usage is not None and usage.total_tokens == 18, usage


@check
def streamed_prose_with_include_usage():
    with client.chat.completions.stream(
        model="assistant",
        messages=[{"role": "user", "content": "hello there"}],
        stream_options={"include_usage": True},
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "You said: hello there", final
    assert final.usage is not None and final.usage.prompt_tokens == 11, final.usage


@check
def a_gate_that_denies_mid_loop_is_told_to_the_model():
    r = client.chat.completions.create(
        model="refunds",
        messages=[{"role": "user", "content": "Refund order A-1, amount -5"}],
        tools=[REFUND],
        metadata={"tenant": "t-deny"},
    )
    assert r.choices[0].finish_reason == "stop", r
    assert r.choices[0].message.content == "I cannot do that: it was not allowed.", r.choices[0].message
    assert not r.choices[0].message.tool_calls


@check
def an_allowed_call_comes_back_to_the_client_with_its_id():
    r = client.chat.completions.create(
        model="refunds",
        messages=[{"role": "user", "content": "Refund order A-1, amount 20"}],
        tools=[REFUND],
        metadata={"tenant": "t-ok"},
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.id.startswith("call_up_"), call
    assert json.loads(call.function.arguments) == {"order": "A-1", "amount": 20}, call


@check
def a_gate_that_escalates_mid_loop_holds_the_call_for_a_human():
    raw = client.chat.completions.with_raw_response.create(
        model="refunds",
        messages=[{"role": "user", "content": "Refund order A-1, amount 2000"}],
        tools=[REFUND],
        metadata={"tenant": "t-big"},
    )
    assert raw.status_code == 202, raw.status_code
    r = raw.parse()
    assert r.choices[0].finish_reason == "awaiting_approval", r
    reins = r.model_extra["reins"]
    assert reins["status"] == "awaiting_approval" and len(reins["approvals"]) == 1, reins


def bad_request(param, **kwargs):
    try:
        client.chat.completions.create(model="assistant", **kwargs)
    except openai.BadRequestError as e:
        body = e.body if isinstance(e.body, dict) else {}
        assert body.get("param") == param, (param, e.body)
        return
    raise AssertionError(f"{param}: no 400")


@check
def malformed_requests_are_refused_by_name():
    bad_request(
        "messages[1].tool_call_id",
        messages=[
            {"role": "user", "content": "x"},
            {"role": "tool", "tool_call_id": "call_nobody", "content": "r"},
        ],
    )
    bad_request("n", messages=[{"role": "user", "content": "x"}], n=2)
    bad_request("temperature", messages=[{"role": "user", "content": "x"}], temperature=7)
    bad_request(
        "frobnicate",
        messages=[{"role": "user", "content": "x"}],
        extra_body={"frobnicate": True},
    )
    bad_request(
        "tool_choice",
        messages=[{"role": "user", "content": "x"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )


run()
