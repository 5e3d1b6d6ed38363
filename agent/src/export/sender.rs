//! The task that drains the export queue: one request at a time, in order, retried as
//! `retry` says while the backend is unavailable; over TLS (rustls, the bundled web roots plus
//! `OTEL_EXPORTER_OTLP_CERTIFICATE`, and a client certificate for mutual TLS) to an `https`
//! endpoint.

use std::{sync::atomic::Ordering, time::Instant};

use anyhow::Context as _;
use tonic::{
    client::Grpc,
    codegen::http::uri::PathAndQuery,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

use super::{
    config::{ExportConfig, Protocol},
    queue::{ExportQueue, Item, Telemetry, split},
    retry::{Backoff, Outcome, grpc_outcome, http_outcome, partial_rejection},
};
use crate::{host::clock::realtime_ns, otlp::raw_codec::RawCodec};

/// Queued trace requests are merged into one export of at most this many spans and bytes:
/// under the 4 MiB a collector's receiver takes by default.
const MAX_BATCH_SPANS: u64 = 2048;
const MAX_BATCH_BYTES: usize = 3 << 20;

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
        let tls = &config.tls;
        let client = match config.protocol {
            Protocol::Grpc => {
                let mut channel = Channel::from_shared(config.traces_endpoint.clone())?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                if config.traces_endpoint.starts_with("https://") {
                    let mut tls_config = ClientTlsConfig::new().with_webpki_roots();
                    if let Some(ca) = &tls.ca_pem {
                        tls_config = tls_config.ca_certificate(Certificate::from_pem(ca));
                    }
                    if let Some((cert, key)) = &tls.client_pem {
                        tls_config = tls_config.identity(Identity::from_pem(cert, key));
                    }
                    channel = channel
                        .tls_config(tls_config)
                        .context("the gRPC export endpoint's TLS configuration")?;
                }
                Client::Grpc(channel.connect_lazy())
            }
            Protocol::HttpProtobuf => {
                let mut builder = reqwest::Client::builder()
                    .timeout(config.timeout)
                    .use_rustls_tls();
                if let Some(ca) = &tls.ca_pem {
                    for cert in reqwest::Certificate::from_pem_bundle(ca)
                        .context("OTEL_EXPORTER_OTLP_CERTIFICATE")?
                    {
                        builder = builder.add_root_certificate(cert);
                    }
                }
                if let Some((cert, key)) = &tls.client_pem {
                    let identity = reqwest::Identity::from_pem(&[&cert[..], &key[..]].concat())
                        .context("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and _CLIENT_KEY")?;
                    builder = builder.identity(identity);
                }
                Client::Http(builder.build()?)
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
        let mut backoff = Backoff::new(self.config.max_elapsed);
        loop {
            let Some(item) = self.queue.pop_batch(MAX_BATCH_SPANS, MAX_BATCH_BYTES) else {
                self.queue.notify.notified().await;
                continue;
            };
            let stats = &self.queue.stats;
            let outcome = self.send(&item).await;
            let now_unix_ms = realtime_ns() / 1_000_000;
            match &outcome {
                Outcome::Sent { .. } => stats.on_success(now_unix_ms),
                Outcome::Retry { why, .. } | Outcome::Rejected(why) => {
                    stats.on_failure(now_unix_ms, why);
                }
                // Answered, if not taken: it is split, or refused if it cannot be.
                Outcome::TooLarge(_) => {}
            }
            match outcome {
                Outcome::Sent { rejected, message } => {
                    backoff.reset();
                    let rejected = rejected.min(item.spans);
                    if rejected > 0 {
                        log::warn!(
                            "the OTLP backend accepted {} spans and rejected {rejected}: {message}",
                            item.spans - rejected
                        );
                    }
                    stats
                        .spans_exported
                        .fetch_add(item.spans - rejected, Ordering::Relaxed);
                    stats
                        .spans_rejected_by_backend
                        .fetch_add(rejected, Ordering::Relaxed);
                    stats.requests_exported.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::TooLarge(why) => match split(&item) {
                    // Both halves go first, in order, never merged again.
                    Some((first, second)) => {
                        backoff.reset();
                        log::debug!(
                            "export too large ({why}): sending {} spans in halves",
                            item.spans
                        );
                        self.queue.requeue(second);
                        self.queue.requeue(first);
                    }
                    None => {
                        backoff.reset();
                        stats.on_failure(now_unix_ms, &why);
                        self.refused(&item, &why);
                    }
                },
                Outcome::Rejected(why) => {
                    backoff.reset();
                    self.refused(&item, &why);
                }
                Outcome::Retry { why, after } => {
                    let now = Instant::now();
                    if backoff.exhausted(now) {
                        log::warn!(
                            "dropping a {:?} export ({} spans): the backend failed for too long \
                             ({why})",
                            item.signal,
                            item.spans
                        );
                        stats
                            .spans_dropped_retries_exhausted
                            .fetch_add(item.spans, Ordering::Relaxed);
                        stats.requests_dropped.fetch_add(1, Ordering::Relaxed);
                        backoff.reset();
                        continue;
                    }
                    let delay = backoff.next_delay(now, after);
                    log::debug!("export failed ({why}); retrying in {delay:?}");
                    stats.export_retries.fetch_add(1, Ordering::Relaxed);
                    self.queue.requeue(item);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    fn refused(&self, item: &Item, why: &str) {
        log::warn!("the OTLP backend refused {} spans: {why}", item.spans);
        self.queue
            .stats
            .spans_rejected_by_backend
            .fetch_add(item.spans, Ordering::Relaxed);
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
        if self.config.gzip {
            grpc = grpc.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        }
        if let Err(e) = grpc.ready().await {
            return Outcome::Retry {
                why: format!("backend not ready: {}", chain(&e)),
                after: None,
            };
        }
        let mut request = tonic::Request::new(item.body.clone());
        for (k, v) in self.headers(item.signal) {
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
            Ok(response) => sent(item, response.get_ref()),
            Err(status) => grpc_outcome(status.code(), status.message(), status.details()),
        }
    }

    fn headers(&self, signal: Telemetry) -> &[(String, String)] {
        match signal {
            Telemetry::Traces => &self.config.headers,
            Telemetry::Metrics => &self.config.metrics_headers,
            Telemetry::Logs => &self.config.logs_headers,
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
            .header("content-type", "application/x-protobuf");
        req = if self.config.gzip {
            req.header("content-encoding", "gzip")
                .body(gzipped(&item.body))
        } else {
            req.body(item.body.clone())
        };
        for (k, v) in self.headers(item.signal) {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                match http_outcome(status, retry_after.as_deref()) {
                    Outcome::Sent { .. } => match resp.bytes().await {
                        Ok(body) => sent(item, &body),
                        Err(_) => Outcome::Sent {
                            rejected: 0,
                            message: String::new(),
                        },
                    },
                    other => other,
                }
            }
            Err(e) => Outcome::Retry {
                why: chain(&e),
                after: None,
            },
        }
    }
}

/// An error with its causes: a TLS failure is named only deep in the chain.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

fn gzipped(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to memory cannot fail.
    let _ = gz.write_all(body);
    gz.finish().unwrap_or_default()
}

/// A success, with the spans a trace export's partial success says were rejected.
fn sent(item: &Item, response: &[u8]) -> Outcome {
    let (rejected, message) = match item.signal {
        Telemetry::Traces => partial_rejection(response),
        _ => (0, String::new()),
    };
    Outcome::Sent { rejected, message }
}

#[cfg(test)]
#[path = "sender_tests.rs"]
mod tests;
