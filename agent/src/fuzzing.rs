//! Entry points for the fuzz targets in `fuzz/`, compiled with the `fuzzing` feature only: thin
//! wrappers over parsers and decoders private to the crate, each fed what a sender, the kernel or
//! an operator could hand the agent. They return or drop what the agent would refuse, and panic
//! only where an invariant of the code they call breaks (the fuzzer's finding).

mod otlp;
#[cfg(test)]
mod seeds;

use std::{ffi::OsString, path::Path, time::Duration};

use clap::Parser as _;
use opentelemetry_proto::tonic::collector::{
    logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest,
    trace::v1::ExportTraceServiceRequest,
};
use prost::Message as _;

pub use self::otlp::{otlp_grpc, otlp_http};
use crate::{
    cli, config_file,
    host::{k8s, membership, memory_limit, procfs, sockets},
    join::{
        annotated::{self, SpanExtras},
        attribution::{KERNEL_CAUSE_MIN_SHARE, attribute, to_attributes},
        identity::{CONTAINER_ID, POD_UID, PROCESS_PID, Trust},
        parts::Parts,
        resource::{self, Identity},
    },
    kernel::tracefs_format::TracepointFormat,
    otlp::work_limit::{Items, Schema, items, json_items},
    signals::Measured,
};

/// `/proc/net/tcp` or `/proc/net/tcp6` (header line first): how many sockets it lists.
pub fn proc_net_tcp(text: &str) -> usize {
    let found = sockets::parse_proc_net_tcp(text);
    assert!(found.len() <= text.lines().count().saturating_sub(1));
    for s in &found {
        let _ = (sockets::canonical(s.local), sockets::canonical(s.remote));
    }
    found.len()
}

/// A `/proc/<pid>/status` (`NSpid:`, `Tgid:`), and the same text as a `/proc/<tid>/stat` (the
/// state letter after the command name).
pub fn proc_status(text: &str) {
    let _ = procfs::parse_nspid(text);
    let _ = procfs::parse_tgid(text);
    let _ = procfs::parse_stat_state(text);
}

/// A `/proc/<pid>/cgroup`: the directory of its `cpu.stat`, each path's Kubernetes identity;
/// and the same text as a memory limit file (`memory.max`) and as a sender's `k8s.pod.uid`.
pub fn proc_cgroup(text: &str) {
    let memberships = membership::parse_proc_cgroup(text);
    let (v1, v2) = (Path::new("/sys/fs/cgroup/cpu"), Path::new("/sys/fs/cgroup"));
    if let Some(dir) = membership::cpu_dir(&memberships, v1, v2) {
        assert!(dir.starts_with(v1) || dir.starts_with(v2), "{dir:?}");
    }
    for m in &memberships {
        let identity = k8s::parse(&m.path);
        if let Some(id) = &identity.container_id {
            assert!(k8s::names_container(&m.path, id), "{m:?}");
        }
        if let Some(uid) = &identity.pod_uid {
            assert_eq!(k8s::normalize_pod_uid(uid).as_ref(), Some(uid), "{m:?}");
        }
    }
    let _ = memory_limit::parse_limit(text);
    let _ = k8s::normalize_pod_uid(text);
}

/// `/proc/self/mountinfo`: where cgroup2 is mounted. And the text as a cgroup2 mount point,
/// escaped as the kernel writes it (space, tab, newline and backslash in octal): it must come
/// back whole.
pub fn mountinfo(text: &str) -> Option<std::path::PathBuf> {
    use crate::host::cgroups::cgroup2_mount;
    if !text.is_empty() {
        let escaped: String = text
            .chars()
            .map(|c| match c {
                ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", u32::from(c)),
                c => c.to_string(),
            })
            .collect();
        let line = format!("36 25 0:31 / {escaped} rw,relatime shared:9 - cgroup2 cgroup2 rw\n");
        assert_eq!(
            cgroup2_mount(&line),
            Some(std::path::PathBuf::from(text)),
            "{line:?}"
        );
    }
    cgroup2_mount(text)
}

/// A tracefs `format` file: the offsets the TCP programs would be given.
pub fn tracefs_format(text: &str) {
    let format = TracepointFormat::parse(text);
    for field in ["common_pid", "skaddr", "saddr_v6", "sk", "state", ""] {
        let _ = format.offset(field);
    }
}

/// A `--config` file: its flags, parsed as `culprit agent` parses its arguments, and the
/// receiver and API addresses they make.
pub fn config_file(text: &str) {
    let flags = config_file::parse(text);
    let args = ["culprit", "agent"]
        .into_iter()
        .map(OsString::from)
        .chain(flags);
    if let Ok(cli::Cli {
        command: cli::Command::Agent(opts),
    }) = cli::Cli::try_parse_from(args)
    {
        let _ = opts.otlp_addrs();
        let _ = opts.api_tcp_address();
    }
}

/// A command-line number of seconds (`--interval`, `--duration`, ...): never a zero duration.
pub fn cli_seconds(text: &str) -> Result<Duration, String> {
    let parsed = cli::parse_seconds(text);
    if let Ok(d) = &parsed {
        assert!(!d.is_zero(), "`{text}` parsed as no time at all");
    }
    parsed
}

/// A request weighed on the wire before it is decoded (`work_limit`), as each signal's request,
/// against decoding it as that request: one that decodes is never malformed to the scan, and
/// the count is exact at its own limit.
pub fn wire_scan(bytes: &[u8]) {
    let decodes = [
        (
            Schema::Traces,
            ExportTraceServiceRequest::decode(bytes).is_ok(),
        ),
        (
            Schema::Metrics,
            ExportMetricsServiceRequest::decode(bytes).is_ok(),
        ),
        (
            Schema::Logs,
            ExportLogsServiceRequest::decode(bytes).is_ok(),
        ),
    ];
    for (schema, decoded) in decodes {
        let counted = items(bytes, schema, usize::MAX);
        if decoded {
            assert!(
                !matches!(counted, Items::Malformed(_)),
                "decodes as {schema:?}, but the scan says {counted:?}"
            );
        }
        if let Items::Counted(n) = counted {
            assert_eq!(items(bytes, schema, n), Items::Counted(n));
            if n > 0 {
                assert_eq!(items(bytes, schema, n - 1), Items::OverLimit);
            }
        }
    }
    let _ = json_items(bytes, 1000);
}

/// Fuzz input read as a sequence of values; past its end, zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    fn byte(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        let taken = self.take(8);
        bytes[..taken.len()].copy_from_slice(taken);
        u64::from_le_bytes(bytes)
    }

    /// A length byte (0: none) and that many bytes less one, as text.
    fn text(&mut self) -> Option<String> {
        let n = usize::from(self.byte());
        (n > 0).then(|| String::from_utf8_lossy(self.take(n - 1)).into_owned())
    }
}

/// What the probes could have measured over a span's window, any values at all.
fn measured(input: &mut Input<'_>) -> Measured {
    const JOINS: [&str; 4] = ["context", "thread", "thread.inferred", "process"];
    Measured {
        wall_ns: input.u64(),
        on_cpu_ns: input.u64(),
        runq_ns: input.u64(),
        throttled_ns: input.u64(),
        off_cpu_ns: input.u64(),
        retransmit_wait_ns: input.u64(),
        retransmits: input.u64(),
        retransmit_peer: input.text(),
        neighbour_pid: None,
        neighbour: input.text(),
        neighbour_container_id: input.text(),
        waker_pid: None,
        waker: None,
        join: JOINS[usize::from(input.byte() % 4)],
        tid: None,
        threads: usize::from(input.byte()),
        // Last: the seeds' bytes keep their meaning for the fields before it.
        waker_delay_ns: input.u64(),
        waker_throttled_ns: input.u64(),
        io_wait_ns: input.u64(),
        memory_stall_ns: input.u64(),
        reclaim_on_cpu_ns: input.u64(),
        memory_runq_ns: input.u64(),
        lock_wait_ns: input.u64(),
        lock_holder_tid: None,
        lock_holder: input.text(),
        io_device: None,
        disk_device: input.text(),
        fault_wait_ns: input.u64(),
        connect_retransmit_wait_ns: input.u64(),
        queue_wait_ns: input.u64(),
        queue_runq_ns: input.u64(),
        queue_throttled_ns: input.u64(),
        steal_ns: input.u64(),
    }
}

/// The span annotator: a received trace request (`data`: its length, 2 bytes little-endian, and
/// its protobuf encoding), each resource given a sender's identity and each span an attribution
/// from arbitrary measurements (the rest of `data`), re-encoded the way the join exports it.
/// The output must decode as the request with the culprit attributes appended to each span.
pub fn annotate(data: &[u8]) {
    let mut input = Input(data);
    let len = usize::from(u16::from_le_bytes([input.byte(), input.byte()]));
    let Ok(mut request) = ExportTraceServiceRequest::decode(input.take(len)) else {
        return;
    };
    let node_name = input.text();
    for rs in &mut request.resource_spans {
        let resource = rs.resource.get_or_insert_with(Default::default);
        let who = input.byte();
        if who % 3 == 0 {
            resource::mark_unidentified(resource);
            continue;
        }
        let trust = if who % 3 == 1 {
            Trust::Verified
        } else {
            Trust::Claimed
        };
        let k8s = k8s::parse(&input.text().unwrap_or_default());
        let own_pid = (who & 0x10 != 0).then(|| input.u64() as u32);
        let contradicted: Vec<&'static str> = [PROCESS_PID, CONTAINER_ID, POD_UID]
            .into_iter()
            .enumerate()
            .filter(|(i, _)| (who >> (5 + i)) & 1 == 1)
            .map(|(_, key)| key)
            .collect();
        let identity = Identity {
            trust,
            k8s: &k8s,
            own_pid,
            contradicted: &contradicted,
        };
        resource::annotate(resource, &identity, node_name.as_deref());
    }
    let mut expected = request.clone();
    let mut extras = SpanExtras::default();
    let spans = expected
        .resource_spans
        .iter_mut()
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans);
    for span in spans {
        if input.byte() % 4 == 0 {
            extras.push_none();
            continue;
        }
        let a = attribute(&measured(&mut input));
        assert!(
            (0.0..=1.0).contains(&a.cause_share) && (0.0..=1.0).contains(&a.coverage),
            "{a:?}"
        );
        let seconds = [
            a.on_cpu_s,
            a.runqueue_s,
            a.throttled_s,
            a.off_cpu_s,
            a.waker_delay_s,
            a.waker_throttled_s,
            a.disk_io_s,
            a.memory_reclaim_s,
            a.memory_reclaim_on_cpu_s,
            a.cpu_steal_s,
            a.memory_reclaim_runq_s,
            a.page_fault_s,
            a.lock_wait_s,
            a.retransmit_wait_s,
            a.connect_retransmit_wait_s,
            a.queue_wait_s,
            a.queue_runq_s,
            a.queue_throttled_s,
        ];
        assert!(seconds.iter().all(|s| s.is_finite() && *s >= 0.0), "{a:?}");
        let duration_ms = span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano) as f64
            / 1e6;
        let _ = Parts::of(&a, duration_ms).dominant(KERNEL_CAUSE_MIN_SHARE);
        extras.push(&a);
        span.attributes.extend(to_attributes(&a));
    }
    let out = annotated::encode(&request, &extras);
    let decoded =
        ExportTraceServiceRequest::decode(&out[..]).expect("the annotated request decodes");
    assert!(
        decoded.encode_to_vec() == expected.encode_to_vec(),
        "the annotated request is not the request with the attributes appended"
    );
}
