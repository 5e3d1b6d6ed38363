//! How a lab run loads the service: the lab's own open-loop generator, or a real load generator
//! (k6, Locust) whose results `culprit report` joins, and which server the service runs.

use std::time::Duration;

use culprit::clock::monotonic_ns;

use super::lab::{CLIENTS, Lab};
use crate::{
    scenario::{accuracy::Injected, outcome::Phase, plan::Scenario},
    service::{
        generator::LoadGenerator,
        k6,
        load::{self, ClientSample, LoadShape},
        locust,
    },
};

impl Lab {
    /// Loads the steady phases with `generator` instead of the lab's own load generator, its
    /// results in `dir`.
    pub fn with_generator(mut self, generator: LoadGenerator, dir: &std::path::Path) -> Self {
        self.generator = Some((generator, dir.to_path_buf()));
        self
    }

    /// The load generator's results of the fault phases run so far.
    pub fn client_results(&self) -> &[std::path::PathBuf] {
        &self.client_results
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
        let samples = match (&self.generator, shape) {
            (Some((generator, dir)), LoadShape::Steady { rate_per_s }) => {
                let phase = injected.map_or("reference", Injected::cause_name);
                let name = format!("{scenario}-{}", phase.replace('.', "_"));
                let out = dir.join(format!("{}-{name}.json", generator.name()));
                let run = match generator {
                    LoadGenerator::K6 => k6::run,
                    LoadGenerator::Locust => locust::run,
                };
                let samples = run(base_url, rate_per_s, length, routes, &name, &out)?;
                if injected.is_some() {
                    self.client_results.push(out);
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
