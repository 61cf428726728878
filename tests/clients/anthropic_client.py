"""Drives a running `reins serve` with the official Anthropic Python client.

Usage: python3 anthropic_client.py BASE_URL TOKEN

BASE_URL is the server's root (the SDK appends /v1/messages); TOKEN is a
`run` token of the server. Its pipelines sit on an OpenAI-compatible
upstream that the Rust test runs and inspects afterwards.

Each check asserts on what the client object returns, the way an application
would see it. Prints one line per check and a closing "N passed, N failed".
"""

import base64
import json
import sys

import anthropic
from anthropic import Anthropic
from checks import check, run

BASE, TOKEN = sys.argv[1], sys.argv[2]
client = Anthropic(base_url=BASE, api_key=TOKEN, max_retries=0, timeout=30)

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "required": ["city"],
        "properties": {"city": {"type": "string"}, "units": {"type": "string"}, "detail": {"type": "string"}},
    },
}
# A 1x1 PNG.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
    )
).decode()



@check
def plain_message():
    r = client.messages.create(
        model="chat",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello"}],
        metadata={"user_id": "user-42"},
    )
    assert r.type == "message" and r.role == "assistant", r
    assert r.id.startswith("msg_"), r.id
    assert r.model == "chat", r.model
    assert [b.type for b in r.content] == ["text"], r.content
    assert r.content[0].text == "Hello from upstream", r.content
    assert r.stop_reason == "end_turn", r.stop_reason
    assert r.stop_sequence is None
    assert (r.usage.input_tokens, r.usage.output_tokens) == (11, 7), r.usage
    assert r.reins["status"] == "completed" and r.reins["attempts"] == 1, r.reins  # extra fields stay reachable


@check
def the_answer_names_its_run():
    raw = client.messages.with_raw_response.create(
        model="chat", max_tokens=10, messages=[{"role": "user", "content": "hello"}]
    )
    r = raw.parse()
    run_id = raw.headers["x-reins-run-id"]
    assert raw.headers["x-reins-status"] == "completed", dict(raw.headers)
    assert r.reins["run_id"] == run_id and r.id == f"msg_{run_id}", (r.id, r.reins)


@check
def tool_loop_over_two_turns():
    question = {"role": "user", "content": "what is the weather in Paris?"}
    first = client.messages.create(model="chat", max_tokens=100, tools=[WEATHER], messages=[question])
    assert first.stop_reason == "tool_use", first
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1, first.content
    use = uses[0]
    assert use.id == "call_up_1", use.id  # the model's own id, kept
    assert (use.name, use.input) == ("get_weather", {"city": "Paris"}), use
    second = client.messages.create(
        model="chat",
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}]},
        ],
    )
    assert second.stop_reason == "end_turn", second
    assert second.content[0].text == "Tool said: 18C and sunny", second.content


@check
def a_failed_tool_result_is_marked():
    r = client.messages.create(
        model="chat",
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "what is the weather in Atlantis?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_err", "name": "get_weather", "input": {"city": "Atlantis"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_err", "is_error": True,
                 "content": [{"type": "text", "text": "no such city"}]},
            ]},
        ],
    )
    assert r.content[0].text == "Tool said: [tool error] no such city", r.content


@check
def tool_choice_names_a_tool():
    r = client.messages.create(
        model="chat",
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "forced: Oslo"}],
    )
    assert r.stop_reason == "tool_use", r
    assert [(b.type, b.name, b.input) for b in r.content] == [("tool_use", "get_weather", {"city": "Oslo"})], r.content


@check
def tool_choice_any():
    r = client.messages.create(
        model="chat",
        max_tokens=100,
        tools=[WEATHER],
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "any tool: Rome"}],
    )
    assert r.stop_reason == "tool_use" and r.content[0].input == {"city": "Rome"}, r.content


@check
def an_image_reaches_the_model():
    r = client.messages.create(
        model="chat",
        max_tokens=100,
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL}},
            {"type": "text", "text": "describe this image"},
        ]}],
    )
    assert r.content[0].text == "I see 1 image(s)", r.content


@check
def streaming_text():
    pieces = []
    with client.messages.stream(
        model="chat",
        max_tokens=500,
        messages=[{"role": "user", "content": "tell me a story"}],
    ) as stream:
        for text in stream.text_stream:
            pieces.append(text)
        final = stream.get_final_message()
    story = "".join(pieces)
    assert story.startswith("Once upon a time") and len(story) > 128, story
    assert len(pieces) >= 3, pieces  # in pieces, not one blob
    assert final.content[0].text == story, final.content
    assert final.stop_reason == "end_turn", final.stop_reason
    assert (final.usage.input_tokens, final.usage.output_tokens) == (11, 7), final.usage
    assert final.id.startswith("msg_") and final.model == "chat", final


@check
def streaming_a_tool_use():
    events = []
    with client.messages.stream(
        model="chat",
        max_tokens=500,
        tools=[WEATHER],
        messages=[{"role": "user", "content": "stream the weather in Paris"}],
    ) as stream:
        for event in stream:
            events.append(event.type)
        final = stream.get_final_message()
    assert events.count("input_json") >= 2, events  # the arguments came in pieces
    assert final.stop_reason == "tool_use", final.stop_reason
    use = final.content[0]
    assert use.type == "tool_use" and use.id == "call_up_2" and use.name == "get_weather", use
    assert use.input == {"city": "Paris", "units": "celsius", "detail": "hourly, with wind and humidity for the whole afternoon"}, use.input


REFUND = {
    "name": "issue_refund",
    "description": "Refund an order",
    "input_schema": {
        "type": "object",
        "required": ["order", "amount"],
        "properties": {"order": {"type": "string"}, "amount": {"type": "number"}},
    },
}


@check
def a_held_action_is_a_202_awaiting_approval():
    raw = client.messages.with_raw_response.create(
        model="refunds",
        max_tokens=100,
        tools=[REFUND],
        messages=[{"role": "user", "content": "refund order A-1 in full"}],
    )
    assert raw.status_code == 202, raw.status_code
    r = raw.parse()
    assert r.stop_reason == "awaiting_approval", r.stop_reason
    assert r.reins["status"] == "awaiting_approval" and len(r.reins["approvals"]) == 1, r.reins


@check
def a_held_action_streams_too():
    with client.messages.stream(
        model="refunds",
        max_tokens=100,
        tools=[REFUND],
        messages=[{"role": "user", "content": "refund order A-1 in full, streamed"}],
        # Another tenant: the first held refund already holds this one's budget.
        metadata={"user_id": "user-9", "tenant": "other"},
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "awaiting_approval", final.stop_reason
    assert final.reins["status"] == "awaiting_approval", final.reins


@check
def a_json_pipeline_answers_compact_json():
    r = client.messages.create(model="extract", max_tokens=100, messages=[{"role": "user", "content": "give me json"}])
    assert r.content[0].text == '{"answer":42}', r.content


@check
def unrepaired_output_is_a_422_with_violations():
    try:
        client.messages.create(model="extract", max_tokens=100, messages=[{"role": "user", "content": "give me bad json"}])
    except anthropic.UnprocessableEntityError as e:
        assert e.status_code == 422
        body = e.body or {}
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        assert any(v["path"] == "/answer" for v in body["error"]["violations"]), body
        assert body["error"]["reins"]["status"] == "failed", body
    else:
        raise AssertionError("expected a 422")


@check
def an_unknown_model_is_not_found():
    try:
        client.messages.create(model="no-such-pipeline", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    except anthropic.NotFoundError as e:
        assert e.status_code == 404
        assert e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error", e.body
        assert "no-such-pipeline" in e.body["error"]["message"], e.body
    else:
        raise AssertionError("expected a 404")


@check
def a_malformed_field_is_a_400_naming_it():
    try:
        client.messages.create(model="chat", max_tokens=10, messages=[{"role": "user", "content": "hi"}], extra_body={"top_k": 5})
    except anthropic.BadRequestError as e:
        assert e.body["error"]["type"] == "invalid_request_error", e.body
        assert e.body["error"]["message"].startswith("top_k"), e.body
    else:
        raise AssertionError("expected a 400")
    try:
        client.messages.create(
            model="chat",
            max_tokens=10,
            messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_nowhere", "content": "42"}]}],
        )
    except anthropic.BadRequestError as e:
        assert "toolu_nowhere" in e.body["error"]["message"], e.body
    else:
        raise AssertionError("expected a 400")


@check
def the_key_can_come_as_x_api_key():
    keyed = Anthropic(base_url=BASE, api_key="unused", max_retries=0, timeout=30)
    keyed = keyed.with_options(default_headers={"x-api-key": TOKEN, "Authorization": "Bearer not-a-token"})
    r = keyed.messages.create(model="chat", max_tokens=10, messages=[{"role": "user", "content": "hello"}])
    assert r.content[0].text == "Hello from upstream", r.content


@check
def a_wrong_key_is_an_authentication_error():
    wrong = Anthropic(base_url=BASE, api_key="not-the-token", max_retries=0, timeout=30)
    try:
        wrong.messages.create(model="chat", max_tokens=10, messages=[{"role": "user", "content": "hello"}])
    except anthropic.AuthenticationError as e:
        assert e.status_code == 401 and e.body["error"]["type"] == "authentication_error", e.body
    else:
        raise AssertionError("expected a 401")


run()
