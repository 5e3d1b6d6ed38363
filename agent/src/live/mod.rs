//! The live view: what the agent saw lately, served on a local API and read by the tools.

pub mod api;
pub mod client;
pub mod view;
pub mod vitals;
