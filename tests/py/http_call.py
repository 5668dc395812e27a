"""One HTTP call, printed as JSON — for tests that call from inside a network
namespace (another "machine") where the Rust test's own client cannot go.

Usage: http_call.py METHOD URL [BODY_JSON] [Header: value ...]

Prints {"status": N, "headers": {...}, "body": <JSON or text>}; an HTTP error
status is still a normal exit. A connection failure exits 2 with the reason.
"""
import json
import sys
import urllib.error
import urllib.request

method, url = sys.argv[1], sys.argv[2]
rest = sys.argv[3:]
data = None
if rest and not (":" in rest[0] and not rest[0].lstrip().startswith(("{", "["))):
    data = rest[0].encode()
    rest = rest[1:]
req = urllib.request.Request(url, data=data, method=method)
if data is not None:
    req.add_header("Content-Type", "application/json")
for h in rest:
    k, v = h.split(":", 1)
    req.add_header(k.strip(), v.strip())
try:
    try:
        rsp = urllib.request.urlopen(req, timeout=10)
        status, headers, raw = rsp.status, dict(rsp.headers), rsp.read()
    except urllib.error.HTTPError as e:
        status, headers, raw = e.code, dict(e.headers), e.read()
except Exception as e:  # noqa: BLE001 - the reason is the output
    print(f"cannot reach {url}: {e}", file=sys.stderr)
    sys.exit(2)
text = raw.decode("utf-8", "replace")
try:
    body = json.loads(text)
except ValueError:
    body = text
print(json.dumps({"status": status, "headers": {k.lower(): v for k, v in headers.items()}, "body": body}))
