"""Drive herd with the official `anthropic` Python SDK (Messages API).

Usage: anthropic_check.py BASE_URL MODEL THINKING_MODEL

MODEL must be a model (or an alias of one) with tool calling; THINKING_MODEL
one that reasons. Every check prints "ok <name>"; the first failure raises,
so the exit code is non-zero and the message says what differed. The SDK
sends its own headers (x-api-key or Authorization, anthropic-version), as
Claude Code does.
"""
import base64
import struct
import sys
import zlib

import anthropic

base, model, thinking_model = sys.argv[1], sys.argv[2], sys.argv[3]


def ok(name):
    print("ok", name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def png_1x1():
    """A real 1x1 PNG, built here (no fixture file)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00\xff\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}

client = anthropic.Anthropic(base_url=base, api_key="herd-test", max_retries=0)
msgs = [{"role": "user", "content": "Tell me about herds."}]

# ---- create ----------------------------------------------------------------
raw = client.messages.with_raw_response.create(
    model=model, max_tokens=256, system="You are terse.", messages=msgs
)
msg = raw.parse()
check(msg.type == "message" and msg.role == "assistant", f"not a message: {msg}")
texts = [b.text for b in msg.content if b.type == "text"]
check(len(texts) == 1 and texts[0].startswith("Hello from"), f"unexpected content: {msg.content}")
check(msg.stop_reason in ("end_turn", "max_tokens"), f"stop_reason: {msg.stop_reason}")
check(msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0, f"usage: {msg.usage}")
check(raw.headers.get("x-herd-node"), "no x-herd-node header")
served = raw.headers.get("x-herd-model")
check(served, "no x-herd-model header")
# Translated answers carry the client's name; a node serving the API itself
# writes the model it ran (an alias's target), as x-herd-model says.
check(msg.model in (model, served), f"the response names {msg.model!r}: asked {model!r}, served {served!r}")
print("served", served, "by", raw.headers.get("x-herd-node"), flush=True)
ok("anthropic create")

# system as blocks, stop sequences
blocks = client.messages.create(
    model=model,
    max_tokens=256,
    system=[{"type": "text", "text": "You are terse."}],
    messages=msgs,
    stop_sequences=["herd"],
)
check(blocks.content and blocks.content[0].type == "text", f"system blocks: {blocks}")
ok("anthropic system blocks")

# ---- stream ----------------------------------------------------------------
kinds, parts = [], []
with client.messages.stream(model=model, max_tokens=256, system="You are terse.", messages=msgs) as s:
    for ev in s:
        kinds.append(ev.type)
        if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
            parts.append(ev.delta.text)
    final = s.get_final_message()
for k in ["message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop"]:
    check(k in kinds, f"stream lacks {k}: {kinds}")
check(kinds[0] == "message_start" and kinds[-1] == "message_stop", f"stream order: {kinds}")
check("".join(parts) == texts[0], f"streamed text differs: {''.join(parts)!r} vs {texts[0]!r}")
check(final.stop_reason in ("end_turn", "max_tokens") and final.usage.output_tokens > 0, f"final: {final}")
ok("anthropic stream")

# ---- tools: a round trip ---------------------------------------------------
q = [{"role": "user", "content": "Weather in Paris?"}]
t1 = client.messages.create(model=model, max_tokens=256, messages=q, tools=[WEATHER])
uses = [b for b in t1.content if b.type == "tool_use"]
check(t1.stop_reason == "tool_use" and len(uses) == 1, f"no tool use: {t1}")
check(uses[0].name == "get_weather" and "city" in uses[0].input, f"tool input: {uses[0]}")
check(uses[0].id, "tool_use without an id")
t2 = client.messages.create(
    model=model,
    max_tokens=256,
    tools=[WEATHER],
    messages=q
    + [
        {"role": "assistant", "content": [u.model_dump() for u in uses]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny, 21C"}]},
    ],
)
answer = "".join(b.text for b in t2.content if b.type == "text")
check("sunny, 21C" in answer, f"tool result not used: {t2.content}")
ok("anthropic tool round trip")

# the tool call streamed: input_json_delta
kinds, partial = [], []
with client.messages.stream(model=model, max_tokens=256, messages=q, tools=[WEATHER]) as s:
    for ev in s:
        kinds.append(ev.type)
        if ev.type == "content_block_delta" and ev.delta.type == "input_json_delta":
            partial.append(ev.delta.partial_json)
    streamed = s.get_final_message()
check(partial and "city" in "".join(partial), f"no input_json_delta: {kinds}")
check(streamed.stop_reason == "tool_use", f"streamed stop_reason: {streamed.stop_reason}")
ok("anthropic tool stream")

# ---- an image block --------------------------------------------------------
img = base64.standard_b64encode(png_1x1()).decode()
seen = client.messages.create(
    model=model,
    max_tokens=256,
    messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": img}},
        {"type": "text", "text": "What is in this picture?"},
    ]}],
)
check(seen.content and seen.content[0].type == "text" and seen.content[0].text, f"image reply: {seen}")
ok("anthropic image")

# ---- thinking --------------------------------------------------------------
th = client.messages.create(
    model=thinking_model,
    max_tokens=1024,
    thinking={"type": "enabled", "budget_tokens": 512},
    messages=msgs,
)
kinds = [b.type for b in th.content]
check(kinds[:1] == ["thinking"] and "text" in kinds, f"no thinking block first: {kinds}")
check(th.content[0].thinking, "empty thinking")
deltas = set()
with client.messages.stream(
    model=thinking_model, max_tokens=1024, thinking={"type": "enabled", "budget_tokens": 512}, messages=msgs
) as s:
    for ev in s:
        if ev.type == "content_block_delta":
            deltas.add(ev.delta.type)
check({"thinking_delta", "text_delta"} <= deltas, f"stream deltas: {deltas}")
ok("anthropic thinking")

# ---- count_tokens ----------------------------------------------------------
short = client.messages.count_tokens(model=model, messages=msgs)
longer = client.messages.count_tokens(
    model=model,
    messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": img}},
        {"type": "text", "text": "Tell me about herds. " * 50},
    ]}],
    system="You are terse.",
    tools=[WEATHER],
)
check(short.input_tokens > 0, f"count_tokens: {short}")
check(longer.input_tokens > short.input_tokens + 150, f"count_tokens does not grow: {short} vs {longer}")
ok("anthropic count_tokens")

# ---- errors in Anthropic's shape -------------------------------------------
try:
    client.messages.create(model="no-such-model:1b", max_tokens=16, messages=msgs)
    raise AssertionError("unknown model did not fail")
except anthropic.NotFoundError as e:
    check(e.status_code == 404, f"status {e.status_code}")
    body = e.body
    check(isinstance(body, dict) and body.get("type") == "error", f"error body: {body}")
    check(body["error"]["type"] == "not_found_error" and "not found" in body["error"]["message"], f"error: {body}")
ok("anthropic unknown model")

try:
    client.messages.create(model=model, max_tokens=16, messages=[])
    raise AssertionError("empty messages did not fail")
except anthropic.BadRequestError as e:
    check(e.body["error"]["type"] == "invalid_request_error", f"error: {e.body}")
ok("anthropic bad request")

try:
    client.messages.count_tokens(model="no-such-model:1b", messages=msgs)
    raise AssertionError("count_tokens for an unknown model did not fail")
except anthropic.NotFoundError as e:
    check(e.body["error"]["type"] == "not_found_error", f"error: {e.body}")
ok("anthropic count_tokens unknown model")

print("all anthropic checks passed", flush=True)
