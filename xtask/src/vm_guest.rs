//! What the kernel matrix runs on each kernel: its rows (`CHECKS`), the degradations a kernel is
//! known for, and the one script that runs them inside the VM (or on the host), leaving every
//! result as a file for `vm_test` to read.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context as _;

use crate::{
    commands::DEFAULT_IMAGE_TAG,
    setup,
    shell::{output, root, step},
};

/// How a row of the matrix is decided.
pub enum Proof {
    /// `culprit check` (the node preflight) attached every probe.
    Preflight,
    /// `culprit check` run from the container image's root attached as many probes as the
    /// agent built for the host did.
    Image,
    /// A privileged e2e test binary (all of it, or some of its cases) passed.
    Test {
        test: &'static str,
        cases: &'static [&'static str],
    },
}

/// One row of the matrix.
pub struct Check {
    pub name: &'static str,
    pub proves: &'static str,
    /// The signal's name in `culprit check --json`, if the row is one signal's.
    pub signal: Option<&'static str>,
    pub proof: Proof,
}

pub const CHECKS: &[Check] = &[
    Check {
        name: "load and attach",
        proves: "`culprit check`: every probe loads and attaches",
        signal: None,
        proof: Proof::Preflight,
    },
    Check {
        name: "image",
        proves: "the container image's agent, run from the image's root with /proc and /sys \
                 bound in as the DaemonSet mounts them, attaches its probes",
        signal: None,
        proof: Proof::Image,
    },
    Check {
        name: "contention",
        proves: "a hog on the victim's CPU: contention dominates, the hog is the named neighbour",
        signal: Some("run_queue_delay"),
        proof: Proof::Test {
            test: "runqueue",
            cases: &[],
        },
    },
    Check {
        name: "throttling",
        proves: "a quota-bound loop: throttled time within 15% of the cgroup's cpu.stat",
        signal: Some("cpu_throttling"),
        proof: Proof::Test {
            test: "throttling",
            cases: &[],
        },
    },
    Check {
        name: "retransmits",
        proves: "nftables drops: retransmits with 4-tuple, owner (from the kernel) and cost",
        signal: Some("tcp_retransmits"),
        proof: Proof::Test {
            test: "retransmits",
            cases: &[],
        },
    },
    Check {
        name: "thread states",
        proves: "sleeps are off-CPU (as long as the sleeper measured them), spins on-CPU, the \
                 unwatched ignored",
        signal: Some("thread_states"),
        proof: Proof::Test {
            test: "thread_states",
            cases: &[],
        },
    },
    Check {
        name: "span join",
        proves: "stock Python SDK spans (no process.pid: the sender found by the kernel's \
                 record of the connection) blamed on contention (hog named) and on a quota",
        signal: None,
        proof: Proof::Test {
            test: "span_causes",
            cases: &[
                "cpu_contention_is_blamed_with_the_hog_as_neighbour",
                "a_cpu_quota_is_blamed_as_throttling",
            ],
        },
    },
    Check {
        name: "wake chain",
        proves: "a client asleep on a server queued behind a hog: its sleep charged to the hog \
                 as waker delay, within what the server waited by the kernel's schedstat",
        signal: None,
        proof: Proof::Test {
            test: "wake_chain",
            cases: &[],
        },
    },
];

/// Degradations a kernel is known for, with why: anything else degraded is a regression.
pub const EXPECTED_DEGRADED: &[(&str, &str, &str)] = &[(
    "6.1",
    "tcp_retransmits",
    "no sock:sock_send_length/sock_recv_length before 6.3: receivers are named by \
     tcp:tcp_rcv_space_adjust, senders through /proc, costs from the kernel's stall start",
)];

/// The file (without extension) a check leaves its result in.
pub fn file_name(check: &str) -> String {
    check.replace(' ', "-")
}

/// Where the image's root filesystem is copied for the guests (which see the host's files, not
/// its containers' mounts).
fn image_root() -> PathBuf {
    root().join("target/vm/image-root")
}

/// Copies the root filesystem of the image `cargo xtask image` built out of buildah's storage.
pub fn export_image_root() -> anyhow::Result<()> {
    step(
        &format!("the image's root filesystem ({DEFAULT_IMAGE_TAG}) for the guests"),
        "build it with `cargo xtask image` (buildah)",
        || {
            let name = format!("culprit-vm-image-{}", std::process::id());
            output(Command::new("buildah").args(["from", "--name", &name, DEFAULT_IMAGE_TAG]))?;
            let copied = (|| {
                let mounted = output(Command::new("buildah").args(["mount", &name]))?;
                let dest = image_root();
                fs::remove_dir_all(&dest).ok();
                fs::create_dir_all(&dest)?;
                output(
                    Command::new("cp")
                        .arg("-a")
                        .arg(format!("{}/.", mounted.trim()))
                        .arg(&dest),
                )?;
                for dir in ["proc", "sys"] {
                    fs::create_dir_all(dest.join(dir))?;
                }
                anyhow::Ok(())
            })();
            let _ = Command::new("buildah").args(["umount", &name]).status();
            let _ = Command::new("buildah").args(["rm", &name]).status();
            copied.context("copying the image's root")
        },
    )
}

/// The script run as root on each kernel: every result is a file in `out`.
pub fn guest_script(out: &Path, binaries: &BTreeMap<String, PathBuf>, slowdown: u32) -> String {
    let agent = root().join("target/release/culprit");
    let mut s = format!(
        r#"#!/bin/sh
# Generated by `cargo xtask vm-test`: every result is a file in $OUT.
OUT='{out}'
AGENT='{agent}'
IMAGE_ROOT='{image_root}'
cd '{root}'
export PATH="{venv}/bin:$PATH"
# Deadlines stretch under emulation (see culprit_lab::process::slowdown).
export CULPRIT_SLOWDOWN={slowdown}
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs nodev /sys/kernel/tracing
uname -r > "$OUT/release"
date +%s > "$OUT/booted-at"
grep -E ' - cgroup2? ' /proc/self/mountinfo > "$OUT/cgroup-mounts"
"$AGENT" check --json > "$OUT/check.json" 2> "$OUT/check.log"; echo $? > "$OUT/check.rc"

# The image's agent from the image's root, /proc and /sys bound in as the DaemonSet's hostPID
# and hostPath mounts give them (slave mounts: unmounting must not reach the node's own).
for d in proc sys; do
  mount --rbind "/$d" "$IMAGE_ROOT/$d" && mount --make-rslave "$IMAGE_ROOT/$d"
done
chroot "$IMAGE_ROOT" /usr/local/bin/culprit check --json > "$OUT/image.json" 2> "$OUT/image.log"
echo $? > "$OUT/image.rc"
for d in sys proc; do umount -R "$IMAGE_ROOT/$d"; done

# The agent as the DaemonSet runs it (receivers, API), then the DaemonSet's readiness probe.
SOCK=/tmp/culprit-vm-test.sock
rm -f "$SOCK"
"$AGENT" agent --interval 1 --api-socket "$SOCK" --otlp-grpc 127.0.0.1:0 --otlp-http 127.0.0.1:0 \
  > "$OUT/agent.log" 2>&1 &
AGENT_PID=$!
ready=1
i=0
while [ $i -lt 120 ]; do
  if "$AGENT" status --readiness --socket "$SOCK" > /dev/null 2>&1; then ready=0; break; fi
  kill -0 $AGENT_PID 2>/dev/null || break
  i=$((i + 1))
  sleep 0.5
done
echo $ready > "$OUT/ready.rc"
"$AGENT" status --json --socket "$SOCK" > "$OUT/status.json" 2> /dev/null
kill $AGENT_PID 2>/dev/null
wait $AGENT_PID 2>/dev/null

run_test() {{
  name=$1; shift
  echo "== $name"
  start=$(date +%s)
  timeout 400 "$@" --test-threads=1 --nocapture > "$OUT/$name.log" 2>&1
  echo $? > "$OUT/$name.rc"
  echo $(( $(date +%s) - start )) > "$OUT/$name.secs"
  tail -n 3 "$OUT/$name.log"
}}
"#,
        out = out.display(),
        agent = agent.display(),
        image_root = image_root().display(),
        root = root().display(),
        venv = setup::venv_dir().display(),
    );
    for check in CHECKS {
        let Proof::Test { test, cases } = check.proof else {
            continue;
        };
        let _ = write!(
            s,
            "run_test {} '{}'",
            file_name(check.name),
            binaries[test].display()
        );
        for case in cases {
            let _ = write!(s, " {case}");
        }
        s.push('\n');
    }
    s.push_str("echo done > \"$OUT/finished\"\n");
    s
}
