//! OTLP in: the gRPC (4317) and HTTP (4318, protobuf and JSON) receivers, their limits, and the
//! messages they hand to the agent. Traces are joined with kernel signals; metrics and logs pass
//! through untouched, so the agent can be the node's single OTLP endpoint.

pub mod grpc;
pub mod http;
pub mod ingress;
pub mod raw_codec;

pub use ingress::{Inbound, Ingress, IngressStats, Origin, Payload};
