//! The OTLP/gRPC receiver: the three collector services, decoding and status codes our own.

use std::{
    convert::Infallible,
    marker::PhantomData,
    net::SocketAddr,
    task::{Context, Poll},
};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
    trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
};
use prost::Message as _;
use tonic::{
    Request, Response, Status,
    body::Body,
    codegen::{BoxFuture, Service, http},
    server::{Grpc, NamedService, UnaryService},
};

use tokio::sync::OwnedSemaphorePermit;

use super::{
    connections,
    ingress::{Ingress, Origin, Payload, Rejection},
    raw_codec::RawCodec,
    work_limit::Schema,
};

/// One OTLP signal's gRPC service: its name, request type and empty response.
pub(crate) trait OtlpSignal: Send + Sync + 'static {
    const SERVICE: &'static str;
    const PATH: &'static str;
    /// The request's schema, by which it is weighed before it is decoded.
    const SCHEMA: Schema;
    fn decode(bytes: &[u8]) -> Result<Payload, prost::DecodeError>;
    fn ok_response() -> Bytes;
}

pub(crate) struct Traces;
pub(crate) struct Metrics;
pub(crate) struct Logs;

impl OtlpSignal for Traces {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const SCHEMA: Schema = Schema::Traces;
    fn decode(bytes: &[u8]) -> Result<Payload, prost::DecodeError> {
        ExportTraceServiceRequest::decode(bytes).map(Payload::Traces)
    }
    fn ok_response() -> Bytes {
        ExportTraceServiceResponse::default().encode_to_vec().into()
    }
}

impl OtlpSignal for Metrics {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";
    const SCHEMA: Schema = Schema::Metrics;
    fn decode(bytes: &[u8]) -> Result<Payload, prost::DecodeError> {
        ExportMetricsServiceRequest::decode(bytes).map(Payload::Metrics)
    }
    fn ok_response() -> Bytes {
        ExportMetricsServiceResponse::default()
            .encode_to_vec()
            .into()
    }
}

impl OtlpSignal for Logs {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const SCHEMA: Schema = Schema::Logs;
    fn decode(bytes: &[u8]) -> Result<Payload, prost::DecodeError> {
        ExportLogsServiceRequest::decode(bytes).map(Payload::Logs)
    }
    fn ok_response() -> Bytes {
        ExportLogsServiceResponse::default().encode_to_vec().into()
    }
}

/// The gRPC status OTLP asks for, per rejection.
pub(crate) fn status_of(rejection: Rejection) -> Status {
    match rejection {
        Rejection::Malformed(why) => {
            Status::invalid_argument(format!("malformed OTLP message: {why}"))
        }
        // RESOURCE_EXHAUSTED without RetryInfo: SDKs do not retry what can never fit.
        Rejection::TooLarge { limit_bytes } => {
            Status::resource_exhausted(format!("message larger than the {limit_bytes}-byte limit"))
        }
        Rejection::TooManyItems { limit } => Status::resource_exhausted(format!(
            "more than {limit} messages (spans, data points, log records, events, links, \
             attributes) in one request"
        )),
        // UNAVAILABLE is what OTLP senders retry; RetryInfo says when.
        Rejection::Busy => Status::with_details(
            tonic::Code::Unavailable,
            "agent busy: retry later",
            super::rpc_status::retry_info(std::time::Duration::from_secs(
                super::BUSY_RETRY_AFTER_S,
            ))
            .into(),
        ),
    }
}

pub(crate) struct OtlpGrpc<S> {
    ingress: Ingress,
    _signal: PhantomData<S>,
}

impl<S> Clone for OtlpGrpc<S> {
    fn clone(&self) -> Self {
        Self {
            ingress: self.ingress.clone(),
            _signal: PhantomData,
        }
    }
}

impl<S: OtlpSignal> OtlpGrpc<S> {
    pub(crate) fn new(ingress: Ingress) -> Self {
        Self {
            ingress,
            _signal: PhantomData,
        }
    }

    /// Decodes and delivers a message whose body `reserved` held budget for while it was read.
    fn handle(
        ingress: &Ingress,
        bytes: &[u8],
        origin: Origin,
        reserved: OwnedSemaphorePermit,
    ) -> Result<(), Rejection> {
        ingress.check_size(bytes.len())?;
        let mut budget = ingress.weigh(bytes, S::SCHEMA, false, Some(reserved))?;
        let payload = S::decode(bytes).map_err(|e| ingress.malformed(e))?;
        // The transport's buffer goes when this returns.
        Ingress::release_body(&mut budget, bytes.len());
        ingress.deliver(payload, origin, Some(budget))
    }
}

impl<S: OtlpSignal> NamedService for OtlpGrpc<S> {
    const NAME: &'static str = S::SERVICE;
}

struct Export<S> {
    ingress: Ingress,
    /// The budget reserved for the body before the transport read it.
    reserved: Option<OwnedSemaphorePermit>,
    _signal: PhantomData<S>,
}

impl<S: OtlpSignal> UnaryService<Bytes> for Export<S> {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let ingress = self.ingress.clone();
        let reserved = self.reserved.take();
        Box::pin(async move {
            let origin = request
                .extensions()
                .get::<Origin>()
                .copied()
                .unwrap_or_default();
            let reserved = reserved.ok_or_else(|| Status::internal("no budget reserved"))?;
            OtlpGrpc::<S>::handle(&ingress, request.get_ref(), origin, reserved)
                .map_err(status_of)?;
            Ok(Response::new(S::ok_response()))
        })
    }
}

impl<S, B> Service<http::Request<B>> for OtlpGrpc<S>
where
    S: OtlpSignal,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ingress = self.ingress.clone();
        if req.uri().path() != S::PATH {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        // Twice the limit: anything bigger is cut off by the transport; between the two, the
        // receiver answers RESOURCE_EXHAUSTED itself.
        let transport_limit = ingress.max_message_bytes.saturating_mul(2);
        // Admitted, and the most its body can take reserved, before the transport buffers it:
        // a flood of large messages is answered UNAVAILABLE, not held.
        let admitted = ingress
            .admit()
            .and_then(|permit| Ok((permit, ingress.reserve(transport_limit)?)));
        Box::pin(async move {
            let (_permit, reserved) = match admitted {
                Ok(a) => a,
                Err(rejection) => return Ok(status_of(rejection).into_http()),
            };
            let export = Export::<S> {
                ingress,
                reserved: Some(reserved),
                _signal: PhantomData,
            };
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(
                    enabled_gzip(),
                    tonic::codec::EnabledCompressionEncodings::default(),
                )
                .apply_max_message_size_config(Some(transport_limit), None);
            match tokio::time::timeout(REQUEST_TIMEOUT, grpc.unary(export, req)).await {
                Ok(response) => Ok(response),
                Err(_) => {
                    Ok(Status::deadline_exceeded("request not received within 30 s").into_http())
                }
            }
        })
    }
}

fn enabled_gzip() -> tonic::codec::EnabledCompressionEncodings {
    let mut e = tonic::codec::EnabledCompressionEncodings::default();
    e.enable(tonic::codec::CompressionEncoding::Gzip);
    e
}

/// A request not answered in this time is cancelled, whatever stalls it (a body trickled in).
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn router(ingress: Ingress) -> axum::Router {
    tonic::service::Routes::new(OtlpGrpc::<Traces>::new(ingress.clone()))
        .add_service(OtlpGrpc::<Metrics>::new(ingress.clone()))
        .add_service(OtlpGrpc::<Logs>::new(ingress))
        .prepare()
        .into_axum_router()
}

/// Serves the three OTLP services on `addr` until `shutdown` resolves.
pub(crate) async fn serve(
    addr: SocketAddr,
    ingress: Ingress,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (security, stats) = (ingress.security.clone(), ingress.stats.clone());
    super::serve_tcp(
        addr,
        "OTLP/gRPC",
        router(ingress),
        security,
        stats,
        shutdown,
    )
    .await
}

/// Serves the three OTLP services on the unix socket `path` until `shutdown` resolves.
pub(crate) async fn serve_unix(
    path: std::path::PathBuf,
    ingress: Ingress,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = super::bind_unix(&path, "OTLP/gRPC")?;
    let inode = super::socket_inode(&path);
    log::info!("OTLP/gRPC receiver on unix:{}", path.display());
    ingress
        .stats
        .on_bound(format!("OTLP/gRPC unix:{}", path.display()));
    let stats = ingress.stats.clone();
    let served = connections::serve(listener, router(ingress), None, stats, shutdown).await;
    super::unbind_unix(&path, inode);
    served
}
