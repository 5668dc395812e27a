#!/usr/bin/env python3
"""Writes the seed corpora of herd's fuzz targets (tests/fuzz/corpus/<target>/).

The seeds are realistic inputs in each target's input format (see the doc
comment at the top of each fuzz_targets/*.rs): request bodies like the
dialect tests', Ollama stream lines as Ollama writes them, herd.v1 reports
as herd-node sends them (protobuf, encoded here by hand) and ext_proc
exchanges as Envoy drives them. Re-run after changing a format:

    python3 tests/fuzz/gen_corpus.py

Files the fuzzer added (crash inputs kept as regressions) are left alone:
only the files named here are (re)written.
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    assert len(data) <= 8192, (target, name, len(data))
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def j(v):
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


# ---------------------------------------------------------------- parse ----
# byte 0: ENDPOINTS index (low bits) | header set << 4
OLLAMA_CHAT, OLLAMA_GENERATE, OLLAMA_EMBED, OLLAMA_EMBEDDINGS = 0, 1, 2, 3
OPENAI_CHAT, OPENAI_COMPLETIONS, OPENAI_EMBEDDINGS = 4, 5, 6
ANTHROPIC_MESSAGES, RESPONSES = 7, 8  # rows added after the first seven

MSGS = [{"role": "user", "content": "hi"}]
parse_seeds = {
    "ollama-chat": (OLLAMA_CHAT, {
        "model": "qwen3:8b",
        "messages": [
            {"role": "system", "content": "be terse"},
            {"role": "user", "content": "hello there", "images": ["iVBORw0KGgo="]},
        ],
        "stream": True,
        "options": {"num_ctx": 8192, "num_predict": 128, "temperature": 0.2},
        "keep_alive": "5m",
        "fallback_models": ["llama3.2:1b"],
        "metadata": {"tags": ["batch"]},
    }),
    "ollama-chat-tools": (OLLAMA_CHAT | 0x10, {
        "model": "llama3.1",
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "content": "18C", "tool_name": "get_weather"},
        ],
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather now",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}],
        "think": True,
        "stream": False,
        "tags": ["team-a"],
    }),
    "ollama-generate": (OLLAMA_GENERATE, {
        "model": "llama3.2",
        "prompt": "Why is the sky blue?",
        "system": "You are a physicist.",
        "images": ["iVBORw0KGgo="],
        "stream": False,
        "context": [1, 2, 3],
        "options": {"num_predict": 64, "seed": 42, "stop": ["\n\n"]},
        "format": "json",
    }),
    "ollama-embed": (OLLAMA_EMBED, {"model": "nomic-embed-text", "input": ["a", "b"], "truncate": True}),
    "ollama-embed-string": (OLLAMA_EMBED | 0x20, {"model": "all-minilm", "input": "one", "keep_alive": 0}),
    "ollama-embeddings": (OLLAMA_EMBEDDINGS, {"model": "nomic-embed-text", "prompt": "hello"}),
    "openai-chat-minimal": (OPENAI_CHAT, {"model": "gpt-4o", "messages": MSGS}),
    "openai-chat-roles": (OPENAI_CHAT, {
        "model": "m", "stream": True,
        "messages": [
            {"role": "developer", "content": "be terse"},
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "q", "name": "bob"},
            {"role": "assistant", "content": None},
        ],
    }),
    "openai-chat-parts": (OPENAI_CHAT | 0x40, {
        "model": "llava:7b",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
            {"type": "text", "text": "in this picture?"},
            {"type": "image_url", "image_url": "data:image/jpeg;base64,/9j/4AAQ"},
        ]}],
    }),
    "openai-chat-tool-calls": (OPENAI_CHAT, {
        "model": "qwen3:8b",
        "messages": [
            {"role": "user", "content": "weather in Paris and Rome?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}},
            ]},
            {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "noon"}]},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
    }),
    "openai-chat-options": (OPENAI_CHAT | 0x30, {
        "model": "m",
        "messages": MSGS,
        "temperature": 0.2, "top_p": 0.9, "seed": 42, "stop": "END",
        "frequency_penalty": 0.5, "presence_penalty": -0.5,
        "max_tokens": 100, "max_completion_tokens": 50, "n": 1, "user": "u-1",
        "logit_bias": {"1": 2},
        "options": {"num_ctx": 8192, "temperature": 1.5},
        "keep_alive": "10m", "think": True,
        "stream": True, "stream_options": {"include_usage": True},
        "fallback_models": ["m2:1b"],
    }),
    "openai-chat-json-schema": (OPENAI_CHAT, {
        "model": "m", "messages": MSGS,
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "strict": True,
            "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}},
    }),
    "openai-chat-nulls": (OPENAI_CHAT, {
        "model": "m", "messages": MSGS, "stop": ["a", "b"], "max_tokens": 7,
        "temperature": None, "stream": None, "metadata": {"tags": ["x", "y"]},
    }),
    "openai-completions": (OPENAI_COMPLETIONS, {
        "model": "qwen2.5-coder:1.5b", "prompt": "def fib(n):", "suffix": "\n    return a",
        "max_tokens": 64, "stream": True, "stream_options": {"include_usage": True},
        "echo": False, "best_of": 1,
    }),
    "openai-completions-array": (OPENAI_COMPLETIONS, {"model": "m", "prompt": ["one prompt"], "temperature": 0}),
    "openai-embeddings": (OPENAI_EMBEDDINGS, {
        "model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 256,
        "encoding_format": "float", "user": "u"}),
    "openai-embeddings-base64": (OPENAI_EMBEDDINGS, {
        "model": "nomic-embed-text", "input": "one", "encoding_format": "base64",
        "keep_alive": "5m", "truncate": False}),
    "anthropic-messages": (ANTHROPIC_MESSAGES, {
        "model": "qwen3:8b", "max_tokens": 1024, "system": "be terse",
        "messages": [{"role": "user", "content": "Hello"},
                     {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
                     {"role": "user", "content": [
                         {"type": "text", "text": "what is this?"},
                         {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}],
        "stream": True, "temperature": 0.2, "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
    }),
    "anthropic-tools": (ANTHROPIC_MESSAGES | 0x10, {
        "model": "llama3.1", "max_tokens": 256,
        "tools": [{"name": "get_weather", "description": "Weather now",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "messages": [{"role": "user", "content": "weather in Paris?"},
                     {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                        "input": {"city": "Paris"}}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]}],
    }),
    "responses-string": (RESPONSES, {"model": "qwen3:8b", "input": "Tell me a joke", "instructions": "be brief",
                                     "max_output_tokens": 100, "stream": True}),
    "responses-items": (RESPONSES | 0x20, {
        "model": "m",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "what is in this image?"},
                                               {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "temperature": 0.7, "store": False,
    }),
}
for name, (sel, body) in parse_seeds.items():
    write("parse", name, bytes([sel]) + j(body).encode())

raw_parse = {
    "bad-json": (OLLAMA_CHAT, b"{not json"),
    "not-object": (OLLAMA_CHAT, b"[1]"),
    "no-model": (OPENAI_CHAT, b'{"messages":[]}'),
    "duplicate-keys": (OPENAI_CHAT, b'{"model":"a","messages":[{"role":"user","content":"x"}],"model":"b:1b"}'),
    "escaped-keys": (OLLAMA_GENERATE, '{"model":"m","pro\\u006dpt":"caf\\u00e9 \\ud83d\\ude00","k\\"ey":[1,"}"]} '.encode()),
    "many-fallbacks": (OLLAMA_CHAT, j({"model": "m", "fallback_models": [f"f{i}" for i in range(9)]}).encode()),
    "bad-model-name": (OPENAI_CHAT, j({"model": "m m", "messages": MSGS}).encode()),
    "n-two": (OPENAI_CHAT, j({"model": "m", "n": 2, "messages": MSGS}).encode()),
    "deep": (OLLAMA_CHAT, b'{"model":"m","options":' + b'[' * 200 + b']' * 200 + b'}'),
    "whitespace": (OPENAI_EMBEDDINGS, b" \n\t "),
}
for name, (sel, body) in raw_parse.items():
    write("parse", name, bytes([sel]) + body)

# --------------------------------------------------- translate_response ----
# byte 0: 0 chat_response, 1 completion_response, 2 embeddings_response,
# 3 ChatStream, 4 CompletionStream, 5 Collector | 0x10 include_usage |
# 0x20 base64 | 0x40 small collect limit
T = "2025-06-04T14:38:31.123456Z"
STATS = {"total_duration": 4883583458, "load_duration": 1334875, "prompt_eval_count": 26,
         "prompt_eval_duration": 342546000, "eval_count": 282, "eval_duration": 4535599000}


def chat_line(content, done=False, **extra):
    m = {"role": "assistant", "content": content}
    m.update(extra)
    v = {"model": "qwen3:8b", "created_at": T, "message": m, "done": done}
    if done:
        v["done_reason"] = "stop"
        v.update(STATS)
    return j(v)


def gen_line(text, done=False, reason="stop"):
    v = {"model": "llama3.2", "created_at": T, "response": text, "done": done}
    if done:
        v["done_reason"] = reason
        v["context"] = [128006, 882, 128007, 271]
        v.update(STATS)
    return j(v)


chat_stream = "\n".join([chat_line("Hel"), chat_line("lo"), chat_line("!"), chat_line("", True)]) + "\n"
think_stream = "\n".join([
    chat_line("", thinking="The user greets"), chat_line("", thinking=" me."),
    chat_line("Hi"), chat_line("", True)]) + "\n"
tool_stream = "\n".join([
    chat_line("", tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]),
    chat_line("", tool_calls=[{"function": {"name": "get_time", "arguments": {}}}]),
    chat_line("", True)]) + "\n"
gen_stream = "\n".join([gen_line("The"), gen_line(" sky"), gen_line(" is blue."), gen_line("", True, "length")]) + "\n"
error_stream = chat_line("Hel") + "\n" + j({"error": "model runner has unexpectedly stopped, this may be due to resource limitations"}) + "\n"
embed = j({"model": "all-minilm", "embeddings": [[0.010071029, -0.0017594862, 0.05007221, 0.04692972],
                                                  [-0.0098027075, 0.06042469, 0.025257962, -0.006364387]],
           "total_duration": 14143917, "load_duration": 1019500, "prompt_eval_count": 8})
legacy_embed = j({"embedding": [0.5670403838157654, 0.009260174818336964, 0.23178744316101074]})
chat_whole = j({"model": "qwen3:8b", "created_at": T, "message": {"role": "assistant", "content": "Hello!", "thinking": "hmm"},
                "done": True, "done_reason": "stop", **STATS})
chat_whole_tools = j({"model": "qwen3:8b", "message": {"role": "assistant", "content": "", "tool_calls": [
    {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}, "done": True, "done_reason": "stop",
    "prompt_eval_count": 3, "eval_count": 1})
gen_whole = j({"model": "m", "response": "42", "done": True, "done_reason": "length", "prompt_eval_count": 3, "eval_count": 1})

tr = {
    "chat-response": (0, chat_whole),
    "chat-response-tools": (0, chat_whole_tools),
    "completion-response": (1, gen_whole),
    "embeddings": (2, embed),
    "embeddings-base64": (2 | 0x20, embed),
    "embeddings-legacy": (2, legacy_embed),
    "chat-stream": (3, chat_stream),
    "chat-stream-usage": (3 | 0x10, chat_stream),
    "chat-stream-thinking": (3, think_stream),
    "chat-stream-tools": (3 | 0x10, tool_stream),
    "chat-stream-error": (3, error_stream),
    "completion-stream": (4 | 0x10, gen_stream),
    "completion-stream-error": (4, gen_line("a") + "\n" + j({"error": {"message": "oom"}}) + "\n"),
    "collect-chat": (5, chat_stream),
    "collect-chat-tools": (5, tool_stream + chat_line("", images=["aGk="])),
    "collect-thinking": (6, think_stream),
    "collect-generate": (7, gen_stream),
    "collect-limit": (5 | 0x40, gen_stream),
    "collect-unfinished": (5, gen_line("a") + "\n" + gen_line("b") + "\n"),
}
for name, (sel, text) in tr.items():
    write("translate_response", name, bytes([sel]) + text.encode())

# -------------------------------------------------------- relay_framing ----
# byte 0: endpoint | 0x08 OpenAI engine | 0x10 stream | 0x20 include_usage |
# 0x40 base64 | 0x80 abrupt close; byte 1: status (< 0xf0: 200); body cut
# into HTTP chunks at 0xff.
CUT = b"\xff"
STATUS_OK, S404, S429, S500, S503 = 0, 0xF3, 0xF7, 0xF8, 0xFA


def cut(text, every=37):
    b = text.encode() if isinstance(text, str) else text
    return CUT.join(b[i:i + every] for i in range(0, len(b), every))


def sse_chunk(content, finish=None):
    return "data: " + j({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1749047911,
                         "model": "gpt-oss:20b", "choices": [{"index": 0, "delta": {"content": content},
                                                              "finish_reason": finish}]}) + "\n\n"


sse_stream = (sse_chunk("Hel") + sse_chunk("lo") + sse_chunk("", "stop")
              + "data: " + j({"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [],
                              "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}) + "\n\n"
              + "data: [DONE]\n\n")
openai_whole = j({"id": "chatcmpl-1", "object": "chat.completion", "created": 1749047911, "model": "gpt-oss:20b",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
relay = {
    "ollama-chat-stream": (OLLAMA_CHAT | 0x10, STATUS_OK, cut(chat_stream)),
    "ollama-chat-stream-lines": (OLLAMA_CHAT | 0x10, STATUS_OK, chat_stream.replace("\n", "\n\xff").encode("latin-1")),
    "ollama-generate-stream": (OLLAMA_GENERATE | 0x10, STATUS_OK, cut(gen_stream, 11)),
    "ollama-chat-collect": (OLLAMA_CHAT, STATUS_OK, cut(think_stream, 50)),
    "ollama-generate-collect": (OLLAMA_GENERATE, STATUS_OK, cut(gen_stream, 64)),
    "ollama-embed": (OLLAMA_EMBED, STATUS_OK, cut(embed, 40)),
    "ollama-embeddings": (OLLAMA_EMBEDDINGS, STATUS_OK, legacy_embed.encode()),
    "openai-chat-sse": (OPENAI_CHAT | 0x10 | 0x20, STATUS_OK, cut(chat_stream, 23)),
    "openai-chat-sse-tools": (OPENAI_CHAT | 0x10, STATUS_OK, cut(tool_stream, 80)),
    "openai-chat-whole": (OPENAI_CHAT, STATUS_OK, cut(tool_stream, 80)),
    "openai-completions-sse": (OPENAI_COMPLETIONS | 0x10 | 0x20, STATUS_OK, cut(gen_stream, 29)),
    "openai-completions-whole": (OPENAI_COMPLETIONS, STATUS_OK, gen_stream.encode()),
    "openai-embeddings": (OPENAI_EMBEDDINGS, STATUS_OK, embed.encode()),
    "openai-embeddings-base64": (OPENAI_EMBEDDINGS | 0x40, STATUS_OK, cut(embed, 100)),
    "openai-engine-sse": (OPENAI_CHAT | 0x08 | 0x10, STATUS_OK, cut(sse_stream, 41)),
    "openai-engine-whole": (OPENAI_CHAT | 0x08, STATUS_OK, cut(openai_whole, 60)),
    "ollama-chat-cut": (OLLAMA_CHAT | 0x10 | 0x80, STATUS_OK, cut(chat_stream[:150], 30)),
    "openai-chat-cut": (OPENAI_CHAT | 0x10 | 0x80, STATUS_OK, cut(chat_stream[:200], 30)),
    "openai-engine-sse-cut": (OPENAI_CHAT | 0x08 | 0x10 | 0x80, STATUS_OK, cut(sse_stream[:170], 30)),
    "ollama-chat-no-final-newline": (OLLAMA_CHAT | 0x10, STATUS_OK, cut(chat_stream.rstrip("\n"), 40)),
    "openai-chat-first-line-error": (OPENAI_CHAT | 0x10, STATUS_OK, j({"error": "model runner has unexpectedly stopped"}).encode()),
    "ollama-chat-error-mid-stream": (OLLAMA_CHAT | 0x10, STATUS_OK, cut(error_stream, 33)),
    "status-404": (OLLAMA_CHAT | 0x10, S404, j({"error": "model \"x\" not found, try pulling it first"}).encode()),
    "status-500-openai": (OPENAI_CHAT, S500, j({"error": {"message": "boom", "type": "server_error"}}).encode()),
    "status-503-text": (OLLAMA_GENERATE, S503, b"Service Unavailable"),
    "status-429": (OPENAI_CHAT | 0x08, S429, j({"error": {"message": "slow down"}}).encode()),
    "ollama-chat-invalid-line": (OPENAI_CHAT | 0x10, STATUS_OK, (chat_line("a") + "\n{\"message\":\n" + chat_line("", True) + "\n").encode()),
    # Rows 7 and 8 (Anthropic Messages, Responses): status byte bit 0 adds 8.
    "anthropic-sse": (ANTHROPIC_MESSAGES | 0x10, STATUS_OK, cut(think_stream, 45)),
    "anthropic-sse-tools": (ANTHROPIC_MESSAGES | 0x10, STATUS_OK, cut(tool_stream, 70)),
    "anthropic-whole": (ANTHROPIC_MESSAGES, STATUS_OK, cut(chat_stream, 90)),
    "responses-sse": (0x10, 0x01, cut(chat_stream, 31)),
    "responses-sse-tools": (0x10, 0x01, cut(tool_stream + chat_line("x"), 64)),
    "responses-whole": (0x00, 0x01, cut(think_stream, 100)),
}
for name, (flags, status, body) in relay.items():
    write("relay_framing", name, bytes([flags, status]) + body)

# --------------------------------------------------------------- report ----
# protobuf, by hand


def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fv(field, n):  # varint field (also enums, bools, int64 as two's complement)
    return varint(field << 3) + varint(n)


def fd(field, x):  # double
    return varint(field << 3 | 1) + struct.pack("<d", x)


def fb(field, b):  # length-delimited
    if isinstance(b, str):
        b = b.encode()
    return varint(field << 3 | 2) + varint(len(b)) + b


GIB = 1 << 30


def loaded(name, size, ctx=8192, expires=1750000300000):
    return fb(1, name) + fv(2, size) + fv(3, size) + fv(4, ctx) + fv(5, expires)


def disk(name, size, family, params, quant="Q4_K_M"):
    return fb(1, name) + fv(2, size) + fb(3, family) + fb(4, params) + fb(5, quant)


def report(node_id, url, *, simulated=False, seq=1, hardware=b"", engine=b"", mode=0, availability=b"",
           draining=False, agent="0.1.0"):
    out = fb(1, node_id) + fb(2, url)
    if simulated:
        out += fv(3, 1)
    out += fv(4, seq) + fv(5, 1750000000000 + seq * 2000) + fb(6, agent)
    if hardware:
        out += fb(7, hardware)
    if engine:
        out += fb(8, engine)
    if mode:
        out += fv(9, mode)
    if availability:
        out += fb(10, availability)
    if draining:
        out += fv(11, 1)
    return out


def hardware(chip, total, avail, pressure=1, thermal=1, cpu=0.12, bw=400.0, gpus=()):
    hw = fb(1, chip) + fb(2, "macOS 15.5") + fb(3, "arm64")
    hw += fb(4, fv(1, total) + fv(2, avail) + fv(3, pressure))
    hw += fb(5, fv(1, thermal) + fd(2, 48.5))
    hw += fb(6, fv(1, 12) + fd(2, cpu) + fd(3, 2.31))
    hw += fb(7, fv(1, 994 * GIB) + fv(2, 312 * GIB))
    hw += fd(8, bw)
    for g in gpus:
        hw += fb(9, g)
    return hw


def engine(loaded_models, disk_models, kind=1, reachable=True, version="0.12.6", slots=4, max_loaded=3, queue=512,
           reason=""):
    e = fv(1, kind) + fv(2, 1 if reachable else 0)
    if reason:
        e += fb(3, reason)
    e += fb(4, version)
    for m in loaded_models:
        e += fb(5, m)
    for m in disk_models:
        e += fb(6, m)
    return e + fv(7, slots) + fv(8, max_loaded) + fv(9, queue)


def gpu(name, total, used, util, temp):
    return fb(1, name) + fv(2, total) + fv(3, used) + fd(4, util) + fd(5, temp)


QWEN = disk("qwen3:8b", 5 * GIB, "qwen3", "8.2B")
LLAMA = disk("llama3.2:1b", int(1.3 * GIB), "llama", "1.2B", "Q8_0")
BIG = disk("llama3.3:70b", 42 * GIB, "llama", "70.6B")
EMB = disk("nomic-embed-text:latest", 274 * 1024 * 1024, "nomic-bert", "137M", "F16")
reports = {
    "mac-studio": report("mac-studio", "http://10.0.0.5:11434", seq=7,
                         hardware=hardware("Apple M2 Ultra", 192 * GIB, 150 * GIB, bw=800.0),
                         engine=engine([loaded("qwen3:8b", 6 * GIB, 40960)], [QWEN, LLAMA, BIG, EMB]),
                         availability=fd(1, 0.93) + fv(2, 1) + fv(3, 160 * GIB)),
    "macbook-warm": report("macbook-air.local", "http://mac.local:11434", seq=3,
                           hardware=hardware("Apple M3", 16 * GIB, 3 * GIB, pressure=2, thermal=3, cpu=0.8, bw=100.0),
                           engine=engine([loaded("llama3.2:1b", 2 * GIB, 4096, 0)], [LLAMA, QWEN], slots=1),
                           availability=fd(1, 0.4) + fv(2, 1) + fb(4, "on battery")),
    "simulated": report("sim-0", "http://127.0.0.1:21434/api/ps?x=1", simulated=True, seq=42,
                        hardware=hardware("Simulated M2 Pro", 32 * GIB, 20 * GIB, bw=200.0),
                        engine=engine([loaded("m:latest", GIB)], [disk("m:latest", GIB, "m", "1B")], slots=2),
                        agent="0.1.0-sim"),
    "paused-draining": report("mini", "http://[fd00::7]:11434", seq=2, mode=2, draining=True,
                              hardware=hardware("Apple M4", 24 * GIB, 10 * GIB),
                              engine=engine([], [QWEN])),
    "small-only": report("small", "http://10.0.0.8", seq=9, mode=3,
                         hardware=hardware("Apple M1", 8 * GIB, 2 * GIB, pressure=3),
                         engine=engine([], [LLAMA, BIG])),
    "openai-engine": report("vllm-box", "http://10.0.0.9:8000", seq=5,
                            hardware=hardware("AMD EPYC", 256 * GIB, 200 * GIB, thermal=0, bw=0.0,
                                              gpus=[gpu("NVIDIA RTX 4090", 24 * GIB, 20 * GIB, 0.97, 71.0),
                                                    gpu("NVIDIA RTX 4090", 24 * GIB, 2 * GIB, 0.05, 40.0)]),
                            engine=engine([loaded("gpt-oss:20b", 14 * GIB, 131072)], [disk("gpt-oss:20b", 14 * GIB, "gptoss", "20.9B", "MXFP4")],
                                          kind=2, version="vllm 0.9.1", slots=16)),
    "unreachable": report("down", "http://10.0.0.10:11434", seq=11,
                          engine=engine([], [], reachable=False, reason="connection refused", version="")),
    "critical-thermal": report("hot", "http://10.0.0.11:11434", seq=4,
                               hardware=hardware("Apple M2 Max", 64 * GIB, 40 * GIB, thermal=4),
                               engine=engine([loaded("qwen3:8b", 5 * GIB)], [QWEN]),
                               availability=fv(2, 0) + fv(3, 8 * GIB)),
    "minimal": report("n", "http://10.0.0.12:11434"),
    "gpus-as-history": report("learner", "http://10.0.0.13:11434", seq=0x0102_0304,
                              hardware=hardware("Apple M2 Max", 64 * GIB, 40 * GIB,
                                                gpus=[gpu("g", 300, 12, 2400.0, 180.0), gpu("g", 256, 10, 9000.0, 90.0),
                                                      gpu("fail", 0, 0, 0.0, 0.0)]),
                              engine=engine([loaded("qwen3:8b", 5 * GIB, 512)], [QWEN, BIG])),
    "times-in-strings": report("t", "http://10.0.0.14:11434", agent="2024-06-04T14:38:31.5-07:00",
                               engine=engine([], [disk("m:latest", 0, "2023-11-14T22:13:20.5Z", "1970-01-01T00:00:01Z")],
                                             version="2023-11-14T23:13:20.123456789+01:00")),
}
for name, data in reports.items():
    write("report", name, data)

# -------------------------------------------------------------- extproc ----
# byte 0: request body mode | response mode << 3 | 0x40 send body without
# waiting | 0x80 observability; then messages: kind, len (u16 LE), payload
NONE, STREAMED, BUFFERED, BUFFERED_PARTIAL, FULL_DUPLEX = 0, 1, 2, 3, 4
RH, RB, RT, SH, SB, ST, RAW, EMPTY = range(8)
EOS = 0x80


def msg(kind, payload=b""):
    if isinstance(payload, str):
        payload = payload.encode()
    return bytes([kind, len(payload) & 0xFF, len(payload) >> 8]) + payload


def hdrs(path, *extra):
    lines = [f":path: {path}", ":method: POST", ":authority: gateway.local", "content-type: application/json",
             "x-request-id: req-0001"]
    return "\n".join(lines + list(extra))


chat_body = j({"model": "qwen3:8b", "messages": [{"role": "user", "content": "hello"}], "stream": True,
               "stream_options": {"include_usage": True}})
resp_sse = sse_stream
resp_ndjson = chat_stream
exchanges = {
    "full-duplex": (FULL_DUPLEX | FULL_DUPLEX << 3, [
        msg(RH, hdrs("/v1/chat/completions")), msg(RB, chat_body[:40]), msg(RB | EOS, chat_body[40:]),
        msg(SH, ":status: 200\ncontent-type: text/event-stream"), msg(SB, resp_sse[:120]), msg(SB | EOS, resp_sse[120:])]),
    "buffered-lockstep": (BUFFERED | STREAMED << 3, [
        msg(RH, hdrs("/v1/chat/completions")), msg(RB | EOS, chat_body),
        msg(SH, ":status: 200"), msg(SB, resp_sse[:200]), msg(SB | EOS, resp_sse[200:])]),
    "streamed-no-wait": (STREAMED | STREAMED << 3 | 0x40, [
        msg(RH, hdrs("/api/chat")), msg(RB, chat_body[:30]), msg(RB, chat_body[30:60]), msg(RB | EOS, chat_body[60:]),
        msg(SH, ":status: 200\ncontent-type: application/x-ndjson"), msg(SB | EOS, resp_ndjson)]),
    "headers-only-model-header": (NONE, [
        msg(RH | EOS, hdrs("/v1/chat/completions", "x-ai-eg-model: qwen3:8b")),
        msg(SH, ":status: 200"), msg(ST)]),
    "headers-only-models-path": (NONE, [msg(RH | EOS, ":path: /v1/models/m:latest\n:method: GET"), msg(SH | EOS, ":status: 200")]),
    "streamed-lockstep-no-model": (STREAMED, [msg(RH, hdrs("/v1/chat/completions")), msg(RB | EOS, chat_body)]),
    "streamed-lockstep-model-header": (STREAMED, [
        msg(RH, hdrs("/v1/chat/completions", "x-ai-eg-model: m")), msg(RB | EOS, chat_body), msg(SH, ":status: 500"), msg(SB | EOS, "oops")]),
    "subset-string": (FULL_DUPLEX, [
        msg(RH, hdrs("/v1/chat/completions", "@subset: 10.0.0.6:11434, 10.0.0.99:1")), msg(RB | EOS, chat_body)]),
    "subset-list-bare-ip": (BUFFERED, [
        msg(RH, hdrs("/v1/completions", "@subset-list: 10.0.0.5,[fd00::7]")),
        msg(RB | EOS, j({"model": "m", "prompt": "hi"}))]),
    "subset-empty": (BUFFERED, [msg(RH, hdrs("/v1/chat/completions", "@subset: ")), msg(RB | EOS, chat_body)]),
    "subset-unknown": (BUFFERED, [msg(RH, hdrs("/v1/chat/completions", "@subset: 192.0.2.1:80")), msg(RB | EOS, chat_body)]),
    "trailers-end-body": (STREAMED | 0x40, [
        msg(RH, hdrs("/v1/embeddings")), msg(RB, j({"model": "nomic-embed-text", "input": ["a", "b"]})),
        msg(RT), msg(SH, ":status: 200"), msg(SB | EOS, embed)]),
    "unknown-path": (BUFFERED, [msg(RH, hdrs("/v1/responses")), msg(RB | EOS, j({"model": "qwen3:8b", "input": "hi", "stream": True}))]),
    "fallback": (BUFFERED, [msg(RH, hdrs("/api/generate")), msg(RB | EOS, j({"model": "gone:1b", "prompt": "hi"}))]),
    "model-absent": (BUFFERED, [msg(RH, hdrs("/v1/chat/completions")), msg(RB | EOS, j({"model": "nope:1b", "messages": MSGS}))]),
    "no-ip-node": (BUFFERED, [msg(RH, hdrs("/v1/chat/completions")), msg(RB | EOS, j({"model": "named-only:1b", "messages": MSGS}))]),
    "openai-engine": (FULL_DUPLEX | FULL_DUPLEX << 3, [
        msg(RH, hdrs("/v1/chat/completions")), msg(RB | EOS, j({"model": "gpt-oss:20b", "messages": MSGS})),
        msg(SH, ":status: 200\n@served: 10.0.0.9:8000"), msg(SB | EOS, openai_whole)]),
    "served-elsewhere": (BUFFERED, [
        msg(RH, hdrs("/v1/chat/completions")), msg(RB | EOS, chat_body), msg(SH | EOS, ":status: 200\n@served: 10.0.0.6:11434")]),
    "bad-body": (BUFFERED, [msg(RH, hdrs("/v1/chat/completions")), msg(RB | EOS, "{not json")]),
    "observability": (FULL_DUPLEX | 0x80, [msg(RH, hdrs("/v1/chat/completions")), msg(RB | EOS, chat_body), msg(SH, ":status: 200")]),
    "buffered-partial": (BUFFERED_PARTIAL | BUFFERED << 3, [
        msg(RH, hdrs("/v1/chat/completions")), msg(RB, chat_body), msg(SH, ":status: 200"), msg(SB, resp_sse), msg(ST)]),
    "empty-and-raw": (BUFFERED, [msg(EMPTY), msg(RAW, fb(2, fb(1, fb(1, fb(1, ":path") + fb(3, "/v1/chat/completions"))) + fv(3, 1))),
                                 msg(SH | EOS, ":status: 200")]),
}
for name, (cfg, msgs) in exchanges.items():
    write("extproc", name, bytes([cfg]) + b"".join(msgs))

# ---------------------------------------------------------- regressions ----
# Inputs that crashed a target (bugs reported to the crates' owners), kept
# so the smoke test fails until they are fixed and if they come back.
# translate_response / relay_framing: `openai::response::usage` adds the
# node's prompt_eval_count and eval_count unchecked (overflow panic in
# debug builds, a wrapped total_tokens in release).
write("translate_response", "crash-usage-overflow",
      b"\x00" + j({"message": {"content": "x"}, "done": True, "prompt_eval_count": 18446744073709551615,
                   "eval_count": 1}).encode())
write("relay_framing", "crash-usage-overflow",
      bytes([OPENAI_COMPLETIONS, STATUS_OK]) + j({"response": "a", "done": True,
                                                  "prompt_eval_count": 18446744073709551615, "eval_count": 1}).encode() + b"\n")
# relay_framing: a line after Ollama's final chunk that is not JSON (or is
# an error) reaches the OpenAI client as an error event after `[DONE]`, and
# the complete answer is recorded as a node failure.
write("relay_framing", "crash-events-after-done",
      bytes([OPENAI_COMPLETIONS | 0x10 | 0x20, STATUS_OK]) + b'{"done":true}\nn\n')
# report: `NodeState::apply_report` clamps cpu.utilization with f64::clamp,
# which keeps NaN (the other reported floats go through `sane`).
write("report", "crash-cpu-utilization-nan",
      report("n", "http://10.0.0.5:11434", hardware=fb(6, fv(1, 8) + fd(2, float("nan")))))
# report: `rank::name_size_gib` reads "infb" (or "1e999b") as an infinite
# parameter count; a node listing that model with size 0 and no memory
# figure gets expected_ttft_ms = inf in its ranking.
write("report", "crash-name-size-inf",
      report("n", "http://10.0.0.5:11434", engine=engine([], [disk("x:infb", 0, "x", "1B")])))
# report: `herd_proto::node::engine_url` accepts "http://a[:1]" (http::Uri
# reads the host "a[") and returns "http://a[:11434", which is not a URL:
# the router accepts the node with a URL no request can be sent to.
write("report", "crash-engine-url-not-a-url", report("n", "http://a[:1]"))
# parse / extproc (working tree after d9be55b): `request::normalized`
# slices a model name at byte 8 ("library/") or 19 ("registry.ollama.ai/"),
# which may fall inside a character: a fallback model (checked only after
# it is compared) or a model in a headers-only EPP request's path panics.
write("parse", "crash-model-char-boundary",
      bytes([OLLAMA_CHAT]) + j({"model": "m", "fallback_models": ["aaaaaaa\u00e9"]}).encode())
write("extproc", "crash-model-char-boundary", bytes([NONE]) + msg(RH | EOS, ":path: /v1/models/aaaaaaa\u00e9"))

for t in ("parse", "translate_response", "relay_framing", "report", "extproc"):
    n = len(os.listdir(os.path.join(HERE, "corpus", t)))
    print(f"{t}: {n} files")
