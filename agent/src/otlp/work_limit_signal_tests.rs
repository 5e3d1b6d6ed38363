//! The metrics and logs schemas: every message their decoding allocates is counted, and
//! requests made of empty data points or log records are refused before decoding.

use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
    common::v1::{AnyValue, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs},
    metrics::v1::{
        Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
        HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
        SummaryDataPoint, exponential_histogram_data_point::Buckets, metric::Data,
        summary_data_point::ValueAtQuantile,
    },
};
use prost::Message as _;

use super::*;

fn attr() -> Vec<KeyValue> {
    vec![KeyValue {
        key: "k".into(),
        value: Some(AnyValue::default()),
        ..KeyValue::default()
    }]
}

fn metrics(metrics: Vec<Metric>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..ScopeMetrics::default()
            }],
            ..ResourceMetrics::default()
        }],
    }
    .encode_to_vec()
}

fn metric(data: Data) -> Metric {
    Metric {
        data: Some(data),
        ..Metric::default()
    }
}

fn exemplar() -> Exemplar {
    Exemplar {
        filtered_attributes: attr(),
        ..Exemplar::default()
    }
}

#[test]
fn every_kind_of_data_point_is_counted_with_its_attributes_and_exemplars() {
    let number = NumberDataPoint {
        attributes: attr(),
        exemplars: vec![exemplar()],
        ..NumberDataPoint::default()
    };
    let cases: Vec<(Data, usize)> = vec![
        // data, point, key-value and value, exemplar with its key-value and value.
        (
            Data::Gauge(Gauge {
                data_points: vec![number.clone()],
            }),
            7,
        ),
        (
            Data::Sum(Sum {
                data_points: vec![number],
                ..Sum::default()
            }),
            7,
        ),
        (
            Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint {
                    attributes: attr(),
                    exemplars: vec![exemplar()],
                    bucket_counts: vec![1, 2],
                    ..HistogramDataPoint::default()
                }],
                ..Histogram::default()
            }),
            7,
        ),
        // ... plus two buckets, whose counts weigh one more each.
        (
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint {
                    attributes: attr(),
                    exemplars: vec![exemplar()],
                    positive: Some(Buckets {
                        offset: 0,
                        bucket_counts: vec![1, 2, 3],
                    }),
                    negative: Some(Buckets {
                        offset: 0,
                        bucket_counts: vec![4],
                    }),
                    ..ExponentialHistogramDataPoint::default()
                }],
                ..ExponentialHistogram::default()
            }),
            11,
        ),
        // data, point, key-value and value, two quantiles (not followed: no allocation inside).
        (
            Data::Summary(Summary {
                data_points: vec![SummaryDataPoint {
                    attributes: attr(),
                    quantile_values: vec![ValueAtQuantile::default(); 2],
                    ..SummaryDataPoint::default()
                }],
            }),
            4,
        ),
    ];
    for (data, inside) in cases {
        let what = format!("{data:?}");
        // The resource's and scope's entries and the metric, then what is inside it.
        assert_eq!(
            items(&metrics(vec![metric(data)]), Schema::Metrics, 100),
            Items::Counted(3 + inside),
            "{what}"
        );
    }
}

#[test]
fn empty_data_points_and_log_records_are_refused_past_the_limit() {
    let points = metrics(vec![metric(Data::Gauge(Gauge {
        data_points: vec![NumberDataPoint::default(); 10_000],
    }))]);
    assert_eq!(
        items(&points, Schema::Metrics, 20_000),
        Items::Counted(10_004)
    );
    assert_eq!(items(&points, Schema::Metrics, 5_000), Items::OverLimit);
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default(); 10_000],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec();
    assert_eq!(items(&logs, Schema::Logs, 20_000), Items::Counted(10_002));
    assert_eq!(items(&logs, Schema::Logs, 5_000), Items::OverLimit);
    // A bucket of a million packed counts weighs what it decodes into.
    let buckets = metrics(vec![metric(Data::ExponentialHistogram(
        ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                positive: Some(Buckets {
                    offset: 0,
                    bucket_counts: vec![1; 1_000_000],
                }),
                ..ExponentialHistogramDataPoint::default()
            }],
            ..ExponentialHistogram::default()
        },
    ))]);
    assert_eq!(items(&buckets, Schema::Metrics, 20_000), Items::OverLimit);
}

#[test]
fn a_log_records_body_and_attributes_are_counted() {
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue::default()),
                    attributes: attr(),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
    .encode_to_vec();
    // resource logs, scope logs, record, body, key-value and value.
    assert_eq!(items(&logs, Schema::Logs, 100), Items::Counted(6));
}
