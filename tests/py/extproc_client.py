"""A raw ext_proc client built on envoy-data-plane, talking to herd-epp the
way Envoy does, and checking every reply field by field.

usage: extproc_client.py EPP_HOST:PORT PINNED_ENDPOINT OTHER_ENDPOINT

PINNED and OTHER both have the model loaded; the subset hint pins PINNED.
Exits non-zero (with the failed check) on any mismatch.
"""

import json
import queue
import sys

import betterproto2
import grpc
from envoy_data_plane.envoy.config.core.v3 import HeaderMap, HeaderValue, Metadata
from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
    ProcessingModeBodySendMode as Mode,
)
from envoy_data_plane.envoy.service.ext_proc.v3 import (
    ExternalProcessorSyncStub,
    HttpBody,
    HttpHeaders,
    ProcessingRequest,
    ProtocolConfiguration,
)
from envoy_data_plane.google.protobuf import ListValue, Struct, Value

EPP, PINNED, OTHER = sys.argv[1], sys.argv[2], sys.argv[3]
OVERWRITE_IF_EXISTS_OR_ADD = 2
MODEL = "m:8b"


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")


def headers(pairs, eos=False):
    return HttpHeaders(
        headers=HeaderMap(headers=[HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs]),
        end_of_stream=eos,
    )


def subset(entries):
    hint = Value(list_value=ListValue(values=[Value(string_value=e) for e in entries]))
    return Metadata(
        filter_metadata={
            "envoy.lb.subset_hint": Struct(fields={"x-gateway-destination-endpoint-subset": hint})
        }
    )


class Stream:
    """One ext_proc stream: send requests, read replies one at a time."""

    def __init__(self, stub):
        self.q = queue.Queue()

        def gen():
            while True:
                m = self.q.get()
                if m is None:
                    return
                yield m

        self.replies = stub.process(gen())

    def send(self, m):
        self.q.put(m)

    def reply(self):
        r = next(self.replies)
        name, value = betterproto2.which_one_of(r, "response")
        return name, value, r

    def close(self):
        self.q.put(None)


def set_headers(common):
    check(common.header_mutation is not None, "header_mutation present")
    out = {}
    for o in common.header_mutation.set_headers:
        out[o.header.key] = (o.header.raw_value.decode(), o.append_action)
    return out


def lb_metadata(r):
    check(r.dynamic_metadata is not None, "dynamic_metadata present")
    lb = r.dynamic_metadata.fields["envoy.lb"].struct_value
    check(lb is not None, "envoy.lb namespace is a struct")
    return lb.fields["x-gateway-destination-endpoint"].string_value


def request_start(mode, pairs, meta=None, eos=False):
    return ProcessingRequest(
        request_headers=headers(pairs, eos),
        metadata_context=meta,
        protocol_config=ProtocolConfiguration(
            request_body_mode=mode, response_body_mode=mode
        ),
    )


CHAT_HEADERS = [
    (":method", "POST"),
    (":path", "/v1/chat/completions"),
    (":authority", "gateway"),
    ("content-type", "application/json"),
    ("x-request-id", "py-1"),
]


def full_duplex(stub):
    body = json.dumps(
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "x" * 150_000}]}
    ).encode()
    s = Stream(stub)
    s.send(request_start(Mode.FULL_DUPLEX_STREAMED, CHAT_HEADERS, subset([PINNED])))
    # The body split across three chunks; only the last ends the stream.
    cuts = [0, 1000, 70_000, len(body)]
    for i in range(3):
        s.send(
            ProcessingRequest(
                request_body=HttpBody(body=body[cuts[i] : cuts[i + 1]], end_of_stream=i == 2)
            )
        )
    name, h, r = s.reply()
    check(name == "request_headers", f"first reply answers the headers, got {name}")
    c = h.response
    check(c.clear_route_cache is True, "clear_route_cache")
    check(c.status == 0, "status CONTINUE")
    check(c.body_mutation is None, "no body mutation on the headers reply")
    hs = set_headers(c)
    check(
        hs.get("x-gateway-destination-endpoint") == (PINNED, OVERWRITE_IF_EXISTS_OR_ADD),
        f"destination header overwrites, pinned: {hs}",
    )
    check(hs.get("content-length", (None,))[0] == str(len(body)), f"content-length: {hs}")
    check(lb_metadata(r) == PINNED, "envoy.lb metadata equals the header")
    check(list(c.header_mutation.remove_headers) == [], "nothing removed")
    got, eos_seen = b"", []
    while True:
        name, b, r = s.reply()
        check(name == "request_body", f"body replies follow, got {name}")
        sr = b.response.body_mutation.streamed_response
        check(sr is not None, "streamed_response used in FULL_DUPLEX_STREAMED")
        check(len(sr.body) <= 62000, f"chunk of {len(sr.body)} bytes exceeds 62000")
        check(r.dynamic_metadata is None, "metadata only on the headers reply")
        got += sr.body
        eos_seen.append(sr.end_of_stream)
        if sr.end_of_stream:
            break
    check(got == body, "the request body is re-emitted byte for byte")
    check(eos_seen.count(True) == 1 and len(eos_seen) >= 3, f"end_of_stream only on the last: {eos_seen}")

    # Response phase: headers, then a body in two chunks; each echoed.
    s.send(
        ProcessingRequest(
            response_headers=headers([(":status", "200"), ("content-type", "text/event-stream")])
        )
    )
    name, h, r = s.reply()
    check(name == "response_headers", f"response headers answered, got {name}")
    check(set_headers(h.response).get("x-herd-epp-endpoint") == (PINNED, OVERWRITE_IF_EXISTS_OR_ADD), "picked endpoint on the response")
    chunks = [
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n',
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\ndata: [DONE]\n\n',
    ]
    for i, ch in enumerate(chunks):
        s.send(ProcessingRequest(response_body=HttpBody(body=ch, end_of_stream=i == 1)))
        name, b, r = s.reply()
        check(name == "response_body", f"response body answered, got {name}")
        sr = b.response.body_mutation.streamed_response
        check(sr.body == ch and sr.end_of_stream == (i == 1), f"chunk {i} echoed as is")
    s.close()


def immediate(stub, mode, pairs, body, meta, status, code):
    s = Stream(stub)
    s.send(request_start(mode, pairs, meta))
    if mode == Mode.BUFFERED:
        name, h, _ = s.reply()
        check(name == "request_headers", "BUFFERED: headers answered first")
    s.send(ProcessingRequest(request_body=HttpBody(body=body, end_of_stream=True)))
    name, ir, _ = s.reply()
    check(name == "immediate_response", f"{code}: immediate response, got {name}")
    check(ir.status.code == status, f"{code}: status {ir.status.code} != {status}")
    err = json.loads(ir.body)["error"]
    check(err["code"] == code, f"error code {err}")
    check(err["message"] and err["type"], f"OpenAI error shape {err}")
    hs = {o.header.key: o.header.raw_value.decode() for o in ir.headers.set_headers}
    check(hs.get("content-type") == "application/json", f"content-type {hs}")
    check("x-llm-d-request-dropped-reason" in hs, f"drop reason {hs}")
    s.close()


def buffered(stub):
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).encode()
    s = Stream(stub)
    s.send(request_start(Mode.BUFFERED, CHAT_HEADERS, subset([f"{OTHER}"])))
    name, h, r = s.reply()
    check(name == "request_headers", "BUFFERED: headers answered at once")
    check(h.response.header_mutation is None and not h.response.clear_route_cache, "headers let through unchanged")
    check(r.dynamic_metadata is None, "no pick before the body")
    s.send(ProcessingRequest(request_body=HttpBody(body=body, end_of_stream=True)))
    name, b, r = s.reply()
    check(name == "request_body", f"BUFFERED: body answered, got {name}")
    c = b.response
    check(c.clear_route_cache is True, "BUFFERED: clear_route_cache on the body reply")
    check(set_headers(c)["x-gateway-destination-endpoint"][0] == OTHER, "BUFFERED: pick in the body reply")
    check(c.body_mutation is None, "BUFFERED: body left as is")
    check(lb_metadata(r) == OTHER, "BUFFERED: metadata equals the header")
    s.close()


def headers_only(stub):
    s = Stream(stub)
    pairs = [(":method", "GET"), (":path", "/v1/models/" + MODEL), (":authority", "g")]
    s.send(request_start(Mode.NONE, pairs, subset([PINNED.split(":")[0]]), eos=True))
    name, h, r = s.reply()
    check(name == "request_headers", "headers-only request answered at once")
    ep = set_headers(h.response)["x-gateway-destination-endpoint"][0]
    check(ep in (PINNED, OTHER), f"a bare IP admits any port: {ep}")
    check(lb_metadata(r) == ep and h.response.clear_route_cache, "headers-only pick complete")
    s.close()


def main():
    stub = ExternalProcessorSyncStub(grpc.insecure_channel(EPP))
    full_duplex(stub)
    buffered(stub)
    headers_only(stub)
    for mode in (Mode.FULL_DUPLEX_STREAMED, Mode.BUFFERED):
        immediate(stub, mode, CHAT_HEADERS, b'{"model": ', None, 400, "invalid_request")
        immediate(stub, mode, CHAT_HEADERS, b'{"messages": []}', None, 400, "model_required")
        good = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}).encode()
        immediate(stub, mode, CHAT_HEADERS, good, subset([]), 503, "no_eligible_endpoint")
        immediate(stub, mode, CHAT_HEADERS, good, subset(["10.255.0.1:1"]), 503, "no_eligible_endpoint")
    print("ok")


if __name__ == "__main__":
    main()
