//! Memory budgets from the agent's memory limit (`--memory-limit-mib`, else its cgroup's): the
//! parts that grow with what senders and backends do (the export queue, decoded requests) are
//! sized so that, full, they leave the agent below its limit.

/// What the agent needs besides the budgets: runtime, signals' stores, caches, buffers of
/// requests being read.
const BASE_BYTES: u64 = 64 << 20;
/// The least limit the agent runs under: the base and a few MiB for each budget.
const MIN_LIMIT_BYTES: u64 = BASE_BYTES + (32 << 20);
/// Without a known limit, the export queue holds at most this much.
const DEFAULT_QUEUE_BYTES: usize = 128 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Budgets {
    pub(super) export_queue_bytes: usize,
    pub(super) decoded_bytes: usize,
}

/// The budgets under `limit_bytes`; `decoded_flag_bytes` (`--max-decoded-mib`) is honoured up
/// to what the limit leaves.
pub(super) fn budgets(
    limit_bytes: Option<u64>,
    decoded_flag_bytes: usize,
) -> anyhow::Result<Budgets> {
    let Some(limit) = limit_bytes else {
        return Ok(Budgets {
            export_queue_bytes: DEFAULT_QUEUE_BYTES,
            decoded_bytes: decoded_flag_bytes,
        });
    };
    if limit < MIN_LIMIT_BYTES {
        anyhow::bail!(
            "a memory limit of {} MiB is too small: the agent needs at least {} MiB",
            limit >> 20,
            MIN_LIMIT_BYTES >> 20
        );
    }
    // Decoded messages weigh more than their estimate and bodies are buffered before they are
    // weighed: 30% of the rest is left as slack.
    let spare = limit - BASE_BYTES;
    Ok(Budgets {
        export_queue_bytes: usize::try_from(spare * 4 / 10).unwrap_or(usize::MAX),
        decoded_bytes: decoded_flag_bytes
            .min(usize::try_from(spare * 3 / 10).unwrap_or(usize::MAX)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_stay_below_the_limit() {
        for limit_mib in [96u64, 128, 256, 512, 4096] {
            let limit = limit_mib << 20;
            let b = budgets(Some(limit), usize::MAX).unwrap();
            let used = BASE_BYTES + (b.export_queue_bytes + b.decoded_bytes) as u64;
            assert!(used < limit, "{limit_mib} MiB: {b:?}");
            assert!(b.export_queue_bytes >= 12 << 20, "{limit_mib} MiB: {b:?}");
        }
        let b = budgets(Some(256 << 20), 64 << 20).unwrap();
        assert_eq!(b.decoded_bytes, (192 << 20) * 3 / 10);
        let b = budgets(Some(4096 << 20), 64 << 20).unwrap();
        assert_eq!(b.decoded_bytes, 64 << 20, "the flag wins when it is lower");
        assert!(budgets(Some(64 << 20), 64 << 20).is_err());
        assert_eq!(
            budgets(None, 64 << 20).unwrap(),
            Budgets {
                export_queue_bytes: DEFAULT_QUEUE_BYTES,
                decoded_bytes: 64 << 20
            }
        );
    }
}
