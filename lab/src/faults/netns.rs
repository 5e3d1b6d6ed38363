//! A pod's network, as the test needs it: a network namespace of its own reaching the node over
//! a veth pair (IPv4 and IPv6), the way a CNI wires a pod. Removed again on drop.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    process::Command,
};

use anyhow::{Context as _, bail};

/// A network namespace joined to the host by a veth pair: the host end is `node_v4` /
/// `node_v6` (the "node address" the pod dials), the namespace end `pod_v4` / `pod_v6`.
pub struct PodNetwork {
    name: String,
    host_if: String,
    pub node_v4: Ipv4Addr,
    pub pod_v4: Ipv4Addr,
    pub node_v6: Ipv6Addr,
    pub pod_v6: Ipv6Addr,
}

impl PodNetwork {
    /// Creates namespace `culprit-<tag>-<pid>` on subnet `10.200.<subnet>.0/30` and
    /// `fd00:200:<subnet>::/64`.
    pub fn new(tag: &str, subnet: u8) -> anyhow::Result<Self> {
        let name = format!("culprit-{tag}-{}", std::process::id());
        // Interface names are at most 15 bytes.
        let host_if = format!("cvh{subnet}-{}", std::process::id() % 100_000);
        let pod_if = format!("cvp{subnet}-{}", std::process::id() % 100_000);
        let net = Self {
            name,
            host_if,
            node_v4: Ipv4Addr::new(10, 200, subnet, 1),
            pod_v4: Ipv4Addr::new(10, 200, subnet, 2),
            node_v6: format!("fd00:200:{subnet}::1").parse()?,
            pod_v6: format!("fd00:200:{subnet}::2").parse()?,
        };
        let (ns, h, p) = (net.name.as_str(), net.host_if.as_str(), pod_if.as_str());
        let (node4, pod4) = (format!("{}/30", net.node_v4), format!("{}/30", net.pod_v4));
        let (node6, pod6) = (format!("{}/64", net.node_v6), format!("{}/64", net.pod_v6));
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        ip(&["netns", "add", ns])?;
        // From here on, drop undoes whatever was done.
        ip(&["link", "add", h, "type", "veth", "peer", "name", p])?;
        ip(&["link", "set", p, "netns", ns])?;
        ip(&["addr", "add", &node4, "dev", h])?;
        ip(&["-6", "addr", "add", &node6, "dev", h, "nodad"])?;
        ip(&["link", "set", h, "up"])?;
        in_ns(&["addr", "add", &pod4, "dev", p])?;
        in_ns(&["-6", "addr", "add", &pod6, "dev", p, "nodad"])?;
        in_ns(&["link", "set", p, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        in_ns(&["route", "add", "default", "via", &net.node_v4.to_string()])?;
        in_ns(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &net.node_v6.to_string(),
        ])?;
        Ok(net)
    }

    /// The `culprit-lab` arguments that run a workload inside the namespace (unlike `ip netns
    /// exec`, which mounts a sysfs of the namespace's and so hides the cgroup tree, the lab
    /// only switches network namespaces: see [`join`]).
    pub fn lab_args(&self) -> Vec<String> {
        vec!["--netns".into(), self.name.clone()]
    }
}

/// Moves the calling thread into network namespace `name` (from `ip netns add`); threads it
/// spawns afterwards inherit it, so call it before any.
pub fn join(name: &str) -> anyhow::Result<()> {
    use std::os::fd::AsRawFd as _;
    let path = format!("/run/netns/{name}");
    let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: setns takes a namespace file descriptor that `ns` keeps open for the call.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("joining network namespace {name}"));
    }
    Ok(())
}

impl PodNetwork {
    /// The namespace's name, for [`join`].
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, and with it the host's.
        let _ = ip(&["link", "del", &self.host_if]);
        if let Err(err) = ip(&["netns", "del", &self.name]) {
            eprintln!(
                "warning: could not remove network namespace {}: {err:#}",
                self.name
            );
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (apt-get install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A subnet per lab in this process (tests may start more than one), from 80 up.
pub fn next_lab_subnet() -> u8 {
    static NEXT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(80);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}
