//! OOM kills as OTLP log records: one per kill, with the victim's identity (process, cgroup,
//! container, pod) and the limit it hit, for backends that alert on events rather than series.

use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value::Value},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};

use crate::{otlp::string_kv, signals::OomKill};

fn int_kv(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(v)),
        }),
        ..KeyValue::default()
    }
}

/// What a person reads first.
pub(crate) fn body(k: &OomKill) -> String {
    let limit = k
        .memory_limit_bytes
        .map_or("no limit found".to_string(), |b| {
            format!("limit {} MiB", b >> 20)
        });
    format!(
        "OOM kill: {} ({}) in cgroup {} ({limit})",
        k.comm.as_deref().unwrap_or("?"),
        k.pid,
        k.cgroup.as_deref().unwrap_or("unknown")
    )
}

/// `kills` as one request, each record stamped at `mono_to_unix_ns(kill time)`.
pub(crate) fn request(
    kills: &[OomKill],
    resource_attrs: Vec<KeyValue>,
    mono_to_unix_ns: impl Fn(u64) -> u64,
) -> ExportLogsServiceRequest {
    let records = kills
        .iter()
        .map(|k| {
            let mut attributes = vec![
                string_kv("event.name", "culprit.oom_kill"),
                int_kv("process.pid", i64::from(k.pid)),
            ];
            let optional = [
                ("process.executable.name", k.comm.as_deref()),
                ("culprit.cgroup", k.cgroup.as_deref()),
                ("container.id", k.container_id.as_deref()),
                ("k8s.pod.uid", k.pod_uid.as_deref()),
                ("culprit.oom.trigger.cgroup", k.trigger_cgroup.as_deref()),
            ];
            attributes.extend(
                optional
                    .into_iter()
                    .filter_map(|(key, v)| Some(string_kv(key, v?))),
            );
            if let Some(b) = k.memory_limit_bytes {
                attributes.push(int_kv("culprit.oom.memory_limit_bytes", b as i64));
            }
            if let Some(p) = k.trigger_pid {
                attributes.push(int_kv("culprit.oom.trigger.pid", i64::from(p)));
            }
            let t = mono_to_unix_ns(k.mono_ns);
            LogRecord {
                time_unix_nano: t,
                observed_time_unix_nano: t,
                severity_number: SeverityNumber::Warn as i32,
                severity_text: "WARN".into(),
                body: Some(AnyValue {
                    value: Some(Value::StringValue(body(k))),
                }),
                attributes,
                ..LogRecord::default()
            }
        })
        .collect();
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: resource_attrs,
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "culprit".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..InstrumentationScope::default()
                }),
                log_records: records,
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kill_carries_its_identity_and_limit() {
        let kill = OomKill {
            mono_ns: 5,
            pid: 42,
            comm: Some("java".into()),
            cgroup: Some("/kubepods.slice/pod.slice/cri-containerd-ab.scope".into()),
            container_id: Some("ab".into()),
            pod_uid: None,
            memory_limit_bytes: Some(64 << 20),
            trigger_pid: None,
            trigger_cgroup: None,
            unix_ms: None,
        };
        let req = request(&[kill], vec![string_kv("host.name", "n1")], |m| m + 100);
        let rec = &req.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(rec.time_unix_nano, 105);
        let keys: Vec<&str> = rec.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "event.name",
                "process.pid",
                "process.executable.name",
                "culprit.cgroup",
                "container.id",
                "culprit.oom.memory_limit_bytes"
            ]
        );
        let Some(Value::StringValue(body)) = rec.body.as_ref().and_then(|b| b.value.clone()) else {
            panic!("no body");
        };
        assert!(
            body.contains("java (42)") && body.contains("64 MiB"),
            "{body}"
        );
    }
}
