//! The one vocabulary of causes and decomposition parts. Every name the agent writes
//! (`culprit.cause`), every label, glyph and colour the tools, the lab and the HTML report draw
//! is spelled here and nowhere else, so that adding a cause is one enum variant.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a request's latency is blamed on (`culprit.cause`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Cause {
    /// Waiting before the server read the request: in the listen backlog and the connection's
    /// receive queue while every worker was busy. Before the span, in what the client saw.
    #[serde(rename = "queue.backlog")]
    QueueBacklog,
    /// The request's own thread computing: the code's own time.
    #[serde(rename = "on_cpu")]
    OnCpu,
    /// Runnable but the CPU was taken by someone else.
    #[serde(rename = "cpu.contention")]
    CpuContention,
    /// Runnable but its cgroup had spent its CFS quota.
    #[serde(rename = "cpu.throttling")]
    CpuThrottling,
    /// On its CPU, but the hypervisor ran something else on that virtual CPU (steal time): the
    /// node's host is overcommitted.
    #[serde(rename = "cpu.steal")]
    CpuSteal,
    /// Waiting on retransmitted TCP segments.
    #[serde(rename = "tcp.retransmit")]
    TcpRetransmit,
    /// Waiting on a retransmitted handshake: a SYN (or SYN-ACK) lost, the connect stalled for
    /// its retransmit timeout (1 s, then 3 s in all).
    #[serde(rename = "tcp.connect_retransmit")]
    TcpConnectRetransmit,
    /// Asleep in the kernel's I/O wait (`io_schedule()`): block reads and writes, pages read in.
    #[serde(rename = "disk.io")]
    DiskIo,
    /// Stalled on memory (`task_struct.in_memstall`): direct reclaim, the `memory.high`
    /// penalty sleep of its cgroup, pages that thrash.
    #[serde(rename = "memory.reclaim")]
    MemoryReclaim,
    /// Asleep in a page fault taken in user mode: a major fault reading its page in (from the
    /// mapped file or swap), or the address space's lock. Its I/O is not `disk.io` as well.
    #[serde(rename = "page_fault.major")]
    PageFault,
    /// Asleep in a `futex` call for longer than its releaser's own delays explain: a lock, a
    /// condition variable, work handed to another thread. The application's own waiting, not
    /// the kernel's: it competes with `on_cpu` and `off_cpu`, not with kernel causes.
    #[serde(rename = "lock.wait")]
    LockWait,
    /// Off the CPU for anything else (sleeps, sockets, a downstream's work).
    #[serde(rename = "off_cpu")]
    OffCpu,
    /// Too little of the request was observed to say.
    #[default]
    #[serde(rename = "unknown")]
    Unknown,
}

impl Cause {
    /// The causes that are news to the application: the kernel's, not its own time.
    pub const KERNEL: [Cause; 9] = [
        Cause::QueueBacklog,
        Cause::CpuContention,
        Cause::CpuThrottling,
        Cause::CpuSteal,
        Cause::TcpRetransmit,
        Cause::TcpConnectRetransmit,
        Cause::DiskIo,
        Cause::MemoryReclaim,
        Cause::PageFault,
    ];
    /// Every cause, in a stable order.
    pub const ALL: [Cause; 13] = [
        Cause::QueueBacklog,
        Cause::OnCpu,
        Cause::CpuContention,
        Cause::CpuThrottling,
        Cause::CpuSteal,
        Cause::TcpRetransmit,
        Cause::TcpConnectRetransmit,
        Cause::DiskIo,
        Cause::MemoryReclaim,
        Cause::PageFault,
        Cause::LockWait,
        Cause::OffCpu,
        Cause::Unknown,
    ];

    /// The attribute value, as in `culprit.cause`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Cause::QueueBacklog => "queue.backlog",
            Cause::OnCpu => "on_cpu",
            Cause::CpuContention => "cpu.contention",
            Cause::CpuThrottling => "cpu.throttling",
            Cause::CpuSteal => "cpu.steal",
            Cause::TcpRetransmit => "tcp.retransmit",
            Cause::TcpConnectRetransmit => "tcp.connect_retransmit",
            Cause::DiskIo => "disk.io",
            Cause::MemoryReclaim => "memory.reclaim",
            Cause::PageFault => "page_fault.major",
            Cause::LockWait => "lock.wait",
            Cause::OffCpu => "off_cpu",
            Cause::Unknown => "unknown",
        }
    }

    /// The cause named by an attribute value.
    pub fn parse(value: &str) -> Option<Cause> {
        Cause::ALL.into_iter().find(|c| c.as_str() == value)
    }

    pub fn is_kernel(self) -> bool {
        Cause::KERNEL.contains(&self)
    }

    /// The decomposition part that measures this cause.
    pub const fn part(self) -> Option<Part> {
        match self {
            Cause::QueueBacklog => Some(Part::Queue),
            Cause::OnCpu => Some(Part::OnCpu),
            Cause::CpuContention => Some(Part::Contention),
            Cause::CpuThrottling => Some(Part::Throttled),
            Cause::CpuSteal => Some(Part::Steal),
            Cause::TcpRetransmit => Some(Part::Retransmit),
            Cause::TcpConnectRetransmit => Some(Part::ConnectRetransmit),
            Cause::DiskIo => Some(Part::DiskIo),
            Cause::MemoryReclaim => Some(Part::MemoryReclaim),
            Cause::PageFault => Some(Part::PageFault),
            Cause::LockWait => Some(Part::LockWait),
            Cause::OffCpu => Some(Part::OffCpu),
            Cause::Unknown => None,
        }
    }

    /// The colour the tools and the report draw this cause in.
    pub const fn colour(self) -> Colour {
        match self.part() {
            Some(p) => p.colour(),
            None => Part::Unobserved.colour(),
        }
    }
}

/// Causes sort by their attribute value, as their names did in every table and metric.
impl Ord for Cause {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for Cause {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A value that names no cause is `unknown`: what the agent says when it cannot tell.
impl From<&str> for Cause {
    fn from(value: &str) -> Self {
        Cause::parse(value).unwrap_or_default()
    }
}

impl PartialEq<str> for Cause {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Cause {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// One disjoint slice of a request's wall time, in drawing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    /// Before the span: the request waited to be read.
    Queue,
    OnCpu,
    Contention,
    Throttled,
    /// On CPU, taken by the hypervisor.
    Steal,
    Retransmit,
    ConnectRetransmit,
    DiskIo,
    MemoryReclaim,
    PageFault,
    LockWait,
    OffCpu,
    /// Time the probes saw no thread activity for.
    Unobserved,
}

/// A colour as the terminal and the HTML report each draw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colour {
    pub rgb: (u8, u8, u8),
    /// The nearest of the 16 named terminal colours.
    pub terminal: TerminalColour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalColour {
    Blue,
    Red,
    Magenta,
    Green,
    Yellow,
    Cyan,
    Gray,
    DarkGray,
}

impl Part {
    /// Every part, in drawing order (the order of `Parts::values`).
    pub const ALL: [Part; 13] = [
        Part::Queue,
        Part::OnCpu,
        Part::Contention,
        Part::Throttled,
        Part::Steal,
        Part::Retransmit,
        Part::ConnectRetransmit,
        Part::DiskIo,
        Part::MemoryReclaim,
        Part::PageFault,
        Part::LockWait,
        Part::OffCpu,
        Part::Unobserved,
    ];

    /// The cause this part measures; none for the unobserved rest.
    pub const fn cause(self) -> Option<Cause> {
        match self {
            Part::Queue => Some(Cause::QueueBacklog),
            Part::OnCpu => Some(Cause::OnCpu),
            Part::Contention => Some(Cause::CpuContention),
            Part::Throttled => Some(Cause::CpuThrottling),
            Part::Steal => Some(Cause::CpuSteal),
            Part::Retransmit => Some(Cause::TcpRetransmit),
            Part::ConnectRetransmit => Some(Cause::TcpConnectRetransmit),
            Part::DiskIo => Some(Cause::DiskIo),
            Part::MemoryReclaim => Some(Cause::MemoryReclaim),
            Part::PageFault => Some(Cause::PageFault),
            Part::LockWait => Some(Cause::LockWait),
            Part::OffCpu => Some(Cause::OffCpu),
            Part::Unobserved => None,
        }
    }

    /// The machine name: the cause's attribute value, or `unobserved`.
    pub const fn name(self) -> &'static str {
        match self.cause() {
            Some(c) => c.as_str(),
            None => "unobserved",
        }
    }

    /// Whether the part is a kernel cause.
    pub fn is_kernel(self) -> bool {
        self.cause().is_some_and(Cause::is_kernel)
    }

    /// The words people read.
    pub const fn label(self) -> &'static str {
        match self {
            Part::Queue => "queued before read",
            Part::OnCpu => "on-CPU",
            Part::Contention => "run-queue (contention)",
            Part::Throttled => "throttled",
            Part::Steal => "hypervisor steal",
            Part::Retransmit => "retransmit wait",
            Part::ConnectRetransmit => "connect stall",
            Part::DiskIo => "I/O wait",
            Part::MemoryReclaim => "memory stall",
            Part::PageFault => "page fault",
            Part::LockWait => "lock wait",
            Part::OffCpu => "off-CPU",
            Part::Unobserved => "unobserved",
        }
    }

    /// One character in a plain-text bar; the unobserved rest is blank.
    pub const fn glyph(self) -> char {
        match self {
            Part::Queue => 'Q',
            Part::OnCpu => 'C',
            Part::Contention => 'R',
            Part::Throttled => 'T',
            Part::Steal => 'H',
            Part::Retransmit => 'X',
            Part::ConnectRetransmit => 'S',
            Part::DiskIo => 'D',
            Part::MemoryReclaim => 'M',
            Part::PageFault => 'P',
            Part::LockWait => 'L',
            Part::OffCpu => '.',
            Part::Unobserved => ' ',
        }
    }

    pub const fn colour(self) -> Colour {
        let (rgb, terminal) = match self {
            Part::Queue => ((214, 39, 40), TerminalColour::Magenta),
            Part::OnCpu => ((70, 130, 180), TerminalColour::Blue),
            Part::Contention => ((230, 85, 13), TerminalColour::Red),
            Part::Throttled => ((117, 107, 177), TerminalColour::Magenta),
            Part::Steal => ((99, 99, 99), TerminalColour::DarkGray),
            Part::Retransmit => ((49, 163, 84), TerminalColour::Green),
            Part::ConnectRetransmit => ((116, 196, 118), TerminalColour::Green),
            Part::DiskIo => ((204, 160, 30), TerminalColour::Yellow),
            Part::MemoryReclaim => ((23, 190, 207), TerminalColour::Cyan),
            Part::PageFault => ((188, 189, 34), TerminalColour::Green),
            Part::LockWait => ((140, 86, 75), TerminalColour::Yellow),
            Part::OffCpu => ((150, 150, 150), TerminalColour::Gray),
            Part::Unobserved => ((210, 210, 210), TerminalColour::DarkGray),
        };
        Colour { rgb, terminal }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for c in Cause::ALL {
            assert_eq!(Cause::parse(c.as_str()), Some(c));
            assert_eq!(Cause::from(c.as_str()), c);
            assert_eq!(c.to_string(), c.as_str());
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<Cause>(&json).unwrap(), c);
        }
        assert_eq!(Cause::parse("cpu"), None);
        assert_eq!(Cause::from("cpu"), Cause::Unknown);
        assert!(Cause::CpuContention == "cpu.contention");
        let mut sorted = Cause::ALL;
        sorted.sort();
        let names: Vec<&str> = sorted.iter().map(|c| c.as_str()).collect();
        let mut by_name = names.clone();
        by_name.sort_unstable();
        assert_eq!(names, by_name);
    }

    #[test]
    fn parts_and_causes_agree() {
        for p in Part::ALL {
            match p.cause() {
                Some(c) => {
                    assert_eq!(c.part(), Some(p));
                    assert_eq!(p.name(), c.as_str());
                    assert_eq!(c.colour(), p.colour());
                }
                None => assert_eq!(p, Part::Unobserved),
            }
        }
        assert_eq!(Cause::Unknown.part(), None);
        let kernel: Vec<Part> = Part::ALL.into_iter().filter(|p| p.is_kernel()).collect();
        assert_eq!(
            kernel,
            [
                Part::Queue,
                Part::Contention,
                Part::Throttled,
                Part::Steal,
                Part::Retransmit,
                Part::ConnectRetransmit,
                Part::DiskIo,
                Part::MemoryReclaim,
                Part::PageFault
            ]
        );
        assert!(Cause::KERNEL.iter().all(|c| c.is_kernel()));
        assert!(!Cause::OnCpu.is_kernel() && !Cause::Unknown.is_kernel());
    }

    #[test]
    fn every_part_has_its_own_glyph_and_colour() {
        for (i, a) in Part::ALL.iter().enumerate() {
            for b in &Part::ALL[i + 1..] {
                assert_ne!(a.glyph(), b.glyph());
                assert_ne!(a.colour(), b.colour());
                assert_ne!(a.label(), b.label());
            }
        }
    }
}
