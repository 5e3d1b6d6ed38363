//! The sender against a backend answering a partial success: the spans it rejected are counted
//! as rejected (with its message logged), the rest as exported, and the export is healthy.

use std::time::Duration;

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
    },
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;

use super::Sender;
use crate::export::{
    config::resolve,
    queue::{ExportQueue, Item},
};

fn ten_spans() -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); 10],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test]
async fn a_partial_success_counts_the_rejected_spans() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let backend = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(|| async {
            ExportTraceServiceResponse {
                partial_success: Some(ExportTracePartialSuccess {
                    rejected_spans: 3,
                    error_message: "3 spans without a name".into(),
                }),
            }
            .encode_to_vec()
        }),
    );
    tokio::spawn(async move { axum::serve(listener, backend).await });
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = resolve(|_| None, Some(&endpoint), Some("http/protobuf"))
        .unwrap()
        .unwrap();
    let queue = ExportQueue::new(16, 1 << 20);
    let sender = Sender::new(config, queue.clone()).unwrap();
    tokio::spawn(sender.run());
    queue.push(Item::traces(ten_spans(), 10));
    let stats = queue.stats.clone();
    let counts = tokio::time::timeout(Duration::from_secs(10), async move {
        loop {
            let c = stats.snapshot();
            if c.requests_exported > 0 {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("exported within 10 s");
    assert_eq!(counts.spans_exported, 7, "{counts:?}");
    assert_eq!(counts.spans_rejected_by_backend, 3, "{counts:?}");
    assert!(!counts.failing() && counts.last_success_unix_ms.is_some());
}
