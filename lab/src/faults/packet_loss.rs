//! Packet loss injected with nftables, removed again on drop.

use std::process::Command;

use anyhow::{Context as _, bail};

/// An nftables table that drops a share of the TCP packets to and from one port.
pub struct PacketLoss {
    table: String,
}

impl PacketLoss {
    /// Drops `percent`% of the TCP packets whose source or destination port is `port`, on
    /// every interface (loopback included). Packets are dropped on arrival (the `input` hook):
    /// a drop on `output` fails the send locally, which TCP handles as local congestion rather
    /// than as a lost segment, with no retransmit.
    pub fn on_port(port: u16, percent: u8) -> anyhow::Result<Self> {
        Self::on_input(
            &format!("culprit_loss_{}_{port}", std::process::id()),
            &format!(
                "tcp dport {port} numgen random mod 100 < {percent} drop
                 tcp sport {port} numgen random mod 100 < {percent} drop"
            ),
        )
    }

    /// Drops `percent`% of the connection requests (SYNs without ACK) to `port`, on arrival:
    /// the client's `connect` waits for its SYN's retransmit (1 s, then 3 s in all), the
    /// connections once open lose nothing.
    pub fn syns_to_port(port: u16, percent: u8) -> anyhow::Result<Self> {
        Self::on_input(
            &format!("culprit_synloss_{}_{port}", std::process::id()),
            &format!(
                "tcp dport {port} tcp flags & (syn | ack) == syn numgen random mod 100 < {percent} drop"
            ),
        )
    }

    /// Installs table `table` whose `input` chain holds `rules`.
    fn on_input(table: &str, rules: &str) -> anyhow::Result<Self> {
        let script = format!(
            "table inet {table} {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    {rules}
                }}
            }}"
        );
        nft(&["-f", "-"], Some(&script))
            .context("installing the packet-loss rules (needs root and nftables)")?;
        Ok(Self {
            table: table.to_string(),
        })
    }
}

impl Drop for PacketLoss {
    fn drop(&mut self) {
        if let Err(err) = nft(&["delete", "table", "inet", &self.table], None) {
            eprintln!(
                "warning: could not remove nftables table {}: {err:#}",
                self.table
            );
        }
    }
}

pub(crate) fn nft(args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running nft (apt-get install nftables)")?;
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(text.as_bytes())?;
    }
    drop(child.stdin.take());
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
