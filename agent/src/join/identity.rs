//! Who sent a span: the resource's `process.pid` (a container's own pid is translated to the
//! host's through `NSpid`), its `container.id`, or else the connection itself (the same-host TCP
//! peer, resolved to its owning process through /proc).

use std::{collections::HashMap, fs, net::SocketAddr};

use opentelemetry_proto::tonic::{common::v1::any_value::Value, resource::v1::Resource};

use crate::{
    otlp::{Origin, attribute},
    procfs,
};

/// How the sender was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifiedBy {
    ProcessPid,
    NamespacedPid,
    ContainerId,
    TcpPeer,
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

/// The pids of a process from the host's namespace inward (`NSpid:` of /proc/<pid>/status).
pub fn parse_nspid(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn nspid(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| parse_nspid(&s))
        .unwrap_or_default()
}

#[derive(Default)]
pub struct Identifier {
    peers: HashMap<SocketAddr, Option<u32>>,
    containers: HashMap<String, Option<u32>>,
}

impl Identifier {
    pub fn identify(
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
                    if nspid(owner).last() == Some(&pid) {
                        return Some((owner, IdentifiedBy::NamespacedPid));
                    }
                }
                if let Some(host_pid) = namespaced_to_host(pid) {
                    return Some(host_pid);
                }
            }
            if let Some(id) = attr_str(res, "container.id")
                && let Some(pid) = self.container_pid(id)
            {
                return Some((pid, IdentifiedBy::ContainerId));
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

    fn container_pid(&mut self, id: &str) -> Option<u32> {
        if id.len() < 12 {
            return None;
        }
        if self.containers.len() > 1024 {
            self.containers.clear();
        }
        *self
            .containers
            .entry(id.to_string())
            .or_insert_with(|| pid_in_cgroup_containing(id))
    }
}

/// A `process.pid` that is a host pid, or the host pid of the only process that has it as its
/// innermost namespaced pid.
fn namespaced_to_host(pid: u32) -> Option<(u32, IdentifiedBy)> {
    if nspid(pid).len() == 1 {
        return Some((pid, IdentifiedBy::ProcessPid));
    }
    let mut matches = all_pids().filter(|&p| {
        let ns = nspid(p);
        ns.len() > 1 && ns.last() == Some(&pid)
    });
    let first = matches.next()?;
    // Ambiguous across containers: better unidentified than wrong.
    matches
        .next()
        .is_none()
        .then_some((first, IdentifiedBy::NamespacedPid))
}

fn all_pids() -> impl Iterator<Item = u32> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
}

/// The first process whose cgroup path names the container.
fn pid_in_cgroup_containing(id: &str) -> Option<u32> {
    all_pids()
        .find(|&p| fs::read_to_string(format!("/proc/{p}/cgroup")).is_ok_and(|c| c.contains(id)))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};

    use super::*;

    #[test]
    fn parses_nspid() {
        let status = "Name:\tpython3\nTgid:\t4242\nNSpid:\t4242\t7\nPPid:\t1\n";
        assert_eq!(parse_nspid(status), vec![4242, 7]);
        assert!(parse_nspid("Name:\tx\n").is_empty());
    }

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
