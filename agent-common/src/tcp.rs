//! TCP retransmits and the thread that owns the socket; who opened each connection to the
//! agent's OTLP ports.

/// Who last sent or received on a socket (map `SOCK_OWNER`, keyed by `struct sock *`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockOwner {
    pub tgid: u32,
    pub tid: u32,
    /// Last send on the socket by its owner, 0 if none seen.
    pub last_send_ns: u64,
}

const _: () = assert!(core::mem::size_of::<SockOwner>() == 16);

/// Retransmit kinds.
pub mod retransmit {
    /// A data or SYN segment (`tcp:tcp_retransmit_skb`).
    pub const SEGMENT: u32 = 1;
    /// A SYN-ACK of a passive open (`tcp:tcp_retransmit_synack`).
    pub const SYNACK: u32 = 2;
}

/// A record on the `TCP_EVENTS` ring buffer: one retransmitted segment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetransmitRecord {
    /// One of [`retransmit`].
    pub kind: u32,
    /// TCP state of the socket (`TCP_ESTABLISHED` = 1, `TCP_SYN_SENT` = 2, ...).
    pub state: u32,
    pub ts_ns: u64,
    pub skaddr: u64,
    /// Owner from `SOCK_OWNER`; 0 when the socket was not seen sending or receiving.
    pub tgid: u32,
    pub tid: u32,
    /// Time since the owner's last send on the socket; 0 if unknown.
    pub since_send_ns: u64,
    /// ms since the original send of the first segment still being retransmitted, from
    /// `tcp_sock.retrans_stamp` (set from the second retransmit of a stall on); 0 if unknown.
    pub stall_ms: u32,
    pub _reserved: u32,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

const _: () = assert!(core::mem::size_of::<RetransmitRecord>() == 88);

/// Who is opening a connection to an OTLP port, recorded at `SYN_SENT` in the connecting task's
/// context (map `PENDING_CONNECT`, keyed by `struct sock *`): the source port is not chosen yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingConnect {
    pub tgid: u32,
    pub tid: u32,
    /// Cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    /// Inode of the socket's network namespace.
    pub netns_inode: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<PendingConnect>() == 24);

/// The opener's end of a connection (map `CONNECTION_OWNER`): its source address and port, as
/// the accepting side sees them as the peer unless a NAT rewrote them. Unused bytes are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnectionKey {
    /// IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    pub sport: u16,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: u16,
}

const _: () = assert!(core::mem::size_of::<ConnectionKey>() == 20);

/// Who opened a connection to an OTLP port, recorded when it became established.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionOwner {
    pub opener: PendingConnect,
    /// Where the opener dialled (before any DNAT): IPv4 in the first 4 bytes, or IPv6.
    pub daddr: [u8; 16],
    pub dport: u16,
    pub family: u16,
    pub _pad: u32,
    /// When the connection became established (`bpf_ktime_get_ns`).
    pub established_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ConnectionOwner>() == 56);

/// A connection a listener accepted (map `PASSIVE_SOCKETS`, keyed by `struct sock *`): when its
/// unread bytes began to wait, for the queue wait of the request its server reads next.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassiveSocket {
    /// When the oldest unread byte arrived: a segment that found the receive queue empty (or the
    /// connection's establishment, for a request sent with the handshake's last ACK).
    pub unread_since_ns: u64,
    /// `unread_since_ns` when a watched thread last read from the socket: each arrival is
    /// reported once.
    pub reported_since_ns: u64,
    /// `tcp_sock.copied_seq` at that read: a read that consumed nothing reports nothing.
    pub copied_seq: u32,
    /// The listener's port (host order).
    pub local_port: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<PassiveSocket>() == 24);

/// A record on the `QUEUE_EVENTS` ring buffer: a watched thread read bytes an accepted
/// connection had left waiting since `arrived_ns` (in the listen backlog, then the receive
/// queue, while no worker read them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueRecord {
    pub tgid: u32,
    pub tid: u32,
    pub arrived_ns: u64,
    pub read_ns: u64,
    pub local_port: u16,
    pub _pad: [u16; 3],
}

const _: () = assert!(core::mem::size_of::<QueueRecord>() == 32);

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::PassiveSocket {}
    unsafe impl aya::Pod for super::QueueRecord {}
    unsafe impl aya::Pod for super::SockOwner {}
    unsafe impl aya::Pod for super::RetransmitRecord {}
    unsafe impl aya::Pod for super::PendingConnect {}
    unsafe impl aya::Pod for super::ConnectionKey {}
    unsafe impl aya::Pod for super::ConnectionOwner {}
}
