//! Who sent a span, and how far that is to be trusted.
//!
//! *Verified*: the kernel names the sending process: the peer of a unix socket connection
//! (`SO_PEERCRED`), the opener of the TCP connection as the probes recorded it at connect time
//! (in whichever network namespace it dialled from), or else the holder of the connection's far
//! end in the socket tables of /proc. A verified sender wins over anything its payload says:
//! a `process.pid`, `container.id` or `k8s.pod.uid` that contradicts it is reported, and the
//! join replaces it.
//!
//! *Claimed*: nothing verifies the connection (the agent started after it was opened and /proc
//! no longer shows it, or a NAT rewrote its source), so the resource's own word is taken: its
//! `process.pid` (a pid from inside a container's pid namespace is translated to the host's
//! through `NSpid`), its `container.id` or its `k8s.pod.uid`, each matched exactly.

use std::net::SocketAddr;

use opentelemetry_proto::tonic::{common::v1::any_value::Value, resource::v1::Resource};

use super::scan_cache::{ScanBudget, ScanCache};
use crate::{
    host::{
        k8s::{self, IdentityCache},
        membership, procfs, sockets,
    },
    kernel::connections::ConnectionOpeners,
    otlp::{Origin, attribute},
};

/// How far the agent trusts who it says sent a span (`culprit.identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trust {
    /// The kernel named the sender.
    Verified,
    /// The payload named it and nothing contradicted it.
    Claimed,
    /// Nobody knows.
    None,
}

impl Trust {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::Claimed => "claimed",
            Self::None => "none",
        }
    }
}

/// How the sender was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IdentifiedBy {
    PeerCredentials,
    ConnectionOpener,
    SocketTable,
    ProcessPid,
    NamespacedPid,
    ContainerId,
    PodUid,
}

impl IdentifiedBy {
    pub(crate) const ALL: [Self; 7] = [
        Self::PeerCredentials,
        Self::ConnectionOpener,
        Self::SocketTable,
        Self::ProcessPid,
        Self::NamespacedPid,
        Self::ContainerId,
        Self::PodUid,
    ];

    /// The name counted in reports (`spans_identified_by`).
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::PeerCredentials => "peer_credentials",
            Self::ConnectionOpener => "connection_opener",
            Self::SocketTable => "socket_table",
            Self::ProcessPid => "claimed_pid",
            Self::NamespacedPid => "claimed_namespaced_pid",
            Self::ContainerId => "claimed_container_id",
            Self::PodUid => "claimed_pod_uid",
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::PeerCredentials => "unix socket peer (SO_PEERCRED)",
            Self::ConnectionOpener => "connection opener (kernel)",
            Self::SocketTable => "connection's far end (/proc socket tables)",
            Self::ProcessPid => "claimed process.pid",
            Self::NamespacedPid => "claimed process.pid (namespaced)",
            Self::ContainerId => "claimed container.id",
            Self::PodUid => "claimed k8s.pod.uid",
        }
    }

    fn trust(self) -> Trust {
        match self {
            Self::PeerCredentials | Self::ConnectionOpener | Self::SocketTable => Trust::Verified,
            _ => Trust::Claimed,
        }
    }
}

/// The sender of one resource's spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sender {
    /// Host pid.
    pub(crate) pid: u32,
    pub(crate) by: IdentifiedBy,
    /// Resource attributes whose claim the verified sender contradicts.
    pub(crate) contradicted: Vec<&'static str>,
}

impl Sender {
    pub(crate) fn trust(&self) -> Trust {
        self.by.trust()
    }
}

pub(crate) const PROCESS_PID: &str = "process.pid";
pub(crate) const CONTAINER_ID: &str = "container.id";
pub(crate) const POD_UID: &str = "k8s.pod.uid";

/// What a resource says of its sender.
#[derive(Debug, Default)]
struct Claims<'a> {
    pid: Option<u32>,
    container_id: Option<&'a str>,
    pod_uid: Option<&'a str>,
}

impl<'a> Claims<'a> {
    fn of(resource: Option<&'a Resource>) -> Self {
        let Some(res) = resource else {
            return Self::default();
        };
        let attr = |key| attribute(&res.attributes, key);
        Self {
            pid: match attr(PROCESS_PID) {
                Some(Value::IntValue(i)) => u32::try_from(*i).ok(),
                Some(Value::StringValue(s)) => s.parse().ok(),
                _ => None,
            },
            container_id: match attr(CONTAINER_ID) {
                Some(Value::StringValue(s)) if !s.is_empty() => Some(s),
                _ => None,
            },
            pod_uid: match attr(POD_UID) {
                Some(Value::StringValue(s)) if !s.is_empty() => Some(s),
                _ => None,
            },
        }
    }
}

/// A sender's host pid and how it was found.
type Found = (u32, IdentifiedBy);

#[derive(Default)]
pub(crate) struct Identifier {
    /// The kernel's record of connection openers; `None` without the probe.
    openers: Option<Box<dyn ConnectionOpeners + Send>>,
    connections: ScanCache<(SocketAddr, SocketAddr), Found>,
    containers: ScanCache<String, Found>,
    pods: ScanCache<String, Found>,
    namespaced: ScanCache<u32, Found>,
    /// Full scans of /proc allowed per second, over all the caches.
    budget: ScanBudget,
}

impl Identifier {
    pub(crate) fn new(openers: Option<Box<dyn ConnectionOpeners + Send>>) -> Self {
        Self {
            openers,
            ..Self::default()
        }
    }

    /// Full scans refused since start because the budget was spent.
    pub(crate) fn scans_refused(&self) -> u64 {
        self.budget.refused
    }

    /// The sender of a resource's spans that arrived from `origin`, if anyone can tell (what
    /// a verified sender contradicts is [`contradicted`]'s to say).
    pub(crate) fn identify(
        &mut self,
        resource: Option<&Resource>,
        origin: Origin,
    ) -> Option<Sender> {
        let (pid, by) = match self.verified(origin) {
            Some(found) => found,
            None => self.claimed(&Claims::of(resource))?,
        };
        Some(Sender {
            pid,
            by,
            contradicted: Vec::new(),
        })
    }

    /// The sender as the kernel names it.
    fn verified(&mut self, origin: Origin) -> Option<(u32, IdentifiedBy)> {
        if let Some(pid) = origin.peer_pid {
            return Some((pid, IdentifiedBy::PeerCredentials));
        }
        let (peer, local) = (origin.peer?, origin.local?);
        let opener = self
            .openers
            .as_ref()
            .and_then(|o| o.opener(peer, local))
            .map(|o| o.tgid);
        if let Some(tgid) = opener
            && procfs::exists(tgid)
        {
            return Some((tgid, IdentifiedBy::ConnectionOpener));
        }
        // A connection outlives its opener only if it was handed on (fork): then the socket
        // tables know the holder. If they know nobody, the opener sent and exited (an SDK
        // flushing its last spans as its process ends): it is still the sender.
        self.connections
            .get_or_scan(&mut self.budget, (peer, local), || {
                sockets::connection_opener(peer, local).map(|p| (p, IdentifiedBy::SocketTable))
            })
            .or_else(|| opener.map(|tgid| (tgid, IdentifiedBy::ConnectionOpener)))
    }

    /// The sender as the payload names it, each claim matched exactly.
    fn claimed(&mut self, claims: &Claims<'_>) -> Option<(u32, IdentifiedBy)> {
        if let Some(pid) = claims.pid {
            if procfs::nspid(pid).len() == 1 {
                return Some((pid, IdentifiedBy::ProcessPid));
            }
            if let Some(found) = self
                .namespaced
                .get_or_scan(&mut self.budget, pid, || namespaced_to_host(pid))
            {
                return Some(found);
            }
        }
        // A container id is 64 hex digits (12 abbreviated); anything far longer is no id, and is
        // not kept as a cache key.
        if let Some(id) = claims.container_id
            && (12..=128).contains(&id.len())
            && let Some(found) =
                self.containers
                    .get_or_scan(&mut self.budget, id.to_string(), || {
                        k8s::first_pid_in_container(id).map(|p| (p, IdentifiedBy::ContainerId))
                    })
        {
            return Some(found);
        }
        let uid = claims.pod_uid.and_then(k8s::normalize_pod_uid)?;
        self.pods.get_or_scan(&mut self.budget, uid.clone(), || {
            k8s::first_pid_in_pod(&uid).map(|p| (p, IdentifiedBy::PodUid))
        })
    }
}

/// The claims of `resource` that verified sender `pid` contradicts. A pid matches in any of the
/// sender's pid namespaces (an SDK in a container reports its own); a container id matches the
/// sender's whole (case aside); a pod uid in either of the forms the kubelet writes.
pub(crate) fn contradicted(
    pid: u32,
    resource: Option<&Resource>,
    identities: &mut IdentityCache,
) -> Vec<&'static str> {
    let claims = Claims::of(resource);
    let mut out = Vec::new();
    if let Some(claimed) = claims.pid
        && claimed != pid
        && !procfs::nspid(pid).contains(&claimed)
    {
        out.push(PROCESS_PID);
    }
    if claims.container_id.is_none() && claims.pod_uid.is_none() {
        return out;
    }
    let identity = identities.of(pid);
    if let Some(claimed) = claims.container_id {
        let consistent = match identity.container_id.as_deref() {
            Some(own) => own.eq_ignore_ascii_case(claimed),
            // A runtime whose cgroup layout the agent does not parse: the claim stands if the
            // sender's cgroup path names that container whole.
            None => membership::memberships_of(pid)
                .iter()
                .any(|m| k8s::names_container(&m.path, claimed)),
        };
        if !consistent {
            out.push(CONTAINER_ID);
        }
    }
    if let Some(claimed) = claims.pod_uid {
        let own = identity.pod_uid.as_deref();
        if own.is_none() || k8s::normalize_pod_uid(claimed).as_deref() != own {
            out.push(POD_UID);
        }
    }
    out
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
    use crate::kernel::connections::Opener;

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

    /// Openers as a fixed table, the way the kernel's map answers.
    struct Openers(Vec<(SocketAddr, u32)>);

    impl ConnectionOpeners for Openers {
        fn opener(&self, peer: SocketAddr, _local: SocketAddr) -> Option<Opener> {
            self.0
                .iter()
                .find(|(p, _)| *p == peer)
                .map(|(_, tgid)| Opener {
                    tgid: *tgid,
                    tid: *tgid,
                    cgroup_id: 0,
                    netns_inode: 0,
                    dialled: "10.0.0.1:4318".parse().unwrap(),
                })
        }
    }

    fn tcp(peer: &str) -> Origin {
        Origin {
            peer: Some(peer.parse().unwrap()),
            local: Some("10.0.0.1:4318".parse().unwrap()),
            peer_pid: None,
        }
    }

    #[test]
    fn a_host_pid_in_the_resource_is_a_claim() {
        let me = std::process::id();
        let res = resource(&[("process.pid", Value::IntValue(me as i64))]);
        let sender = Identifier::default()
            .identify(Some(&res), Origin::default())
            .unwrap();
        assert_eq!((sender.pid, sender.by), (me, IdentifiedBy::ProcessPid));
        assert_eq!(sender.trust(), Trust::Claimed);
        // A pid nobody has is no claim at all.
        let res = resource(&[("process.pid", Value::IntValue(i64::from(u32::MAX)))]);
        assert_eq!(
            Identifier::default().identify(Some(&res), Origin::default()),
            None
        );
    }

    #[test]
    fn nothing_to_go_on_is_unidentified() {
        let mut id = Identifier::default();
        assert_eq!(id.identify(None, Origin::default()), None);
        let res = resource(&[("service.name", Value::StringValue("x".into()))]);
        assert_eq!(id.identify(Some(&res), Origin::default()), None);
        // Short or unknown container ids and malformed pod uids match nobody.
        let res = resource(&[
            ("container.id", Value::StringValue("abc".into())),
            ("k8s.pod.uid", Value::StringValue("not-a-uid".into())),
        ]);
        assert_eq!(id.identify(Some(&res), Origin::default()), None);
    }

    #[test]
    fn an_opener_that_exited_is_still_the_sender_of_what_it_sent() {
        // No such process any more, and no socket table holds the connection: the SDK flushed
        // its last spans as its process ended.
        let gone = u32::MAX - 1;
        let mut id = Identifier::new(Some(Box::new(Openers(vec![(
            "10.0.0.2:40001".parse().unwrap(),
            gone,
        )]))));
        let sender = id.identify(None, tcp("10.0.0.2:40001")).unwrap();
        assert_eq!(
            (sender.pid, sender.by),
            (gone, IdentifiedBy::ConnectionOpener)
        );
    }

    #[test]
    fn the_kernel_wins_over_the_payload() {
        let me = std::process::id();
        let mut id = Identifier::new(Some(Box::new(Openers(vec![(
            "10.0.0.2:40000".parse().unwrap(),
            me,
        )]))));
        // Claiming init's pid from this process's connection.
        let res = resource(&[("process.pid", Value::IntValue(1))]);
        let sender = id.identify(Some(&res), tcp("10.0.0.2:40000")).unwrap();
        assert_eq!(
            (sender.pid, sender.by),
            (me, IdentifiedBy::ConnectionOpener)
        );
        assert_eq!(sender.trust(), Trust::Verified);
        let mut identities = IdentityCache::default();
        assert_eq!(contradicted(me, Some(&res), &mut identities), [PROCESS_PID]);
        // Its own pid, no container, no pod: nothing contradicted.
        let honest = resource(&[("process.pid", Value::IntValue(i64::from(me)))]);
        assert!(contradicted(me, Some(&honest), &mut identities).is_empty());
        assert!(contradicted(me, None, &mut identities).is_empty());
        let spoof = resource(&[
            (
                "container.id",
                Value::StringValue(
                    "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899".into(),
                ),
            ),
            (
                "k8s.pod.uid",
                Value::StringValue("6b3e5f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b".into()),
            ),
        ]);
        assert_eq!(
            contradicted(me, Some(&spoof), &mut identities),
            [CONTAINER_ID, POD_UID]
        );
        // A connection the kernel did not record falls back to /proc, then to the claim.
        let sender = id.identify(Some(&honest), tcp("10.0.0.3:1")).unwrap();
        assert_eq!(sender.trust(), Trust::Claimed);
    }

    #[test]
    fn the_unix_socket_peer_is_verified() {
        let origin = Origin {
            peer_pid: Some(4242),
            ..Origin::default()
        };
        let res = resource(&[("process.pid", Value::IntValue(1))]);
        let sender = Identifier::default().identify(Some(&res), origin).unwrap();
        assert_eq!(
            (sender.pid, sender.by),
            (4242, IdentifiedBy::PeerCredentials)
        );
    }

    #[test]
    fn the_tcp_peer_is_found_in_the_socket_tables() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server_side, peer) = listener.accept().unwrap();
        let origin = Origin {
            peer: Some(peer),
            local: Some(listener.local_addr().unwrap()),
            peer_pid: None,
        };
        let sender = Identifier::default().identify(None, origin).unwrap();
        assert_eq!(
            (sender.pid, sender.by),
            (std::process::id(), IdentifiedBy::SocketTable)
        );
        drop(client);
    }
}
