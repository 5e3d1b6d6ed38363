//! The concurrency scenario's cases (`culprit_lab::run::concurrency`) as assertions: enough
//! requests scored, nearly all joined with their own thread by the expected join and decomposed
//! as their route's work, at most 1% with another request's thread. The percentages the tests
//! assert are CI floors, inside the goals of ACCURACY.md.

use culprit_lab::{
    run::concurrency::{Case, Run},
    scenario::join_score::Score,
};

/// Runs `case` for `seconds` and asserts its goals at `right_pct`; returns the run for more.
pub fn assert_case(case: Case, seconds: u32, right_pct: usize) -> anyhow::Result<Run> {
    let run = case.run(seconds)?;
    let score = Score::of(&run.served, &run.lines, case.joins(), |s, l| {
        case.cause_right(s, l)
    });
    let n = score.scored.len();
    eprintln!("{case:?} by route, join and cause: {:?}", score.by_route());
    eprintln!(
        "{n} requests: {} joined with their own thread, {} with another, {} ambiguous; {} \
         decomposed as their route's work",
        score.right,
        score.wrong.len(),
        score.ambiguous,
        score.causes_right
    );
    anyhow::ensure!(
        n >= 40,
        "only {n} of {} requests to score ({} lines)",
        run.served.len(),
        run.lines.len()
    );
    anyhow::ensure!(
        score.right * 100 >= n * right_pct,
        "{} of {n} joined with their own thread",
        score.right
    );
    anyhow::ensure!(
        score.wrong.len() * 100 <= n,
        "joined with another request's thread: {:?}",
        score.wrong
    );
    anyhow::ensure!(
        score.causes_right * 100 >= n * right_pct,
        "{} of {n} decomposed as their route's work",
        score.causes_right
    );
    drop(score);
    Ok(run)
}
