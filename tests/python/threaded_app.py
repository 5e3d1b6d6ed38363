"""A threaded HTTP service instrumented with the OpenTelemetry Python SDK, as a Flask or
http.server app is: a thread per client connection, spans ended on the thread that served them,
the batch span processor, and no thread attribute on any span. `/cpu` burns --cpu-ms of the
thread's CPU time (in Python, holding the GIL, or with --cpu-kind native in C code that
releases it, as hashlib, zlib or numpy do), `/sleep` sleeps --sleep-ms.

With --thread-context LIB it also publishes each span's OpenTelemetry thread context (OTEP
4947) on the thread that starts it, through LIB (the lab's writer, a shared library defining
the TLS variable `otel_thread_ctx_v1`), as an SDK with that support does when a span becomes
current.

For the test it records what the agent cannot read: the OS thread that served each span (to
--record, as JSON, when it stops on SIGTERM). `--load` instead runs the clients: --cpu-clients
and --sleep-clients keep-alive connections calling their route back to back for --seconds.
"""

import argparse
import http.client
import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def thread_context_publisher(library):
    """A span processor that publishes the span it starts as its thread's context, and the
    enclosing one (or none) when it ends. Records follow OTEP 4947 v1: trace-id, span-id, valid,
    trace-flags, attrs-data-size (0)."""
    import ctypes

    from opentelemetry.sdk.trace import SpanProcessor

    lib = ctypes.CDLL(library)
    lib.culprit_lab_thread_ctx_set.argtypes = [ctypes.c_void_p]
    lib.culprit_lab_thread_ctx_set.restype = None

    class Publisher(SpanProcessor):
        def __init__(self):
            self.local = threading.local()

        def _stack(self):
            if not hasattr(self.local, "stack"):
                self.local.stack = []
            return self.local.stack

        def on_start(self, span, parent_context=None):
            ctx = span.get_span_context()
            record = (
                ctx.trace_id.to_bytes(16, "big")
                + ctx.span_id.to_bytes(8, "big")
                + bytes([1, int(ctx.trace_flags)])
                + (0).to_bytes(2, "little")
            )
            # ctypes allocates with malloc: aligned beyond the 2 bytes the spec asks.
            buf = ctypes.create_string_buffer(record, len(record))
            self._stack().append(buf)
            lib.culprit_lab_thread_ctx_set(ctypes.addressof(buf))

        def on_end(self, span):
            stack = self._stack()
            if stack:
                stack.pop()
            lib.culprit_lab_thread_ctx_set(ctypes.addressof(stack[-1]) if stack else None)

    return Publisher()


def burn_cpu(kind, seconds):
    """Spends `seconds` of this thread's CPU time."""
    end = time.thread_time() + seconds
    if kind == "native":
        import hashlib

        block = b"x" * (256 * 1024)
        while time.thread_time() < end:
            # hashlib drops the GIL for large inputs: the threads compute in parallel.
            hashlib.sha256(block).digest()
    else:
        x = 0
        while time.thread_time() < end:
            x += 1


def serve(args):
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    if args.thread_context:
        provider.add_span_processor(thread_context_publisher(args.thread_context))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=args.endpoint), schedule_delay_millis=200)
    )
    tracer = provider.get_tracer("culprit.test.threaded")
    served = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            with tracer.start_as_current_span(f"GET {self.path}", kind=SpanKind.SERVER) as span:
                if self.path == "/cpu":
                    burn_cpu(args.cpu_kind, args.cpu_ms / 1000.0)
                else:
                    time.sleep(args.sleep_ms / 1000.0)
                ctx = span.get_span_context()
            with lock:
                served.append(
                    {
                        "spanId": format(ctx.span_id, "016x"),
                        "route": self.path,
                        "tid": threading.get_native_id(),
                    }
                )
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop.wait()
    server.shutdown()
    provider.shutdown()
    with open(args.record, "w") as f:
        json.dump(served, f)


def load(args):
    deadline = time.monotonic() + args.seconds
    failures = []

    def client(route):
        conn = http.client.HTTPConnection("127.0.0.1", args.port)
        while time.monotonic() < deadline:
            conn.request("GET", route)
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                failures.append(r.status)

    threads = [threading.Thread(target=client, args=(args.cpu_path,)) for _ in range(args.cpu_clients)]
    threads += [
        threading.Thread(target=client, args=(args.sleep_path,)) for _ in range(args.sleep_clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} failed requests")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--load", action="store_true")
    ap.add_argument("--endpoint", default="")
    ap.add_argument("--service", default="culprit-threaded-app")
    ap.add_argument("--record", default="")
    ap.add_argument("--cpu-ms", type=float, default=20.0)
    ap.add_argument("--cpu-kind", choices=["python", "native"], default="python")
    ap.add_argument("--thread-context", default="", help="publish contexts through this library")
    ap.add_argument("--sleep-ms", type=float, default=50.0)
    ap.add_argument("--cpu-clients", type=int, default=3)
    ap.add_argument("--sleep-clients", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--cpu-path", default="/cpu", help="--load: the computing route")
    ap.add_argument("--sleep-path", default="/sleep", help="--load: the waiting route")
    args = ap.parse_args()
    load(args) if args.load else serve(args)


if __name__ == "__main__":
    main()
