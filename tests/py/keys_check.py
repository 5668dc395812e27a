"""The official ollama, openai and anthropic Python SDKs send an API key to
herd the way each sends its own: OLLAMA_API_KEY (ollama), api_key as
`Authorization: Bearer` (openai), api_key as `x-api-key` (anthropic).

Usage: keys_check.py BASE_URL KEY MODEL LIMITED_KEY

KEY may use MODEL; LIMITED_KEY is limited to one request per minute. Each
check prints "ok <name>"; the first failure raises (non-zero exit).
"""
import os
import sys

import anthropic
import ollama
import openai

base, key, model, limited = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
WRONG = "herd-" + "0" * 48


def ok(name):
    print("ok", name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


msgs = [{"role": "user", "content": "hi"}]

# ---- ollama: the key from OLLAMA_API_KEY, as `ollama` reads it ------------
os.environ["OLLAMA_API_KEY"] = key
r = ollama.Client(host=base).chat(model=model, messages=msgs)
check(r.message.content.startswith("Hello from"), f"ollama chat: {r}")
parts = list(ollama.Client(host=base).chat(model=model, messages=msgs, stream=True))
check(parts[-1].done, f"ollama stream: {parts[-1]}")
ok("ollama key")
os.environ["OLLAMA_API_KEY"] = WRONG
try:
    ollama.Client(host=base).chat(model=model, messages=msgs)
    raise AssertionError("ollama: a wrong key was accepted")
except ollama.ResponseError as e:
    check(e.status_code == 401, f"ollama wrong key: {e.status_code} {e}")
    check("not valid" in str(e), f"ollama wrong key message: {e}")
del os.environ["OLLAMA_API_KEY"]
try:
    ollama.Client(host=base).list()
    raise AssertionError("ollama: no key was accepted")
except ollama.ResponseError as e:
    check(e.status_code == 401, f"ollama no key: {e.status_code} {e}")
ok("ollama refused")

# ---- openai: api_key as a bearer token -------------------------------------
oc = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
c = oc.chat.completions.create(model=model, messages=msgs)
check(c.choices[0].message.content.startswith("Hello from"), f"openai chat: {c}")
chunks = list(oc.chat.completions.create(model=model, messages=msgs, stream=True))
check(any(ch.choices and ch.choices[0].finish_reason for ch in chunks), "openai stream ended")
check(any(m.id.startswith(model.split(":")[0]) for m in oc.models.list()), "openai models")
ok("openai key")
try:
    openai.OpenAI(base_url=base + "/v1", api_key=WRONG, max_retries=0).chat.completions.create(
        model=model, messages=msgs
    )
    raise AssertionError("openai: a wrong key was accepted")
except openai.AuthenticationError as e:
    check(e.status_code == 401 and e.code == "invalid_api_key", f"openai wrong key: {e}")
ok("openai refused")
# A limited key: the rate-limit headers, then RateLimitError with Retry-After.
lc = openai.OpenAI(base_url=base + "/v1", api_key=limited, max_retries=0)
raw = lc.chat.completions.with_raw_response.create(model=model, messages=msgs)
check(raw.headers.get("x-ratelimit-limit-requests") == "1", f"headers: {dict(raw.headers)}")
check(raw.headers.get("x-ratelimit-remaining-requests") == "0", f"headers: {dict(raw.headers)}")
try:
    lc.chat.completions.create(model=model, messages=msgs)
    raise AssertionError("openai: the limit let a second request through")
except openai.RateLimitError as e:
    check(e.response.headers.get("retry-after") is not None, f"no retry-after: {dict(e.response.headers)}")
    check(e.code == "rate_limit_exceeded", f"openai 429 code: {e.code}")
ok("openai rate limit")

# ---- anthropic: api_key as x-api-key ---------------------------------------
ac = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
m = ac.messages.create(model=model, max_tokens=64, messages=msgs)
check(m.content[0].text.startswith("Hello from"), f"anthropic message: {m}")
with ac.messages.stream(model=model, max_tokens=64, messages=msgs) as s:
    text = "".join(s.text_stream)
check(text.startswith("Hello from"), f"anthropic stream: {text}")
ok("anthropic key")
try:
    anthropic.Anthropic(base_url=base, api_key=WRONG, max_retries=0).messages.create(
        model=model, max_tokens=8, messages=msgs
    )
    raise AssertionError("anthropic: a wrong key was accepted")
except anthropic.AuthenticationError as e:
    check(e.status_code == 401, f"anthropic wrong key: {e}")
    check(e.body["error"]["type"] == "authentication_error", f"anthropic body: {e.body}")
ok("anthropic refused")
print("all key checks passed")
