"""herd over https: a plain request with the certificate trusted, and the
official openai SDK (httpx) with its key.

Usage: tls_check.py HTTPS_URL CERT_PEM KEY MODEL
"""
import json
import ssl
import sys
import urllib.request

import httpx
import openai

url, cert, key, model = sys.argv[1:5]
ctx = ssl.create_default_context(cafile=cert)
req = urllib.request.Request(url + "/api/tags", headers={"Authorization": f"Bearer {key}"})
with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
    tags = json.load(r)
assert any(m["name"] == model for m in tags["models"]), tags
print("ok urllib https", flush=True)
# Without trusting the certificate, the handshake fails: it is real TLS.
try:
    urllib.request.urlopen(url + "/api/tags", timeout=10)
    raise AssertionError("an untrusted certificate was accepted")
except urllib.error.URLError as e:
    assert "CERTIFICATE_VERIFY_FAILED" in str(e), e
print("ok certificate checked", flush=True)
oc = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, http_client=httpx.Client(verify=ctx))
c = oc.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
assert c.choices[0].message.content.startswith("Hello from"), c
print("ok openai https", flush=True)
