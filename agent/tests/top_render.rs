//! `culprit top` drawn with ratatui's test backend at 80x24: what an incident responder sees,
//! and what the keys do.

mod common;

use common::{NOW_MS, SLOW_TRACE, view};
use culprit::tools::{
    explain,
    top_view::{self, Action, TopState},
};
use ratatui::{
    Terminal,
    backend::TestBackend,
    crossterm::event::{KeyCode, KeyEvent},
};

fn screen(state: &TopState) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
    terminal
        .draw(|f| top_view::render(f, state))
        .expect("drawing");
    let buffer = terminal.backend().buffer().clone();
    (0..24)
        .map(|y| (0..80).map(|x| buffer[(x, y)].symbol()).collect::<String>())
        .collect()
}

fn state() -> TopState {
    let mut s = TopState::default();
    s.update(view(false).snapshot(NOW_MS, 60_000, 50));
    s
}

fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?}:\n{}", lines.join("\n")))
}

#[test]
fn services_show_their_tail_and_dominant_cause_in_80_columns() {
    let lines = screen(&state());
    assert!(lines[0].contains("culprit top") && lines[0].contains("probes 3/3"));
    let checkout = line_with(&lines, "checkout");
    assert!(checkout.contains("cpu.contention"), "{checkout}");
    assert!(checkout.contains("61.3"), "p99 of checkout: {checkout}");
    assert!(line_with(&lines, "payments").contains("tcp.retransmit"));
    // The side panels: the throttled cgroup (its end), the neighbour, the lossy peer.
    line_with(&lines, "-abc.scope");
    line_with(&lines, "stress-ng (777)");
    line_with(&lines, "10.0.0.7:5432");
    // The keys are on the last line.
    assert!(lines[23].contains("q quit"), "{}", lines[23]);
}

#[test]
fn the_slowest_request_is_selected_and_enter_explains_it() {
    let mut s = state();
    let lines = screen(&s);
    let first = line_with(&lines, "> ");
    assert!(
        first.contains("420.0") && first.contains("tcp.retransmit"),
        "{first}"
    );
    assert_eq!(s.on_key(KeyEvent::from(KeyCode::Down)), Action::None);
    assert_eq!(s.on_key(KeyEvent::from(KeyCode::Down)), Action::None);
    let lines = screen(&s);
    assert!(line_with(&lines, "> ").contains("61.3"));
    s.on_key(KeyEvent::from(KeyCode::Enter));
    assert!(s.detail);
    let lines = screen(&s);
    let text = lines.join("\n");
    assert!(text.contains("CPU held by stress-ng (777)"), "{text}");
    assert!(text.contains(SLOW_TRACE), "{text}");
    assert!(text.contains("█"), "the bar is drawn: {text}");
    // Esc goes back to the list; a second Esc (or q) quits.
    assert_eq!(s.on_key(KeyEvent::from(KeyCode::Esc)), Action::None);
    assert!(!s.detail);
    assert_eq!(s.on_key(KeyEvent::from(KeyCode::Esc)), Action::Quit);
    assert_eq!(s.on_key(KeyEvent::from(KeyCode::Char('q'))), Action::Quit);
    assert_eq!(
        s.on_key(KeyEvent::from(KeyCode::Char('r'))),
        Action::Refresh
    );
}

#[test]
fn selection_stays_in_range_when_requests_go_away() {
    let mut s = state();
    for _ in 0..20 {
        s.on_key(KeyEvent::from(KeyCode::Down));
    }
    assert_eq!(s.selected, 8, "nine requests");
    s.update(view(false).snapshot(NOW_MS, 60_000, 3));
    assert_eq!(s.selected, 2);
    s.on_key(KeyEvent::from(KeyCode::Up));
    assert_eq!(s.selected, 1);
}

#[test]
fn an_agent_with_nothing_observed_says_what_to_do() {
    let mut s = TopState::default();
    s.update(culprit::live::view::LiveView::new(common::facts(false)).snapshot(NOW_MS, 60_000, 50));
    let text = screen(&s).join("\n");
    assert!(text.contains("no requests observed yet"), "{text}");
    // And before the first answer.
    let text = screen(&TopState::default()).join("\n");
    assert!(text.contains("waiting for the agent"), "{text}");
}

#[test]
fn a_degraded_agent_is_flagged_in_the_header() {
    let mut s = TopState::default();
    s.update(view(true).snapshot(NOW_MS, 60_000, 50));
    assert!(screen(&s)[0].contains("DEGRADED"));
}

#[test]
fn the_plain_snapshot_and_explain_carry_the_same_facts() {
    let snap = view(false).snapshot(NOW_MS, 60_000, 50);
    let text = top_view::plain(&snap);
    assert!(
        text.lines()
            .any(|l| l.starts_with("checkout") && l.contains("cpu.contention")),
        "{text}"
    );
    assert!(text.contains("10.0.0.7:5432  2 retransmits"), "{text}");
    let r = &view(false).request(SLOW_TRACE)[0];
    let e = explain::render(r);
    assert!(
        e.contains("GET /checkout — 61.3 ms, cause cpu.contention (62%)"),
        "{e}"
    );
    assert!(
        e.contains("[CCCCCCCCCCCCCCCCCCCCCCCRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR]"),
        "{e}"
    );
    assert!(e.contains("CPU held by stress-ng (777)"), "{e}");
    assert!(e.contains("container 0123456789abcdef"), "{e}");
}
