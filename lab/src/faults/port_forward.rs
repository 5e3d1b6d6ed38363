//! A hostPort as a CNI's portmap plugin makes one: an nftables DNAT from a port on the node's
//! address to the agent's, the sender's address and port kept. Removed again on drop.

use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::Context as _;

use super::packet_loss::nft;

pub struct PortForward {
    table: String,
}

impl PortForward {
    /// Packets arriving for `node:from_port` go to `to` instead.
    pub fn new(node: Ipv4Addr, from_port: u16, to: SocketAddrV4) -> anyhow::Result<Self> {
        let table = format!("culprit_dnat_{}_{from_port}", std::process::id());
        let script = format!(
            "table ip {table} {{
                chain prerouting {{
                    type nat hook prerouting priority dstnat; policy accept;
                    ip daddr {node} tcp dport {from_port} dnat to {to}
                }}
            }}"
        );
        nft(None, &["-f", "-"], Some(&script))
            .context("installing the port forward (needs root and nftables)")?;
        Ok(Self { table })
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        if let Err(err) = nft(None, &["delete", "table", "ip", &self.table], None) {
            eprintln!(
                "warning: could not remove nftables table {}: {err:#}",
                self.table
            );
        }
    }
}
