//! How long a request waited before its server read it: in the listen backlog until a worker
//! accepted the connection, then in the receive queue until it read the bytes. A span starts when
//! the server reads its request, so this wait is invisible to the span.
//!
//! Accepted connections are marked when they become established (`SYN_RECV` -> `ESTABLISHED`,
//! a passive open's only path there); a segment that finds such a connection with nothing
//! unread dates its unread bytes (`tcp_probe`, BTF: the record is never formatted, one hash
//! lookup per segment); a watched thread that reads from it reports the wait once per arrival.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, RingBuf},
    programs::BtfTracePointContext,
};
use culprit_common::{
    DropCounter, OFFSET_ABSENT,
    tcp::{PassiveSocket, QueueRecord},
};

use crate::{config::kernel_offsets, drops::count_drop, task::read_kernel};

/// Accepted connections by `struct sock *`. LRU: a connection that is never closed in our sight
/// ages out; closed ones are removed (`forget`), their memory being recycled.
#[map(name = "PASSIVE_SOCKETS")]
static PASSIVE_SOCKETS: LruHashMap<u64, PassiveSocket> = LruHashMap::with_max_entries(65536, 0);

#[map(name = "QUEUE_EVENTS")]
static QUEUE_EVENTS: RingBuf = RingBuf::with_byte_size(256 << 10, 0);

/// `(rcv_nxt, copied_seq)` of a TCP socket; `None` when this kernel's layout is unknown.
#[inline(always)]
fn sequence(sk: *const u8) -> Option<(u32, u32)> {
    let off = kernel_offsets();
    if off.tcp_rcv_nxt == OFFSET_ABSENT || off.tcp_copied_seq == OFFSET_ABSENT || sk.is_null() {
        return None;
    }
    let rcv_nxt = read_kernel::<u32>(sk, off.tcp_rcv_nxt).ok()?;
    let copied_seq = read_kernel::<u32>(sk, off.tcp_copied_seq).ok()?;
    Some((rcv_nxt, copied_seq))
}

/// A listener's connection became established (softirq, the handshake's last ACK): its bytes
/// wait from now until read, unless they come later (`tcp_probe` dates them then).
#[inline(always)]
pub fn accepted(sk: u64, local_port: u16) {
    let Some((_, copied_seq)) = sequence(sk as *const u8) else {
        return;
    };
    let entry = PassiveSocket {
        unread_since_ns: unsafe { bpf_ktime_get_ns() },
        reported_since_ns: 0,
        copied_seq,
        local_port,
        _pad: 0,
    };
    if PASSIVE_SOCKETS.insert(sk, entry, 0).is_err() {
        count_drop(DropCounter::PassiveSocketFailed);
    }
}

/// A closed connection is forgotten: its `struct sock` will be another socket's.
#[inline(always)]
pub fn forget(sk: u64) {
    let _ = PASSIVE_SOCKETS.remove(sk);
}

/// Every segment an established connection receives, before it is queued: one that finds an
/// accepted connection with nothing unread starts a new wait.
#[btf_tracepoint(function = "tcp_probe")]
pub fn tcp_probe(ctx: BtfTracePointContext) -> i32 {
    let sk: *const u8 = ctx.arg(0);
    let Some(entry) = PASSIVE_SOCKETS.get_ptr_mut(sk as u64) else {
        return 0;
    };
    let Some((rcv_nxt, copied_seq)) = sequence(sk) else {
        return 0;
    };
    if rcv_nxt == copied_seq {
        // A pure ACK dates nothing that is read: the next segment with data re-dates it, and a
        // read reports only when it consumed bytes.
        unsafe { (*entry).unread_since_ns = bpf_ktime_get_ns() };
    }
    0
}

/// A watched thread read from `sk` (in its context): if the socket is an accepted connection
/// and the read consumed bytes that arrived since the last report, their wait is reported.
#[inline(always)]
pub fn read_by(sk: u64, tgid: u32, tid: u32) {
    let Some(entry) = PASSIVE_SOCKETS.get_ptr_mut(sk) else {
        return;
    };
    let Some((_, copied_seq)) = sequence(sk as *const u8) else {
        return;
    };
    let e = unsafe { &mut *entry };
    if copied_seq == e.copied_seq || e.unread_since_ns == e.reported_since_ns {
        return;
    }
    e.copied_seq = copied_seq;
    e.reported_since_ns = e.unread_since_ns;
    let record = QueueRecord {
        tgid,
        tid,
        arrived_ns: e.unread_since_ns,
        read_ns: unsafe { bpf_ktime_get_ns() },
        local_port: e.local_port,
        _pad: [0; 3],
    };
    if QUEUE_EVENTS.output::<QueueRecord>(&record, 0).is_err() {
        count_drop(DropCounter::QueueRingFull);
    }
}
