//! The task that drains the export queue: one request at a time, in order, retried with
//! exponential backoff while the backend is unavailable.

use std::{sync::atomic::Ordering, time::Duration};

use opentelemetry_proto::tonic::collector::{
    logs::v1::logs_service_client::LogsServiceClient,
    metrics::v1::metrics_service_client::MetricsServiceClient,
    trace::v1::trace_service_client::TraceServiceClient,
};
use prost::Message as _;
use tonic::{Code, metadata::MetadataValue, transport::Channel};

use super::{
    config::{ExportConfig, Protocol},
    queue::ExportQueue,
};
use crate::otlp::Payload;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Queued trace requests are merged into one export of at most this many spans.
const MAX_BATCH_SPANS: u64 = 2048;

/// What became of one send.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Worth trying again later (backend down, overloaded, timed out).
    Retry(String),
    /// The backend refused the data itself.
    Rejected(String),
}

pub fn grpc_outcome(code: Code, message: &str) -> Outcome {
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

pub fn http_outcome(status: u16) -> Outcome {
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

pub struct Sender {
    config: ExportConfig,
    client: Client,
    queue: ExportQueue,
}

impl Sender {
    pub fn new(config: ExportConfig, queue: ExportQueue) -> anyhow::Result<Self> {
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

    /// Runs until the process ends: sends whatever is queued, waits otherwise.
    pub async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let Some(item) = self.queue.pop_batch(MAX_BATCH_SPANS) else {
                self.queue.notify.notified().await;
                continue;
            };
            match self.send(&item.payload).await {
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

    async fn send(&self, payload: &Payload) -> Outcome {
        match &self.client {
            Client::Grpc(channel) => self.send_grpc(channel.clone(), payload).await,
            Client::Http(http) => self.send_http(http, payload).await,
        }
    }

    async fn send_grpc(&self, channel: Channel, payload: &Payload) -> Outcome {
        macro_rules! export {
            ($client:ident, $req:expr) => {{
                let mut request = tonic::Request::new($req.clone());
                for (k, v) in &self.config.headers {
                    if let (Ok(key), Ok(val)) = (
                        tonic::metadata::MetadataKey::from_bytes(k.to_lowercase().as_bytes()),
                        MetadataValue::try_from(v.as_str()),
                    ) {
                        request.metadata_mut().insert(key, val);
                    }
                }
                match $client::new(channel).export(request).await {
                    Ok(_) => Outcome::Sent,
                    Err(status) => grpc_outcome(status.code(), status.message()),
                }
            }};
        }
        match payload {
            Payload::Traces(r) => export!(TraceServiceClient, r),
            Payload::Metrics(r) => export!(MetricsServiceClient, r),
            Payload::Logs(r) => export!(LogsServiceClient, r),
        }
    }

    async fn send_http(&self, http: &reqwest::Client, payload: &Payload) -> Outcome {
        let (url, body) = match payload {
            Payload::Traces(r) => (&self.config.traces_endpoint, r.encode_to_vec()),
            Payload::Metrics(r) => (&self.config.metrics_endpoint, r.encode_to_vec()),
            Payload::Logs(r) => (&self.config.logs_endpoint, r.encode_to_vec()),
        };
        let mut req = http
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body);
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
