//! The time a report covers: what was asked (`--since 10m`, `--from`/`--to`), or the load
//! generator's run, or the last 10 minutes.

use std::time::Duration;

const DEFAULT_SINCE: Duration = Duration::from_secs(600);
/// Around the client requests' spans: the spans of other services in the same run.
const CLIENT_WINDOW_MARGIN_MS: u64 = 1_000;

/// The time a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Window {
    /// With a load generator's results, the time their requests were seen in; else the last
    /// 10 minutes.
    #[default]
    Auto,
    /// The last this long.
    Since(Duration),
    /// From one wall-clock time to another (Unix ms).
    Between { from_unix_ms: u64, to_unix_ms: u64 },
}

impl Window {
    /// The window's bounds (Unix ms) at `now_unix_ms`, given when the client's joined requests
    /// were seen (none: no client results, or none joined).
    pub fn bounds(self, now_unix_ms: u64, joined_seen_unix_ms: &[u64]) -> (u64, u64) {
        let last = |d: Duration| {
            let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            (now_unix_ms.saturating_sub(ms), now_unix_ms)
        };
        match self {
            Window::Between {
                from_unix_ms,
                to_unix_ms,
            } => (from_unix_ms, to_unix_ms),
            Window::Since(d) => last(d),
            Window::Auto => match (
                joined_seen_unix_ms.iter().min(),
                joined_seen_unix_ms.iter().max(),
            ) {
                (Some(first), Some(last)) => (
                    first.saturating_sub(CLIENT_WINDOW_MARGIN_MS),
                    last.saturating_add(CLIENT_WINDOW_MARGIN_MS),
                ),
                _ => last(DEFAULT_SINCE),
            },
        }
    }
}

/// The window of `--since`, `--from` and `--to` (`to` alone: the 10 minutes before it; `from`
/// alone: up to now, `now_unix_ms`).
pub fn from_flags(
    since: Option<Duration>,
    from_unix_ms: Option<u64>,
    to_unix_ms: Option<u64>,
    now_unix_ms: u64,
) -> Result<Window, String> {
    let window = match (since, from_unix_ms, to_unix_ms) {
        (Some(d), None, None) => Window::Since(d),
        (None, None, None) => Window::Auto,
        (None, from, to) => {
            let to = to.unwrap_or(now_unix_ms);
            let from = from.unwrap_or_else(|| to.saturating_sub(DEFAULT_SINCE.as_millis() as u64));
            Window::Between {
                from_unix_ms: from,
                to_unix_ms: to,
            }
        }
        (Some(_), _, _) => return Err("--since and --from/--to are alternatives".to_string()),
    };
    match window {
        Window::Between {
            from_unix_ms,
            to_unix_ms,
        } if from_unix_ms >= to_unix_ms => Err("--from must be before --to".to_string()),
        w => Ok(w),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn the_flags_make_one_window() {
        let ten_min = 600_000;
        assert_eq!(from_flags(None, None, None, NOW), Ok(Window::Auto));
        assert_eq!(
            from_flags(Some(Duration::from_secs(5)), None, None, NOW),
            Ok(Window::Since(Duration::from_secs(5)))
        );
        assert_eq!(
            from_flags(None, Some(NOW - 5), None, NOW),
            Ok(Window::Between {
                from_unix_ms: NOW - 5,
                to_unix_ms: NOW
            })
        );
        assert_eq!(
            from_flags(None, None, Some(NOW - 5), NOW),
            Ok(Window::Between {
                from_unix_ms: NOW - 5 - ten_min,
                to_unix_ms: NOW - 5
            })
        );
        assert!(from_flags(None, Some(NOW), Some(NOW - 1), NOW).is_err());
        assert!(from_flags(Some(Duration::from_secs(5)), Some(1), None, NOW).is_err());
    }

    #[test]
    fn a_window_is_what_was_asked_or_the_clients_run_or_the_last_ten_minutes() {
        let between = Window::Between {
            from_unix_ms: 5,
            to_unix_ms: 9,
        };
        assert_eq!(between.bounds(NOW, &[NOW - 1]), (5, 9));
        let since = Window::Since(Duration::from_secs(60));
        assert_eq!(since.bounds(NOW, &[3]), (NOW - 60_000, NOW));
        assert_eq!(
            Window::Auto.bounds(NOW, &[NOW - 5_000, NOW - 9_000]),
            (NOW - 10_000, NOW - 4_000)
        );
        assert_eq!(Window::Auto.bounds(NOW, &[]), (NOW - 600_000, NOW));
        // Nothing underflows or overflows at the clock's ends.
        assert_eq!(Window::Auto.bounds(0, &[0, u64::MAX]), (0, u64::MAX));
        assert_eq!(Window::Since(Duration::MAX).bounds(NOW, &[]), (0, NOW));
    }
}
