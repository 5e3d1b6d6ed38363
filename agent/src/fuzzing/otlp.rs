//! The OTLP receivers as the transport hands them a request: the HTTP router and the gRPC
//! services, on a current-thread runtime, with a receiver of small limits.

use std::{io::Write as _, sync::OnceLock};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use serde::de::DeserializeOwned;
use tonic::codegen::Service as _;

use crate::otlp::{
    Ingress, Origin,
    grpc::{Logs, Metrics, OtlpGrpc, OtlpSignal, Traces},
    http,
};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Messages up to 1 MiB; the other limits the agent's defaults.
const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Whether `body` decodes as a request of signal `which` (0 traces, 1 metrics, 2 logs).
fn decodes(which: usize, body: &[u8], json: bool) -> bool {
    fn one<T: prost::Message + Default + DeserializeOwned>(body: &[u8], json: bool) -> bool {
        if json {
            serde_json::from_slice::<T>(body).is_ok()
        } else {
            T::decode(body).is_ok()
        }
    }
    match which {
        0 => one::<ExportTraceServiceRequest>(body, json),
        1 => one::<ExportMetricsServiceRequest>(body, json),
        _ => one::<ExportLogsServiceRequest>(body, json),
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

/// An OTLP/HTTP request of `body` (protobuf, or JSON when `json`); `selector` picks the path
/// (bits 0-1: traces, metrics, logs), gzip (bit 2) and a declared Content-Length (bit 3). The
/// answer (returned) is one OTLP/HTTP gives, and a body that decodes is never refused as
/// malformed.
pub fn otlp_http(selector: u8, json: bool, body: &[u8]) -> StatusCode {
    const PATHS: [&str; 3] = ["/v1/traces", "/v1/metrics", "/v1/logs"];
    let which = usize::from(selector & 3) % 3;
    let gzipped = selector & 4 != 0;
    let sent = if gzipped { gzip(body) } else { body.to_vec() };
    let content_type = if json {
        "application/json"
    } else {
        "application/x-protobuf"
    };
    let mut builder = Request::post(PATHS[which]).header(header::CONTENT_TYPE, content_type);
    if gzipped {
        builder = builder.header(header::CONTENT_ENCODING, "gzip");
    }
    if selector & 8 != 0 {
        builder = builder.header(header::CONTENT_LENGTH, sent.len());
    }
    let mut request = builder.body(Body::from(sent)).expect("a valid request");
    request.extensions_mut().insert(Origin::default());
    let (ingress, mut queue) = Ingress::new(4, 4, MAX_MESSAGE_BYTES);
    let status = runtime().block_on(async move {
        let response = http::router(ingress).call(request).await;
        response.map_or(StatusCode::INTERNAL_SERVER_ERROR, |r| r.status())
    });
    while queue.try_recv().is_ok() {}
    match status {
        StatusCode::OK | StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {}
        StatusCode::BAD_REQUEST => assert!(
            !decodes(which, body, json),
            "a body that decodes was refused as malformed"
        ),
        other => panic!("OTLP/HTTP answered {other}"),
    }
    status
}

/// An OTLP/gRPC request to the service `selector` picks (bits 0-1: traces, metrics, logs). Its
/// body is `body` as sent (bits 2-3: 0 or 3), or `body` as one message, framed uncompressed (1)
/// or gzip-compressed (2). The answer's gRPC status code is returned; a framed message that
/// decodes is never answered INVALID_ARGUMENT.
pub fn otlp_grpc(selector: u8, body: &[u8]) -> Option<String> {
    let which = usize::from(selector & 3) % 3;
    let framing = (selector >> 2) & 3;
    let framed = |compressed: u8, message: &[u8]| {
        let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
        [&[compressed][..], &len.to_be_bytes(), message].concat()
    };
    let sent = match framing {
        1 => framed(0, body),
        2 => framed(1, &gzip(body)),
        _ => body.to_vec(),
    };
    let path = [Traces::PATH, Metrics::PATH, Logs::PATH][which];
    let mut builder = Request::post(path).header(header::CONTENT_TYPE, "application/grpc");
    if framing == 2 {
        builder = builder.header("grpc-encoding", "gzip");
    }
    let request = builder.body(Body::from(sent)).expect("a valid request");
    let (ingress, mut queue) = Ingress::new(4, 4, MAX_MESSAGE_BYTES);
    let (status, grpc_status) = runtime().block_on(async move {
        let response = match which {
            0 => OtlpGrpc::<Traces>::new(ingress).call(request).await,
            1 => OtlpGrpc::<Metrics>::new(ingress).call(request).await,
            _ => OtlpGrpc::<Logs>::new(ingress).call(request).await,
        };
        let Ok(response) = response;
        let status = response.status();
        let in_headers = response.headers().get("grpc-status").cloned();
        let collected = response.into_body().collect().await.ok();
        let in_trailers = collected
            .as_ref()
            .and_then(|c| c.trailers()?.get("grpc-status").cloned());
        (status, in_headers.or(in_trailers))
    });
    while queue.try_recv().is_ok() {}
    assert_eq!(
        status,
        StatusCode::OK,
        "gRPC answers in its status, not HTTP's"
    );
    let grpc_status = grpc_status.and_then(|s| s.to_str().ok().map(str::to_string));
    let invalid_argument = grpc_status.as_deref() == Some("3");
    if (framing == 1 || framing == 2) && body.len() <= MAX_MESSAGE_BYTES {
        assert!(
            !(invalid_argument && decodes(which, body, false)),
            "a message that decodes was refused as malformed"
        );
    }
    grpc_status
}
