"""The official OpenAI SDK against Tollbooth: non-stream, stream (with usage) and tools.

Run by tests/tests/e2e_proxy.rs with BASE_URL and KEY set; exits non-zero on failure.
"""
import json
import os
import sys

from openai import OpenAI

client = OpenAI(base_url=os.environ["BASE_URL"] + "/v1", api_key=os.environ["KEY"], max_retries=0)
messages = [{"role": "user", "content": "hello there world"}]

# Non-stream, for each upstream protocol.
for model in ["chat-oa", "chat-an", "chat-gm"]:
    r = client.chat.completions.create(model=model, messages=messages)
    assert r.choices[0].message.content == "tok0 tok1 tok2 ", (model, r)
    assert r.choices[0].finish_reason == "stop", (model, r)
    assert r.usage.prompt_tokens == 3 and r.usage.completion_tokens == 3, (model, r.usage)

# Stream with usage.
for model in ["chat-oa", "chat-an", "chat-gm"]:
    text, usage, finish = "", None, None
    stream = client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == "tok0 tok1 tok2 ", (model, text)
    assert finish == "stop", (model, finish)
    assert usage is not None and usage.completion_tokens == 3, (model, usage)

# Tools, non-stream and stream.
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}}}}]
for model in ["chat-oa-tools", "chat-an-tools", "chat-gm-tools"]:
    r = client.chat.completions.create(model=model, messages=messages, tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather", (model, r)
    assert json.loads(call.function.arguments) == {"location": "Paris"}, (model, r)
    assert r.choices[0].finish_reason == "tool_calls", (model, r)

    name, args, finish = "", "", None
    for chunk in client.chat.completions.create(model=model, messages=messages, tools=tools, stream=True):
        for c in chunk.choices:
            for tc in c.delta.tool_calls or []:
                name += tc.function.name or ""
                args += tc.function.arguments or ""
            finish = c.finish_reason or finish
    assert name == "get_weather" and json.loads(args) == {"location": "Paris"}, (model, name, args)
    assert finish == "tool_calls", (model, finish)

# Models list and a typed error.
ids = [m.id for m in client.models.list()]
assert "chat-oa" in ids and "premium" not in ids, ids
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    sys.exit("expected NotFoundError")
except Exception as e:  # noqa: BLE001
    assert type(e).__name__ == "NotFoundError", repr(e)

print("openai sdk ok")
