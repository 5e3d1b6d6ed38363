//! The lab's scenarios as data: what each injects and when, what one run recorded, and how well
//! the agent's decomposition matched the injected cause. Pure types and arithmetic that start
//! nothing, so that the report and the unit tests need no live agent.

pub mod accuracy;
pub mod join_score;
pub mod outcome;
pub mod plan;
