"""Model management through herd with the official `ollama` Python SDK, as
a user with OLLAMA_HOST pointing at herd would run it.

Usage: manage_check.py BASE_URL   (the fleet of tests/tests/agent_apis.rs:
`a` and `b` hold shared:7b loaded and tiny:latest; `c` holds solo:3b)
"""
import os
import sys
import tempfile

import ollama

base = sys.argv[1]
oc = ollama.Client(host=base)


def ok(name):
    print("ok", name, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def names():
    return {m.model for m in oc.list().models}


# A GGUF file (its magic, then filler), uploaded the way `ollama create` does.
path = os.path.join(tempfile.mkdtemp(prefix="herd-gguf-"), "model.gguf")
with open(path, "wb") as f:
    f.write(b"GGUF" + bytes(range(256)) * 64)
digest = oc.create_blob(path)
check(digest.startswith("sha256:") and len(digest) == 71, f"digest {digest!r}")
ok("ollama create_blob")

status = oc.create(model="sdk-made", files={"model.gguf": digest}, stream=False)
check(status.status == "success", f"create: {status}")
parts = [p.status for p in oc.create(model="sdk-made-2", files={"model.gguf": digest}, stream=True)]
check(parts and parts[-1] == "success", f"create stream: {parts}")
ok("ollama create from files")

oc.copy("tiny", "tiny-copy")
check("tiny-copy:latest" in names(), f"copy not listed: {names()}")
ok("ollama copy")

oc.delete("tiny-copy")
check("tiny-copy:latest" not in names(), f"still listed after delete: {names()}")
try:
    oc.delete("tiny-copy")
    raise AssertionError("deleting a deleted model did not fail")
except ollama.ResponseError as e:
    check(e.status_code == 404, f"delete again: {e.status_code} {e.error}")
ok("ollama delete")

loaded = [m for m in oc.ps().models if m.model == "shared:7b"]
check(len(loaded) == 2 and all(m.expires_at for m in loaded), f"ps: {oc.ps()}")
r = oc.generate(model="shared:7b", keep_alive=0)
check(r.done_reason == "unload", f"unload: {r}")
check(not [m for m in oc.ps().models if m.model == "shared:7b"], f"still loaded: {oc.ps()}")
ok("ollama ps and unload")

print("all manage checks passed", flush=True)
