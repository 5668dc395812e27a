"""Drive herd with the official `openai` SDK's Responses API (as Codex does).

Usage: responses_check.py BASE_URL MODEL THINKING_MODEL

Every check prints "ok <name>"; the first failure raises.
"""
import json
import sys

import openai

base, model, thinking_model = sys.argv[1], sys.argv[2], sys.argv[3]


def ok(name):
    print("ok", name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

cl = openai.OpenAI(base_url=base + "/v1", api_key="herd", max_retries=0)

# ---- plain -----------------------------------------------------------------
raw = cl.responses.with_raw_response.create(model=model, input="Tell me about herds.", instructions="Be terse.")
r = raw.parse()
check(r.object == "response" and r.status == "completed", f"not completed: {r}")
check(r.output_text.startswith("Hello from"), f"output_text: {r.output_text!r}")
check(r.usage and r.usage.output_tokens > 0 and r.usage.input_tokens > 0, f"usage: {r.usage}")
check(raw.headers.get("x-herd-node"), "no x-herd-node")
check(r.model in (model, raw.headers.get("x-herd-model")), f"the response names {r.model!r}")
print("served", raw.headers.get("x-herd-model"), "by", raw.headers.get("x-herd-node"), flush=True)
ok("responses create")

# ---- streamed --------------------------------------------------------------
kinds, parts, done = [], [], None
for ev in cl.responses.create(model=model, input=[{"role": "user", "content": "Tell me about herds."}], instructions="Be terse.", stream=True):
    kinds.append(ev.type)
    if ev.type == "response.output_text.delta":
        parts.append(ev.delta)
    if ev.type == "response.completed":
        done = ev.response
for k in ["response.created", "response.output_item.added", "response.output_text.delta", "response.output_item.done", "response.completed"]:
    check(k in kinds, f"stream lacks {k}: {kinds}")
check(kinds[0] == "response.created" and kinds[-1] == "response.completed", f"order: {kinds}")
check("".join(parts) == r.output_text, f"streamed text differs: {''.join(parts)!r} vs {r.output_text!r}")
check(done is not None and done.output_text == r.output_text, "completed response lacks the text")
ok("responses stream")

# ---- a function tool, round trip ------------------------------------------
t1 = cl.responses.create(model=model, input="Weather in Paris?", tools=[TOOL])
calls = [o for o in t1.output if o.type == "function_call"]
check(len(calls) == 1 and calls[0].name == "get_weather", f"no function call: {t1.output}")
args = json.loads(calls[0].arguments)
check("city" in args and calls[0].call_id, f"call: {calls[0]}")
t2 = cl.responses.create(
    model=model,
    tools=[TOOL],
    input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather", "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "rainy, 12C"},
    ],
)
check("rainy, 12C" in t2.output_text, f"tool output not used: {t2.output_text!r}")
ok("responses function tool")

args_deltas = []
for ev in cl.responses.create(model=model, input="Weather in Paris?", tools=[TOOL], stream=True):
    if ev.type == "response.function_call_arguments.delta":
        args_deltas.append(ev.delta)
check(args_deltas and "city" in "".join(args_deltas), "no function_call_arguments deltas")
ok("responses function tool stream")

# ---- reasoning ↔ think -----------------------------------------------------
th = cl.responses.create(model=thinking_model, input="Why?", reasoning={"effort": "high"})
kinds = [o.type for o in th.output]
check("reasoning" in kinds and "message" in kinds, f"no reasoning item: {kinds}")
ok("responses reasoning")

# ---- stateless: previous_response_id is refused clearly --------------------
try:
    cl.responses.create(model=model, input="and then?", previous_response_id=r.id)
    raise AssertionError("previous_response_id did not fail")
except openai.BadRequestError as e:
    check("previous_response_id" in str(e), f"unclear error: {e}")
ok("responses stateless")

try:
    cl.responses.create(model="no-such-model:1b", input="hi")
    raise AssertionError("unknown model did not fail")
except openai.NotFoundError as e:
    check("not found" in str(e), f"unexpected error: {e}")
ok("responses unknown model")

print("all responses checks passed", flush=True)
