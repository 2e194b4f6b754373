"""The official Anthropic SDK against Tollbooth's /v1/messages: non-stream and stream,
with OpenAI- and Anthropic-protocol upstreams behind it.

Run by tests/tests/e2e_proxy.rs with BASE_URL and KEY set; exits non-zero on failure.
"""
import os
import sys

import anthropic

client = anthropic.Anthropic(base_url=os.environ["BASE_URL"], api_key=os.environ["KEY"], max_retries=0)
messages = [{"role": "user", "content": "hello there world"}]

for model in ["chat-an", "chat-oa", "chat-gm"]:
    m = client.messages.create(model=model, max_tokens=100, messages=messages)
    assert m.content[0].text == "tok0 tok1 tok2 ", (model, m)
    assert m.stop_reason == "end_turn", (model, m)
    assert m.usage.input_tokens == 3 and m.usage.output_tokens == 3, (model, m.usage)

    with client.messages.stream(model=model, max_tokens=100, messages=messages) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 tok2 ", (model, text)
    assert final.stop_reason == "end_turn", (model, final)
    assert final.usage.output_tokens == 3, (model, final.usage)

tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}}}]
for model in ["chat-an-tools", "chat-oa-tools"]:
    m = client.messages.create(model=model, max_tokens=100, messages=messages, tools=tools)
    block = next(b for b in m.content if b.type == "tool_use")
    assert block.name == "get_weather" and block.input == {"location": "Paris"}, (model, m)
    assert m.stop_reason == "tool_use", (model, m)

try:
    client.messages.create(model="premium", max_tokens=10, messages=messages)
    sys.exit("expected PermissionDeniedError")
except anthropic.PermissionDeniedError:
    pass

print("anthropic sdk ok")
