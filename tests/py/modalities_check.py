"""Every modality through herd, with the official `openai` and `ollama` SDKs.

Usage: modalities_check.py BASE_URL AGENTLESS_NODE_ID

The fleet (tests/tests/modalities.rs) has:
- studio (Ollama 0.20.1): llama3.2:3b, gemma3:4b (vision), gemma3n:e4b
  (audio), with a speech-to-text engine (whisper-1) and an image engine
  (sdxl-turbo) beside it (studio/stt, studio/image);
- mini (Ollama 0.12.6, no transcriptions): llama3.2:3b, gemma3:4b without
  vision, gemma3n:e4b;
- vllm, an OpenAI-only engine attached through a herd-node:
  qwen3-coder:30b, bge-m3;
- an OpenAI-only engine the router polls itself (AGENTLESS_NODE_ID): phi4:14b.

Every check prints "ok <name>"; the first failure raises, so the exit code
is non-zero and the message says what differed.
"""
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time

import httpx
import ollama
import openai

base, agentless = sys.argv[1], sys.argv[2]
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def ok(name):
    print("ok", name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def fnv1a(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def refused(call, status, code):
    """`call` must fail with HTTP `status` and OpenAI error `code`."""
    try:
        call()
    except openai.APIStatusError as e:
        check(e.status_code == status, f"status {e.status_code}, wanted {status}: {e}")
        body = e.body if isinstance(e.body, dict) else {}
        got = body.get("code") or (body.get("error") or {}).get("code")
        check(got == code, f"code {got!r}, wanted {code!r}: {e.body}")
        return e
    raise AssertionError(f"expected a {status} {code}, the call succeeded")


# ---- a real WAV, spoken by espeak-ng ----------------------------------------
espeak = shutil.which("espeak-ng")
check(
    espeak is not None,
    "espeak-ng is missing: apt-get install -y --no-install-recommends espeak-ng (tests/run.sh does)",
)
tmp = tempfile.mkdtemp(prefix="herd-modal-")
wav_path = os.path.join(tmp, "speech.wav")
subprocess.run([espeak, "-w", wav_path, "hello from the herd of macs"], check=True)
wav = open(wav_path, "rb").read()
check(wav[:4] == b"RIFF" and len(wav) > 10_000, f"espeak-ng wrote no WAV ({len(wav)} bytes)")
proof = f"{len(wav)} bytes, fnv1a {fnv1a(wav):016x}"

oa = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)

# ---- speech to text -----------------------------------------------------------
raw = oa.audio.transcriptions.with_raw_response.create(model="whisper-1", file=("speech.wav", wav, "audio/wav"))
t = raw.parse()
check(raw.headers.get("x-herd-node") == "studio/stt", f"served by {raw.headers.get('x-herd-node')}")
check(proof in t.text, f"the upload did not arrive whole: {t.text!r}, wanted {proof!r}")
ok("openai transcription to the speech-to-text engine")

text = oa.audio.transcriptions.create(model="whisper-1", file=open(wav_path, "rb"), response_format="text")
check(isinstance(text, str) and proof in text, f"text format: {text!r}")
verbose = oa.audio.transcriptions.create(
    model="whisper-1", file=open(wav_path, "rb"), response_format="verbose_json", language="en"
)
seconds = (len(wav) - 44) / (22050 * 2)
check(abs(verbose.duration - seconds) < 0.05, f"duration {verbose.duration}, the WAV holds {seconds:.2f} s")
check(verbose.segments and verbose.segments[0].end == verbose.duration, f"segments: {verbose.segments}")
ok("openai transcription formats")

raw = oa.audio.translations.with_raw_response.create(model="whisper-1", file=open(wav_path, "rb"))
check(raw.headers.get("x-herd-node") == "studio/stt" and proof in raw.parse().text, "translation")
ok("openai translation")

# An audio-capable model on Ollama: only the Ollama new enough to transcribe.
for _ in range(3):
    raw = oa.audio.transcriptions.with_raw_response.create(model="gemma3n:e4b", file=open(wav_path, "rb"))
    check(raw.headers.get("x-herd-node") == "studio", f"gemma3n served by {raw.headers.get('x-herd-node')}")
    check(proof in raw.parse().text, f"Ollama transcript: {raw.parse().text!r}")
ok("openai transcription to an audio-capable model on Ollama 0.20")

e = refused(
    lambda: oa.audio.transcriptions.create(model="llama3.2:3b", file=open(wav_path, "rb")), 400, "model_not_capable"
)
check("transcribe audio" in str(e), f"the refusal says why: {e}")
refused(lambda: oa.audio.transcriptions.create(model="nope:1b", file=open(wav_path, "rb")), 404, "model_not_found")
ok("transcriptions no node can serve are refused")

# ---- images -------------------------------------------------------------------
raw = oa.images.with_raw_response.generate(model="sdxl-turbo", prompt="a herd of llamas", size="512x512")
img = raw.parse()
check(raw.headers.get("x-herd-node") == "studio/image", f"served by {raw.headers.get('x-herd-node')}")
check(base64.b64decode(img.data[0].b64_json).startswith(b"\x89PNG"), "not a PNG")
ok("openai images.generate")

events, times = [], []
started = time.monotonic()
for ev in oa.images.generate(model="sdxl-turbo", prompt="a herd", stream=True, partial_images=2):
    events.append(ev.type)
    times.append(time.monotonic() - started)
check(
    events == ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"],
    f"events: {events}",
)
check(times[1] - times[0] > 0.05 and times[2] - times[1] > 0.05, f"progress came all at once: {times}")
ok("openai images.generate streams progress")

raw = oa.images.with_raw_response.edit(model="sdxl-turbo", image=("in.png", PNG, "image/png"), prompt="add a hat")
check(raw.headers.get("x-herd-node") == "studio/image" and raw.parse().data, "edit")
ok("openai images.edit")

refused(lambda: oa.images.generate(model="llama3.2:3b", prompt="x"), 400, "model_not_capable")
refused(lambda: oa.images.generate(model="nope:1b", prompt="x"), 404, "model_not_found")
ok("image generations no node can serve are refused")

# ---- vision -------------------------------------------------------------------
data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
vision = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": data_url}}]}]
for _ in range(6):
    raw = oa.chat.completions.with_raw_response.create(model="gemma3:4b", messages=vision)
    check(raw.headers.get("x-herd-node") == "studio", f"vision chat served by {raw.headers.get('x-herd-node')}")
    check(raw.parse().choices[0].message.content, "empty answer")
ok("openai vision chat goes to the node whose model sees")

e = refused(lambda: oa.chat.completions.create(model="llama3.2:3b", messages=vision), 400, "model_not_capable")
check("read images" in str(e), f"the refusal says why: {e}")
remote = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]
try:
    oa.chat.completions.create(model="gemma3:4b", messages=remote)
    raise AssertionError("a remote image URL was accepted")
except openai.BadRequestError as e:
    check("data:" in str(e) and "fetch" in str(e), f"the refusal says what to send instead: {e}")
ok("vision chats no node can serve are refused")

served = []
hooks = {"response": [lambda r: served.append(r.headers.get("x-herd-node"))]}
oc = ollama.Client(host=base, event_hooks=hooks)
for _ in range(6):
    r = oc.chat(model="gemma3:4b", messages=[{"role": "user", "content": "Describe it.", "images": [PNG]}])
    check(r.done and r.message.content, f"ollama vision chat: {r}")
check(served == ["studio"] * 6, f"ollama chats with images were served by {served}")
ok("ollama chat with images goes to the node whose model sees")

# ---- OpenAI-only engines, attached and agentless --------------------------------
for model, node in [("qwen3-coder:30b", "vllm"), ("phi4:14b", agentless)]:
    served.clear()
    msgs = [{"role": "user", "content": "Tell me about herds."}]
    full = oc.chat(model=model, messages=msgs, stream=False)
    check(full.done and full.message.content and (full.eval_count or 0) > 0, f"{model} chat: {full}")
    parts, last = [], None
    for chunk in oc.chat(model=model, messages=msgs, stream=True):
        parts.append(chunk.message.content)
        last = chunk
    check(last is not None and last.done and (last.eval_count or 0) > 0, f"{model} stream end: {last}")
    check(len(parts) > 2, f"{model}: the stream came in {len(parts)} piece(s)")
    check("".join(parts) == full.message.content, f"{model} streamed {''.join(parts)!r} vs {full.message.content!r}")
    gen = oc.generate(model=model, prompt="Say something.", stream=False)
    gparts = [c.response for c in oc.generate(model=model, prompt="Say something.", stream=True)]
    check(gen.done and "".join(gparts) == gen.response and gen.response, f"{model} generate")
    check(set(served) == {node}, f"{model} (ollama SDK) served by {set(served)}")
    ok(f"ollama SDK on the OpenAI-only engine {node}")

    raw = oa.chat.completions.with_raw_response.create(model=model, messages=msgs)
    whole = raw.parse().choices[0].message.content
    check(raw.headers.get("x-herd-node") == node, f"{model} (openai SDK) served by {raw.headers.get('x-herd-node')}")
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in oa.chat.completions.create(model=model, messages=msgs, stream=True)
        if c.choices
    )
    check(streamed == whole, f"{model}: openai streamed {streamed!r} vs {whole!r}")
    ok(f"openai SDK on the OpenAI-only engine {node}")

# Anthropic and Responses clients reach the OpenAI-only engine through Ollama's API.
import anthropic

ac = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0)
msg = ac.messages.create(model="qwen3-coder:30b", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
check(msg.content and msg.content[0].text and msg.stop_reason, f"anthropic: {msg}")
with ac.messages.stream(model="qwen3-coder:30b", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]) as st:
    streamed = "".join(st.text_stream)
check(streamed == msg.content[0].text, f"anthropic streamed {streamed!r} vs {msg.content[0].text!r}")
resp = oa.responses.create(model="qwen3-coder:30b", input="Hi")
check(resp.output_text == msg.content[0].text, f"responses: {resp.output_text!r}")
ok("anthropic and responses SDKs on the OpenAI-only engine")

served.clear()
emb = oc.embed(model="bge-m3", input=["a", "b"])
check(len(emb.embeddings) == 2 and len(emb.embeddings[0]) > 0 and served == ["vllm"], f"embed: {served}")
ok("ollama embed on the OpenAI-only engine")

# Tools through the bridge: Ollama's tool call comes back whole.
tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
r = oc.chat(model="qwen3-coder:30b", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=[tool])
calls = r.message.tool_calls or []
check(calls and calls[0].function.name == "get_weather" and isinstance(calls[0].function.arguments, dict), f"tool call: {r.message}")
ok("ollama tool call on the OpenAI-only engine")

print("all modality checks passed")
