//! Record layouts of classic tracepoints, read from their `format` files in tracefs, so that
//! the programs need no compiled-in offsets.

use std::{collections::HashMap, fs, path::Path};

use anyhow::{Context as _, anyhow};
use culprit_common::TcpTracepointOffsets;

/// Field name -> byte offset in the record.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct TracepointFormat {
    fields: HashMap<String, u32>,
}

impl TracepointFormat {
    /// Parses a tracefs `format` file.
    pub(crate) fn parse(text: &str) -> Self {
        let fields = text
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let decl = line.strip_prefix("field:")?.split(';').next()?;
                // `const void * skbaddr`, `__u8 saddr[4]`: the name is the last word, without
                // its array suffix.
                let name = decl.split_whitespace().last()?.split('[').next()?;
                let offset = line
                    .split(';')
                    .find_map(|part| part.trim().strip_prefix("offset:"))?
                    .parse()
                    .ok()?;
                Some((name.to_string(), offset))
            })
            .collect();
        Self { fields }
    }

    pub(crate) fn offset(&self, field: &str) -> anyhow::Result<u32> {
        self.fields
            .get(field)
            .copied()
            .ok_or_else(|| anyhow!("field `{field}` missing from the tracepoint format"))
    }
}

/// Reads `<tracefs>/events/<category>/<name>/format`.
pub(crate) fn read_format(
    tracefs: &Path,
    category: &str,
    name: &str,
) -> anyhow::Result<TracepointFormat> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        if tracefs.join("events").is_dir() {
            format!(
                "this kernel has no tracepoint {category}:{name} ({})",
                path.display()
            )
        } else {
            format!(
                "reading {} (is tracefs mounted? `mount -t tracefs nodev /sys/kernel/tracing`)",
                path.display()
            )
        }
    })?;
    Ok(TracepointFormat::parse(&text))
}

/// The offsets the TCP programs read, from the tracepoints' formats, and the programs whose
/// tracepoint this kernel lacks (or formats differently), with the reason: each program is left
/// out alone, so that a kernel without `sock:sock_send_length` (before 6.3) still has its
/// retransmits, their owners found through /proc.
#[derive(Debug)]
pub(crate) struct TcpFormats {
    pub(crate) offsets: TcpTracepointOffsets,
    pub(crate) unavailable: Vec<(&'static str, String)>,
}

impl TcpFormats {
    /// Why `program` cannot run here, if it cannot.
    pub(crate) fn unavailable(&self, program: &str) -> Option<&str> {
        self.unavailable
            .iter()
            .find(|(p, _)| *p == program)
            .map(|(_, why)| why.as_str())
    }
}

/// Reads the TCP tracepoints' formats under `tracefs`.
pub(crate) fn tcp_offsets(tracefs: &Path) -> TcpFormats {
    let mut off = TcpTracepointOffsets::ZERO;
    let mut unavailable = Vec::new();
    let mut group = |programs: &[&'static str], read: &mut dyn FnMut() -> anyhow::Result<()>| {
        if let Err(err) = read() {
            for &p in programs {
                unavailable.push((p, format!("{err:#}")));
            }
        }
    };
    group(&["tcp_retransmit_skb"], &mut || {
        let rtx = read_format(tracefs, "tcp", "tcp_retransmit_skb")?;
        off.rtx_skaddr = rtx.offset("skaddr")?;
        off.rtx_state = rtx.offset("state")?;
        off.rtx_sport = rtx.offset("sport")?;
        off.rtx_dport = rtx.offset("dport")?;
        off.rtx_family = rtx.offset("family")?;
        off.rtx_saddr = rtx.offset("saddr")?;
        off.rtx_daddr = rtx.offset("daddr")?;
        off.rtx_saddr_v6 = rtx.offset("saddr_v6")?;
        off.rtx_daddr_v6 = rtx.offset("daddr_v6")?;
        Ok(())
    });
    group(&["tcp_retransmit_synack"], &mut || {
        let synack = read_format(tracefs, "tcp", "tcp_retransmit_synack")?;
        off.synack_skaddr = synack.offset("skaddr")?;
        off.synack_sport = synack.offset("sport")?;
        off.synack_dport = synack.offset("dport")?;
        off.synack_family = synack.offset("family")?;
        off.synack_saddr = synack.offset("saddr")?;
        off.synack_daddr = synack.offset("daddr")?;
        off.synack_saddr_v6 = synack.offset("saddr_v6")?;
        off.synack_daddr_v6 = synack.offset("daddr_v6")?;
        Ok(())
    });
    group(&["sock_send_length", "sock_recv_length"], &mut || {
        let send = read_format(tracefs, "sock", "sock_send_length")?;
        let recv = read_format(tracefs, "sock", "sock_recv_length")?;
        let sk = send.offset("sk")?;
        if recv.offset("sk")? != sk {
            anyhow::bail!("sock_send_length and sock_recv_length disagree on the `sk` offset");
        }
        off.sock_len_sk = sk;
        Ok(())
    });
    group(&["tcp_rcv_space_adjust"], &mut || {
        off.rcv_space_sk = read_format(tracefs, "tcp", "tcp_rcv_space_adjust")?.offset("skaddr")?;
        Ok(())
    });
    group(&["inet_sock_set_state"], &mut || {
        let state = read_format(tracefs, "sock", "inet_sock_set_state")?;
        off.state_skaddr = state.offset("skaddr")?;
        off.state_oldstate = state.offset("oldstate")?;
        off.state_newstate = state.offset("newstate")?;
        off.state_sport = state.offset("sport")?;
        off.state_dport = state.offset("dport")?;
        off.state_family = state.offset("family")?;
        off.state_protocol = state.offset("protocol")?;
        off.state_saddr = state.offset("saddr")?;
        off.state_daddr = state.offset("daddr")?;
        off.state_saddr_v6 = state.offset("saddr_v6")?;
        off.state_daddr_v6 = state.offset("daddr_v6")?;
        Ok(())
    });
    group(&["mark_victim"], &mut || {
        off.mark_victim_pid = read_format(tracefs, "oom", "mark_victim")?.offset("pid")?;
        Ok(())
    });
    TcpFormats {
        offsets: off,
        unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRANSMIT_6_18: &str = "name: tcp_retransmit_skb
ID: 2281
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;

print fmt: \"skbaddr=%p skaddr=%p\", REC->skbaddr, REC->skaddr
";

    #[test]
    fn parses_pointer_array_and_scalar_fields() {
        let f = TracepointFormat::parse(RETRANSMIT_6_18);
        assert_eq!(f.offset("common_pid").unwrap(), 4);
        assert_eq!(f.offset("skaddr").unwrap(), 16);
        assert_eq!(f.offset("state").unwrap(), 24);
        assert_eq!(f.offset("saddr").unwrap(), 34);
        assert_eq!(f.offset("daddr_v6").unwrap(), 58);
        assert_eq!(f.offset("err").unwrap(), 76);
    }

    #[test]
    fn missing_fields_are_named() {
        let f = TracepointFormat::parse(RETRANSMIT_6_18);
        let err = f.offset("nope").unwrap_err().to_string();
        assert!(err.contains("nope"));
        assert_eq!(TracepointFormat::parse(""), TracepointFormat::default());
        assert!(
            TracepointFormat::parse("garbage\nfield:int x;")
                .offset("x")
                .is_err()
        );
    }

    #[test]
    fn reads_this_kernels_tcp_tracepoints() {
        let tracefs = Path::new("/sys/kernel/tracing");
        if !tracefs.join("events/tcp").exists() {
            eprintln!("tracefs not mounted here; skipped");
            return;
        }
        let tcp = tcp_offsets(tracefs);
        assert!(tcp.unavailable.is_empty(), "{:?}", tcp.unavailable);
        assert!(tcp.offsets.rtx_skaddr >= 8 && tcp.offsets.sock_len_sk >= 8);
    }

    /// A kernel without `sock:sock_send_length` (6.1) loses the owner hooks alone.
    #[test]
    fn a_missing_tracepoint_takes_only_its_programs() {
        let tracefs = Path::new("/sys/kernel/tracing");
        if !tracefs.join("events/tcp").exists() {
            eprintln!("tracefs not mounted here; skipped");
            return;
        }
        let fake = std::env::temp_dir().join(format!("culprit-tracefs-{}", std::process::id()));
        for (category, name) in [
            ("tcp", "tcp_retransmit_skb"),
            ("tcp", "tcp_retransmit_synack"),
            ("sock", "sock_recv_length"),
            ("sock", "inet_sock_set_state"),
            ("tcp", "tcp_rcv_space_adjust"),
            ("oom", "mark_victim"),
        ] {
            let dir = fake.join("events").join(category).join(name);
            fs::create_dir_all(&dir).unwrap();
            fs::copy(
                tracefs
                    .join("events")
                    .join(category)
                    .join(name)
                    .join("format"),
                dir.join("format"),
            )
            .unwrap();
        }
        let tcp = tcp_offsets(&fake);
        fs::remove_dir_all(&fake).ok();
        let missing: Vec<&str> = tcp.unavailable.iter().map(|(p, _)| *p).collect();
        assert_eq!(missing, ["sock_send_length", "sock_recv_length"]);
        assert!(
            tcp.unavailable("sock_send_length")
                .is_some_and(|why| why.contains("sock_send_length/format"))
        );
        assert_eq!(tcp.unavailable("tcp_retransmit_skb"), None);
        assert!(tcp.offsets.rtx_skaddr >= 8 && tcp.offsets.state_skaddr >= 8);
        assert_eq!(tcp.offsets.sock_len_sk, 0);
        assert!(tcp.offsets.rcv_space_sk >= 8);
        assert!(tcp.offsets.mark_victim_pid >= 8);
    }
}
