//! Who sent a span: the resource's `process.pid` (a container's own pid is translated to the
//! host's through `NSpid`), its `container.id`, or else the connection itself (the same-host TCP
//! peer, resolved to its owning process through /proc).

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use opentelemetry_proto::tonic::{common::v1::any_value::Value, resource::v1::Resource};

use crate::{
    host::{k8s, procfs},
    otlp::{Origin, attribute},
};

/// How the sender was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentifiedBy {
    ProcessPid,
    NamespacedPid,
    ContainerId,
    TcpPeer,
}

impl IdentifiedBy {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::ProcessPid => "process.pid",
            Self::NamespacedPid => "process.pid (namespaced)",
            Self::ContainerId => "container.id",
            Self::TcpPeer => "tcp peer",
        }
    }
}

fn attr<'a>(resource: &'a Resource, key: &str) -> Option<&'a Value> {
    attribute(&resource.attributes, key)
}

fn attr_int(resource: &Resource, key: &str) -> Option<i64> {
    match attr(resource, key)? {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn attr_str<'a>(resource: &'a Resource, key: &str) -> Option<&'a str> {
    match attr(resource, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

/// How long the result of a full /proc scan stands: scans cost a read per process on the node,
/// so one sender's batches must not repeat them, but processes come and go.
const SCAN_TTL: Duration = Duration::from_secs(5);
/// Entries kept per cache before it is cleared: senders are few, hostile payloads many.
const SCAN_CACHE_MAX: usize = 1024;

/// Results of /proc scans by what was looked for, each valid for [`SCAN_TTL`].
struct ScanCache<K> {
    entries: HashMap<K, (Option<(u32, IdentifiedBy)>, Instant)>,
}

impl<K> Default for ScanCache<K> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq> ScanCache<K> {
    fn get_or_scan(
        &mut self,
        key: K,
        scan: impl FnOnce() -> Option<(u32, IdentifiedBy)>,
    ) -> Option<(u32, IdentifiedBy)> {
        if let Some((found, at)) = self.entries.get(&key)
            && at.elapsed() < SCAN_TTL
        {
            return *found;
        }
        if self.entries.len() >= SCAN_CACHE_MAX {
            self.entries.retain(|_, (_, at)| at.elapsed() < SCAN_TTL);
            if self.entries.len() >= SCAN_CACHE_MAX {
                self.entries.clear();
            }
        }
        let found = scan();
        self.entries.insert(key, (found, Instant::now()));
        found
    }
}

#[derive(Default)]
pub(crate) struct Identifier {
    peers: HashMap<SocketAddr, Option<u32>>,
    containers: ScanCache<String>,
    namespaced: ScanCache<u32>,
}

impl Identifier {
    pub(crate) fn identify(
        &mut self,
        resource: Option<&Resource>,
        origin: Origin,
    ) -> Option<(u32, IdentifiedBy)> {
        let peer_owner = self.peer_owner(origin);
        if let Some(res) = resource {
            if let Some(pid) = attr_int(res, "process.pid").and_then(|p| u32::try_from(p).ok()) {
                // The connection's owner is the best witness: the same process, or the same
                // process seen from inside its pid namespace.
                if let Some(owner) = peer_owner {
                    if owner == pid {
                        return Some((pid, IdentifiedBy::ProcessPid));
                    }
                    if procfs::nspid(owner).last() == Some(&pid) {
                        return Some((owner, IdentifiedBy::NamespacedPid));
                    }
                }
                if procfs::nspid(pid).len() == 1 {
                    return Some((pid, IdentifiedBy::ProcessPid));
                }
                if let Some(host_pid) = self.namespaced.get_or_scan(pid, || namespaced_to_host(pid))
                {
                    return Some(host_pid);
                }
            }
            if let Some(id) = attr_str(res, "container.id")
                && let Some(found) = self.container_pid(id)
            {
                return Some(found);
            }
        }
        peer_owner.map(|pid| (pid, IdentifiedBy::TcpPeer))
    }

    fn peer_owner(&mut self, origin: Origin) -> Option<u32> {
        let (peer, local) = (origin.peer?, origin.local?);
        if self.peers.len() > 4096 {
            self.peers.clear();
        }
        *self
            .peers
            .entry(peer)
            // The sender's socket is the mirror of ours.
            .or_insert_with(|| procfs::socket_owner(peer, local))
    }

    fn container_pid(&mut self, id: &str) -> Option<(u32, IdentifiedBy)> {
        if id.len() < 12 {
            return None;
        }
        self.containers.get_or_scan(id.to_string(), || {
            k8s::first_pid_in_container(id).map(|p| (p, IdentifiedBy::ContainerId))
        })
    }
}

/// The host pid of the only process that has `pid` as its innermost namespaced pid (a full scan
/// of /proc).
fn namespaced_to_host(pid: u32) -> Option<(u32, IdentifiedBy)> {
    let mut matches = procfs::all_pids().filter(|&p| {
        let ns = procfs::nspid(p);
        ns.len() > 1 && ns.last() == Some(&pid)
    });
    let first = matches.next()?;
    // Ambiguous across containers: better unidentified than wrong.
    matches
        .next()
        .is_none()
        .then_some((first, IdentifiedBy::NamespacedPid))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

    use super::*;

    fn resource(kvs: &[(&str, Value)]) -> Resource {
        Resource {
            attributes: kvs
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.to_string(),
                    value: Some(AnyValue {
                        value: Some(v.clone()),
                    }),
                    ..KeyValue::default()
                })
                .collect(),
            ..Resource::default()
        }
    }

    #[test]
    fn a_host_pid_in_the_resource_identifies_the_sender() {
        let me = std::process::id();
        let res = resource(&[("process.pid", Value::IntValue(me as i64))]);
        let mut id = Identifier::default();
        assert_eq!(
            id.identify(Some(&res), Origin::default()),
            Some((me, IdentifiedBy::ProcessPid))
        );
    }

    #[test]
    fn nothing_to_go_on_is_unidentified() {
        let mut id = Identifier::default();
        assert_eq!(id.identify(None, Origin::default()), None);
        let res = resource(&[("service.name", Value::StringValue("x".into()))]);
        assert_eq!(id.identify(Some(&res), Origin::default()), None);
    }

    #[test]
    fn the_tcp_peer_identifies_the_sender() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        let origin = Origin {
            peer: Some(peer),
            local: Some(listener.local_addr().unwrap()),
        };
        let mut id = Identifier::default();
        assert_eq!(
            id.identify(None, origin),
            Some((std::process::id(), IdentifiedBy::TcpPeer))
        );
        drop(client);
    }
}
