//! The OTLP/HTTP receiver: `/v1/traces`, `/v1/metrics`, `/v1/logs`, protobuf or JSON, optionally
//! gzip-compressed, answered the way the OTLP specification says (200 with an empty response in
//! the request's encoding, 400 malformed, 413 too large, 415 unsupported content type, 429
//! busy, with `Retry-After`). A request is admitted before its body is read: a flood of large
//! bodies waits in the senders, not in the agent's memory.

use std::{io::Read as _, net::SocketAddr};

use axum::{
    Extension, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    connections,
    ingress::{Ingress, Origin, Payload, Rejection},
    work_limit::Schema,
};

const PROTOBUF: &str = "application/x-protobuf";
/// The longest a request's body may take to arrive once it is admitted.
const BODY_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
const JSON: &str = "application/json";

#[derive(Clone)]
struct AppState {
    ingress: Ingress,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn of(headers: &HeaderMap) -> Option<Self> {
        let ct = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
        let mime = ct.split(';').next()?.trim();
        match mime {
            PROTOBUF => Some(Encoding::Protobuf),
            JSON => Some(Encoding::Json),
            _ => None,
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Encoding::Protobuf => PROTOBUF,
            Encoding::Json => JSON,
        })
    }
}

/// Decodes `body` as `T` in the given encoding.
fn decode<T: Message + Default + DeserializeOwned>(
    body: &[u8],
    encoding: Encoding,
) -> Result<T, String> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| e.to_string()),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
    }
}

fn encode<T: Message + Serialize>(msg: &T, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => msg.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(msg).unwrap_or_default(),
    }
}

/// A `google.rpc.Status`-shaped error body in the request's encoding.
fn error_response(status: StatusCode, message: &str, encoding: Encoding) -> Response {
    #[derive(Clone, PartialEq, Message, Serialize)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
    }
    let grpc_code = match status {
        StatusCode::BAD_REQUEST => 3,
        StatusCode::PAYLOAD_TOO_LARGE => 8,
        StatusCode::TOO_MANY_REQUESTS => 14,
        _ => 2,
    };
    let body = encode(
        &RpcStatus {
            code: grpc_code,
            message: message.to_string(),
        },
        encoding,
    );
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, encoding.content_type());
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(super::BUSY_RETRY_AFTER_S),
        );
    }
    resp
}

fn rejection_response(rejection: Rejection, encoding: Encoding) -> Response {
    match rejection {
        Rejection::Malformed(why) => error_response(
            StatusCode::BAD_REQUEST,
            &format!("malformed OTLP message: {why}"),
            encoding,
        ),
        Rejection::TooLarge { limit_bytes } => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than the {limit_bytes}-byte limit"),
            encoding,
        ),
        Rejection::TooManyItems { limit } => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "more than {limit} messages (spans, data points, log records, events, links, \
                 attributes) in one request"
            ),
            encoding,
        ),
        Rejection::Busy => error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "agent busy: retry later",
            encoding,
        ),
    }
}

/// gzip bodies are inflated, but never past the size limit.
fn inflate(headers: &HeaderMap, body: Bytes, ingress: &Ingress) -> Result<Bytes, Rejection> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body);
    }
    let mut out = Vec::new();
    let limit = ingress.max_message_bytes as u64 + 1;
    flate2::read::GzDecoder::new(&body[..])
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| ingress.malformed(format!("gzip: {e}")))?;
    ingress.check_size(out.len())?;
    Ok(out.into())
}

async fn handle<Req, Resp>(
    state: AppState,
    origin: Origin,
    headers: HeaderMap,
    body: Body,
    schema: Schema,
    wrap: fn(Req) -> Payload,
) -> Response
where
    Req: Message + Default + DeserializeOwned,
    Resp: Message + Default + Serialize,
{
    let Some(encoding) = Encoding::of(&headers) else {
        state
            .ingress
            .stats
            .rejected_unsupported_type
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "use Content-Type application/x-protobuf or application/json",
            Encoding::Json,
        );
    };
    let ingress = &state.ingress;
    let result = async {
        // Admitted, and its body's memory reserved, before the body is read.
        let _permit = ingress.admit()?;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        ingress.check_size(declared.unwrap_or(0))?;
        // A compressed body may inflate up to the limit.
        let gzip = headers.contains_key(header::CONTENT_ENCODING);
        let reserved = ingress.reserve(match declared {
            Some(n) if !gzip => n,
            _ => ingress.max_message_bytes,
        })?;
        // A body trickled in (or never sent) must not hold the budget it reserved.
        let body = tokio::time::timeout(
            BODY_READ_TIMEOUT,
            axum::body::to_bytes(body, ingress.max_message_bytes),
        )
        .await
        .map_err(|_| ingress.malformed("body not received within 30 s"))?
        .map_err(|_| {
            // The only way to fail a bounded read of a body the transport delivers.
            ingress.check_size(usize::MAX).unwrap_err()
        })?;
        ingress.check_size(body.len())?;
        let body = inflate(&headers, body, ingress)?;
        let mut budget =
            ingress.weigh(&body, schema, encoding == Encoding::Json, Some(reserved))?;
        let req: Req = decode(&body, encoding).map_err(|e| ingress.malformed(e))?;
        let body_bytes = body.len();
        drop(body);
        Ingress::release_body(&mut budget, body_bytes);
        ingress.deliver(wrap(req), origin, Some(budget))
    }
    .await;
    match result {
        Ok(()) => {
            let mut resp = (StatusCode::OK, encode(&Resp::default(), encoding)).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, encoding.content_type());
            resp
        }
        Err(rejection) => rejection_response(rejection, encoding),
    }
}

async fn traces(
    State(s): State<AppState>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle::<ExportTraceServiceRequest, ExportTraceServiceResponse>(
        s,
        origin,
        headers,
        body,
        Schema::Traces,
        Payload::Traces,
    )
    .await
}

async fn metrics(
    State(s): State<AppState>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle::<ExportMetricsServiceRequest, ExportMetricsServiceResponse>(
        s,
        origin,
        headers,
        body,
        Schema::Metrics,
        Payload::Metrics,
    )
    .await
}

async fn logs(
    State(s): State<AppState>,
    Extension(origin): Extension<Origin>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle::<ExportLogsServiceRequest, ExportLogsServiceResponse>(
        s,
        origin,
        headers,
        body,
        Schema::Logs,
        Payload::Logs,
    )
    .await
}

pub(crate) fn router(ingress: Ingress) -> Router {
    // Bodies past the limit are refused by the transport with 413 before they are buffered.
    let body_limit = ingress.max_message_bytes;
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(AppState { ingress })
}

/// Serves OTLP/HTTP on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    ingress: Ingress,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (security, stats) = (ingress.security.clone(), ingress.stats.clone());
    super::serve_tcp(
        addr,
        "OTLP/HTTP",
        router(ingress),
        security,
        stats,
        shutdown,
    )
    .await
}

/// Serves OTLP/HTTP on the unix socket `path` until `shutdown` resolves.
pub async fn serve_unix(
    path: std::path::PathBuf,
    ingress: Ingress,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = super::bind_unix(&path, "OTLP/HTTP")?;
    let inode = super::socket_inode(&path);
    log::info!("OTLP/HTTP receiver on unix:{}", path.display());
    ingress
        .stats
        .on_bound(format!("OTLP/HTTP unix:{}", path.display()));
    let stats = ingress.stats.clone();
    let served = connections::serve(listener, router(ingress), None, stats, shutdown).await;
    super::unbind_unix(&path, inode);
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On `0.0.0.0` the origin's local end is the address the client connected to, so that the
    /// sender's socket (its mirror) can be found.
    #[tokio::test]
    async fn the_origin_names_the_accepted_sockets_own_address() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (ingress, mut inbound) = Ingress::new(4, 4, 1 << 20);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            SocketAddr::from(([0, 0, 0, 0], port)),
            ingress,
            async move {
                let _ = stopped.await;
            },
        ));
        let url = format!("http://127.0.0.1:{port}/v1/traces");
        let client = reqwest::Client::new();
        let mut sent = None;
        // The server binds asynchronously: retry the first request until it listens.
        for _ in 0..100 {
            match client
                .post(&url)
                .header(header::CONTENT_TYPE, PROTOBUF)
                .body(ExportTraceServiceRequest::default().encode_to_vec())
                .send()
                .await
            {
                Ok(resp) => {
                    sent = Some(resp.status());
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        assert_eq!(sent, Some(reqwest::StatusCode::OK));
        let msg = inbound.recv().await.expect("one message");
        assert_eq!(
            msg.origin.local,
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        );
        assert!(msg.origin.peer.is_some_and(|p| p.ip().is_loopback()));
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
