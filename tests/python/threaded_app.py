"""A threaded HTTP service instrumented with the OpenTelemetry Python SDK, as a Flask or
http.server app is: a thread per client connection, spans ended on the thread that served them,
the batch span processor, and no thread attribute on any span. `/cpu` burns --cpu-ms of the
thread's CPU time, `/sleep` sleeps --sleep-ms.

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


def serve(args):
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import SpanKind

    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
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
                    end = time.thread_time() + args.cpu_ms / 1000.0
                    x = 0
                    while time.thread_time() < end:
                        x += 1
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
