//! How a lab run loads the service: the lab's own open-loop generator, or k6 (a real peer whose
//! results `culprit report --k6` joins), and which server the service runs.

use std::time::Duration;

use culprit::clock::monotonic_ns;

use super::lab::{CLIENTS, Lab};
use crate::{
    scenario::{accuracy::Injected, outcome::Phase, plan::Scenario},
    service::{
        k6,
        load::{self, ClientSample, LoadShape},
    },
};

impl Lab {
    /// Loads the steady phases with k6 instead of the lab's own load generator, its results in
    /// `dir`.
    pub fn with_k6(mut self, dir: &std::path::Path) -> Self {
        self.k6_dir = Some(dir.to_path_buf());
        self
    }

    /// The k6 results of the fault phases run so far.
    pub fn k6_results(&self) -> &[std::path::PathBuf] {
        &self.k6_results
    }

    pub(super) fn load_phase(
        &mut self,
        base_url: &str,
        length: Duration,
        shape: LoadShape,
        routes: &[&'static str],
        (scenario, injected): (Scenario, Option<Injected>),
    ) -> anyhow::Result<(Phase, Vec<ClientSample>)> {
        let start_mono_ns = monotonic_ns();
        let samples = match (&self.k6_dir, shape) {
            (Some(dir), LoadShape::Steady { rate_per_s }) => {
                let phase = injected.map_or("reference", Injected::cause_name);
                let name = format!("{scenario}-{}", phase.replace('.', "_"));
                let out = dir.join(format!("k6-{name}.json"));
                let samples = k6::run(base_url, rate_per_s, length, routes, &name, &out)?;
                if injected.is_some() {
                    self.k6_results.push(out);
                }
                samples
            }
            _ => load::run(base_url, shape, length, CLIENTS, routes, &self.stop),
        };
        let phase = Phase {
            injected,
            start_mono_ns,
            end_mono_ns: monotonic_ns(),
        };
        Ok((phase, samples))
    }
}
