"""The official openai SDK's Responses client against a server: `responses.create` and
`responses.stream` (which checks event order, item identities and sequence numbers
strictly), for text and for a tool call.

Environment: BASE_URL (ending in /v1), KEY, MODEL (text answers), TOOL_MODEL (answers with
a call to the first tool), EXPECT_TEXT (the full answer text for MODEL).
"""
import json
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["BASE_URL"], api_key=os.environ["KEY"], max_retries=0)
model = os.environ["MODEL"]
tool_model = os.environ["TOOL_MODEL"]
expect = os.environ["EXPECT_TEXT"]
tools = [{
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"], "additionalProperties": False},
    "strict": False,
}]

# Non-stream text.
r = client.responses.create(model=model, input="Say hello", instructions="Be brief.")
assert r.object == "response", r
assert r.status == "completed", r.status
assert r.output_text == expect, (r.output_text, expect)
assert r.usage is not None and r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage

# Streamed text through the strict stream helper.
deltas = []
types = []
with client.responses.stream(model=model, input=[{"role": "user", "content": "Say hello"}]) as stream:
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
    final = stream.get_final_response()
assert types[0] == "response.created", types
assert types[-1] == "response.completed", types
assert "".join(deltas) == expect, (deltas, expect)
assert final.output_text == expect, final.output_text
assert final.usage is not None and final.usage.total_tokens > 0, final.usage

# Non-stream tool call.
r = client.responses.create(model=tool_model, input="Weather in Paris?", tools=tools)
calls = [o for o in r.output if o.type == "function_call"]
assert len(calls) == 1, r.output
assert calls[0].name == "get_weather", calls[0]
assert json.loads(calls[0].arguments) == {"location": "Paris"}, calls[0].arguments

# Streamed tool call, then the tool's result sent back.
arg_deltas = []
with client.responses.stream(model=tool_model, input="Weather in Paris?", tools=tools) as stream:
    for event in stream:
        if event.type == "response.function_call_arguments.delta":
            arg_deltas.append(event.delta)
    final = stream.get_final_response()
calls = [o for o in final.output if o.type == "function_call"]
assert len(calls) == 1, final.output
call = calls[0]
assert json.loads(call.arguments) == {"location": "Paris"}, call.arguments
assert "".join(arg_deltas) == call.arguments, (arg_deltas, call.arguments)
# The parsed arguments of a declared tool are available (input_tools given).
follow = [
    {"role": "user", "content": "Weather in Paris?"},
    {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
    {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"temp_c": 18})},
]
with client.responses.stream(model=model, input=follow, tools=tools) as stream:
    final = stream.get_final_response()
assert final.output_text == expect, final.output_text
print("ok")
