"""Drive herd with the official `ollama` and `openai` Python SDKs.

Usage: sdk_check.py BASE_URL CHAT_MODEL EMBED_MODEL

Every check prints "ok <name>"; the first failure raises, so the exit code
is non-zero and the message says what differed.
"""
import json
import sys

import ollama
import openai

base, chat_model, embed_model = sys.argv[1], sys.argv[2], sys.argv[3]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


def ok(name):
    print("ok", name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


# ---- ollama SDK -------------------------------------------------------------
oc = ollama.Client(host=base)

names = [m.model for m in oc.list().models]
check(chat_model in names and embed_model in names, f"list() misses models: {names}")
ok("ollama list")

msgs = [{"role": "user", "content": "Tell me about herds."}]
full = oc.chat(model=chat_model, messages=msgs, stream=False)
check(full.done and full.message.role == "assistant", f"chat not done: {full}")
check(full.message.content.startswith("Hello from"), f"unexpected content: {full.message.content!r}")
check((full.eval_count or 0) > 0 and (full.prompt_eval_count or 0) > 0, "chat stats missing")
ok("ollama chat")

parts, last = [], None
for chunk in oc.chat(model=chat_model, messages=msgs, stream=True):
    parts.append(chunk.message.content)
    last = chunk
check(last is not None and last.done, "stream did not end with done")
check("".join(parts) == full.message.content, f"streamed content differs: {''.join(parts)!r} vs {full.message.content!r}")
ok("ollama chat stream")

gen = oc.generate(model=chat_model, prompt="Say something.", stream=False)
gparts = [c.response for c in oc.generate(model=chat_model, prompt="Say something.", stream=True)]
check(gen.done and gen.response and "".join(gparts) == gen.response, "generate stream/non-stream differ")
ok("ollama generate")

emb = oc.embed(model=embed_model, input=["first text", "second text"])
check(len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 0, f"bad embeddings: {len(emb.embeddings)}")
check(emb.embeddings[0] != emb.embeddings[1], "different texts gave the same vector")
ok("ollama embed")

r1 = oc.chat(model=chat_model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL], stream=False)
calls = r1.message.tool_calls or []
check(len(calls) == 1 and calls[0].function.name == "get_weather", f"no tool call: {r1.message}")
args = calls[0].function.arguments
check(isinstance(args, dict) and "city" in args and "days" in args, f"bad arguments: {args}")
follow = [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": "", "tool_calls": [c.model_dump() for c in calls]},
    {"role": "tool", "content": "sunny, 21C", "tool_name": "get_weather"},
]
r2 = oc.chat(model=chat_model, messages=follow, tools=[WEATHER_TOOL], stream=False)
check("sunny, 21C" in r2.message.content, f"tool result not used: {r2.message.content!r}")
ok("ollama tool round trip")

try:
    oc.chat(model="no-such-model:1b", messages=msgs, stream=False)
    raise AssertionError("unknown model did not fail")
except ollama.ResponseError as e:
    check(e.status_code == 404 and "not found" in str(e.error), f"unexpected error: {e.status_code} {e.error}")
ok("ollama unknown model")

# ---- openai SDK -------------------------------------------------------------
cl = openai.OpenAI(base_url=base + "/v1", api_key="herd", max_retries=0)

ids = [m.id for m in cl.models.list().data]
check(chat_model in ids and embed_model in ids, f"models.list misses models: {ids}")
ok("openai models")

c = cl.chat.completions.create(model=chat_model, messages=msgs)
text = c.choices[0].message.content
check(text == full.message.content, f"openai content differs from ollama's: {text!r}")
check(c.usage and c.usage.completion_tokens > 0 and c.choices[0].finish_reason == "stop", f"usage/finish wrong: {c}")
ok("openai chat")

parts, usage, first_role = [], None, None
for ch in cl.chat.completions.create(model=chat_model, messages=msgs, stream=True, stream_options={"include_usage": True}):
    if ch.usage:
        usage = ch.usage
    for choice in ch.choices:
        if first_role is None and choice.delta.role:
            first_role = choice.delta.role
        if choice.delta.content:
            parts.append(choice.delta.content)
check(first_role == "assistant", "no role in the first delta")
check("".join(parts) == text, f"openai stream differs: {''.join(parts)!r}")
check(usage is not None and usage.completion_tokens == c.usage.completion_tokens, f"usage chunk wrong: {usage}")
ok("openai chat stream")

t1 = cl.chat.completions.create(model=chat_model, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[WEATHER_TOOL])
tc = t1.choices[0].message.tool_calls
check(t1.choices[0].finish_reason == "tool_calls" and tc and tc[0].function.name == "get_weather", f"no tool call: {t1}")
targs = json.loads(tc[0].function.arguments)
check("city" in targs, f"bad arguments: {targs}")
t2 = cl.chat.completions.create(
    model=chat_model,
    tools=[WEATHER_TOOL],
    messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [tc[0].model_dump()]},
        {"role": "tool", "tool_call_id": tc[0].id, "content": "rainy, 12C"},
    ],
)
check("rainy, 12C" in (t2.choices[0].message.content or ""), f"tool result not used: {t2}")
ok("openai tool round trip")

e = cl.embeddings.create(model=embed_model, input=["one", "two"])
check(len(e.data) == 2 and len(e.data[0].embedding) > 0 and e.data[1].index == 1, "bad openai embeddings")
ok("openai embeddings")

comp = cl.completions.create(model=chat_model, prompt="Say something.")
check(comp.choices[0].text == gen.response, f"completions differ from generate: {comp.choices[0].text!r}")
ok("openai completions")

try:
    cl.chat.completions.create(model="no-such-model:1b", messages=msgs)
    raise AssertionError("unknown model did not fail")
except openai.NotFoundError as err:
    check("not found" in str(err), f"unexpected error: {err}")
ok("openai unknown model")

print("all sdk checks passed", flush=True)
