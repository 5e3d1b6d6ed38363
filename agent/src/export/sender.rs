//! The task that drains the export queue: one request at a time, in order, retried with
//! exponential backoff while the backend is unavailable.

use std::{sync::atomic::Ordering, time::Duration};

use tonic::{
    Code, client::Grpc, codegen::http::uri::PathAndQuery, metadata::MetadataValue,
    transport::Channel,
};

use super::{
    config::{ExportConfig, Protocol},
    queue::{ExportQueue, Item, Telemetry},
};
use crate::otlp::raw_codec::RawCodec;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Queued trace requests are merged into one export of at most this many spans.
const MAX_BATCH_SPANS: u64 = 2048;

/// What became of one send.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Sent,
    /// Worth trying again later (backend down, overloaded, timed out).
    Retry(String),
    /// The backend refused the data itself.
    Rejected(String),
}

pub(crate) fn grpc_outcome(code: Code, message: &str) -> Outcome {
    match code {
        Code::Ok => Outcome::Sent,
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss
        | Code::Unknown
        | Code::Internal => Outcome::Retry(format!("{code:?}: {message}")),
        _ => Outcome::Rejected(format!("{code:?}: {message}")),
    }
}

pub(crate) fn http_outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Sent,
        408 | 429 | 500 | 502 | 503 | 504 => Outcome::Retry(format!("HTTP {status}")),
        _ => Outcome::Rejected(format!("HTTP {status}")),
    }
}

enum Client {
    Grpc(Channel),
    Http(reqwest::Client),
}

pub(crate) struct Sender {
    config: ExportConfig,
    client: Client,
    queue: ExportQueue,
}

impl Sender {
    pub(crate) fn new(config: ExportConfig, queue: ExportQueue) -> anyhow::Result<Self> {
        let client = match config.protocol {
            Protocol::Grpc => Client::Grpc(
                Channel::from_shared(config.traces_endpoint.clone())?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .connect_lazy(),
            ),
            Protocol::HttpProtobuf => {
                Client::Http(reqwest::Client::builder().timeout(config.timeout).build()?)
            }
        };
        Ok(Self {
            config,
            client,
            queue,
        })
    }

    /// Sends whatever is queued, waits otherwise; runs until its task is stopped (the
    /// outbound stage, last at shutdown).
    pub(crate) async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let Some(item) = self.queue.pop_batch(MAX_BATCH_SPANS) else {
                self.queue.notify.notified().await;
                continue;
            };
            match self.send(&item).await {
                Outcome::Sent => {
                    backoff = BACKOFF_MIN;
                    let stats = &self.queue.stats;
                    stats
                        .spans_exported
                        .fetch_add(item.spans, Ordering::Relaxed);
                    stats.requests_exported.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Rejected(why) => {
                    log::warn!("the OTLP backend refused {} spans: {why}", item.spans);
                    self.queue
                        .stats
                        .spans_rejected_by_backend
                        .fetch_add(item.spans, Ordering::Relaxed);
                }
                Outcome::Retry(why) => {
                    log::debug!("export failed ({why}); retrying in {backoff:?}");
                    self.queue
                        .stats
                        .export_retries
                        .fetch_add(1, Ordering::Relaxed);
                    self.queue.requeue(item);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn send(&self, item: &Item) -> Outcome {
        match &self.client {
            Client::Grpc(channel) => self.send_grpc(channel.clone(), item).await,
            Client::Http(http) => self.send_http(http, item).await,
        }
    }

    /// Sends the already encoded body: no copy of the request, however often it is retried.
    async fn send_grpc(&self, channel: Channel, item: &Item) -> Outcome {
        let path = match item.signal {
            Telemetry::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Telemetry::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Telemetry::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        };
        let mut grpc = Grpc::new(channel);
        if let Err(e) = grpc.ready().await {
            return Outcome::Retry(format!("backend not ready: {e}"));
        }
        let mut request = tonic::Request::new(item.body.clone());
        for (k, v) in &self.config.headers {
            if let (Ok(key), Ok(val)) = (
                tonic::metadata::MetadataKey::from_bytes(k.to_lowercase().as_bytes()),
                MetadataValue::try_from(v.as_str()),
            ) {
                request.metadata_mut().insert(key, val);
            }
        }
        match grpc
            .unary(request, PathAndQuery::from_static(path), RawCodec)
            .await
        {
            Ok(_) => Outcome::Sent,
            Err(status) => grpc_outcome(status.code(), status.message()),
        }
    }

    async fn send_http(&self, http: &reqwest::Client, item: &Item) -> Outcome {
        let url = match item.signal {
            Telemetry::Traces => &self.config.traces_endpoint,
            Telemetry::Metrics => &self.config.metrics_endpoint,
            Telemetry::Logs => &self.config.logs_endpoint,
        };
        let mut req = http
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(item.body.clone());
        for (k, v) in &self.config.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(resp) => http_outcome(resp.status().as_u16()),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_are_retried_and_refusals_are_not() {
        assert_eq!(grpc_outcome(Code::Ok, ""), Outcome::Sent);
        assert!(matches!(
            grpc_outcome(Code::Unavailable, "down"),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            grpc_outcome(Code::ResourceExhausted, ""),
            Outcome::Retry(_)
        ));
        assert!(matches!(
            grpc_outcome(Code::InvalidArgument, ""),
            Outcome::Rejected(_)
        ));
        assert_eq!(http_outcome(200), Outcome::Sent);
        assert!(matches!(http_outcome(503), Outcome::Retry(_)));
        assert!(matches!(http_outcome(429), Outcome::Retry(_)));
        assert!(matches!(http_outcome(400), Outcome::Rejected(_)));
        assert!(matches!(http_outcome(413), Outcome::Rejected(_)));
    }
}
