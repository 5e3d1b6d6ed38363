//! Packet loss injected with nftables, removed again on drop.

use std::process::Command;

use anyhow::{Context as _, bail};

/// An nftables table that drops a share of the TCP packets to and from one port, in the
/// node's network namespace and, when the service runs in a pod, in the pod's too.
pub struct PacketLoss {
    table: String,
    /// The namespaces holding the table besides the node's (from `ip netns add`).
    netns: Vec<String>,
}

impl PacketLoss {
    /// Drops `percent`% of the TCP packets whose source or destination port is `port`, on
    /// every interface (loopback included). Packets are dropped on arrival (the `input` hook):
    /// a drop on `output` fails the send locally, which TCP handles as local congestion rather
    /// than as a lost segment, with no retransmit. With the service in a pod (`netns`), the
    /// downstream's answers arrive in the pod's namespace, not the node's: the same table goes
    /// there, and each packet still meets one input hook, so the rate is the same.
    pub fn on_port(port: u16, percent: u8, netns: Option<&str>) -> anyhow::Result<Self> {
        Self::on_input(
            &format!("culprit_loss_{}_{port}", std::process::id()),
            &format!(
                "tcp dport {port} numgen random mod 100 < {percent} counter drop
                 tcp sport {port} numgen random mod 100 < {percent} counter drop"
            ),
            netns,
        )
    }

    /// Drops `percent`% of the connection requests (SYNs without ACK) to `port`, on arrival:
    /// the client's `connect` waits for its SYN's retransmit (1 s, then 3 s in all), the
    /// connections once open lose nothing. The SYNs arrive where `port` listens: the node.
    pub fn syns_to_port(port: u16, percent: u8) -> anyhow::Result<Self> {
        Self::on_input(
            &format!("culprit_synloss_{}_{port}", std::process::id()),
            &format!(
                "tcp dport {port} tcp flags & (syn | ack) == syn numgen random mod 100 < {percent} counter drop"
            ),
            None,
        )
    }

    fn on_input(table: &str, rules: &str, netns: Option<&str>) -> anyhow::Result<Self> {
        let script = format!(
            "table inet {table} {{
                chain input {{
                    type filter hook input priority 0; policy accept;
                    {rules}
                }}
            }}"
        );
        nft(None, &["-f", "-"], Some(&script))
            .context("installing the packet-loss rules (needs root and nftables)")?;
        // From here on, drop removes what was installed.
        let mut loss = Self {
            table: table.to_string(),
            netns: Vec::new(),
        };
        if let Some(ns) = netns {
            nft(Some(ns), &["-f", "-"], Some(&script))
                .with_context(|| format!("installing the packet-loss rules in {ns}"))?;
            loss.netns.push(ns.to_string());
        }
        Ok(loss)
    }

    /// How many packets the rules dropped so far in the node's namespace: the truth a test
    /// names when the agent saw no retransmit (were packets lost at all?).
    pub fn dropped_packets(&self) -> anyhow::Result<u64> {
        let listing = nft_output(None, &["list", "table", "inet", &self.table])?;
        Ok(counted_packets(&listing))
    }
}

/// The sum of the `counter packets N` figures in an `nft list` listing.
fn counted_packets(listing: &str) -> u64 {
    listing
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

impl Drop for PacketLoss {
    fn drop(&mut self) {
        let namespaces = std::iter::once(None).chain(self.netns.iter().map(|ns| Some(ns.as_str())));
        for ns in namespaces {
            if let Err(err) = nft(ns, &["delete", "table", "inet", &self.table], None) {
                eprintln!(
                    "warning: could not remove nftables table {}: {err:#}",
                    self.table
                );
            }
        }
    }
}

/// Runs `nft` with `args`, in network namespace `netns` if given (`ip netns exec`).
pub(crate) fn nft(netns: Option<&str>, args: &[&str], stdin: Option<&str>) -> anyhow::Result<()> {
    run_nft(netns, args, stdin).map(drop)
}

/// Runs `nft` with `args` and returns what it printed.
fn nft_output(netns: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    run_nft(netns, args, None)
}

fn run_nft(netns: Option<&str>, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut cmd = match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "nft"]);
            cmd
        }
        None => Command::new("nft"),
    };
    let mut child = cmd
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
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
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::counted_packets;

    #[test]
    fn counters_in_a_listing_are_summed() {
        let listing = "table inet t {\n chain input {\n tcp dport 5 numgen random mod 100 < 25 \
            counter packets 7 bytes 420 drop\n tcp sport 5 numgen random mod 100 < 25 counter \
            packets 3 bytes 180 drop\n }\n}\n";
        assert_eq!(counted_packets(listing), 10);
        assert_eq!(counted_packets("table inet t { }"), 0);
    }
}
