"""A real OpenTelemetry-instrumented app for Culprit's end-to-end tests.

It serves a number of "requests", each one span (with a child span, events, a link and
attributes of every type, so that lossless forwarding can be checked), doing one kind of work:

  cpu         busy-loop for --work-ms
  sleep       sleep for --work-ms
  downstream  one request/response over TCP to --downstream-host:--downstream-port
  idle        almost nothing

Spans go to the agent through the official OTLP exporters (gRPC or HTTP/protobuf; gRPC also to
a unix:///path endpoint). `http-unix` posts the SDK's own OTLP/protobuf encoding over a unix
socket (--endpoint is the socket's path), which the HTTP exporter cannot. Every span
the app created is also written, as JSON, to --record, for the test to compare with what comes
out of the collector.
"""

import argparse
import json
import os
import socket
import threading
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode


class Recorder(SpanExporter):
    """Keeps what the SDK exported, in the OTLP JSON field names the test compares."""

    def __init__(self):
        self.spans = []

    def export(self, spans):
        for s in spans:
            ctx = s.get_span_context()
            self.spans.append(
                {
                    "traceId": format(ctx.trace_id, "032x"),
                    "spanId": format(ctx.span_id, "016x"),
                    "parentSpanId": format(s.parent.span_id, "016x") if s.parent else "",
                    "name": s.name,
                    "kind": s.kind.value,
                    "startTimeUnixNano": s.start_time,
                    "endTimeUnixNano": s.end_time,
                    "attributes": {k: v for k, v in s.attributes.items()},
                    "events": [
                        {"name": e.name, "timeUnixNano": e.timestamp, "attributes": dict(e.attributes)}
                        for e in s.events
                    ],
                    "links": [
                        {
                            "traceId": format(l.context.trace_id, "032x"),
                            "spanId": format(l.context.span_id, "016x"),
                            "attributes": dict(l.attributes),
                        }
                        for l in s.links
                    ],
                    "status": {"code": s.status.status_code.value, "message": s.status.description or ""},
                    "resource": dict(s.resource.attributes),
                    "scope": {"name": s.instrumentation_scope.name, "version": s.instrumentation_scope.version},
                }
            )
        return SpanExportResult.SUCCESS


class UnixHttpExporter(SpanExporter):
    """OTLP/HTTP protobuf over a unix socket, encoded by the SDK's own OTLP encoder."""

    def __init__(self, path):
        self.path = path

    def export(self, spans):
        import http.client

        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        class Conn(http.client.HTTPConnection):
            def connect(conn):
                conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.sock.connect(self.path)

        body = encode_spans(spans).SerializeToString()
        conn = Conn("localhost")
        try:
            conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
            ok = conn.getresponse().status == 200
        finally:
            conn.close()
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE


def exporter(protocol, endpoint):
    if protocol == "http-unix":
        return UnixHttpExporter(endpoint)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if endpoint.startswith("unix:"):
            # gRPC core sends the socket's path as :authority, which HTTP/2 servers built on
            # the h2 crate (the agent's) refuse: name the host the way grpc-go does.
            return OTLPSpanExporter(
                endpoint=endpoint, insecure=True, channel_options=(("grpc.default_authority", "localhost"),)
            )
        if endpoint.startswith("https://"):
            # TLS as configured by the OTEL_EXPORTER_OTLP_* certificate variables.
            return OTLPSpanExporter(endpoint=endpoint, insecure=False)
        return OTLPSpanExporter(endpoint=endpoint, insecure=True)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def busy(ms):
    end = time.perf_counter() + ms / 1000.0
    x = 0
    while time.perf_counter() < end:
        x += 1


def downstream(host, port, sock_holder):
    if sock_holder[0] is None:
        sock_holder[0] = socket.create_connection((host, port))
        sock_holder[0].setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s = sock_holder[0]
    s.sendall(b"x" * 512)
    got = 0
    while got < 512:
        chunk = s.recv(512 - got)
        if not chunk:
            raise RuntimeError("downstream closed")
        got += len(chunk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", choices=["grpc", "http", "http-unix"], required=True)
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--mode", choices=["cpu", "sleep", "downstream", "idle"], required=True)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--work-ms", type=float, default=30.0)
    ap.add_argument("--gap-ms", type=float, default=20.0)
    ap.add_argument("--downstream-port", type=int, default=0)
    ap.add_argument("--downstream-host", default="127.0.0.1")
    ap.add_argument(
        "--resource",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra resource attribute (integers stay integers), e.g. a claimed process.pid",
    )
    ap.add_argument("--thread-tid", type=int, help="claim this thread id (culprit.thread.tid)")
    ap.add_argument("--no-pid", action="store_true", help="leave process.pid out of the resource")
    ap.add_argument("--thread-attr", action="store_true", help="name the OS thread (culprit.thread.tid)")
    ap.add_argument("--service", default="culprit-test-app")
    ap.add_argument("--record", required=True)
    ap.add_argument("--start-delay-ms", type=float, default=0.0)
    ap.add_argument(
        "--ready-file",
        help="create this file once set up, then wait for --go-file before the first request",
    )
    ap.add_argument("--go-file")
    args = ap.parse_args()

    attrs = {"service.name": args.service, "deployment.environment": "test"}
    if not args.no_pid:
        attrs["process.pid"] = os.getpid()
    for kv in args.resource:
        key, value = kv.split("=", 1)
        attrs[key] = int(value) if value.lstrip("-").isdigit() else value
    provider = TracerProvider(resource=Resource.create(attrs))
    recorder = Recorder()
    provider.add_span_processor(SimpleSpanProcessor(exporter(args.protocol, args.endpoint)))
    provider.add_span_processor(SimpleSpanProcessor(recorder))
    tracer = provider.get_tracer("culprit.test.app", "1.2.3")

    if args.ready_file:
        # The harness injects its fault once the interpreter is up: a Python start under a
        # CPU hog or quota takes minutes on an emulated machine. One span first, so that the
        # agent knows the process (from its connection) before the first request.
        with tracer.start_as_current_span("warmup", kind=SpanKind.INTERNAL):
            pass
        open(args.ready_file, "w").close()
        while not os.path.exists(args.go_file):
            time.sleep(0.01)
    time.sleep(args.start_delay_ms / 1000.0)
    sock_holder = [None]
    previous = None
    for i in range(args.count):
        links = [Link(previous, {"link.kind": "previous"})] if previous else []
        with tracer.start_as_current_span(f"request {args.mode}", kind=SpanKind.SERVER, links=links) as span:
            span.set_attribute("request.index", i)
            span.set_attribute("request.ratio", 0.5)
            span.set_attribute("request.ok", True)
            span.set_attribute("request.tags", ["a", "b"])
            if args.thread_tid is not None:
                span.set_attribute("culprit.thread.tid", args.thread_tid)
            elif args.thread_attr:
                span.set_attribute("culprit.thread.tid", threading.get_native_id())
            span.add_event("work.start", {"mode": args.mode})
            with tracer.start_as_current_span("work", kind=SpanKind.INTERNAL) as child:
                child.set_attribute("work.ms", args.work_ms)
                if args.mode == "cpu":
                    busy(args.work_ms)
                elif args.mode == "sleep":
                    time.sleep(args.work_ms / 1000.0)
                elif args.mode == "downstream":
                    downstream(args.downstream_host, args.downstream_port, sock_holder)
                else:
                    busy(0.2)
            span.add_event("work.end")
            span.set_status(Status(StatusCode.OK))
            previous = span.get_span_context()
        time.sleep(args.gap_ms / 1000.0)
    provider.shutdown()
    with open(args.record, "w") as f:
        json.dump(recorder.spans, f)


if __name__ == "__main__":
    main()
