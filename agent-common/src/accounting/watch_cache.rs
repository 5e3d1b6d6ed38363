//! Whether a task is watched, cached in its [`TaskSched`] so that the hooks of the node's
//! unwatched threads skip the `THREAD_STATE` lookup.
//!
//! The agent adds entries first and bumps the generation (never 0) after: a task cached as
//! unwatched during the change is looked up again under the new generation.
//!
//! The answer also travels with the task onto its CPU ([`RunningTask`]): when it leaves the CPU
//! asleep (not preempted, so no enqueue time to note) and is known unwatched, its switch-out
//! needs nothing from its local storage and skips the lookup, but for one switch-out in
//! [`SKIP_PACE`] on the CPU and the task's first [`YOUNG_SWITCHES`], which refresh its cached
//! cgroup (a task is moved to its cgroup mostly right after it is forked).

use crate::thread::{RunningTask, TaskSched};

/// One switch-out in this many on a CPU does not skip.
pub const SKIP_PACE: u32 = 16;
/// A task's first switch-outs never skip.
pub const YOUNG_SWITCHES: u32 = 64;

/// Whether the cache says for sure that the task is not watched at `generation`. Generation 0
/// (the agent has not published one yet) proves nothing.
#[inline(always)]
pub fn known_unwatched(ts: &TaskSched, generation: u32) -> bool {
    generation != 0 && ts.watch_gen == generation && ts.watched == 0
}

/// Records the answer of a `THREAD_STATE` lookup made at `generation`.
#[inline(always)]
pub fn remember(ts: &mut TaskSched, generation: u32, watched: bool) {
    ts.watch_gen = generation;
    ts.watched = u32::from(watched);
}

/// The task `task` (bookkeeping `ts`, if found) gets this CPU at `generation`.
#[inline(always)]
pub fn switch_in(running: &mut RunningTask, task: u64, ts: Option<&TaskSched>, generation: u32) {
    running.task = task;
    running.unwatched_gen = match ts {
        Some(ts) if known_unwatched(ts, generation) && ts.switches_out >= YOUNG_SWITCHES => {
            generation
        }
        _ => 0,
    };
}

/// Whether `task`, leaving this CPU (`preempted` or asleep) at `generation`, may skip its local
/// storage: it is the task the CPU was given, known unwatched at this generation, asleep, and
/// this is not the paced switch-out that refreshes.
#[inline(always)]
pub fn skip_switch_out(
    running: &mut RunningTask,
    task: u64,
    preempted: bool,
    generation: u32,
) -> bool {
    if preempted || generation == 0 || running.task != task || running.unwatched_gen != generation {
        return false;
    }
    running.skipped = running.skipped.wrapping_add(1);
    !running.skipped.is_multiple_of(SKIP_PACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(generation: u32) -> TaskSched {
        let mut ts = TaskSched {
            switches_out: YOUNG_SWITCHES,
            ..TaskSched::default()
        };
        remember(&mut ts, generation, false);
        ts
    }

    #[test]
    fn a_settled_unwatched_task_leaving_asleep_skips_but_one_in_the_pace() {
        let mut r = RunningTask::default();
        switch_in(&mut r, 0xA0, Some(&settled(3)), 3);
        let skips = (0..SKIP_PACE * 4)
            .filter(|_| skip_switch_out(&mut r, 0xA0, false, 3))
            .count() as u32;
        assert_eq!(skips, SKIP_PACE * 4 - 4);
    }

    #[test]
    fn anything_unknown_or_changed_takes_the_lookup() {
        let mut r = RunningTask::default();
        switch_in(&mut r, 0xA0, Some(&settled(3)), 3);
        assert!(
            !skip_switch_out(&mut r, 0xA0, true, 3),
            "preempted: its enqueue time"
        );
        assert!(
            !skip_switch_out(&mut r, 0xB0, false, 3),
            "another task than switched in"
        );
        assert!(
            !skip_switch_out(&mut r, 0xA0, false, 4),
            "the agent watched more since"
        );
        assert!(
            !skip_switch_out(&mut r, 0xA0, false, 0),
            "no generation yet"
        );
        assert!(skip_switch_out(&mut r, 0xA0, false, 3));

        let mut young = settled(3);
        young.switches_out = YOUNG_SWITCHES - 1;
        switch_in(&mut r, 0xA0, Some(&young), 3);
        assert!(!skip_switch_out(&mut r, 0xA0, false, 3), "a young task");

        let mut watched = settled(3);
        remember(&mut watched, 3, true);
        switch_in(&mut r, 0xA0, Some(&watched), 3);
        assert!(!skip_switch_out(&mut r, 0xA0, false, 3), "a watched task");

        switch_in(&mut r, 0xA0, None, 3);
        assert!(
            !skip_switch_out(&mut r, 0xA0, false, 3),
            "no bookkeeping found"
        );

        switch_in(&mut r, 0xA0, Some(&settled(2)), 3);
        assert!(
            !skip_switch_out(&mut r, 0xA0, false, 3),
            "cached at an older generation"
        );
    }

    #[test]
    fn a_fresh_task_is_looked_up() {
        let ts = TaskSched::default();
        assert!(!known_unwatched(&ts, 1));
        assert!(!known_unwatched(&ts, 0));
    }

    #[test]
    fn an_unwatched_answer_holds_for_its_generation_only() {
        let mut ts = TaskSched::default();
        remember(&mut ts, 3, false);
        assert!(known_unwatched(&ts, 3));
        assert!(!known_unwatched(&ts, 4));
        assert!(!known_unwatched(&ts, 2));
    }

    #[test]
    fn a_watched_answer_is_always_looked_up_again() {
        // Its entry may be gone: the lookup is what finds the state anyway.
        let mut ts = TaskSched::default();
        remember(&mut ts, 3, true);
        assert!(!known_unwatched(&ts, 3));
    }

    #[test]
    fn generation_0_proves_nothing() {
        let mut ts = TaskSched::default();
        remember(&mut ts, 0, false);
        assert!(!known_unwatched(&ts, 0));
    }
}
