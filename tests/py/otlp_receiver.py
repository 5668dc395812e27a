"""A real OTLP/gRPC receiver (opentelemetry-proto + grpcio) for herd's tests.

Prints `PORT <n>` once listening, then one JSON line per span and per metric
it receives, so the Rust test can assert on what herd exported.
"""
import json
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as ms
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc as msg
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as tsg


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Traces(tsg.TraceServiceServicer):
    def Export(self, request, context):
        for rs in request.resource_spans:
            resource = {a.key: value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    emit({
                        "type": "span",
                        "service": resource.get("service.name"),
                        "name": sp.name,
                        "trace_id": sp.trace_id.hex(),
                        "span_id": sp.span_id.hex(),
                        "parent_span_id": sp.parent_span_id.hex(),
                        "attributes": {a.key: value(a.value) for a in sp.attributes},
                    })
        return ts.ExportTraceServiceResponse()


class Metrics(msg.MetricsServiceServicer):
    def Export(self, request, context):
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    emit({"type": "metric", "name": m.name, "data": m.WhichOneof("data")})
        return ms.ExportMetricsServiceResponse()


def main():
    server = grpc.server(futures.ThreadPoolExecutor(4))
    tsg.add_TraceServiceServicer_to_server(Traces(), server)
    msg.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    emit_line = f"PORT {port}"
    sys.stdout.write(emit_line + "\n")
    sys.stdout.flush()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
