//! Who opened each connection to the agent's OTLP ports, from the kernel: the span sender's
//! identity, whatever network namespace it runs in and whatever its payload claims.
//!
//! `sock:inet_sock_set_state` fires at `SYN_SENT` in the connecting task's context, before the
//! source port is chosen: the opener is kept by socket until the connection is established, then
//! filed under its source address and port, which the agent sees as the accepted socket's peer.
//! The same hook forgets closed sockets' owners, so that a recycled `struct sock` is never
//! blamed on its previous owner.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns},
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use culprit_common::{
    DropCounter, OFFSET_ABSENT, OTLP_PORT_SLOTS,
    tcp::{ConnectionKey, ConnectionOwner, PendingConnect},
};

use aya_ebpf::helpers::bpf_probe_read_kernel;

use crate::{
    config::{kernel_offsets, probe_config, tcp_tp_offsets},
    drops::count_drop,
    queue_wait,
    task::task_cgroup_id,
    tcp::{forget_socket, note_connect},
};

/// Connections in `SYN_SENT` to an OTLP port. LRU: a connect that never completes and is never
/// closed (the socket leaked) ages out.
#[map(name = "PENDING_CONNECT")]
static PENDING_CONNECT: LruHashMap<u64, PendingConnect> = LruHashMap::with_max_entries(4096, 0);

/// Established connections to an OTLP port by their opener's end. LRU: connections are looked up
/// while their requests arrive, and the oldest are the ones long gone.
#[map(name = "CONNECTION_OWNER")]
static CONNECTION_OWNER: LruHashMap<ConnectionKey, ConnectionOwner> =
    LruHashMap::with_max_entries(16384, 0);

const IPPROTO_TCP: u16 = 6;
const AF_INET: u16 = 2;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let _ = try_set_state(&ctx);
    0
}

#[inline(always)]
fn try_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    let off = tcp_tp_offsets();
    let protocol: u16 = unsafe { ctx.read_at(off.state_protocol as usize)? };
    if protocol != IPPROTO_TCP {
        return Ok(());
    }
    let newstate: i32 = unsafe { ctx.read_at(off.state_newstate as usize)? };
    let sk: u64 = unsafe { ctx.read_at(off.state_skaddr as usize)? };
    match newstate {
        TCP_SYN_SENT => {
            let dport: u16 = unsafe { ctx.read_at(off.state_dport as usize)? };
            if is_otlp_port(dport) {
                opening(sk);
            }
            note_connect(sk);
        }
        TCP_ESTABLISHED => {
            let oldstate: i32 = unsafe { ctx.read_at(off.state_oldstate as usize)? };
            if oldstate == TCP_SYN_SENT {
                established(ctx, sk)?;
            } else if oldstate == TCP_SYN_RECV {
                let sport: u16 = unsafe { ctx.read_at(off.state_sport as usize)? };
                queue_wait::accepted(sk, sport);
            }
        }
        TCP_CLOSE => {
            forget_socket(sk);
            queue_wait::forget(sk);
            let _ = PENDING_CONNECT.remove(sk);
        }
        _ => {}
    }
    Ok(())
}

#[inline(always)]
fn is_otlp_port(port: u16) -> bool {
    let ports = probe_config().otlp_ports;
    let mut i = 0;
    while i < OTLP_PORT_SLOTS {
        if ports[i] != 0 && ports[i] == port {
            return true;
        }
        i += 1;
    }
    false
}

/// Runs in the connecting task: records it as the opener.
#[inline(always)]
fn opening(sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let off = kernel_offsets();
    let task = unsafe { bpf_get_current_task() } as *const u8;
    let pending = PendingConnect {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        cgroup_id: task_cgroup_id(task, &off).unwrap_or(0),
        netns_inode: netns_inode(sk),
        _pad: 0,
    };
    if PENDING_CONNECT.insert(sk, pending, 0).is_err() {
        count_drop(DropCounter::ConnectionOwnerFailed);
    }
}

/// Runs in softirq context (the SYN-ACK arrived): files the opener under the source address and
/// port, which are known now.
#[inline(always)]
fn established(ctx: &TracePointContext, sk: u64) -> Result<(), i64> {
    let Some(opener) = (unsafe { PENDING_CONNECT.get(sk) }).copied() else {
        return Ok(());
    };
    let _ = PENDING_CONNECT.remove(sk);
    let off = tcp_tp_offsets();
    let family: u16 = unsafe { ctx.read_at(off.state_family as usize)? };
    let mut key = ConnectionKey {
        saddr: [0; 16],
        sport: unsafe { ctx.read_at(off.state_sport as usize)? },
        family,
    };
    let mut owner = ConnectionOwner {
        opener,
        daddr: [0; 16],
        dport: unsafe { ctx.read_at(off.state_dport as usize)? },
        family,
        _pad: 0,
        established_ns: unsafe { bpf_ktime_get_ns() },
    };
    unsafe {
        if family == AF_INET {
            let s: [u8; 4] = ctx.read_at(off.state_saddr as usize)?;
            let d: [u8; 4] = ctx.read_at(off.state_daddr as usize)?;
            key.saddr[..4].copy_from_slice(&s);
            owner.daddr[..4].copy_from_slice(&d);
        } else {
            key.saddr = ctx.read_at(off.state_saddr_v6 as usize)?;
            owner.daddr = ctx.read_at(off.state_daddr_v6 as usize)?;
        }
    }
    if CONNECTION_OWNER.insert(key, owner, 0).is_err() {
        count_drop(DropCounter::ConnectionOwnerFailed);
    }
    Ok(())
}

/// `sk->__sk_common.skc_net.net->ns.inum`; 0 when the kernel's layout is unknown.
#[inline(always)]
fn netns_inode(sk: u64) -> u32 {
    let off = kernel_offsets();
    if off.sock_net == OFFSET_ABSENT || off.net_ns_inum == OFFSET_ABSENT || sk == 0 {
        return 0;
    }
    let at = (sk as *const u8).wrapping_add(off.sock_net as usize) as *const *const u8;
    let Ok(net) = (unsafe { bpf_probe_read_kernel(at) }) else {
        return 0;
    };
    if net.is_null() {
        return 0;
    }
    let at = net.wrapping_add(off.net_ns_inum as usize) as *const u32;
    unsafe { bpf_probe_read_kernel(at) }.unwrap_or(0)
}
