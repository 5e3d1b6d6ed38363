//! The agent's own scheduling policy. It observes applications on their CPUs, so it must not
//! take those CPUs from them at the wrong moment: under the normal policy each wake-up of the
//! agent (a batch of spans, a ring drain, a report) preempts the running request, which showed
//! as a 40% higher p99 for the lab service (BENCHMARKS.md). SCHED_BATCH keeps the agent's fair
//! share of CPU but never preempts on wake-up: it runs when the current task's slice ends.

/// Puts the calling thread, and every thread it starts afterwards, under SCHED_BATCH. Needs no
/// privilege; on failure the agent runs on under the normal policy.
pub(crate) fn yield_to_applications() {
    // Zeroed: priority 0 (what SCHED_BATCH takes), and musl's reserved SCHED_SPORADIC fields.
    // SAFETY: sched_param is plain integers, for which all zeroes is a valid value.
    let param: libc::sched_param = unsafe { std::mem::zeroed() };
    // The system call itself: musl's sched_setscheduler() is a stub that fails with ENOSYS.
    // SAFETY: a plain system call on the calling thread with a valid parameter block.
    if unsafe {
        libc::syscall(
            libc::SYS_sched_setscheduler,
            0,
            libc::SCHED_BATCH,
            &param as *const libc::sched_param,
        )
    } != 0
    {
        log::warn!(
            "could not switch to SCHED_BATCH ({}): the agent's wake-ups may preempt applications",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
/// The calling thread's scheduling policy.
pub(crate) fn current() -> i32 {
    // SAFETY: no arguments besides the calling thread.
    unsafe { libc::sched_getscheduler(0) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn threads_started_after_the_switch_inherit_it() {
        let policy = std::thread::spawn(|| {
            super::yield_to_applications();
            std::thread::spawn(super::current).join().unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(policy, libc::SCHED_BATCH);
        // The test's own thread is untouched.
        assert_eq!(super::current(), libc::SCHED_OTHER);
    }
}
