//! TCP retransmits with the thread that owns the socket. Classic tracepoints, whose record
//! layout the agent reads from tracefs at load time.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::{LruHashMap, RingBuf},
    programs::TracePointContext,
};
use culprit_common::{
    DropCounter,
    tcp::{RetransmitRecord, SockOwner, retransmit},
};

use aya_ebpf::helpers::bpf_probe_read_kernel;
use culprit_common::OFFSET_ABSENT;

use crate::{
    config::{kernel_offsets, tcp_tp_offsets},
    drops::count_drop,
    queue_wait,
    thread_state::is_watched_tgid,
};

/// `struct sock *` -> who last used it. LRU: sockets are never announced dead to us.
#[map(name = "SOCK_OWNER")]
static SOCK_OWNER: LruHashMap<u64, SockOwner> = LruHashMap::with_max_entries(65536, 0);

/// A closed socket's owner is forgotten: the kernel recycles `struct sock` memory, and a stale
/// entry would blame the next socket's retransmits on this one's owner.
#[inline(always)]
pub fn forget_socket(sk: u64) {
    let _ = SOCK_OWNER.remove(sk);
}

/// A watched thread connects `sk` (`SYN_SENT`, in its context): it owns the socket from its SYN
/// on, which is its first send. A SYN lost is then that thread's connect stall, even when the
/// connection is gone before anyone could look it up in `/proc`.
#[inline(always)]
pub fn note_connect(sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_watched_tgid(tgid) {
        return;
    }
    let owner = SockOwner {
        tgid,
        tid: pid_tgid as u32,
        last_send_ns: unsafe { bpf_ktime_get_ns() },
    };
    let _ = SOCK_OWNER.insert(sk, owner, 0);
}

#[map(name = "TCP_EVENTS")]
static TCP_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

const TCP_SYN_RECV: u32 = 3;

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    let _ = try_sock_used(&ctx, true);
    0
}

#[tracepoint(category = "sock", name = "sock_recv_length")]
pub fn sock_recv_length(ctx: TracePointContext) -> u32 {
    let _ = try_sock_used(&ctx, false);
    0
}

/// Before 6.3 (no `sock:sock_*_length`): every TCP read passes here, in the reader's context, so
/// receivers are still named by the kernel; attached only where `sock_recv_length` is not.
#[tracepoint(category = "tcp", name = "tcp_rcv_space_adjust")]
pub fn tcp_rcv_space_adjust(ctx: TracePointContext) -> u32 {
    let _ = try_sock_used_at(&ctx, tcp_tp_offsets().rcv_space_sk, false);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit(&ctx, retransmit::SEGMENT);
    0
}

#[tracepoint(category = "tcp", name = "tcp_retransmit_synack")]
pub fn tcp_retransmit_synack(ctx: TracePointContext) -> u32 {
    let _ = try_retransmit(&ctx, retransmit::SYNACK);
    0
}

/// Sends and receives run in the owner's context; only watched processes are recorded, so that
/// the node's other traffic costs one lookup.
#[inline(always)]
fn try_sock_used(ctx: &TracePointContext, send: bool) -> Result<(), i64> {
    try_sock_used_at(ctx, tcp_tp_offsets().sock_len_sk, send)
}

/// The socket at `sk_offset` of the record is used by the current thread; a send also dates the
/// socket's last send.
#[inline(always)]
fn try_sock_used_at(ctx: &TracePointContext, sk_offset: u32, send: bool) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_watched_tgid(tgid) {
        return Ok(());
    }
    let sk: u64 = unsafe { ctx.read_at(sk_offset as usize)? };
    if !send {
        queue_wait::read_by(sk, tgid, pid_tgid as u32);
    }
    let previous_send_ns = unsafe { SOCK_OWNER.get(sk) }.map_or(0, |o| o.last_send_ns);
    let owner = SockOwner {
        tgid,
        tid: pid_tgid as u32,
        last_send_ns: if send {
            unsafe { bpf_ktime_get_ns() }
        } else {
            previous_send_ns
        },
    };
    let _ = SOCK_OWNER.insert(sk, owner, 0);
    Ok(())
}

#[inline(always)]
fn try_retransmit(ctx: &TracePointContext, kind: u32) -> Result<(), i64> {
    let off = tcp_tp_offsets();
    let now_ns = unsafe { bpf_ktime_get_ns() };
    let mut rec = RetransmitRecord {
        kind,
        ts_ns: now_ns,
        ..RetransmitRecord::default()
    };
    unsafe {
        if kind == retransmit::SEGMENT {
            rec.skaddr = ctx.read_at(off.rtx_skaddr as usize)?;
            rec.state = ctx.read_at::<i32>(off.rtx_state as usize)? as u32;
            rec.sport = ctx.read_at(off.rtx_sport as usize)?;
            rec.dport = ctx.read_at(off.rtx_dport as usize)?;
            rec.family = ctx.read_at(off.rtx_family as usize)?;
            read_addrs(
                ctx,
                &mut rec,
                [
                    off.rtx_saddr,
                    off.rtx_daddr,
                    off.rtx_saddr_v6,
                    off.rtx_daddr_v6,
                ],
            )?;
        } else {
            rec.skaddr = ctx.read_at(off.synack_skaddr as usize)?;
            rec.state = TCP_SYN_RECV;
            rec.sport = ctx.read_at(off.synack_sport as usize)?;
            rec.dport = ctx.read_at(off.synack_dport as usize)?;
            rec.family = ctx.read_at(off.synack_family as usize)?;
            read_addrs(
                ctx,
                &mut rec,
                [
                    off.synack_saddr,
                    off.synack_daddr,
                    off.synack_saddr_v6,
                    off.synack_daddr_v6,
                ],
            )?;
        }
        rec.stall_ms = stall_ms(rec.skaddr, now_ns);
        if let Some(owner) = SOCK_OWNER.get(rec.skaddr) {
            rec.tgid = owner.tgid;
            rec.tid = owner.tid;
            if owner.last_send_ns != 0 {
                rec.since_send_ns = now_ns.saturating_sub(owner.last_send_ns);
            }
        }
    }
    if TCP_EVENTS.output::<RetransmitRecord>(&rec, 0).is_err() {
        count_drop(DropCounter::TcpRingFull);
    }
    Ok(())
}

/// How long the segments being retransmitted have waited: `tcp_sock.retrans_stamp` is the
/// original send time (ms on the tcp clock, which is CLOCK_MONOTONIC) of the first segment of the
/// stall; 0 until the kernel sets it (after the first retransmit of a stall).
#[inline(always)]
fn stall_ms(skaddr: u64, now_ns: u64) -> u32 {
    let off = kernel_offsets();
    if off.tcp_retrans_stamp == OFFSET_ABSENT || skaddr == 0 {
        return 0;
    }
    let at = (skaddr as *const u8).wrapping_add(off.tcp_retrans_stamp as usize) as *const u32;
    match unsafe { bpf_probe_read_kernel(at) } {
        Ok(0) | Err(_) => 0,
        Ok(stamp) => ((now_ns / 1_000_000) as u32).wrapping_sub(stamp),
    }
}

const AF_INET: u16 = 2;

/// IPv4 addresses go into the first four bytes; IPv6 fill all sixteen.
#[inline(always)]
unsafe fn read_addrs(
    ctx: &TracePointContext,
    rec: &mut RetransmitRecord,
    at: [u32; 4],
) -> Result<(), i64> {
    unsafe {
        if rec.family == AF_INET {
            let s: [u8; 4] = ctx.read_at(at[0] as usize)?;
            let d: [u8; 4] = ctx.read_at(at[1] as usize)?;
            rec.saddr[..4].copy_from_slice(&s);
            rec.daddr[..4].copy_from_slice(&d);
        } else {
            rec.saddr = ctx.read_at(at[2] as usize)?;
            rec.daddr = ctx.read_at(at[3] as usize)?;
        }
    }
    Ok(())
}
