//! Whether a task is watched, cached in its [`TaskSched`] so that the hooks of the node's
//! unwatched threads skip the `THREAD_STATE` lookup.
//!
//! The agent adds entries first and bumps the generation (never 0) after: a task cached as
//! unwatched during the change is looked up again under the new generation.

use crate::thread::TaskSched;

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

#[cfg(test)]
mod tests {
    use super::*;

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
