//! Which thread served a span that does not say, from kernel facts: the SDK read the clock on
//! the serving thread at the span's start and at its end, so that thread was running at both
//! instants and ran during the span. A thread known to be blocked or waiting for a CPU at either
//! instant, or that never ran in the window, did not serve it. One thread left is the server; of
//! several, the one known running at both instants; otherwise nobody can tell, and the span is
//! not blamed on a guess.

use culprit_common::thread::state;

/// What the kernel says of one of the sender's threads around a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub(crate) tid: u32,
    /// Its known state at the span's start and end (`None`: not placed in time there).
    pub(crate) at_start: Option<u32>,
    pub(crate) at_end: Option<u32>,
    /// Its on-CPU time within the span.
    pub(crate) on_cpu_ns: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Serving {
    Inferred(u32),
    Ambiguous,
}

/// Whether a thread in these states at the span's start and end can have read the clock at
/// both: not one known asleep or waiting for a CPU at either.
pub(crate) fn could_serve(at_start: Option<u32>, at_end: Option<u32>) -> bool {
    let not_running = |s: Option<u32>| matches!(s, Some(state::OFF_CPU | state::RUNQ));
    !not_running(at_start) && !not_running(at_end)
}

/// The thread that served the span, if the facts name one.
pub(crate) fn infer(candidates: &[Candidate]) -> Serving {
    let possible: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| c.on_cpu_ns > 0 && could_serve(c.at_start, c.at_end))
        .collect();
    if let [only] = possible[..] {
        return Serving::Inferred(only.tid);
    }
    let running_both: Vec<&&Candidate> = possible
        .iter()
        .filter(|c| c.at_start == Some(state::ON_CPU) && c.at_end == Some(state::ON_CPU))
        .collect();
    match running_both[..] {
        [only] => Serving::Inferred(only.tid),
        _ => Serving::Ambiguous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(tid: u32, at_start: Option<u32>, at_end: Option<u32>, on_cpu_ns: u64) -> Candidate {
        Candidate {
            tid,
            at_start,
            at_end,
            on_cpu_ns,
        }
    }

    const ON: Option<u32> = Some(state::ON_CPU);
    const OFF: Option<u32> = Some(state::OFF_CPU);
    const RUNQ: Option<u32> = Some(state::RUNQ);

    #[test]
    fn the_only_thread_that_can_have_read_the_clock_served_the_span() {
        // A pool: one worker asleep through the span, one waiting for the CPU at its end, one
        // idle all along, and the server, whose instants fell in short intervals.
        let pool = [
            c(1, OFF, OFF, 0),
            c(2, ON, RUNQ, 5),
            c(3, None, None, 0),
            c(4, None, None, 7),
        ];
        assert_eq!(infer(&pool), Serving::Inferred(4));
        assert_eq!(infer(&[c(9, ON, ON, 1)]), Serving::Inferred(9));
    }

    #[test]
    fn of_several_the_one_known_running_at_both_instants() {
        let two = [c(1, ON, ON, 10), c(2, None, ON, 10)];
        assert_eq!(infer(&two), Serving::Inferred(1));
    }

    #[test]
    fn otherwise_nobody_is_guessed() {
        assert_eq!(infer(&[]), Serving::Ambiguous);
        assert_eq!(infer(&[c(1, OFF, OFF, 3)]), Serving::Ambiguous);
        let twins = [c(1, None, None, 10), c(2, None, None, 10)];
        assert_eq!(infer(&twins), Serving::Ambiguous);
        let both_running = [c(1, ON, ON, 10), c(2, ON, ON, 10)];
        assert_eq!(infer(&both_running), Serving::Ambiguous);
    }
}
