//! OTLP in: the gRPC (4317) and HTTP (4318, protobuf and JSON) receivers, their limits, and the
//! messages they hand to the agent. Traces are joined with kernel signals; metrics and logs pass
//! through untouched, so the agent can be the node's single OTLP endpoint.

pub(crate) mod grpc;
pub mod http;
pub(crate) mod ingress;
pub mod raw_codec;

pub(crate) use ingress::{Inbound, Origin};
pub use ingress::{Ingress, Payload};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// A string attribute.
pub(crate) fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

/// The value of attribute `key` in an OTLP attribute list.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()
}

/// Binds a receiver's listener, naming it in the error.
pub(crate) async fn bind(
    addr: std::net::SocketAddr,
    what: &str,
) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the {what} receiver to {addr}: {e}"))
}
