//! `culprit top`: the live view in a terminal, refreshed every second; a plain-text snapshot
//! when stdout is not a terminal or with `--once`.

use std::{
    io::IsTerminal as _,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use ratatui::crossterm::event::{self, Event, KeyEventKind};

use crate::{
    live::{
        client::{self, Endpoint},
        view::Snapshot,
    },
    tools::top_view::{self, Action, TopState},
};

pub(crate) struct TopOptions {
    pub once: bool,
    pub refresh: Duration,
    pub window_s: f64,
}

pub(crate) fn run(endpoint: &Endpoint, opts: &TopOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let path = format!("/v1/snapshot?window_s={}&limit=50", opts.window_s);
    let fetch = || -> anyhow::Result<Snapshot> {
        runtime
            .block_on(client::get::<Snapshot>(endpoint, &path))?
            .ok_or_else(|| {
                anyhow::anyhow!("{endpoint} has no /v1/snapshot: is that a culprit agent?")
            })
    };
    // Asked first, so that "no agent" or "permission denied" print as plain errors.
    let first = fetch()?;
    if opts.once || !std::io::stdout().is_terminal() {
        print!("{}", top_view::plain(&first));
        return Ok(());
    }
    let mut state = TopState::default();
    state.update(first);
    let mut terminal = ratatui::init();
    let result = (|| -> anyhow::Result<()> {
        loop {
            terminal.draw(|f| top_view::render(f, &state))?;
            let next = Instant::now() + opts.refresh;
            let mut refresh_now = false;
            while !refresh_now {
                let left = next.saturating_duration_since(Instant::now());
                if left.is_zero() || !event::poll(left)? {
                    break;
                }
                if let Event::Key(key) = event::read()?
                    && key.kind == KeyEventKind::Press
                {
                    match state.on_key(key) {
                        Action::Quit => return Ok(()),
                        Action::Refresh => refresh_now = true,
                        Action::None => {}
                    }
                    terminal.draw(|f| top_view::render(f, &state))?;
                }
            }
            match fetch() {
                Ok(s) => state.update(s),
                Err(e) => state.error = Some(format!("{e:#}")),
            }
        }
    })();
    ratatui::restore();
    result
}
