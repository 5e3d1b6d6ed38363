//! Who opened a connection to an OTLP port, as the kernel recorded it (`CONNECTION_OWNER`): the
//! span sender, whichever network namespace it dialled from.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{HashMap, MapData},
};
use culprit_common::{
    maps,
    tcp::{ConnectionKey, ConnectionOwner},
};

use crate::host::procfs;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// The opener of one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Opener {
    pub(crate) tgid: u32,
    pub(crate) tid: u32,
    /// Cgroup v2 id of the connecting thread (0 if unread).
    pub(crate) cgroup_id: u64,
    /// Inode of the network namespace the connection was opened in (0 if unread).
    pub(crate) netns_inode: u32,
    /// Where the opener dialled: differs from the accepted socket's local address behind a NAT.
    pub(crate) dialled: SocketAddr,
}

/// Looks up connection openers by the accepted connection's two ends.
pub(crate) trait ConnectionOpeners {
    fn opener(&self, peer: SocketAddr, local: SocketAddr) -> Option<Opener>;
}

pub(crate) struct ConnectionOwners {
    map: HashMap<MapData, ConnectionKey, ConnectionOwner>,
}

impl ConnectionOwners {
    pub(crate) fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let map = ebpf
            .take_map(maps::CONNECTION_OWNER)
            .context("CONNECTION_OWNER map missing from the eBPF object")?;
        Ok(Self {
            map: HashMap::try_from(map)?,
        })
    }
}

impl ConnectionOpeners for ConnectionOwners {
    fn opener(&self, peer: SocketAddr, local: SocketAddr) -> Option<Opener> {
        keys_of(peer)
            .into_iter()
            .flatten()
            .find_map(|key| self.map.get(&key, 0).ok())
            .and_then(|owner| opener_of(&owner, local))
    }
}

/// The keys the opener's end may be filed under: an IPv4 peer may have dialled from an IPv6
/// socket (as a v4-mapped address), an IPv4-mapped peer from an IPv4 one.
pub(crate) fn keys_of(peer: SocketAddr) -> [Option<ConnectionKey>; 2] {
    let v4 = |ip: Ipv4Addr| {
        let mut saddr = [0; 16];
        saddr[..4].copy_from_slice(&ip.octets());
        ConnectionKey {
            saddr,
            sport: peer.port(),
            family: AF_INET,
        }
    };
    let v6 = |ip: Ipv6Addr| ConnectionKey {
        saddr: ip.octets(),
        sport: peer.port(),
        family: AF_INET6,
    };
    match peer.ip() {
        IpAddr::V4(ip) => [Some(v4(ip)), Some(v6(ip.to_ipv6_mapped()))],
        IpAddr::V6(ip) => [Some(v6(ip)), ip.to_ipv4_mapped().map(v4)],
    }
}

/// The opener of a recorded connection, unless the record cannot be this connection: a
/// loopback connection never crosses network namespaces, so one recorded in a namespace other
/// than the agent's is another connection with the same loopback ends.
fn opener_of(owner: &ConnectionOwner, local: SocketAddr) -> Option<Opener> {
    let dialled_ip = if owner.family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(
            owner.daddr[0],
            owner.daddr[1],
            owner.daddr[2],
            owner.daddr[3],
        ))
    } else {
        IpAddr::V6(Ipv6Addr::from(owner.daddr)).to_canonical()
    };
    let dialled = SocketAddr::new(dialled_ip, owner.dport);
    let opener = Opener {
        tgid: owner.opener.tgid,
        tid: owner.opener.tid,
        cgroup_id: owner.opener.cgroup_id,
        netns_inode: owner.opener.netns_inode,
        dialled,
    };
    if local.ip().to_canonical().is_loopback()
        && opener.netns_inode != 0
        && procfs::netns_inode("self").is_some_and(|own| own != opener.netns_inode)
    {
        return None;
    }
    Some(opener)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(family: u16, daddr: [u8; 16], dport: u16, netns: u32) -> ConnectionOwner {
        let mut o = ConnectionOwner {
            daddr,
            dport,
            family,
            ..ConnectionOwner::default()
        };
        o.opener.tgid = 42;
        o.opener.netns_inode = netns;
        o
    }

    #[test]
    fn ipv4_peers_are_looked_up_under_both_families() {
        let [a, b] = keys_of("10.0.0.2:40000".parse().unwrap());
        let a = a.unwrap();
        assert_eq!(
            (a.family, a.sport, &a.saddr[..4]),
            (AF_INET, 40000, &[10, 0, 0, 2][..])
        );
        assert!(a.saddr[4..].iter().all(|b| *b == 0));
        let b = b.unwrap();
        assert_eq!(b.family, AF_INET6);
        assert_eq!(
            Ipv6Addr::from(b.saddr),
            "::ffff:10.0.0.2".parse::<Ipv6Addr>().unwrap()
        );
        let [c, d] = keys_of("[fd00::2]:5".parse().unwrap());
        assert_eq!(c.unwrap().family, AF_INET6);
        assert!(d.is_none());
        let [e, f] = keys_of("[::ffff:10.0.0.2]:7".parse().unwrap());
        assert_eq!(e.unwrap().family, AF_INET6);
        assert_eq!(f.unwrap().family, AF_INET);
    }

    #[test]
    fn the_dialled_address_is_kept_and_foreign_loopback_records_refused() {
        let mut d = [0; 16];
        d[..4].copy_from_slice(&[10, 1, 0, 1]);
        let o = opener_of(
            &owner(AF_INET, d, 4318, 1),
            "10.1.0.1:4318".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(o.tgid, 42);
        assert_eq!(o.dialled, "10.1.0.1:4318".parse::<SocketAddr>().unwrap());
        let own = procfs::netns_inode("self").unwrap();
        let lo = "127.0.0.1:4318".parse().unwrap();
        let mut l = [0; 16];
        l[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert!(opener_of(&owner(AF_INET, l, 4318, own), lo).is_some());
        assert!(opener_of(&owner(AF_INET, l, 4318, own.wrapping_add(1)), lo).is_none());
        // An unread namespace does not refuse.
        assert!(opener_of(&owner(AF_INET, l, 4318, 0), lo).is_some());
        let mapped: Ipv6Addr = "::ffff:10.1.0.1".parse().unwrap();
        let o = opener_of(
            &owner(AF_INET6, mapped.octets(), 4317, 1),
            "10.1.0.1:4317".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(o.dialled, "10.1.0.1:4317".parse::<SocketAddr>().unwrap());
    }
}
