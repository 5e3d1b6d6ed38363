"""The lab's load as a Locust file, a real peer of `culprit report --client-results`.

Each request starts a trace of its own: the file sets its `traceparent` (Locust has no tracing of
its own) and keeps the trace id in the request's context, and a request listener writes one JSON
line per request, `{"trace_id", "latency_ms", "group", "ok"}`, to `$CULPRIT_RESULTS`: what the
report joins with the server's spans. `$ROUTES` (comma-separated) are taken in turn at `$RATE`
requests per second in all, spread over the users; `$SCENARIO` names the group.
"""

import itertools
import json
import os
import secrets
import time

import gevent
from locust import FastHttpUser, events, task

ROUTES = os.environ.get("ROUTES", "/cpu").split(",")
RATE = float(os.environ.get("RATE", "40"))
USERS = int(os.environ.get("USERS", "8"))
GROUP = os.environ.get("SCENARIO", "load")
RESULTS = open(os.environ["CULPRIT_RESULTS"], "a", buffering=1, encoding="utf-8")
TURN = itertools.count()
STARTED = itertools.count()


@events.request.add_listener
def record(response_time, context, exception, response=None, **_):
    trace_id = (context or {}).get("trace_id")
    if trace_id is None:
        return
    ok = exception is None and response is not None and response.status_code == 200
    line = {"trace_id": trace_id, "latency_ms": response_time, "group": GROUP, "ok": ok}
    RESULTS.write(json.dumps(line) + "\n")


class LabClient(FastHttpUser):
    """Each user sends its share of the rate on a fixed grid of its own, the users' grids
    staggered over one period: requests arrive evenly spaced at the phase's rate, as the lab's
    own generator and k6 send them. (Locust starts a second's users together, and its
    `constant_throughput` runs each user's first two requests back to back: the users fall
    into step and send in bursts of all of them at once.)"""

    def on_start(self):
        self.period = USERS / RATE
        self.next_at = time.monotonic() + next(STARTED) % USERS / RATE
        gevent.sleep(max(0.0, self.next_at - time.monotonic()))

    def wait_time(self):
        self.next_at += self.period
        return max(0.0, self.next_at - time.monotonic())

    @task
    def request(self):
        trace_id = secrets.token_hex(16)
        route = ROUTES[next(TURN) % len(ROUTES)]
        self.client.get(
            route,
            name=route,
            headers={"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
            context={"trace_id": trace_id},
        )
