"""LiteLLM with herd as its upstream: the library (sync and async) and the
LiteLLM proxy, started here as a real process, for `ollama_chat/`, `ollama/`
and `openai/` models — chat, stream, tools, embeddings.

Usage: litellm_check.py BASE_URL CHAT_MODEL EMBED_MODEL

LiteLLM runs offline with two environment variables:
  LITELLM_LOCAL_MODEL_COST_MAP=True  — use the model-cost map bundled in the
      wheel instead of fetching it from GitHub when `litellm` is imported;
  LITELLM_MASTER_KEY=sk-herd-test    — the proxy refuses to start without a
      master key that is not a publicly known one (`sk-1234` is refused).
Every check prints "ok <name>"; the first failure raises.
"""
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
os.environ["LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS"] = "True"
os.environ["LITELLM_TELEMETRY_DISABLED"] = "True"
MASTER_KEY = "sk-herd-test"

import litellm  # noqa: E402  (after the environment above)
import openai  # noqa: E402

base, chat_model, embed_model = sys.argv[1], sys.argv[2], sys.argv[3]
litellm.num_retries = 0
litellm.telemetry = False

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
MSGS = [{"role": "user", "content": "Tell me about herds."}]


def ok(name):
    print("ok", name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def routes():
    """(provider prefix, api_base, extra kwargs) for each way LiteLLM reaches herd."""
    return [
        ("ollama_chat", base, {}),
        ("ollama", base, {}),
        ("openai", base + "/v1", {"api_key": "unused"}),
    ]


def text_of(r):
    return r.choices[0].message.content or ""


# ---- the library, sync ------------------------------------------------------
for prefix, api_base, kw in routes():
    m = f"{prefix}/{chat_model}"
    r = litellm.completion(model=m, api_base=api_base, messages=MSGS, **kw)
    check(text_of(r).startswith("Hello from"), f"{m}: {text_of(r)!r}")
    check(r.usage.completion_tokens > 0, f"{m}: usage {r.usage}")
    parts = []
    for ch in litellm.completion(model=m, api_base=api_base, messages=MSGS, stream=True, **kw):
        parts.append(ch.choices[0].delta.content or "")
    check("".join(parts) == text_of(r), f"{m} stream differs: {''.join(parts)!r} vs {text_of(r)!r}")
    ok(f"litellm sync {prefix} chat+stream")

for prefix, api_base, kw in [r for r in routes() if r[0] != "ollama"]:
    m = f"{prefix}/{chat_model}"
    q = [{"role": "user", "content": "Weather in Paris?"}]
    t1 = litellm.completion(model=m, api_base=api_base, messages=q, tools=[TOOL], **kw)
    calls = t1.choices[0].message.tool_calls
    check(calls and calls[0].function.name == "get_weather", f"{m}: no tool call: {t1}")
    check("city" in json.loads(calls[0].function.arguments), f"{m}: arguments {calls[0].function.arguments}")
    t2 = litellm.completion(
        model=m,
        api_base=api_base,
        tools=[TOOL],
        messages=q
        + [
            {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21C"},
        ],
        **kw,
    )
    check("sunny, 21C" in text_of(t2), f"{m}: tool result not used: {text_of(t2)!r}")
    ok(f"litellm sync {prefix} tools")

for prefix, api_base, kw in [("ollama", base, {}), ("openai", base + "/v1", {"api_key": "unused"})]:
    e = litellm.embedding(model=f"{prefix}/{embed_model}", api_base=api_base, input=["one", "two"], **kw)
    check(len(e.data) == 2 and len(e.data[0]["embedding"]) > 0, f"{prefix} embeddings: {e}")
    check(e.data[0]["embedding"] != e.data[1]["embedding"], f"{prefix}: same vector for different texts")
    ok(f"litellm sync {prefix} embeddings")


# ---- the library, async (its aiohttp transport sends application/octet-stream) --
async def async_checks():
    for prefix, api_base, kw in routes():
        m = f"{prefix}/{chat_model}"
        r = await litellm.acompletion(model=m, api_base=api_base, messages=MSGS, **kw)
        check(text_of(r).startswith("Hello from"), f"async {m}: {text_of(r)!r}")
        parts = []
        async for ch in await litellm.acompletion(model=m, api_base=api_base, messages=MSGS, stream=True, **kw):
            parts.append(ch.choices[0].delta.content or "")
        check("".join(parts) == text_of(r), f"async {m} stream differs")
        ok(f"litellm async {prefix} chat+stream")
    t = await litellm.acompletion(
        model=f"ollama_chat/{chat_model}", api_base=base,
        messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[TOOL],
    )
    check(t.choices[0].message.tool_calls, f"async tools: {t}")
    ok("litellm async ollama_chat tools")
    e = await litellm.aembedding(model=f"ollama/{embed_model}", api_base=base, input=["one", "two"])
    check(len(e.data) == 2, f"async embeddings: {e}")
    ok("litellm async ollama embeddings")


asyncio.run(async_checks())


# ---- the LiteLLM proxy, a real process ---------------------------------------
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


config = f"""
model_list:
  - model_name: herd-chat
    litellm_params: {{model: "ollama_chat/{chat_model}", api_base: "{base}"}}
  - model_name: herd-gen
    litellm_params: {{model: "ollama/{chat_model}", api_base: "{base}"}}
  - model_name: herd-openai
    litellm_params: {{model: "openai/{chat_model}", api_base: "{base}/v1", api_key: "unused"}}
  - model_name: herd-embed
    # LiteLLM refuses OpenAI's encoding_format for ollama/ models unless told
    # to drop it (the openai SDK always sends one).
    litellm_params: {{model: "ollama/{embed_model}", api_base: "{base}", drop_params: true}}
  - model_name: herd-openai-embed
    litellm_params: {{model: "openai/{embed_model}", api_base: "{base}/v1", api_key: "unused"}}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
litellm_settings:
  num_retries: 0
"""
workdir = tempfile.mkdtemp(prefix="herd-litellm-")
cfg_path = os.path.join(workdir, "config.yaml")
with open(cfg_path, "w") as f:
    f.write(config)
port = free_port()
exe = os.path.join(os.path.dirname(sys.executable), "litellm")
env = dict(os.environ, LITELLM_MASTER_KEY=MASTER_KEY)
log = open(os.path.join(workdir, "proxy.log"), "w+")
proxy = subprocess.Popen(
    [exe, "--config", cfg_path, "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
    env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
)
try:
    deadline = time.time() + 120
    while True:
        if proxy.poll() is not None:
            log.seek(0)
            raise AssertionError(f"litellm proxy exited with {proxy.returncode}:\n{log.read()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.time() > deadline:
            log.seek(0)
            raise AssertionError(f"litellm proxy not ready in 120 s:\n{log.read()[-4000:]}")
        time.sleep(0.5)
    ok("litellm proxy started")

    pc = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER_KEY, max_retries=0)
    for name in ["herd-chat", "herd-gen", "herd-openai"]:
        r = pc.chat.completions.create(model=name, messages=MSGS)
        check((r.choices[0].message.content or "").startswith("Hello from"), f"proxy {name}: {r}")
        parts = []
        for ch in pc.chat.completions.create(model=name, messages=MSGS, stream=True):
            for c in ch.choices:
                parts.append(c.delta.content or "")
        check("".join(parts) == r.choices[0].message.content, f"proxy {name} stream differs")
        ok(f"litellm proxy {name} chat+stream")
    for name in ["herd-chat", "herd-openai"]:
        t = pc.chat.completions.create(
            model=name, messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[TOOL]
        )
        tc = t.choices[0].message.tool_calls
        check(tc and tc[0].function.name == "get_weather", f"proxy {name} tools: {t}")
        ok(f"litellm proxy {name} tools")
    for name in ["herd-embed", "herd-openai-embed"]:
        e = pc.embeddings.create(model=name, input=["one", "two"], encoding_format="float")
        check(len(e.data) == 2 and len(e.data[0].embedding) > 0, f"proxy {name}: {e}")
        ok(f"litellm proxy {name} embeddings")
finally:
    proxy.terminate()
    try:
        proxy.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proxy.kill()

print("all litellm checks passed", flush=True)
