// The lab's load as a k6 script: open loop (constant arrival rate), the routes in turn. k6 1.x
// has no built-in tracing, so each request starts a trace of its own: the script sets its
// `traceparent` and tags the request with its trace id, which `--out json` then carries on
// every `http_req_duration` point (what `culprit report --k6` joins by).
import http from 'k6/http';
import { randomBytes } from 'k6/crypto';

const ROUTES = (__ENV.ROUTES || '/cpu').split(',');

export const options = {
  scenarios: {
    [__ENV.SCENARIO || 'load']: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 40),
      timeUnit: '1s',
      duration: __ENV.DURATION || '10s',
      preAllocatedVUs: Number(__ENV.VUS || 8),
    },
  },
  // The report reads the points; no summary on stdout.
  summaryTrendStats: ['p(50)', 'p(99)'],
};

function hex(bytes) {
  return Array.from(new Uint8Array(randomBytes(bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
}

export default function () {
  const traceId = hex(16);
  const route = ROUTES[(__VU * 7919 + __ITER) % ROUTES.length];
  http.get(`${__ENV.BASE_URL}${route}`, {
    headers: { traceparent: `00-${traceId}-${hex(8)}-01` },
    tags: { trace_id: traceId, name: route },
  });
}
